#!/usr/bin/env bash
# nbdkit-raid benchmark: request latency over members on other hosts.
#
# What it measures.  A member on another host answers each request after a
# network round trip.  Here every member server is `nbdkit --filter=delay
# file` on tmpfs, so each member request costs DELAY ms (rdelay=wdelay=
# DELAY: reads, writes, zeroes and trims; flush is not delayed), reached
# over a UNIX socket: the delay filter stands for the network, nothing else
# varies.  The floor is one such server (the same file plugin and delay)
# used directly, the latency of a single remote disk.  The subject is a
# RAID6 of 5 of them (chunk 64K, 3 data members, full stripe 192K), served
# by the raid plugin, with the consistency policy `journal` (the default)
# and `resync`, and with `journal` again after one member server is killed:
# first while that member is away (missing, within member-timeout: the
# first write to each region while it is away marks its map of missed
# regions, durably, before the write goes on: one more round), then after
# `nbdraid fail` wrote it off (faulty: degraded, no map).  The client (libnbd, one connection) issues one request at a
# time, SAMPLES of each kind, untimed warm-up first:
#   4K read            a 4 KiB read inside one chunk of a live member
#   4K read, degraded  a 4 KiB read of a chunk on the dead member (rebuilt
#                      from the other members of its row)
#   full-stripe write  192 KiB, stripe-aligned (data and parity, no reads)
#   partial write      4 KiB inside one chunk (read-modify-write)
# and prints the median and the 90th percentile, and the median in units
# of DELAY ("rounds" of member requests).  On the floor the writes are one
# request of the same size.
#
# Reading it: the raid plugin issues the member requests of one step in
# parallel, so a step costs one DELAY however many members it touches.  A
# 4K read is one step; a degraded read is one step (the row's other
# members, read together); a full-stripe write is one step with
# consistency=resync, and two with journal, whose record must be durable
# on the members before the in-place writes start; a partial write adds a
# read step before them.  Issued one member at a time the same requests
# would cost DELAY times the number of member requests.
#
# Usage: bench/net.sh     (from the build directory, or with PLUGIN and
#                          NBDRAID set).  Environment: DELAY (ms, 10),
#                          SAMPLES (25), BENCH_DIR (tmpfs, /dev/shm).
# Prints the table on stdout (progress on stderr).  About 20 s at 10 ms.

set -euo pipefail
export PATH="/usr/bin:$PATH"
export LC_ALL=C

: "${PLUGIN:=$PWD/.libs/nbdkit-raid-plugin.so}"
: "${NBDRAID:=$PWD/nbdraid/nbdraid}"
: "${DELAY:=10}"
: "${SAMPLES:=25}"
: "${BENCH_DIR:=/dev/shm}"
PY=/usr/bin/python3
NDISKS=5
CHUNK=65536
MEMBER_SIZE=64M
DEAD=2

for f in "$PLUGIN" "$NBDRAID"; do
  [ -e "$f" ] || { echo "net.sh: $f not found (run from the build dir or set PLUGIN/NBDRAID)" >&2; exit 1; }
done
command -v nbdkit >/dev/null || { echo "net.sh: nbdkit is required" >&2; exit 1; }
$PY -c 'import nbd' 2>/dev/null || { echo "net.sh: python3-libnbd is required" >&2; exit 1; }

BENCH_NAME=net.sh
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bench_tmp nbdraid-net

declare -a MPID MURI
# members [delayed]: (re)start the member servers on $tmp/mI.img.
members ()
{
  local i
  local -a f=() p=()
  if [ "${1:-}" = delayed ]; then f=(--filter=delay); p=(rdelay="${DELAY}ms" wdelay="${DELAY}ms"); fi
  for ((i = 0; i < NDISKS; i++)); do
    [ -z "${MPID[$i]:-}" ] || stop "${MPID[$i]}"
    serve "m$i" "${f[@]}" file "$tmp/m$i.img" "${p[@]}"
    MPID[$i]=$srv_pid
    MURI[$i]=$uri
  done
}

# measure LABEL URI MODE: MODE "single" (one plain disk) or "raid DEAD"
# (-1: all members live).  Appends "LABEL KIND MEDIAN P90" lines to
# $tmp/figures.
measure ()
{
  $PY - "$1" "$2" "$3" "$NDISKS" "$CHUNK" "$SAMPLES" >>"$tmp/figures" <<'EOF'
import random, statistics, sys, time
import nbd

label, uri, mode, n, chunk, samples = sys.argv[1:7]
n, chunk, samples = int(n), int(chunk), int(samples)
dead = int(mode.split()[1]) if mode.startswith("raid") else -1
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
rnd = random.Random(5)
data_disks = n - 2
width = chunk * data_disks                  # one full stripe of data

def data_disk(row, k):
    # md's RAID6 left-symmetric placement: P on n-1-(row mod n), Q after
    # it, data index k on (P + 2 + k) mod n.
    return (n - 1 - row % n + 2 + k) % n

def timed(fn):
    t0 = time.monotonic()
    fn()
    return (time.monotonic() - t0) * 1000.0

rows = size // width
live, on_dead = [], []
for row in range(min(rows, 4096)):
    for k in range(data_disks):
        off = row * width + k * chunk + 8192
        (on_dead if mode != "single" and data_disk(row, k) == dead else live).append(off)
buf4k, bufw = rnd.randbytes(4096), rnd.randbytes(width)
# Untimed: the first read, and a first full-stripe write (which may mark
# the array dirty in the superblocks once).
h.pread(4096, 0)
h.pwrite(bufw, 0)
res = {}
res["read4k"] = [timed(lambda o=o: h.pread(4096, o)) for o in rnd.sample(live, samples)]
if dead >= 0:
    res["read4k-degraded"] = [timed(lambda o=o: h.pread(4096, o)) for o in rnd.sample(on_dead, samples)]
res["write-fullstripe"] = [timed(lambda r=r: h.pwrite(bufw, r * width))
                           for r in rnd.sample(range(1, rows), samples)]
res["write-partial"] = [timed(lambda o=o: h.pwrite(buf4k, o)) for o in rnd.sample(live, samples)]
h.shutdown()
for kind, ms in res.items():
    ms.sort()
    p90 = ms[min(len(ms) - 1, (len(ms) * 9 + 9) // 10 - 1)]
    print("%s %s %.1f %.1f" % (label, kind, statistics.median(ms), p90))
EOF
}

: >"$tmp/figures"
echo "net.sh: member delay ${DELAY} ms, $SAMPLES samples per case, storage $tmp" >&2

# The floor: one disk with the same delay, used directly.
truncate -s "$MEMBER_SIZE" "$tmp/base.img"
serve base --filter=delay file "$tmp/base.img" rdelay="${DELAY}ms" wdelay="${DELAY}ms"
base_pid=$srv_pid
echo "net.sh: single member" >&2
measure single "$uri" single
stop "$base_pid"

for pol in journal resync; do
  rm -f "$tmp"/m*.img
  for ((i = 0; i < NDISKS; i++)); do truncate -s "$MEMBER_SIZE" "$tmp/m$i.img"; done
  members                                  # no delay: creation is not timed
  "$NBDRAID" create --level=6 --chunk=64K --consistency="$pol" "${MURI[@]}" \
    >"$tmp/create.log" 2>&1 || { cat "$tmp/create.log" >&2; exit 1; }
  members delayed
  serve "raid-$pol" "$PLUGIN" "${MURI[@]}" control="$tmp/ctl"
  raid_pid=$srv_pid
  echo "net.sh: RAID6 $pol" >&2
  measure "$pol" "$uri" "raid -1"
  if [ "$pol" = journal ]; then
    stop "${MPID[$DEAD]}"; MPID[$DEAD]=
    # The first request that needs the member finds its server gone: it
    # is away (missing) until member-timeout, and each first write to a
    # region marks its map of missed regions first.
    $PY -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try: h.pread(1 << 20, 0)
except nbd.Error: pass' "$uri"
    echo "net.sh: RAID6 $pol, member $DEAD away" >&2
    measure "$pol-away" "$uri" "raid $DEAD"
    # Written off (what member-timeout does later): faulty, no map.
    "$NBDRAID" -C "$tmp/ctl" fail "${MURI[$DEAD]}" >/dev/null
    echo "net.sh: RAID6 $pol, member $DEAD failed" >&2
    measure "$pol-degraded" "$uri" "raid $DEAD"
  fi
  stop "$raid_pid"
done

# The table: median (p90) in ms, and the median in rounds of DELAY.
$PY - "$tmp/figures" "$DELAY" "$NDISKS" <<'EOF'
import sys
fig, delay, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
r = {}
for line in open(fig):
    label, kind, med, p90 = line.split()
    r[label, kind] = (float(med), float(p90))
cols = [("single", "one member"), ("journal", "RAID6 journal"),
        ("resync", "RAID6 resync"), ("journal-away", "RAID6 journal, 1 away"),
        ("journal-degraded", "RAID6 journal, 1 failed")]
rows = [("read4k", "4K read"), ("read4k-degraded", "4K read of the dead member"),
        ("write-fullstripe", "full-stripe write (192K)"), ("write-partial", "partial write (4K)")]
print("RAID6 of %d members (chunk 64K, 3 data), each member nbdkit file + delay filter "
      "%g ms per read/write;" % (n, delay))
print("one request at a time; median (90th percentile) in ms, [median in units of the delay]")
print()
print("| %-27s | %-20s | %-20s | %-20s | %-22s | %-22s |" % (("case",) + tuple(c[1] for c in cols)))
print("|%s|%s|%s|%s|%s|%s|" % ("-" * 29, "-" * 22, "-" * 22, "-" * 22, "-" * 24, "-" * 24))
for kind, name in rows:
    cells = []
    for label, _ in cols:
        v = r.get((label, kind))
        cells.append("%6.1f (%5.1f) [%.1f]" % (v[0], v[1], v[0] / delay) if v else "-")
    print("| %-27s | %-20s | %-20s | %-20s | %-22s | %-22s |" % ((name,) + tuple(cells)))
print()
print("member requests per case (issued one after another they would cost that many "
      "delays): 4K read 1; degraded read %d; full-stripe write %d (%d degraded), journal "
      "+3 log copies; partial write 2-3 reads, then 3 writes, journal +3 log copies"
      % (n - 2, n, n - 1))
EOF
