#!/usr/bin/env bash
# nbdkit-raid: a whole-row write torn by a crash, and a restart without
# one of the row's data members.
#
# A RAID5 of four NBD members, left-symmetric: row 4 has its data on
# members 0, 1 and 2 and its parity on member 3.  Member 0 answers writes
# 1.5 s late.  A write of that whole row is under way when the array
# server is killed (-9): members 1, 2 and 3 hold the new blocks, member 0
# its old one, so the row's parity matches neither version of its data.
# The array is started again without member 1; the journal cannot make the
# row's parity match its data without member 1's block (an intent record
# names the row, not its contents).  Member 1's block, which holds its new
# bytes, must survive its return: it was rebuilt from the row's parity
# and read back as neither its old nor its new bytes.  Afterwards every
# block reads back old or new, and a scrub finds the row's parity
# consistent: the start owes a resync of the rows it could not make
# consistent (status resync_owed), which runs once the array is optimal
# again.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-torn-absent "$@"

mu () { uri_of "$tmp/m$1.sock"; }
ALL="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
R=4
for i in 0 1 2 3; do truncate -s 64M "$tmp/f$i"; done
for i in 1 2 3; do start_nbdkit "m$i" file "$tmp/f$i"; done
start_nbdkit m0 --filter=delay file "$tmp/f0" delay-write=1500ms delay-zero=1500ms
create_array --level=5 --chunk=64K --layout=left-symmetric --data-offset=8M $ALL
start_raid raid $ALL control="$tmp/ctl" member-timeout=60

expect_run "fill the first 16 MiB" $PYTHON - "$(uri_of "$tmp/raid.sock")" "$tmp" <<'PY'
import nbd, sys, random
h = nbd.NBD(); h.connect_uri(sys.argv[1])
old = random.Random(1).randbytes(16 << 20)
h.pwrite(old, 0); h.flush(); h.shutdown()
open(sys.argv[2] + "/old.bin", "wb").write(old)
PY

# Write row R whole; kill the server once members 1, 2 and 3 hold their
# new blocks (member 0 takes its write 1.5 s later).
expect_run "torn whole-row write" \
  $PYTHON - "$(uri_of "$tmp/raid.sock")" "$tmp" "${pid_of[raid]}" "$R" <<'PY'
import nbd, sys, time, random, threading, os, signal
uri, D, rpid, R = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CH, W = 65536, 3 * 65536
new = random.Random(7).randbytes(W)
open(D + "/new.bin", "wb").write(new)
def blk(i):
    with open("%s/f%d" % (D, i), "rb") as f:
        f.seek((8 << 20) + R * CH); return f.read(CH)
base = {i: blk(i) for i in (0, 1, 2, 3)}
def client():
    h = nbd.NBD(); h.connect_uri(uri)
    try: h.pwrite(new, R * W)
    except nbd.Error: pass
threading.Thread(target=client, daemon=True).start()
t1 = time.time()
while time.time() - t1 < 10:
    if all(blk(i) != base[i] for i in (1, 2, 3)):
        time.sleep(0.05)
        os.kill(rpid, signal.SIGKILL)
        if blk(0) != base[0]: sys.exit("member 0 took its write before the kill")
        if blk(1) != new[CH:2 * CH]: sys.exit("member 1 does not hold the new block")
        print("killed %.2fs after the write" % (time.time() - t1))
        sys.exit(0)
    time.sleep(0.003)
sys.exit("members 1, 2 and 3 never took the write")
PY
wait "${pid_of[raid]}" 2>/dev/null || true
kill -9 "${pid_of[m0]}"; wait "${pid_of[m0]}" 2>/dev/null || true
start_nbdkit m0 file "$tmp/f0"                # its delayed write is lost
kill -9 "${pid_of[m1]}"; wait "${pid_of[m1]}" 2>/dev/null || true
rm -f "$tmp/m1.sock"

start_raid raid2 $ALL control="$tmp/ctl2" member-timeout=60
expect_eq "started without member 1" degraded "$(status_get "$tmp/ctl2" health)"
expect_eq "member 1 missing" missing "$(status_get "$tmp/ctl2" member:1)"
owed="$(status_get "$tmp/ctl2" resync_owed)"
if [[ "$owed" =~ ^[0-9]+$ ]] && [ "$owed" -le $((R * 3 * 65536)) ]; then ok; else
  fail "status owes no resync from row $R or before (resync_owed: '$owed')"
fi
start_nbdkit m1 file "$tmp/f1"                # back: it rejoins
for ((i = 0; i < 600; i++)); do                # the watcher reconnects it
  [ "$(status_get "$tmp/ctl2" member:1)" = in_sync ] && break
  sleep 0.1
done
expect_eq "member 1 rejoined" in_sync "$(status_get "$tmp/ctl2" member:1)"
expect_run "the owed resync ends" "$NBDRAID" -C "$tmp/ctl2" wait --timeout=120
expect_eq "optimal again" optimal "$(status_get "$tmp/ctl2" health)"
expect_eq "no resync owed any more" "" "$(status_get "$tmp/ctl2" resync_owed)"

expect_run "every block reads back old or new" $PYTHON "$testsdir/e2e_common.py" \
  old-or-new "$(uri_of "$tmp/raid2.sock")" "$tmp/old.bin" "$tmp/new.bin" $((R * 3 * 65536))
expect_run "scrub" "$NBDRAID" -C "$tmp/ctl2" check
expect_run "scrub ends" "$NBDRAID" -C "$tmp/ctl2" wait --timeout=120
expect_eq "scrub mismatches" 0 "$(status_get "$tmp/ctl2" mismatch_count)"
stop_nbdkit raid2
finish
