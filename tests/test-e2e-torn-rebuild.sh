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
set -o pipefail
export PATH=/usr/bin:$PATH
: "${PLUGIN:?}" "${NBDRAID:?}"
D=$(mktemp -d /tmp/test-e2e-torn-rebuild.XXXXXX)
SPEED=1M
declare -A PID
mu () { echo "nbd+unix:///?socket=$D/m$1.sock"; }
start_member () {
  rm -f $D/m$1.sock $D/m$1.pid
  nbdkit -f -U $D/m$1.sock -P $D/m$1.pid ${2:+--filter=$2} file $D/f$1 $3 $4 >>$D/m$1.log 2>&1 </dev/null &
  PID[m$1]=$!
  for i in $(seq 200); do [ -S $D/m$1.sock ] && [ -s $D/m$1.pid ] && return 0; sleep 0.05; done
  echo "member $1 not ready"; exit 1
}
start_raid () {
  rm -f $D/$1.sock
  echo "==== $1" >>$D/raid.log
  nbdkit -f -U $D/$1.sock -P $D/$1.pid --log=stderr $PLUGIN "${@:2}" >>$D/raid.log 2>&1 </dev/null &
  PID[$1]=$!
  for i in $(seq 400); do [ -S $D/$1.sock ] && [ -s $D/$1.pid ] && return 0; kill -0 ${PID[$1]} 2>/dev/null || { echo raid died; tail $D/raid.log; exit 1; }; sleep 0.05; done
  echo "raid not ready"; exit 1
}
cleanup () { for p in "${PID[@]}"; do kill -9 $p 2>/dev/null; done; rm -rf "$D"; }
trap cleanup EXIT
for i in 0 1 2 3 4; do truncate -s 64M $D/f$i; done
for i in 1 2 3 4; do start_member $i; done
start_member 0 delay delay-write=1500ms delay-zero=1500ms
ALL="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
$NBDRAID create --level=5 --chunk=64K --layout=left-symmetric --data-offset=8M --spare=$(mu 4) $ALL >/dev/null || exit 1
start_raid raid $ALL $(mu 4) control=$D/ctl member-timeout=60
python3 - "nbd+unix:///?socket=$D/raid.sock" $D <<'PY'
import nbd, sys, random
h = nbd.NBD(); h.connect_uri(sys.argv[1])
old = random.Random(1).randbytes(16 << 20)     # first 16M of the array (rows 0..85)
h.pwrite(old, 0); h.flush(); h.shutdown()
open(sys.argv[2] + "/old.bin", "wb").write(old)
PY
$NBDRAID -C $D/ctl set speed-max=$SPEED >/dev/null
$NBDRAID -C $D/ctl fail $(mu 1) >/dev/null
python3 - "nbd+unix:///?socket=$D/raid.sock" $D ${PID[raid]} $NBDRAID <<'PY' || exit 1
import nbd, sys, json, subprocess, time, random, threading, os, signal, hashlib
uri, D, rpid, NB = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
CH, W = 65536, 3 * 65536
def persisted():
    j = json.loads(subprocess.run([NB, "examine", "--json", D + "/f2"], capture_output=True, text=True).stdout)
    m = j["members"][0]
    for e in m["members"]:
        if e.get("role") == 1: return e
def cursor():
    j = json.loads(subprocess.run([NB, "-C", D + "/ctl", "status", "--json"], capture_output=True, text=True).stdout)
    return j
js = cursor()
open(D + "/status0.json", "w").write(json.dumps(js, indent=1))
t0 = time.time()
while time.time() - t0 < 60:
    js = cursor()
    pos = (js.get("progress") or {}).get("done") or 0
    pe = persisted(); po = pe.get("recovery_offset") or 0
    rcur, rper = pos // CH, po // CH
    cand = [r for r in range(rper, rcur) if r % 4 in (0, 1) and r >= 2]
    if cand:
        R = cand[-1]
        print("cursor row %d, durable row %d -> write row %d" % (rcur, rper, R))
        break
    time.sleep(0.02)
else:
    print("no window", js.get("sync"), pe); sys.exit(1)
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
        print("killed %.2fs after the write; durable recovery_offset row %d; member 0 written: %s" % (time.time() - t1, (persisted().get("recovery_offset") or 0) // CH, blk(0) != b""))
        break
    time.sleep(0.003)
else:
    print("members 2,3 never changed"); sys.exit(1)
PY
wait ${PID[raid]} 2>/dev/null
kill -9 ${PID[m0]}; wait ${PID[m0]} 2>/dev/null; start_member 0
start_raid raid2 $ALL $(mu 4) control=$D/ctl2 member-timeout=60
$NBDRAID -C $D/ctl2 set speed-max=1G >/dev/null
$NBDRAID -C $D/ctl2 wait --timeout=120 >/dev/null
grep -iE "replay" $D/raid.log | tail -2
python3 - "nbd+unix:///?socket=$D/raid2.sock" $D <<'PY'
import nbd, sys
uri, D = sys.argv[1], sys.argv[2]
CH, W = 65536, 3 * 65536
R = int(open(D + "/row").read()); old = open(D + "/old.bin", "rb").read(); new = open(D + "/new.bin", "rb").read()
h = nbd.NBD(); h.connect_uri(uri)
got = h.pread(16 << 20, 0)
bad = 0
for a in range(0, 16 << 20, 4096):
    g = got[a:a+4096]
    ok = g == old[a:a+4096] or (R*W <= a < (R+1)*W and g == new[a-R*W:a-R*W+4096])
    if not ok:
        bad += 1
        if bad <= 4: print("  block %d (row %d, data index %d): neither old nor new" % (a, a // W, (a % W) // CH))
print("RESULT:", "VIOLATION" if bad else "OK", "bad blocks", bad)
sys.exit(1 if bad else 0)
PY
rc=$?
$NBDRAID -C $D/ctl2 check >/dev/null; $NBDRAID -C $D/ctl2 wait --timeout=120 >/dev/null
$NBDRAID -C $D/ctl2 status --json | python3 -c "
import json, sys
j = json.load(sys.stdin)
print('health', j.get('health'), 'mismatch', j.get('mismatch_count'))
sys.exit(0 if j.get('health') == 'optimal' and j.get('mismatch_count') == 0 else 1)" || rc=1
exit $rc
