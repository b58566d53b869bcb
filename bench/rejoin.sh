#!/usr/bin/env bash
# nbdkit-raid benchmark: rebuild at member speed, and a delta resync after
# an outage against a full rebuild of the same member.
#
# What it measures.  Every member is `nbdkit --filter=rate file` on tmpfs,
# limited to RATE MB/s each way (rate=RATE*8 Mbit/s), reached over a UNIX
# socket: the rate filter stands for a member on another host with a link
# of that speed, nothing else varies (its burst allowance is cut to 0.1 s,
# so the figures are steady rates).
#   1. One member's write rate: a fresh rate-limited server, written once
#      with random data by nbdcopy (the floor: what a rebuild must write).
#   2. Full rebuild: a RAID5 of NDISKS such members (chunk 64K, consistency
#      journal), filled with random data; member 2 is failed
#      (`nbdraid fail`) and a fresh rate-limited spare added; the time from
#      the add until `nbdraid wait` returns, and the rebuild rate (the
#      member's data area / that time) against the member's write rate.
#      The rebuild reads the row's other members in parallel, so it should
#      run at the spare's write rate, not at a fraction of it.
#   3. Delta resync: the array is served with member-timeout=60; member 3's
#      server is killed, WRITE_PCT % of the array is written in random 64 KiB
#      blocks while it is away (for OUTAGE s at least), the server is
#      started again on the same file, and the time until member 3 is back
#      in sync is measured, with the bytes the delta sent to it (from the
#      status: missed regions x region size) against a full rebuild's.
#
# Usage: bench/rejoin.sh    (from the build directory, or with PLUGIN and
#                            NBDRAID set).  Environment: RATE (MB/s per
#                            member, 100), MEMBER_SIZE (512M), NDISKS (5),
#                            WRITE_PCT (1), OUTAGE (5 s), BENCH_DIR (/dev/shm).
# Prints the figures on stdout (progress on stderr).  About a minute.

set -euo pipefail
export PATH="/usr/bin:$PATH"
export LC_ALL=C

: "${PLUGIN:=$PWD/.libs/nbdkit-raid-plugin.so}"
: "${NBDRAID:=$PWD/nbdraid/nbdraid}"
: "${RATE:=100}"
: "${MEMBER_SIZE:=512M}"
: "${NDISKS:=5}"
: "${WRITE_PCT:=1}"
: "${OUTAGE:=5}"
: "${BENCH_DIR:=/dev/shm}"
PY=/usr/bin/python3
DOFF=$((8 << 20))                 # data offset

for f in "$PLUGIN" "$NBDRAID"; do
  [ -e "$f" ] || { echo "rejoin.sh: $f not found (run from the build dir or set PLUGIN/NBDRAID)" >&2; exit 1; }
done
for c in nbdkit nbdcopy; do
  command -v "$c" >/dev/null || { echo "rejoin.sh: $c is required" >&2; exit 1; }
done
$PY -c 'import nbd' 2>/dev/null || { echo "rejoin.sh: python3-libnbd is required" >&2; exit 1; }

BENCH_NAME=rejoin.sh
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bench_tmp nbdraid-rejoin

mbps () { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", b / t / 1e6 }'; }
declare -a MPID MURI
# member I: (re)start the rate-limited server of $tmp/mI.img.
member ()
{
  [ -z "${MPID[$1]:-}" ] || stop "${MPID[$1]}"
  serve_rated "m$1" "$tmp/m$1.img" "$RATE"
  MPID[$1]=$srv_pid
  MURI[$1]=$uri
}
field () { ctl_field "$tmp/ctl" "$1"; }
mstate () { field "[m['$2'] for m in d['members'] if m['role'] == $1][0]"; }

echo "rejoin.sh: members limited to $RATE MB/s each way, $NDISKS x $MEMBER_SIZE on $BENCH_DIR" >&2
load0="$(cut -d' ' -f1 /proc/loadavg)"

# 1. one member's write rate
head -c 256M /dev/urandom >"$tmp/rand"
truncate -s 256M "$tmp/single.img"
serve_rated single "$tmp/single.img" "$RATE"
t0="$(now)"
nbdcopy "$tmp/rand" "$uri"
t="$(since "$t0")"
stop "$srv_pid"
wrate="$(mbps $((256 << 20)) "$t")"
echo "rejoin.sh: one member's write rate: $wrate MB/s" >&2

# 2. full rebuild of one member onto a spare
for ((i = 0; i <= NDISKS; i++)); do truncate -s "$MEMBER_SIZE" "$tmp/m$i.img"; done
"$NBDRAID" create --level=5 --chunk=64K --data-offset="$DOFF" \
  $(for ((i = 0; i < NDISKS; i++)); do echo "$tmp/m$i.img"; done) >/dev/null
for ((i = 0; i <= NDISKS; i++)); do member "$i"; done
serve raid "$PLUGIN" $(for ((i = 0; i < NDISKS; i++)); do echo "${MURI[$i]}"; done) \
  control="$tmp/ctl" member-timeout=60
raid="$uri"
"$NBDRAID" -C "$tmp/ctl" set speed-max=0 >/dev/null
size="$(nbdinfo --size "$raid")"
echo "rejoin.sh: filling the array ($((size >> 20)) MiB)" >&2
for ((k = 0; k * (256 << 20) < size; k++)); do cat "$tmp/rand"; done 2>/dev/null |
  head -c "$size" >"$tmp/fill" || true        # cat ends by SIGPIPE
nbdcopy "$tmp/fill" "$raid"
rm -f "$tmp/fill"
area=$(( $(stat -c %s "$tmp/m0.img") - DOFF ))
"$NBDRAID" -C "$tmp/ctl" fail "${MURI[2]}" >/dev/null
t0="$(now)"
"$NBDRAID" -C "$tmp/ctl" add "${MURI[$NDISKS]}" >/dev/null
"$NBDRAID" -C "$tmp/ctl" wait >/dev/null
tfull="$(since "$t0")"
[ "$(field 'd["health"]')" = optimal ] || { echo "rejoin.sh: not optimal after the rebuild" >&2; exit 1; }
rrate="$(mbps "$area" "$tfull")"
echo "rejoin.sh: full rebuild: $tfull s" >&2

# 3. delta resync after an outage
"$NBDRAID" -C "$tmp/ctl" check >/dev/null    # settle: nothing owed
"$NBDRAID" -C "$tmp/ctl" wait >/dev/null
stop "${MPID[3]}"; MPID[3]=
t0="$(now)"
written="$($PY - "$raid" "$size" "$WRITE_PCT" <<'EOF'
import random, sys, nbd
uri, size, pct = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
h = nbd.NBD(); h.connect_uri(uri)
rnd = random.Random(7)
blk = 64 << 10
n = int(size * pct / 100) // blk
buf = rnd.randbytes(blk)
for _ in range(n):
    h.pwrite(buf, rnd.randrange(size // blk) * blk)
h.flush(); h.shutdown()
print(n * blk)
EOF
)"
while awk -v e="$(since "$t0")" -v o="$OUTAGE" 'BEGIN { exit !(e < o) }'; do sleep 0.1; done
[ "$(mstate 3 state)" = missing ] || { echo "rejoin.sh: member 3 is $(mstate 3 state), not missing" >&2; exit 1; }
regions="$(mstate 3 missed_regions)"
rbytes="$(mstate 3 missed_region_bytes)"
t0="$(now)"
member 3
for ((k = 0; k < 6000; k++)); do
  [ "$(mstate 3 state)" = in_sync ] && break
  sleep 0.05
done
tdelta="$(since "$t0")"
[ "$(mstate 3 state)" = in_sync ] || { echo "rejoin.sh: member 3 did not rejoin" >&2; exit 1; }
delta=$((regions * rbytes))
load1="$(cut -d' ' -f1 /proc/loadavg)"

cat <<EOF
Members: nbdkit file on $BENCH_DIR behind the rate filter, $RATE MB/s each way;
RAID5 of $NDISKS x $MEMBER_SIZE, chunk 64K, data area $((area >> 20)) MiB per member;
load average $load0 at the start, $load1 at the end.

one member's write rate (nbdcopy, 256 MiB):   $wrate MB/s
full rebuild of one member onto a spare:      $tfull s, $rrate MB/s ($(awk -v a="$rrate" -v b="$wrate" 'BEGIN { printf "%.2f", a / b }')x the member's write rate)
delta resync after a ${OUTAGE} s outage, $WRITE_PCT% of the array written ($((written >> 20)) MiB in 64 KiB blocks):
  missed regions: $regions of $((rbytes >> 10)) KiB = $((delta >> 20)) MiB to resync ($(awk -v a="$delta" -v b="$area" 'BEGIN { printf "%.1f", 100 * a / b }')% of the member)
  back in sync after:                         $tdelta s ($(awk -v a="$tdelta" -v b="$tfull" 'BEGIN { printf "%.2f", a / b }')x the full rebuild's time)
EOF
