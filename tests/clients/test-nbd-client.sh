#!/usr/bin/env bash
# nbdkit-raid: the Linux kernel NBD client (nbd.ko + Debian's nbd-client)
# with two connections (multi-conn).
#
# A RAID5 of 4 members (256M files) is served on TCP 127.0.0.1:PORT; a
# Debian guest (TCG) reaches it as 10.0.2.2:PORT through QEMU's user network,
# connects /dev/nbd0 with `nbd-client -connections 2` and runs guest-init.sh:
# mkfs.ext4 with discard, mount, files of random and known content,
# overwrites, deletes (trims), checksums, sync, unmount, e2fsck -fn clean,
# drop caches, remount read-only, every checksum verified, disconnect.
# The host then restarts the server with the members in another order and
# verifies the filesystem on its own (nbdcopy, e2fsck -fn, debugfs, every
# checksum the guest reported, seq.txt's checksum computed by the host).
#
# Live reshape under the mounted filesystem: the array is served with a
# control socket; when the guest reaches its write phase (sync point
# "write-phase", before mkfs) the host grows the RAID5 from 4 to 5 members
# (`nbdraid -C CTL reshape --add=m4 --start`, throttled with `set
# speed-max` so that it outlasts the guest's writes) and lets the guest go
# on.  mkfs, every file write and the sync run while data moves: status
# says the reshape is running when the writes start and still running, at
# a later position, when the guest reports them synced (sync point
# "written").  Only then does the host lift the throttle and `nbdraid wait`
# for the end: 5 members, reshape null, health optimal, all in sync, the
# new size.  The guest then unmounts, checks and verifies everything
# through the new layout; tests/raidcheck.py (md's placement, independent
# of the plugin) checks the parity of every row of the five member files;
# the host verifies the filesystem once more after a restart.
#
# Proves: the kernel client's requests, spread over two connections whose
# flushes must cover each other's writes (multi-conn: a flush on any
# connection makes every completed write durable), reach the members
# durably; the export advertises multi-conn; a live reshape under
# a mounted filesystem loses and corrupts nothing.

set -euo pipefail
source "$(dirname "$0")/lib.sh"
clients_init test-nbd-client "$@"
requires "$QEMU"
requires nbdcopy
requires nbdinfo
requires debugfs
requires busybox

SEQ_LINES=150000
CONNS=2
# The reshape's rate limit while the guest writes: 720 MiB would take
# minutes, the write phase takes seconds.
RESHAPE_SPEED=8M
# The kernel client ties each CPU's request queue to one connection: with
# one vCPU the second connection would carry nothing.
export GUEST_SMP=$CONNS

guest_image
guest_probe

# ---- the array -------------------------------------------------------------
d="$tmp/array"
mkdir -p "$d"
members=("$d/m0" "$d/m1" "$d/m2" "$d/m3")
create_array --level=5 --size=256M "${members[@]}" || { fail "nbdraid create"; finish; }
ok
truncate -s 256M "$d/m4"      # the member the reshape adds
ctl="$tmp/raid1.ctl"
# The log filter records each connection ("Connect" lines) so that the
# test sees how many the kernel client really opened.
start_nbdkit_tcp raid1 --filter=log "$PLUGIN" "${members[@]}" control="$ctl" \
  logfile="$tmp/raid1.requests" || { fail "serve the array on TCP"; finish; }
ok
size="$(nbd_size "$uri")"
echo "$test_name: array of $((size >> 20)) MiB on $uri"
if nbdinfo --can multi-conn "$uri"; then ok; else
  fail "the export does not advertise multi-conn; nbd-client -connections $CONNS relies on it"
fi

# ---- the guest ---------------------------------------------------------------
ov="$tmp/overlay"
mkdir -p "$ov/guest"
install -m 755 "$clients_dir/guest-init.sh" "$ov/guest/init.sh"
cat >"$ov/guest/params" <<EOF
MODE=nbd
PORT=$port
CONNS=$CONNS
SEQ_LINES=$SEQ_LINES
HOST_SYNC=1
EOF

# ---- the host's side: a live reshape while the guest writes ------------------
# reshape_driver runs in the background while the guest runs (run_guest
# waits for QEMU); it meets the guest at its sync points and writes its
# checks to $tmp/driver.checks ("ok WHAT" / "FAIL WHAT"), counted below.
# On a failure it tells the guest to stop (no GO) and ends.
guest_channel kguest
# st FILE EXPR: a field of a saved `nbdraid status --json` reply (a Python
# expression over the reply d).
st () { $PYTHON -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
reshape_driver ()
{
  local out="$tmp/driver.checks" p1 p2 total t1 t2
  : >"$out"
  rec () { echo "$*" >>"$out"; }
  # dcheck WHAT EXPECTED GOT
  dcheck () { if [ "$2" = "$3" ]; then rec ok "$1"; else rec FAIL "$1: expected '$2', got '$3'"; fi; }
  # drun WHAT CMD...: CMD must succeed (bounded: a reshape that hangs fails).
  drun ()
  {
    local what="$1"; shift
    if timeout 120 "$@" >"$tmp/drun.log" 2>&1; then rec ok "$what"; return 0; fi
    rec FAIL "$what: '$*' failed: $(tail -n 3 "$tmp/drun.log" | tr '\n' ' ')"
    return 1
  }
  stop_guest () { rec FAIL "$1"; tell_guest kguest STOP || true; }

  wait_guest_line kguest "SYNC write-phase" 300 \
    || { stop_guest "the guest did not reach its write phase"; return; }
  drun "throttle the reshape" "$NBDRAID" -C "$ctl" set speed-max=$RESHAPE_SPEED \
    || { stop_guest "set speed-max"; return; }
  drun "reshape --add --start" "$NBDRAID" -C "$ctl" reshape --add="$d/m4" --start \
    || { stop_guest "reshape"; return; }
  "$NBDRAID" -C "$ctl" status --json >"$tmp/st1.json"
  dcheck "status as the guest starts writing: sync_action" reshape "$(st "$tmp/st1.json" 'd["sync_action"]')"
  dcheck "status as the guest starts writing: reshape state" running \
    "$(st "$tmp/st1.json" '(d["reshape"] or {}).get("state")')"
  dcheck "status as the guest starts writing: target members" 5 \
    "$(st "$tmp/st1.json" '(d["reshape"] or {}).get("to", {}).get("raid_devices")')"
  p1="$(st "$tmp/st1.json" '(d["reshape"] or {}).get("position", -1)')"
  t1="$(now)"
  tell_guest kguest GO || { rec FAIL "tell the guest GO (write-phase)"; return; }

  wait_guest_line kguest "SYNC written" 300 \
    || { stop_guest "the guest did not finish its writes"; return; }
  "$NBDRAID" -C "$ctl" status --json >"$tmp/st2.json"
  dcheck "status when the guest's writes are synced: sync_action" reshape \
    "$(st "$tmp/st2.json" 'd["sync_action"]')"
  dcheck "status when the guest's writes are synced: reshape state" running \
    "$(st "$tmp/st2.json" '(d["reshape"] or {}).get("state")')"
  p2="$(st "$tmp/st2.json" '(d["reshape"] or {}).get("position", -1)')"
  t2="$(now)"
  total="$(st "$tmp/st2.json" '(d["reshape"] or {}).get("total", -1)')"
  # The reshape moved data during the writes and had not finished.
  if [ "$p1" -ge 0 ] && [ "$p2" -gt "$p1" ] && [ "$p2" -lt "$total" ]; then rec ok "overlap"; else
    rec FAIL "reshape position $p1 -> $p2 of $total during the guest's writes: no overlap"
  fi
  echo "reshape during the guest's writes: position $p1 -> $p2 of $total bytes in $(elapsed "$t1" "$t2") s (speed-max $RESHAPE_SPEED)" >"$tmp/driver.info"

  drun "lift the throttle" "$NBDRAID" -C "$ctl" set speed-max=0
  drun "nbdraid wait" "$NBDRAID" -C "$ctl" wait
  "$NBDRAID" -C "$ctl" status --json >"$tmp/st3.json"
  dcheck "after the reshape: raid_devices" 5 "$(st "$tmp/st3.json" 'd["raid_devices"]')"
  dcheck "after the reshape: reshape" None "$(st "$tmp/st3.json" 'd["reshape"]')"
  dcheck "after the reshape: health" optimal "$(st "$tmp/st3.json" 'd["health"]')"
  dcheck "after the reshape: sync_action" idle "$(st "$tmp/st3.json" 'd["sync_action"]')"
  dcheck "after the reshape: members in sync" "0 1 2 3 4" \
    "$(st "$tmp/st3.json" '" ".join(str(m["role"]) for m in sorted(d["members"], key=lambda m: m["role"]) if m["state"] == "in_sync")')"
  dcheck "after the reshape: role 4 is m4" "$d/m4" \
    "$(st "$tmp/st3.json" '[m["spec"] for m in d["members"] if m["role"] == 4][0]')"
  # The grow moved the data offset down into the head room (out of place):
  # each member now holds 256M - data_offset of data, four of them data.
  dcheck "after the reshape: one new data offset, within the old one" yes \
    "$(st "$tmp/st3.json" '"yes" if len(set(m["data_offset"] for m in d["members"])) == 1 and (16 << 20) - (4 << 20) <= d["members"][0]["data_offset"] < (16 << 20) else "no"')"
  dcheck "after the reshape: size (4 data members)" \
    "$(st "$tmp/st3.json" '4 * ((256 << 20) - d["members"][0]["data_offset"]) // d["chunk"] * d["chunk"]')" \
    "$(st "$tmp/st3.json" 'd["size"]')"
  st "$tmp/st3.json" 'd["size"]' >"$tmp/newsize"
  tell_guest kguest GO || rec FAIL "tell the guest GO (written)"
}
# count_driver_checks: the driver's checks into ours.
count_driver_checks ()
{
  local r what
  [ -s "$tmp/driver.checks" ] || { fail "the reshape driver recorded nothing"; return 0; }
  while read -r r what; do
    if [ "$r" = ok ]; then ok; else fail "reshape driver: $what"; fi
  done <"$tmp/driver.checks"
  if [ -f "$tmp/driver.info" ]; then echo "$test_name: $(cat "$tmp/driver.info")"; fi
  return 0
}

# The only network the guest has: QEMU's user network, in which 10.0.2.2 is
# the host's loopback.  The guest connects to nothing else.
log_lines="$(wc -l <"$tmp/raid1.requests")"
reshape_driver >"$tmp/driver.log" 2>&1 &
driver_pid=$!
bg_pids+=("$driver_pid")
run_guest kguest "$ov" 500 \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 "${guest_channel_args[@]}"
# The driver's last act is the guest's last GO: it has ended by now, or
# it is stuck waiting for a guest that died.
for ((i = 0; i < 100; i++)); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$driver_pid" 2>/dev/null; then
  fail "the reshape driver was still waiting when the guest ended (see $tmp/driver.log)"
  kill_pid_quick "$driver_pid"
else
  rc=0; wait "$driver_pid" || rc=$?
  expect_eq "the reshape driver's exit status" 0 "$rc"
fi
count_driver_checks
guest_results kguest
# The kernel client opened CONNS connections and used each of them.
n="$(sed -n "$((log_lines + 1)),\$p" "$tmp/raid1.requests" | grep -c ' Connect ' || true)"
expect_eq "connections the guest opened" "$CONNS" "$n"
used="$(sed -n "$((log_lines + 1)),\$p" "$tmp/raid1.requests" \
  | sed -n 's/.*connection=\([0-9]*\) \(Write\|Read\) .*/\1/p' | sort -u | wc -l)"
expect_eq "connections that carried reads or writes" "$CONNS" "$used"

want="$(seq 1 "$SEQ_LINES" | sha256sum | cut -d' ' -f1)"
expect_eq "guest's checksum of seq.txt" "$want" \
  "$(awk '$2 == "seq.txt" { print $1 }' "$tmp/kguest.sums")"
stop_nbdkit raid1

# ---- md parity of the new layout ---------------------------------------------
# raidcheck wants the members in role order (from their superblocks).
examine "$tmp/ex.json" "$d"/m[0-4] || fail "examine the five members"
mapfile -t roles < <($PYTHON - "$tmp/ex.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
m = [x for x in doc["members"] if x.get("superblock") == "valid" and x.get("role") is not None]
n = m[0]["raid_devices"]
by = {x["role"]: x["spec"] for x in m if x["role"] < n}
print("\n".join(by.get(r, "missing") for r in range(n)))
PY
)
expect_eq "examine: members of the new layout" 5 "${#roles[@]}"
# shellcheck disable=SC2086  # RAIDCHECK is a command line
expect_run "md parity of the 5-member layout (raidcheck)" \
  $RAIDCHECK --from-examine "$tmp/ex.json" verify "${roles[@]}"

# ---- the host, through a fresh assembly --------------------------------------
start_raid raid2 "$d/m2" "$d/m4" "$d/m0" "$d/m3" "$d/m1" \
  || { fail "restart with the members reordered"; finish; }
ok
newsize="$(cat "$tmp/newsize" 2>/dev/null || echo unknown)"
expect_eq "size after restart (grown)" "$newsize" "$(nbd_size "$uri")"
[ "$newsize" != unknown ] || newsize="$(nbd_size "$uri")"
expect_run "nbdcopy the export out" nbdcopy "$uri" "$tmp/fs.img"
stop_nbdkit raid2
# The new capacity beyond the filesystem reads as zeroes (a grow zeroes
# it before exporting it: nbdkit-raid-plugin(1), Live reshape).
expect_run "the grown space reads as zeroes" \
  cmp -n $((newsize - size)) -i "$size:0" "$tmp/fs.img" /dev/zero
truncate -s "$size" "$tmp/fs.img"
verify_fs_image "after restart" "$tmp/fs.img" "$tmp/kguest.sums"
rm -f "$tmp/fs.img"

echo "$test_name: guest boot $guest_boot_time s; guest workload run $guest_run_time s"
clients_finish
