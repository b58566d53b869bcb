#!/usr/bin/env bash
# nbdkit-raid: kill -9 during a rebuild; the restart resumes from the
# durable checkpoint.
#
# A RAID5 of four members is filled; member 2 is failed and removed, and a
# spare is added with the rebuild slowed down (speed_max), so recovery runs
# for several seconds.  Once it has passed at least one checkpoint, the
# server is killed with SIGKILL.  The spare's superblock must carry a
# recovery_offset > 0 (the checkpoint is durable), and after a restart the
# recovery must continue from at least that offset, not from zero.  It then
# completes, the array is optimal, every byte reads back, and the members'
# md parity verifies with the independent checker.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-rebuild-resume "$@"
requires nbdcopy

d="$tmp/a"; mkdir "$d"
create_array --level=5 --size=64M --data-offset=4M "$d"/m0 "$d"/m1 "$d"/m2 "$d"/m3
truncate -s 64M "$d/m4"
start_raid r1 "$d"/m0 "$d"/m1 "$d"/m2 "$d"/m3 control="$d/ctl"
size=$(nbdinfo --size "$uri")
head -c "$size" /dev/urandom > "$tmp/src"
expect_run "fill" nbdcopy "$tmp/src" "$uri"

N () { "$NBDRAID" -C "$d/ctl" "$@"; }
expect_run "fail member 2" N fail "$d/m2"
expect_run "remove member 2" N remove "$d/m2"
expect_run "slow background work down" N set speed-min=0 speed-max=4M
expect_run "add a spare: recovery starts" N add "$d/m4"
expect_eq "sync action after add" recover "$(status_get "$d/ctl" sync_action)"

# Let it pass a checkpoint (about one per second), then kill it hard.
for ((i = 0; i < 100; i++)); do
  done_bytes=$(N status --json | $PYTHON -c 'import json,sys; p=json.load(sys.stdin)["progress"]; print(p["done"] if p else 0)')
  [ "$done_bytes" -gt $((8 << 20)) ] && break
  sleep 0.1
done
sleep 1.2
kill -9 "${pid_of[r1]}"
wait "${pid_of[r1]}" 2>/dev/null || true

ckpt=$("$NBDRAID" examine --json "$d/m4" | $PYTHON -c '
import json, sys
m = json.load(sys.stdin)["members"][0]
print([e for e in m["members"] if e.get("this")][0]["recovery_offset"])')
if [ "$ckpt" -gt 0 ]; then ok; else fail "no durable recovery checkpoint on the spare ($ckpt)"; fi

start_raid r2 "$d"/m4 "$d"/m3 "$d"/m1 "$d"/m0 control="$d/ctl2" speed-min=0 speed-max=4M
N2 () { "$NBDRAID" -C "$d/ctl2" "$@"; }
N2 status --json > "$tmp/st.json"
read -r action resumed < <($PYTHON -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["sync_action"], (d["progress"] or {}).get("done", -1))' "$tmp/st.json")
expect_eq "after restart: the recovery continues" recover "$action"
if [ "$resumed" -ge "$ckpt" ]; then ok; else
  fail "recovery restarted at $resumed, below its checkpoint $ckpt"; fi

expect_run "full speed" N2 set speed-max=0
expect_run "wait for recovery" N2 wait --timeout=120
expect_eq "health after recovery" optimal "$(status_get "$d/ctl2" health)"
expect_run "read back" nbdcopy "$uri" "$tmp/out"
expect_run "every byte" cmp "$tmp/src" "$tmp/out"
stop_nbdkit r2
examine "$tmp/ex.json" "$d/m0" "$d/m1" "$d/m4" "$d/m3"
expect_run "md parity (raidcheck)" $RAIDCHECK --from-examine "$tmp/ex.json" verify \
  "$d/m0" "$d/m1" "$d/m4" "$d/m3"
finish
