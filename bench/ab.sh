#!/usr/bin/env bash
# nbdkit-raid bench: two builds of the plugin side by side, on the same
# storage and the same load, to tell a change's effect from the machine's
# drift (bench/RESULTS.md, run 15).
#
#   bench/ab.sh OLD-PLUGIN.so NEW-PLUGIN.so
#
# Each build serves its own RAID5 of NDISKS (5) members of 256M (chunk 64K, the
# default journal, filled with sequential 1M writes): by default members
# at RATE MiB/s each way behind nbdkit's rate filter (as bench/slow.sh's
# part A) with the array server at nbdkit -t 64; with FILES=1 the member
# files directly (as bench/run.sh, tmpfs).  Every case in CASES
# ("RW:BS:QD ...", default "write:4k:32 randread:4k:32") runs REPS times
# (3) for both builds, alternating, the order swapped every round, each
# run RUNTIME s (4) after a 500 ms ramp.  Prints one line per run:
# "RW:BS:QD old|new BW_BYTES IOPS".  NBDRAID: the nbdraid that creates
# the arrays (default: the build directory's).  DEGRADED=1: after the
# fill, each array is served without member 1 (degraded).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/ab.sh OLD-PLUGIN.so NEW-PLUGIN.so" >&2; exit 2; }
declare -A PL=([old]="$1" [new]="$2")
: "${NBDRAID:=$PWD/nbdraid/nbdraid}"
: "${RUNTIME:=4}" "${REPS:=3}" "${RATE:=100}" "${FILES:=0}" "${BENCH_DIR:=/dev/shm}"
: "${DEGRADED:=0}" "${NDISKS:=5}"
: "${CASES:=write:4k:32 randread:4k:32}"
RAMP=500ms
BENCH_NAME=ab.sh
export PATH=/usr/bin:$PATH
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bench_tmp nbdraid-ab
declare -A URI
for v in old new; do
  f=(); for ((i = 0; i < NDISKS; i++)); do f+=("$tmp/$v-m$i.img"); done
  "$NBDRAID" create --level=5 --chunk=64K --size=256M "${f[@]}" >/dev/null
  serve "$v-fill" "${PL[$v]}" "${f[@]}"
  FIO_SIZE="$(nbdinfo --size "$uri")" fio_run "$uri" write 1M 32 no >/dev/null
  stop "$srv_pid"
  keep=("${!f[@]}"); [ "$DEGRADED" = 1 ] && unset 'keep[1]'
  if [ "$FILES" = 1 ]; then
    m=(); for i in "${keep[@]}"; do m+=("${f[$i]}"); done
    serve "$v" "${PL[$v]}" "${m[@]}"
  else
    u=(); for i in "${keep[@]}"; do serve_rated "$v-m$i" "${f[$i]}" "$RATE"; u+=("$uri"); done
    serve "$v" -t 64 "${PL[$v]}" "${u[@]}"
  fi
  URI[$v]=$uri
done
FIO_SIZE=256M
for c in $CASES; do
  IFS=: read -r rw bs qd <<<"$c"
  for ((r = 1; r <= REPS; r++)); do
    order="old new"; [ $((r % 2)) = 0 ] && order="new old"
    for v in $order; do
      res="$(fio_run "${URI[$v]}" "$rw" "$bs" "$qd")"
      echo "$c $v $res"
    done
  done
done
