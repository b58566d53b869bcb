#!/usr/bin/env bash
# nbdkit-raid benchmark: the array over slow members and over far members,
# against ONE such member measured in the same run.
#
# What it measures.  Members are `nbdkit file` on tmpfs (BENCH_DIR) behind
# a filter that stands for what makes a real member slow, reached over
# UNIX sockets; the client is fio's nbd engine (libnbd, one connection,
# iodepth requests in flight), RUNTIME s per run after RAMP of ramp (the
# rate: the bytes completed from 250 ms after the ramp to the end of
# RUNTIME, from fio's status dumps: lib.sh, fio_run).  Each case runs
# REPS times, the targets of the case in turn (one member, array, one
# member, array, ...) so that drift hits them alike; the MEDIAN counts.
# Ratios are array / one member; limits and targets are in the same unit
# (multiples of the one member's measured figure).  N = NDISKS.
#
# A. Slow members (bandwidth).  Each member: `nbdkit --filter=rate file IMG
#    rate=RATE*8M burstiness=0.1`: RATE MiB/s (the filter counts bits per
#    second, nbdkit's M is 2^20: rate=800M is 104.9 MB/s; it limits reads
#    and writes separately: RATE each way); the
#    burst allowance is 0.1 s of the rate, so idling between cases buys no
#    burst.  Baseline: one such member alone.  Subject: RAID5 of N of them
#    (chunk 64K, consistency journal, the default); for the sequential write
#    also a RAID6 of N more (RAID6=0 skips it).  The arrays are filled whole
#    with sequential 1M writes before their members are rate-limited (served
#    from the files directly), the one member by one pass of 1M writes
#    through its filter: reads never hit holes.  Cases:
#      seq write 1M QD32         limit (N-1)R RAID5, (N-2)R RAID6: parity
#                                takes its share of every member's writes;
#                                target >= 0.95 of it.  When 1M is not a
#                                multiple of a row's data (RAID6 of 5: 3 x
#                                64K), the requests' ends are partial rows
#                                (read-modify-write, journalled in full), so
#                                the case also runs with the largest block
#                                of whole rows under 1M (960K), labelled
#                                "whole rows"
#      seq write 4K QD32         the same sequential stream in 4K requests,
#                                against the same array's 1M figure (the
#                                full-stripe rate): the write gather joins
#                                them into whole rows; target >= 0.7 of it.
#                                Also run on a plain `nbdkit file` of the
#                                same storage, no filter ("file, no
#                                filter"): what fio and one nbdkit carry in
#                                4K requests on this machine at all, the
#                                ceiling of any array's 4K stream; the
#                                table gives the array's stream against it
#                                (no target)
#      seq read 1M QD32          limit N R: parity chunks are skipped, so
#                                every member delivers data; target >= 0.95
#      4K random read, write, QD1 and QD32: IOPS, no target
#      degraded seq read 1M QD32 member 2 failed (`nbdraid fail`), its
#                                server stopped and the member removed; the
#                                one member's seq read is measured again
#                                alongside.  Limit (N-1)R: a row's N-1 live
#                                chunks are read; target >= 0.9
#      rebuild                   a fresh rate-limited spare is added
#                                (`nbdraid add`) to that degraded array, timed
#                                until `nbdraid wait` returns; rate = the
#                                member data area / time.  Limit R (the
#                                spare's write rate: one member's seq write);
#                                target >= 0.8
#      reshape                   the filled, optimal RAID5 grows to N+1
#                                members (`nbdraid reshape --add=NEW`, then
#                                `start`, timed until `wait` returns); rate =
#                                bytes moved (the array size D) / time.  A
#                                grow reads every data chunk once (D bytes
#                                from N members: D/(N R) s) and writes every
#                                data chunk and the new parity across N+1
#                                members (D(N+1)/N bytes at (N+1)R: D/(N R)
#                                s, the aggregate member write bandwidth's
#                                share of data).  Reads and writes are limited
#                                separately, so with the two overlapped the
#                                limit is N x min(read R, write R) of array
#                                data per second (524 MB/s at N=5, R=100);
#                                done one after the other, half that.
#                                Target >= 0.7 of the limit.
#      rebuild and reshape, 0.01 s burst
#                                the same two jobs on a second RAID5 whose
#                                members (and spare, and new member) have a
#                                burst allowance of 0.01 s, behind the
#                                blocksize filter (maxdata=256K; see member
#                                below) (STRICT=0 skips it).  Each
#                                direction's bucket refills while that
#                                direction idles, and at 0.1 s (10 MiB) it
#                                holds a whole background step: a job that
#                                reads, then writes, then reads again is
#                                charged for about one direction, which a
#                                real link, banking no idle time, would not
#                                do.  At 0.01 s (1 MiB) it is not.  Same
#                                limits and targets.
#
# B. Far members (latency).  Each member: `nbdkit --filter=delay
#    --filter=noparallel file IMG rdelay=DELAYms wdelay=DELAYms
#    serialize=all-requests`: every read and write takes DELAY ms and the
#    server handles one request at a time over all connections, like one
#    remote disk, so one member at QD32 serves about 1000/DELAY requests/s.
#    (noparallel's serialization is a thread model, which nbdkit applies to
#    the whole filter stack, so the order of the two filters does not
#    matter: one member at QD32 with DELAY=1, 4K random, measured 798 reads
#    and 842 writes/s with delay outermost, 838 and 750 with noparallel
#    outermost, and 11974 and 13167 without noparallel (nbdkit's 16
#    threads each sleeping 1 ms).  The run prints the member's figure and
#    says "NOT SERIALIZED" if it exceeds 1.5 x 1000/DELAY.)  Baseline: one such
#    member; subject: RAID5 of N of them (chunk 64K, journal), filled like
#    A's; and for the 4K random write at QD32 the same array created
#    --consistency=bitmap (BITMAP=0 skips it).  Cases: 4K random read QD1,
#    QD32; 4K random write QD1, QD32.  With M = one member's requests/s at
#    QD32 (measured):
#      4K random read QD32      limit N M (one member request per read);
#                               target >= 0.9.  32 requests sent each to
#                               a random one of N members leave some
#                               members idle at times: no array can pass
#                               0.937 N M at N=5, 0.894 at N=8 (the run
#                               prints this share, simulated)
#      4K random write QD32     limit N M / 4: a read-modify-write costs 2
#                               reads and 2 writes on 2 members; target >=
#                               0.9.  The journal policy adds its record,
#                               with FUA, on the row's parity member: 5
#                               requests (N M / 5) when each record is its
#                               own member write; records bound for a far
#                               member while its log write is in flight
#                               share the next one, so under load it costs
#                               less;
#                               bitmap adds a bitmap write only when a write
#                               dirties a clean region.
#    QD1 cases: no target (one request costs 1 round of DELAY for a read; 3
#    for a journalled write: read, record, in place; see bench/net.sh).
#
# Delta resync after an outage is measured by bench/rejoin.sh, not here.
#
# Usage: bench/slow.sh     (from the build directory, or with PLUGIN and
#                           NBDRAID set)
# Environment: RATE (whole MiB/s per member each way, 100), DELAY (whole
#              ms, 1),
#              NDISKS (5; 3 to 32; part A: at most 17, at least 4 with
#              RAID6=1), REPS (3), RUNTIME (4), RAMP (fio ramp, 500ms),
#              MEMBER_SIZE (256M), FIO_SIZE (fio's region, MEMBER_SIZE: it
#              must fit the one member), PARTS ("A B"), RAID6 (1),
#              BITMAP (1), STRICT (1), THREADS (the array server's nbdkit -t,
#              64: what nbdkit-raid-plugin(1), Serving, advises for members
#              that answer slowly; with nbdkit's default of 16 threads per
#              connection at most 16 of fio's 32 requests are in progress,
#              and members sit idle; empty: nbdkit's default),
#              BENCH_DIR (/dev/shm).
# Prints the tables on stdout (progress on stderr).  About 7 minutes.

set -euo pipefail
export PATH="/usr/bin:$PATH"
export LC_ALL=C

: "${PLUGIN:=$PWD/.libs/nbdkit-raid-plugin.so}"
: "${NBDRAID:=$PWD/nbdraid/nbdraid}"
: "${RATE:=100}"
: "${DELAY:=1}"
: "${NDISKS:=5}"
: "${REPS:=3}"
: "${RUNTIME:=4}"
: "${RAMP:=500ms}"
: "${MEMBER_SIZE:=256M}"
: "${FIO_SIZE:=$MEMBER_SIZE}"
: "${PARTS:=A B}"
: "${RAID6:=1}"
: "${BITMAP:=1}"
: "${THREADS=64}"
: "${STRICT:=1}"
STRICT_BURST=0.01
: "${BENCH_DIR:=/dev/shm}"
PY=/usr/bin/python3
DEAD=2                                  # the role failed in A

for f in "$PLUGIN" "$NBDRAID"; do
  [ -e "$f" ] || { echo "slow.sh: $f not found (run from the build dir or set PLUGIN/NBDRAID)" >&2; exit 1; }
done
for c in fio nbdkit nbdinfo; do
  command -v "$c" >/dev/null || { echo "slow.sh: $c is required" >&2; exit 1; }
done
# RAID5 needs 3 members, part A's RAID6 4; part A's whole-row block (the
# largest multiple of a row under 1M) needs a row of at most 1M: 17.
min_disks=3 max_disks=32
[[ " $PARTS " != *" A "* ]] || { max_disks=17; [ "$RAID6" != 1 ] || min_disks=4; }
[[ "$NDISKS" =~ ^[1-9][0-9]*$ ]] && [ "$NDISKS" -ge "$min_disks" ] && [ "$NDISKS" -le "$max_disks" ] ||
  { echo "slow.sh: NDISKS must be a whole number from $min_disks to $max_disks (part A: at most 17, and at least 4 with RAID6=1)" >&2; exit 1; }
# nbdkit's rate filter takes whole bits per second (RATE * 8 Mi) and this
# nbdkit's delay filter whole milliseconds: it reads DELAY=0.5 as "0ms".
[[ "$RATE" =~ ^[1-9][0-9]*$ ]] || { echo "slow.sh: RATE must be a whole number of MiB/s, not '$RATE'" >&2; exit 1; }
[[ "$DELAY" =~ ^[1-9][0-9]*$ ]] ||
  { echo "slow.sh: DELAY must be a whole number of milliseconds (the delay filter takes no fractions), not '$DELAY'" >&2; exit 1; }

BENCH_NAME=slow.sh
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bench_tmp nbdraid-slow

res="$tmp/results"
: >"$res"
declare -A URI MURI MPID

# member KIND NAME IMG: serve IMG as a member of KIND
#   rated   RATE MiB/s each way, burst allowance 0.1 s (serve_rated)
#   strict  the same with a burst allowance of 0.01 s, behind the blocksize
#           filter (maxdata=256K): the rate filter refills a bucket at most
#           to its capacity between two sleeps, so a request larger than
#           the bucket (1 MiB at 0.01 s) is charged more than its size
#           (measured: 4M writes at QD1 ran at 46 MB/s); in 256K pieces
#           every pattern runs at the rate (4M QD1, 64K QD1, 1M QD32, 4K
#           QD32: 104-107 MB/s)
#   far     DELAY ms per read or write, one request at a time over all
#           connections
member ()
{
  case "$1" in
    rated) serve_rated "$2" "$3" "$RATE" ;;
    strict) serve "$2" --filter=blocksize --filter=rate file "$3" rate="$((RATE * 8))M" \
              burstiness="$STRICT_BURST" maxdata=256K ;;
    far) serve "$2" --filter=delay --filter=noparallel file "$3" \
           rdelay="${DELAY}ms" wdelay="${DELAY}ms" serialize=all-requests ;;
  esac
}

# prepare NAME LEVEL [CREATE-OPTIONS]: a new array of N sparse files
# $tmp/NAME-mI.img, filled whole with sequential 1M writes while served
# from the files directly (no filter: quick), then stopped.
prepare ()
{
  local name="$1" level="$2" i; shift 2
  local -a f=()
  for ((i = 0; i < NDISKS; i++)); do f+=("$tmp/$name-m$i.img"); done
  "$NBDRAID" create --level="$level" --chunk=64K --size="$MEMBER_SIZE" "$@" "${f[@]}" \
    >"$tmp/create.log" 2>&1 || { cat "$tmp/create.log" >&2; exit 1; }
  serve "$name-fill" "$PLUGIN" "${f[@]}"
  FIO_SIZE="$(nbdinfo --size "$uri")" fio_run "$uri" write 1M 32 no >/dev/null
  stop "$srv_pid"
}

# members KIND NAME: serve the members of array NAME (see member), then
# the array on them as target NAME with control=$tmp/NAME.ctl.
members ()
{
  local kind="$1" name="$2" i
  local -a u=()
  for ((i = 0; i < NDISKS; i++)); do
    member "$kind" "$name-m$i" "$tmp/$name-m$i.img"
    MURI[$name,$i]=$uri
    MPID[$name,$i]=$srv_pid
    u+=("$uri")
  done
  serve "$name" ${THREADS:+-t "$THREADS"} "$PLUGIN" "${u[@]}" control="$tmp/$name.ctl"
  URI[$name]=$uri
  MPID[$name]=$srv_pid
}

# run_case PART KEY RW BS QD TARGET...: REPS rounds, each target in turn;
# a TARGET:BS runs TARGET with that block size instead, recorded as
# TARGET-BS.
run_case ()
{
  local part="$1" key="$2" rw="$3" bs="$4" qd="$5" rep t r; shift 5
  for ((rep = 1; rep <= REPS; rep++)); do
    for t in "$@"; do
      if [[ "$t" == *:* ]]; then
        r="$(fio_run "${URI[${t%%:*}]}" "$rw" "${t#*:}" "$qd")"
        t="${t%%:*}-${t#*:}"
      else
        r="$(fio_run "${URI[$t]}" "$rw" "$bs" "$qd")"
      fi
      echo "$part $t $key $r" >>"$res"
      awk -v t="$t" -v k="$key" -v rep="$rep" -v r="$r" -v e="$(since "$t_start")" 'BEGIN {
        split(r, a, " ");
        printf "  [%3d s] %s: %s #%d: %.1f MB/s, %d IOPS\n", e, t, k, rep, a[1] / 1e6, a[2] }' >&2
    done
  done
}

# degrade NAME: fail member DEAD of array NAME, kill its server (its host
# dies: SIGTERM would wait for the array to hang up), remove it.
degrade ()
{
  local ctl="$tmp/$1.ctl"
  say "$1: failing member $DEAD"
  ctl_ok "$ctl" fail "${MURI[$1,$DEAD]}"
  kill -9 "${MPID[$1,$DEAD]}"
  stop "${MPID[$1,$DEAD]}"
  ctl_ok "$ctl" remove "${MURI[$1,$DEAD]}"
  expect "$ctl" 'd["health"]' degraded
}

# rebuild NAME KIND: add a fresh spare of KIND to the degraded array
# NAME, time it until `nbdraid wait` returns; records "X NAME rebuild
# BYTES SECONDS" (BYTES: the member data area, i.e. the component size).
rebuild ()
{
  local ctl="$tmp/$1.ctl" bytes t0 t
  truncate -s "$MEMBER_SIZE" "$tmp/$1-spare.img"
  member "$2" "$1-spare" "$tmp/$1-spare.img"
  bytes="$(ctl_field "$ctl" 'd["size"] // d["data_disks"]')"
  t0="$(now)"
  ctl_ok "$ctl" add "$uri"
  ctl_ok "$ctl" wait
  t="$(since "$t0")"
  expect "$ctl" 'd["health"]' optimal
  echo "X $1 rebuild $bytes $t" >>"$res"
  say "$1: rebuild: $((bytes >> 20)) MiB in $t s"
}

# grow NAME KIND: reshape the array NAME to one more (fresh) member of KIND: `reshape --add`, then `start` timed until `wait` returns; records
# "X NAME reshape BYTES SECONDS" (BYTES: the array size before, all moved).
grow ()
{
  local ctl="$tmp/$1.ctl" bytes t0 t
  truncate -s "$MEMBER_SIZE" "$tmp/$1-new.img"
  member "$2" "$1-new" "$tmp/$1-new.img"
  bytes="$(ctl_field "$ctl" 'd["size"]')"
  ctl_ok "$ctl" reshape --add="$uri"
  t0="$(now)"
  ctl_ok "$ctl" start
  ctl_ok "$ctl" wait
  t="$(since "$t0")"
  expect "$ctl" 'd["raid_devices"]' $((NDISKS + 1))
  expect "$ctl" 'd["health"]' optimal
  echo "X $1 reshape $bytes $t" >>"$res"
  say "$1: reshape $NDISKS -> $((NDISKS + 1)) members: $((bytes >> 20)) MiB in $t s"
}

say () { echo "slow.sh: [$(since "$t_start" | cut -d. -f1) s] $*" >&2; }
ctl_ok () { "$NBDRAID" -C "$1" "${@:2}" >"$tmp/ctl.out" 2>&1 || { echo "slow.sh: nbdraid ${*:2} failed:" >&2; cat "$tmp/ctl.out" >&2; exit 1; }; }
expect () { local v; v="$(ctl_field "$1" "$2")"; [ "$v" = "$3" ] || { echo "slow.sh: $2 is $v, not $3" >&2; exit 1; }; }

# baseline KIND NAME: the one member of this part, served and filled.
baseline ()
{
  truncate -s "$MEMBER_SIZE" "$tmp/$2.img"
  member "$1" "$2" "$tmp/$2.img"
  URI[$2]=$uri
  fio_run "$uri" write 1M 32 no >/dev/null
}

echo "slow.sh: storage $tmp ($(df --output=fstype "$tmp" | tail -1)), ${RUNTIME}s per run after $RAMP ramp, median of $REPS; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
t_start="$(now)"
load0="$(cut -d' ' -f1 /proc/loadavg)"

if [[ " $PARTS " == *" A "* ]]; then
  say "A. slow members: $RATE MiB/s each way, RAID5 of $NDISKS x $MEMBER_SIZE"
  baseline rated one
  say "filling the arrays"
  prepare raid5 5
  members rated raid5
  # A 1M write is whole stripe rows only when 1M is a multiple of the
  # row's data (64K per data member); when it is not (RAID6 of 5: 192K),
  # the sequential write also runs with the largest such block under 1M.
  wt=(raid5)
  aligned=$(( (1024 / (64 * (NDISKS - 1))) * 64 * (NDISKS - 1) ))
  [ "$aligned" = 1024 ] || wt+=("raid5:${aligned}k")
  if [ "$RAID6" = 1 ]; then
    prepare raid6 6
    members rated raid6
    wt+=(raid6)
    aligned=$(( (1024 / (64 * (NDISKS - 2))) * 64 * (NDISKS - 2) ))
    [ "$aligned" = 1024 ] || wt+=("raid6:${aligned}k")
  fi
  say "measuring"
  run_case A seqwrite write 1M 32 one "${wt[@]}"
  # The same stream in 4K requests (as a filesystem writes when nothing
  # merges): the write gather joins them into whole rows.  Beside it, the
  # same stream on a plain `nbdkit file` of the same storage, no filter:
  # what this machine's NBD request path (fio, one nbdkit) carries at all
  # in 4K requests, the ceiling of the array's 4K stream whatever its
  # members can take.
  truncate -s "$MEMBER_SIZE" "$tmp/free.img"
  serve free file "$tmp/free.img"
  URI[free]=$uri
  fio_run "$uri" write 1M 32 no >/dev/null
  s4=(free raid5); [ "$RAID6" = 1 ] && s4+=(raid6)
  run_case A sw4k write 4k 32 "${s4[@]}"
  stop "$srv_pid"
  rm -f "$tmp/free.img"
  if [ "$RAID6" = 1 ]; then
    stop "${MPID[raid6]}"
    for ((i = 0; i < NDISKS; i++)); do stop "${MPID[raid6,$i]}"; done
    rm -f "$tmp"/raid6-m*.img
  fi
  run_case A seqread read 1M 32 one raid5
  run_case A rr1 randread 4k 1 one raid5
  run_case A rr32 randread 4k 32 one raid5
  run_case A rw1 randwrite 4k 1 one raid5
  run_case A rw32 randwrite 4k 32 one raid5

  degrade raid5
  run_case A degraded read 1M 32 one raid5
  rebuild raid5 rated
  grow raid5 rated
  stop_all
  rm -f "$tmp"/*.img

  # The same with a burst allowance of 0.01 s: a background step that
  # alternates reads and writes no longer draws on the bucket of the
  # direction that idled meanwhile (see the header).
  if [ "$STRICT" = 1 ]; then
    say "rebuild and reshape again, members with burstiness $STRICT_BURST"
    prepare strict 5
    members strict strict
    degrade strict
    rebuild strict strict
    grow strict strict
  fi
  stop_all
  rm -f "$tmp"/*.img
fi

if [[ " $PARTS " == *" B "* ]]; then
  say "B. far members: ${DELAY} ms per request, one at a time; RAID5 of $NDISKS x $MEMBER_SIZE"
  baseline far fone
  prepare far5 5
  members far far5
  B5=()
  if [ "$BITMAP" = 1 ]; then
    prepare far5b 5 --consistency=bitmap
    members far far5b
    B5=(far5b)
  fi
  run_case B rr1 randread 4k 1 fone far5
  run_case B rr32 randread 4k 32 fone far5
  run_case B rw1 randwrite 4k 1 fone far5
  run_case B rw32 randwrite 4k 32 fone far5 "${B5[@]}"
  stop_all
  rm -f "$tmp"/*.img
fi
elapsed="$(since "$t_start")"
load0="$load0 at the start, $(cut -d' ' -f1 /proc/loadavg) at the end"

# The tables.
$PY - "$res" "$NDISKS" "$RATE" "$DELAY" "$MEMBER_SIZE" "$REPS" "$RUNTIME" "$RAMP" "${THREADS:-16 (default)}" \
  "$elapsed" "$load0" "$STRICT_BURST" <<'EOF'
import heapq, random, statistics, sys
(fn, n, rate, delay, msize, reps, runtime, ramp, threads,
 elapsed, load, strict_burst) = sys.argv[1:]
n, rate, delay = int(n), float(rate), float(delay)
runs, bg = {}, {}
for line in open(fn):
    part, tgt, key, a, b = line.split()
    if part == "X":                     # background job: bytes, seconds
        bg[tgt, key] = (int(a), float(b))
    else:
        runs.setdefault((part, tgt, key), []).append((float(a), float(b)))

def med(part, tgt, key, field):
    v = runs.get((part, tgt, key))
    return statistics.median(x[field] for x in v) if v else None

hdr = "| %-34s | %10s | %10s | %7s | %7s | %9s | %-6s |"
def header(unit_one, unit_arr):
    print(hdr % ("case", unit_one, unit_arr, "ratio", "limit", "target", "result"))
    print("|%s|%s|%s|%s|%s|%s|%s|" % ("-" * 36, "-" * 12, "-" * 12, "-" * 9, "-" * 9, "-" * 11, "-" * 8))

def row(name, one, arr, limit=None, frac=None, scale=1e6, fmt="%10.1f"):
    """one, arr: figures; limit: in multiples of one; frac: target fraction."""
    if one is None or arr is None:
        print(hdr % (name, "-", "-", "-", "-", "-", "-"))
        return
    ratio = arr / one
    lim = "%.3fx" % limit if limit is not None else "-"
    if limit is not None and frac is not None:
        tgt = frac * limit
        tgt_s, res = ">= %.3fx" % tgt, ("met" if ratio >= tgt else "MISSED")
    else:
        tgt_s, res = "-", ""
    print(hdr % (name, fmt % (one / scale), fmt % (arr / scale), "%.3fx" % ratio, lim, tgt_s, res))

common = "%s runs of %s s after %s ramp, medians;\n   array server: nbdkit -t %s; " \
         "ratio = array / one member, limit and target in the same unit" % (reps, runtime, ramp, threads)
if any(k[0] == "A" for k in runs):
    print("A. Slow members: nbdkit file + rate filter, %g MiB/s = %.1f MB/s each way (rate=%dM, "
          "burstiness=0.1);" % (rate, rate * 1.048576, rate * 8))
    print("   RAID5 of %d x %s, chunk 64K, journal; baseline: one such member; %s" % (n, msize, common))
    print()
    header("one MB/s", "array MB/s")
    sw = med("A", "one", "seqwrite", 0)
    sr = med("A", "one", "seqread", 0)
    row("seq write 1M QD32", sw, med("A", "raid5", "seqwrite", 0), n - 1, 0.95)
    for (part, tgt, key) in sorted(runs):
        if key == "seqwrite" and tgt.startswith("raid5-"):
            row("seq write %s QD32, whole rows" % tgt[6:].upper(), sw,
                med("A", tgt, "seqwrite", 0), n - 1, 0.95)
    if ("A", "raid6", "seqwrite") in runs:
        row("RAID6 seq write 1M QD32", sw, med("A", "raid6", "seqwrite", 0), n - 2, 0.95)
    for (part, tgt, key) in sorted(runs):
        if key == "seqwrite" and tgt.startswith("raid6-"):
            row("RAID6 seq write %s, whole rows" % tgt[6:].upper(), sw,
                med("A", tgt, "seqwrite", 0), n - 2, 0.95)
    for t, lv in (("raid5", "RAID5"), ("raid6", "RAID6")):
        if ("A", t, "sw4k") in runs:
            row("%s seq write 4K QD32 / its 1M" % lv, med("A", t, "seqwrite", 0),
                med("A", t, "sw4k", 0), 1, 0.7)
    for t, lv in (("raid5", "RAID5"), ("raid6", "RAID6")):
        if ("A", t, "sw4k") in runs and ("A", "free", "sw4k") in runs:
            row("%s 4K stream / file, no filter" % lv, med("A", "free", "sw4k", 0),
                med("A", t, "sw4k", 0))
    row("seq read 1M QD32", sr, med("A", "raid5", "seqread", 0), n, 0.95)
    row("degraded seq read 1M QD32", med("A", "one", "degraded", 0),
        med("A", "raid5", "degraded", 0), n - 1, 0.9)
    lim_rs = n * min(sr, sw) / sw if sr and sw else None
    bgrate = lambda t, k: bg[t, k][0] / bg[t, k][1] if (t, k) in bg else None
    row("rebuild (vs one's seq write)", sw, bgrate("raid5", "rebuild"), 1, 0.8)
    row("reshape %d->%d (vs one's seq write)" % (n, n + 1), sw, bgrate("raid5", "reshape"),
        lim_rs, 0.7)
    if ("strict", "rebuild") in bg:
        row("rebuild, %s s burst" % strict_burst, sw, bgrate("strict", "rebuild"), 1, 0.8)
        row("reshape %d->%d, %s s burst" % (n, n + 1, strict_burst), sw,
            bgrate("strict", "reshape"), lim_rs, 0.7)
    print()
    header("one IOPS", "array IOPS")
    for key, name in (("rr1", "4K randread QD1"), ("rr32", "4K randread QD32"),
                      ("rw1", "4K randwrite QD1"), ("rw32", "4K randwrite QD32")):
        row(name, med("A", "one", key, 1), med("A", "raid5", key, 1), scale=1, fmt="%10.0f")
    print()
    for t, label in (("raid5", "burst 0.1 s"), ("strict", "burst %s s" % strict_burst)):
        if (t, "rebuild") in bg:
            b, secs = bg[t, "rebuild"]
            print("rebuild (%s): %d MiB (the member data area) in %.2f s = %.1f MB/s, %.2fx one "
                  "member's seq write" % (label, b >> 20, secs, b / secs / 1e6, b / secs / sw))
    lim = n * min(sr, sw) if sr and sw else None
    for t, label in (("raid5", "burst 0.1 s"), ("strict", "burst %s s" % strict_burst)):
        if (t, "reshape") in bg and lim:
            b, secs = bg[t, "reshape"]
            print("reshape (%s): %d MiB of array data moved in %.2f s = %.1f MB/s = %.2f of the "
                  "limit" % (label, b >> 20, secs, b / secs / 1e6, b / secs / lim))
    if lim:
        print("reshape limit: N x min(read, write of one member) = %d x %.1f = %.1f MB/s "
              "(reads and writes overlapped;" % (n, min(sr, sw) / 1e6, lim / 1e6))
        print("  one after the other: 0.5 of it)")
    print()
def busy_share(n, qd, completions=100000):
    """Share of the time n one-at-a-time members (FIFO, fixed service time)
    are busy when qd requests are in flight, each sent to a uniformly
    random member and replaced by a new one as it completes."""
    rnd = random.Random(1)
    fifo = [0] * n
    ev = []
    def submit(now):
        m = rnd.randrange(n)
        fifo[m] += 1
        if fifo[m] == 1:
            heapq.heappush(ev, (now + 1.0, m))
    for _ in range(qd):
        submit(0.0)
    now = 0.0
    for _ in range(completions):
        now, m = heapq.heappop(ev)
        fifo[m] -= 1
        if fifo[m]:
            heapq.heappush(ev, (now + 1.0, m))
        submit(now)
    return completions / now / n

if any(k[0] == "B" for k in runs):
    m_r = med("B", "fone", "rr32", 1)
    m_w = med("B", "fone", "rw32", 1)
    print("B. Far members: nbdkit file + delay filter %g ms per read/write + noparallel "
          "(serialize=all-requests);" % delay)
    print("   RAID5 of %d x %s, chunk 64K, journal (bitmap where named); baseline: one such "
          "member; %s" % (n, msize, common))
    print()
    header("one IOPS", "array IOPS")
    kw = dict(scale=1, fmt="%10.0f")
    row("4K randread QD1", med("B", "fone", "rr1", 1), med("B", "far5", "rr1", 1), **kw)
    row("4K randread QD32", m_r, med("B", "far5", "rr32", 1), n, 0.9, **kw)
    row("4K randwrite QD1", med("B", "fone", "rw1", 1), med("B", "far5", "rw1", 1), **kw)
    row("4K randwrite QD32", m_w, med("B", "far5", "rw32", 1), n / 4, 0.9, **kw)
    if ("B", "far5b", "rw32") in runs:
        row("4K randwrite QD32, bitmap", m_w, med("B", "far5b", "rw32", 1), n / 4, 0.9, **kw)
    print()
    nominal = 1000.0 / delay
    if m_r and m_w:
        ser = "serialized" if max(m_r, m_w) <= 1.5 * nominal else \
              "NOT SERIALIZED: requests overlap, the figures are not a single far disk's"
        print("one member at QD32: %.0f reads/s, %.0f writes/s (1000/DELAY = %.0f): %s"
              % (m_r, m_w, nominal, ser))
        u = busy_share(n, 32)
        print("random read at QD32: 32 requests in flight, each to a uniformly random one of "
              "N one-at-a-time members,")
        print("  keep them busy %.3f of the time even with no overhead at all (simulated, fixed "
              "service time): %.2fx of one member at most" % (u, n * u))
        print("random write limit: N x M / 4 = %d x %.0f / 4 = %.0f writes/s (M = one member's "
              "writes/s at QD32; nominal %.0f);" % (n, m_w, n * m_w / 4, n * nominal / 4))
        print("  the journal's record on the row's parity member: 5 requests a write if no two "
              "records share a log write, N x M / 5 = %.0f writes/s" % (n * m_w / 5))
    print()
print("delta resync after an outage: bench/rejoin.sh (RESULTS.md, runs 5 and 9)")
print("elapsed: %.0f s; load average %s" % (float(elapsed), load))
EOF
