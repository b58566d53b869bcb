#!/usr/bin/env bash
# nbdkit-raid: members that come back rejoin — never written off.
#
# (a) journal policy, raid5 of 4: served without member 3, written, stopped;
#     examine records role 3 "missing" (not faulty); served again with all
#     four: member 3 is resynced (stale, then in_sync), the data read
#     back is what was written, and the member files hold md's bytes and
#     parity (raidcheck).
# (b) each consistency policy (journal, bitmap, resync), member 3 an NBD
#     export behind nbdkit's log filter: the same absence, but only 1 MiB
#     written meanwhile; status shows member 3 away with a map of missed
#     regions; when it rejoins, the data bytes written to it are those of
#     the regions that write touched (a delta), far fewer than its data
#     area, and the resync's progress total is the delta's own.
# (c) served without member 3, then `nbdraid add` of member 3 while serving:
#     it rejoins the same way, and its status row names it while missing.
# (d) a member of another array, and a member this array still uses, are
#     refused by `add` and change nothing.
# (e) a stale member (its own record older than the array's: a copy from
#     before the last writes put back) is listed as `stale` by status and
#     the log while the array resyncs it, never read meanwhile (the data
#     reads back as last written), then in_sync.
# (f) a delta resync while clients write ahead of its cursor: member 3
#     away while the first 2 MiB and the last 1 MiB are written (its map
#     marks them), then back with the resync throttled; while it is still
#     in the first regions, 4 KiB writes land in dozens of regions between
#     (marked too, though each reaches member 3 itself).  It must still
#     resync the last regions: the data reads back as written and the
#     member files hold md's bytes and parity.  (A delta that counted the
#     regions it needed once, at its start, spent that count on the regions
#     marked later and ended before the last ones.)
# (g) a copy of a member that another server used since (its record is
#     newer than the array's) is refused by `add`, changing nothing; the
#     member itself then rejoins.
# (h) a member absent at the last start, given again but too small for its
#     role (a truncated copy), is not used: the start goes on degraded and
#     the log says why.
# (a) also: the start without member 3 logs its role and last known spec.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-rejoin "$@"
requires nbdcopy
requires nbdinfo

CHUNK=64K
MSIZE=24M

new_array () # DIR POLICY -> members[]
{
  local d="$1" policy="$2" i
  mkdir -p "$d"
  members=()
  for ((i = 0; i < 4; i++)); do members+=("$d/m$i"); done
  create_array --level=5 --chunk="$CHUNK" --size="$MSIZE" --data-offset=4M \
    --consistency="$policy" "${members[@]}"
}

# write_at URI FILE OFFSET: write FILE at OFFSET of the export.
write_at ()
{
  $PYTHON - "$1" "$2" "$3" <<'EOF'
import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
h.pwrite(data, int(sys.argv[3])); h.flush(); h.shutdown()
EOF
}

# rejoined NAME CTL SPEC-TAIL: the array settles optimal with that member in
# sync.
rejoined ()
{
  local name="$1" ctl="$2" tail="$3"
  expect_run "$name: wait" "$NBDRAID" -C "$ctl" wait --timeout=120
  expect_status "$name: optimal" "$ctl" health optimal
  expect_status "$name: $tail in sync" "$ctl" "spec:$tail" in_sync
}

# verify NAME DIR EXPECTED: data read back, then (server stopped by the
# caller) parity of the member files.
verify_data ()
{
  rm -f "$2/back.img"
  expect_run "$1: read back" nbdcopy "$uri" "$2/back.img"
  expect_run "$1: the data written" cmp "$2/back.img" "$3"
}

# settle NAME DIR SERVER: unthrottled, the array settles with member 3 in
# sync, the data reads back as DIR/expected.img, and (SERVER stopped) the
# member files hold md's bytes and parity.
settle ()
{
  "$NBDRAID" -C "$2/ctl" set speed-max=0 >/dev/null
  rejoined "$1" "$2/ctl" /m3
  verify_data "$1" "$2" "$2/expected.img"
  stop_nbdkit "$3"
  expect_run "$1 member files hold md's bytes and parity" \
    $RAIDCHECK --from-examine "$2/ex.json" verify "${members[@]}"
}

# ---- (a) journal --------------------------------------------------------------
# ---- (e) stale: an older copy of a member put back ----------------------------
part_e ()
{
  local d="$tmp/e" size
  new_array "$d" journal || { fail "(e) create"; return 0; }
  examine "$d/ex.json" "${members[@]}"
  start_raid e1 "${members[@]}" || { fail "(e) start"; return 0; }
  size="$(nbd_size "$uri")"
  $PYTHON "$testsdir/e2e_basic.py" random "$d/old.img" "$size" 24
  expect_run "(e) first data" nbdcopy "$d/old.img" "$uri"
  stop_nbdkit e1
  cp --sparse=always "$d/m3" "$d/m3.old"
  start_raid e2 "${members[@]}" || { fail "(e) second start"; return 0; }
  $PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 25
  expect_run "(e) new data" nbdcopy "$d/expected.img" "$uri"
  stop_nbdkit e2
  cp --sparse=always "$d/m3.old" "$d/m3"     # member 3 as it was before
  start_raid_ctl e3 "$d/ctl" "${members[@]}" speed-max=512K ||
    { fail "(e) start with the stale member"; return 0; }
  grep -q "role 3: member $d/m3 is stale" "$tmp/e3.log" && ok ||
    fail "(e) the log says stale: $(grep -i 'role 3' "$tmp/e3.log")"
  expect_status "(e) status lists it stale" "$d/ctl" member:3 stale
  expect_status "(e) degraded meanwhile" "$d/ctl" health degraded
  expect_status "(e) its resync runs" "$d/ctl" sync_action recover
  verify_data "(e) while it resyncs" "$d" "$d/expected.img"
  settle "(e)" "$d" e3
}

part_a ()
{
  local d="$tmp/a" size
  new_array "$d" journal || { fail "(a) create"; return 0; }
  examine "$d/ex.json" "${members[@]}"
  start_raid a1 "$d/m0" "$d/m1" "$d/m2" || { fail "(a) degraded start"; return 0; }
  grep -q "role 3: member $d/m3 is missing" "$tmp/a1.log" && ok ||
    fail "(a) the log names the missing role and its spec: $(grep -i missing "$tmp/a1.log")"
  size="$(nbd_size "$uri")"
  $PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 21
  expect_run "(a) write while member 3 is away" nbdcopy "$d/expected.img" "$uri"
  stop_nbdkit a1
  examine "$d/ex2.json" "$d/m0" "$d/m1" "$d/m2"
  expect_eq "(a) examine: role 3 recorded missing" missing "$(member_state "$d/ex2.json" 3)"
  start_raid_ctl a2 "$d/ctl" "${members[@]}" || { fail "(a) start with m3"; return 0; }
  rejoined "(a)" "$d/ctl" /m3
  verify_data "(a)" "$d" "$d/expected.img"
  stop_nbdkit a2
  expect_run "(a) member files hold md's bytes and parity" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"
}

# ---- (b) bitmap: a delta ------------------------------------------------------
# Data bytes written to member 3 (beyond its data offset), from the log
# filter's write lines.
data_writes ()
{
  $PYTHON - "$1" "$2" <<'EOF'
import re, sys
off0, total = int(sys.argv[2]), 0
for line in open(sys.argv[1]):
    m = re.search(r'Write id=\d+ offset=(0x[0-9a-f]+|\d+) count=(0x[0-9a-f]+|\d+)', line)
    if m and int(m.group(1), 0) >= off0:
        total += int(m.group(2), 0)
print(total)
EOF
}

part_b ()
{
  local policy="$1" d="$tmp/b-$1" msock="$tmp/m3b-$1.sock" n regions rb
  new_array "$d" "$policy" || { fail "(b) $policy: create"; return 0; }
  examine "$d/ex.json" "${members[@]}"
  start_raid_ctl b1 "$d/ctl1" "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(b) $policy: degraded start"; return 0; }
  $PYTHON "$testsdir/e2e_basic.py" random "$d/one.img" $((1 << 20)) 22
  expect_run "(b) $policy: 1 MiB written while member 3 is away" \
    write_at "$uri" "$d/one.img" $((8 << 20))
  expect_status "(b) $policy: member 3 missing" "$d/ctl1" member:3 missing
  [[ "$(status_get "$d/ctl1" member:3:away_seconds)" =~ ^[0-9]+$ ]] && ok ||
    fail "(b) $policy: away_seconds: $(status_get "$d/ctl1" member:3:away_seconds)"
  regions="$(status_get "$d/ctl1" member:3:missed_regions)"
  rb="$(status_get "$d/ctl1" member:3:missed_region_bytes)"
  # 1 MiB over 3 data members: about 350 KiB of each, in regions of rb
  if [[ "$regions" =~ ^[0-9]+$ ]] && [ "$regions" -ge 1 ] &&
     [ $((regions * rb)) -le $((1 << 20)) ]; then ok; else
    fail "(b) $policy: missed regions $regions of $rb bytes for a 1 MiB write"; fi
  stop_nbdkit b1
  start_nbdkit "m3b-$policy" --filter=log file "$d/m3" logfile="$d/m3.log" ||
    { fail "(b) $policy: member server"; return 0; }
  start_raid_ctl b2 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$(uri_of "$msock")" ||
    { fail "(b) $policy: start with m3 over NBD"; return 0; }
  rejoined "(b) $policy" "$d/ctl" "m3b-$policy.sock"
  n="$(data_writes "$d/m3.log" $((4 << 20)))"
  if [ "$n" -gt 0 ] && [ "$n" -le $((regions * rb)) ]; then ok; else
    fail "(b) $policy: delta resync wrote $n data bytes to member 3 (expected 1.." \
      "$((regions * rb)) of 20 MiB)"; fi
  expect_status "(b) $policy: its map is gone" "$d/ctl" member:3:missed_regions ""
  stop_nbdkit b2
  stop_nbdkit "m3b-$policy"
  expect_run "(b) $policy: member files hold md's bytes and parity" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"
}

# ---- (c) add brings a missing member back ------------------------------------
part_c ()
{
  local d="$tmp/c" size
  new_array "$d" journal || { fail "(c) create"; return 0; }
  examine "$d/ex.json" "${members[@]}"
  start_raid_ctl c1 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "(c) start"; return 0; }
  expect_status "(c) role 3 missing" "$d/ctl" member:3 missing
  expect_status "(c) its row names its last spec" "$d/ctl" spec:/m3 missing
  size="$(nbd_size "$uri")"
  $PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 23
  expect_run "(c) write while it is away" nbdcopy "$d/expected.img" "$uri"
  expect_run "(c) add brings it back" "$NBDRAID" -C "$d/ctl" add "$d/m3"
  rejoined "(c)" "$d/ctl" /m3
  verify_data "(c)" "$d" "$d/expected.img"

  # (d) refusals change nothing
  local ev
  ev="$(status_get "$d/ctl" events)"
  expect_fail "(d) add a member in use" "$NBDRAID" -C "$d/ctl" add "$d/m1"
  mkdir -p "$d/other"
  create_array --level=5 --chunk="$CHUNK" --size="$MSIZE" \
    "$d/other/x0" "$d/other/x1" "$d/other/x2" || fail "(d) create another array"
  expect_fail "(d) add a member of another array" "$NBDRAID" -C "$d/ctl" add "$d/other/x0"
  expect_eq "(d) refusals changed nothing" "$ev" "$(status_get "$d/ctl" events)"
  stop_nbdkit c1
  expect_run "(c) member files hold md's bytes and parity" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"
}

# ---- (g) a copy that another server used since is not this array's member ----
part_g ()
{
  local d="$tmp/g" size ev out i
  new_array "$d" journal || { fail "(g) create"; return 0; }
  start_raid_ctl g1 "$d/ctl" "${members[@]}" || { fail "(g) start"; return 0; }
  size="$(nbd_size "$uri")"
  $PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 31
  expect_run "(g) data" nbdcopy "$d/expected.img" "$uri"
  stop_nbdkit g1
  for i in 0 1 2 3; do cp --sparse=always "$d/m$i" "$d/c$i"; done
  # another server uses the copies: its records move on
  start_raid_ctl g2 "$d/ctl2" "$d/c0" "$d/c1" "$d/c2" "$d/c3" || { fail "(g) copies"; return 0; }
  $PYTHON "$testsdir/e2e_basic.py" random "$d/other.img" "$size" 32
  expect_run "(g) other data on the copies" nbdcopy "$d/other.img" "$uri"
  expect_run "(g) fail a copy" "$NBDRAID" -C "$d/ctl2" fail 0
  expect_run "(g) remove it" "$NBDRAID" -C "$d/ctl2" remove "$d/c0"
  expect_run "(g) add it again" "$NBDRAID" -C "$d/ctl2" add "$d/c0"
  expect_run "(g) its recovery" "$NBDRAID" -C "$d/ctl2" wait --timeout=120
  stop_nbdkit g2
  start_raid_ctl g3 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "(g) restart"; return 0; }
  ev="$(status_get "$d/ctl" events)"
  if out="$("$NBDRAID" -C "$d/ctl" add "$d/c3" 2>&1)"; then
    fail "(g) the copy of member 3, used by another server since, was taken"
  elif [[ "$out" == *"is newer than the array's"* ]]; then ok
  else fail "(g) the refusal says why: $out"; fi
  expect_eq "(g) the refusal changed nothing" "$ev" "$(status_get "$d/ctl" events)"
  expect_status "(g) role 3 still missing" "$d/ctl" member:3 missing
  expect_run "(g) add member 3 itself" "$NBDRAID" -C "$d/ctl" add "$d/m3"
  rejoined "(g)" "$d/ctl" /m3
  verify_data "(g)" "$d" "$d/expected.img"
  stop_nbdkit g3
}

# ---- (h) an absent member back too small for its role --------------------------
part_h ()
{
  local d="$tmp/h"
  new_array "$d" journal || { fail "(h) create"; return 0; }
  start_raid h1 "$d/m0" "$d/m1" "$d/m2" || { fail "(h) start without member 3"; return 0; }
  stop_nbdkit h1
  cp --sparse=always "$d/m3" "$d/m3small"
  truncate -s 8M "$d/m3small"              # its role needs more
  start_raid_ctl h2 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3small" ||
    { fail "(h) the start was refused for a member it can do without"; return 0; }
  grep -q "m3small: too small for the role it left" "$tmp/h2.log" && ok ||
    fail "(h) the log says why member 3 is not used"
  expect_status "(h) role 3 missing" "$d/ctl" member:3 missing
  expect_status "(h) degraded" "$d/ctl" health degraded
  stop_nbdkit h2
}

# ---- (f) a delta resync while clients write ahead of its cursor --------------
# write_model URI MODEL SEED OFFSET:LENGTH...: random bytes at each range of
# the export and of MODEL (the expected image), then a flush.
write_model ()
{
  $PYTHON - "$@" <<'EOF2'
import random, sys, nbd
uri, model, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
h = nbd.NBD(); h.connect_uri(uri)
with open(model, "r+b") as m:
    for r in sys.argv[4:]:
        off, n = (int(x) for x in r.split(":"))
        buf = rnd.randbytes(n)
        h.pwrite(buf, off)
        m.seek(off); m.write(buf)
h.flush(); h.shutdown()
EOF2
}

part_f ()
{
  local d="$tmp/f" size mid=() off
  new_array "$d" journal || { fail "(f) create"; return 0; }
  examine "$d/ex.json" "${members[@]}"
  start_raid_ctl f1 "$d/ctl1" "$d/m0" "$d/m1" "$d/m2" || { fail "(f) degraded start"; return 0; }
  size="$(nbd_size "$uri")"
  truncate -s "$size" "$d/expected.img"
  expect_run "(f) the first 2 MiB and the last 1 MiB written while member 3 is away" \
    write_model "$uri" "$d/expected.img" 31 0:$((2 << 20)) $((size - (1 << 20))):$((1 << 20))
  stop_nbdkit f1
  start_raid_ctl f2 "$d/ctl" "${members[@]}" speed-max=64K ||
    { fail "(f) start with member 3"; return 0; }
  expect_status "(f) its delta runs" "$d/ctl" sync_action recover
  for ((off = 4 << 20; off < size - (2 << 20); off += 768 << 10)); do
    mid+=("$off:4096")
  done
  expect_run "(f) ${#mid[@]} writes ahead of the delta's cursor" \
    write_model "$uri" "$d/expected.img" 32 "${mid[@]}"
  expect_status "(f) the delta still runs after them" "$d/ctl" sync_action recover
  settle "(f)" "$d" f2
}

part_f
part_a
for policy in journal bitmap resync; do part_b "$policy"; done
part_c
part_e
part_g
part_h
finish
