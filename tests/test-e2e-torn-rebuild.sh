#!/usr/bin/env bash
# nbdkit-raid: a whole-row write torn by a crash in a row a rebuild has
# passed in memory but not yet recorded.
#
# A RAID5 of four NBD members and a spare; member 0 answers writes 1.5 s
# late.  Member 1 is failed and the spare rebuilds its role (1 MiB/s).
# A full-row write lands in a row below the rebuild's cursor in memory but
# above the one its last record holds, and the array server is killed (-9)
# with the row's other blocks written and member 0's not.  After the
# restart the rebuild goes on from the recorded cursor, so that row is
# rebuilt again from its parity: a write journaled as an intent (make the
# row's parity match its data) left parity no replay could recompute, and
# the rebuilt block read back as neither its old nor its new bytes, with
# the array optimal and its scrub clean.  Such a row is journaled with its
# contents.  Every block must read back old or new, and the scrub find no
# mismatch.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-torn-rebuild "$@"

mu () { uri_of "$tmp/m$1.sock"; }
ALL="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
for i in 0 1 2 3 4; do truncate -s 64M "$tmp/f$i"; done
for i in 1 2 3 4; do start_nbdkit "m$i" file "$tmp/f$i"; done
start_nbdkit m0 --filter=delay file "$tmp/f0" delay-write=1500ms delay-zero=1500ms
create_array --level=5 --chunk=64K --layout=left-symmetric --data-offset=8M \
  --spare="$(mu 4)" $ALL
start_raid raid $ALL "$(mu 4)" control="$tmp/ctl" member-timeout=60

expect_run "fill the first 16 MiB" $PYTHON - "$(uri_of "$tmp/raid.sock")" "$tmp" <<'PY'
import nbd, sys, random
h = nbd.NBD(); h.connect_uri(sys.argv[1])
old = random.Random(1).randbytes(16 << 20)     # rows 0..85 of the array
h.pwrite(old, 0); h.flush(); h.shutdown()
open(sys.argv[2] + "/old.bin", "wb").write(old)
PY
expect_run "rebuild speed" "$NBDRAID" -C "$tmp/ctl" set speed-max=1M
expect_run "fail member 1" "$NBDRAID" -C "$tmp/ctl" fail "$(mu 1)"

# Find a row between the recorded rebuild cursor and the one in memory,
# write it whole, and kill the server once members 2 and 3 hold the new
# blocks (member 0 answers 1.5 s later).
expect_run "torn whole-row write behind the recorded cursor" \
  $PYTHON - "$(uri_of "$tmp/raid.sock")" "$tmp" "${pid_of[raid]}" "$NBDRAID" <<'PY'
import nbd, sys, json, subprocess, time, random, threading, os, signal
uri, D, rpid, NB = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
CH, W = 65536, 3 * 65536
def run_json(*args):
    return json.loads(subprocess.run([NB, *args], capture_output=True, text=True, check=True).stdout)
def recorded():
    m = run_json("examine", "--json", D + "/f2")["members"][0]
    for e in m["members"]:
        if e.get("role") == 1: return e.get("recovery_offset") or 0
    return 0
t0 = time.time()
while True:
    if time.time() - t0 > 60: sys.exit("no row between the two cursors within 60 s")
    done = (run_json("-C", D + "/ctl", "status", "--json").get("progress") or {}).get("done") or 0
    rec = recorded()
    # rows whose block on member 0 is data, member 1 (rebuilt) data too
    cand = [r for r in range(rec // CH, done // CH) if r % 4 in (0, 1) and r >= 2]
    if cand:
        R = cand[-1]
        print("cursor row %d, recorded row %d -> write row %d" % (done // CH, rec // CH, R))
        break
    time.sleep(0.02)
new = random.Random(7).randbytes(W)
open(D + "/new.bin", "wb").write(new); open(D + "/row", "w").write(str(R))
def client():
    h = nbd.NBD(); h.connect_uri(uri)
    try: h.pwrite(new, R * W)
    except nbd.Error: pass
def blk(i):
    with open("%s/f%d" % (D, i), "rb") as f:
        f.seek((8 << 20) + R * CH); return f.read(CH)
base = {i: blk(i) for i in (2, 3)}
threading.Thread(target=client, daemon=True).start()
t1 = time.time()
while time.time() - t1 < 10:
    if all(blk(i) != base[i] for i in (2, 3)):
        time.sleep(0.05)
        os.kill(rpid, signal.SIGKILL)
        print("killed %.2fs after the write; recorded row %d" % (time.time() - t1, recorded() // CH))
        sys.exit(0)
    time.sleep(0.003)
sys.exit("members 2 and 3 never took the write")
PY
wait "${pid_of[raid]}" 2>/dev/null || true
kill -9 "${pid_of[m0]}"; wait "${pid_of[m0]}" 2>/dev/null || true
start_nbdkit m0 file "$tmp/f0"
start_raid raid2 $ALL "$(mu 4)" control="$tmp/ctl2" member-timeout=60
expect_run "full speed" "$NBDRAID" -C "$tmp/ctl2" set speed-max=1G
expect_run "rebuild ends" "$NBDRAID" -C "$tmp/ctl2" wait --timeout=120

expect_run "every block reads back old or new" $PYTHON "$testsdir/e2e_common.py" \
  old-or-new "$(uri_of "$tmp/raid2.sock")" "$tmp/old.bin" "$tmp/new.bin" $(($(cat "$tmp/row") * 3 * 65536))
expect_run "scrub" "$NBDRAID" -C "$tmp/ctl2" check
expect_run "scrub ends" "$NBDRAID" -C "$tmp/ctl2" wait --timeout=120
expect_eq "health after the scrub" optimal "$(status_get "$tmp/ctl2" health)"
expect_eq "scrub mismatches" 0 "$(status_get "$tmp/ctl2" mismatch_count)"
stop_nbdkit raid2
finish
