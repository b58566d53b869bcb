#!/usr/bin/env bash
# nbdkit-raid bench: the journal policy's cost against bitmap on 4 KiB
# random writes (issue #3 target: journal >= 0.5x bitmap), QD1 and QD32,
# alternating the two arrays REPS times (this shared machine drifts, so
# back-to-back pairs are compared, not separate runs).  RAID5 of 5 x 256M
# members on BENCH_DIR (/dev/shm), chunk 64K, fio's nbd engine, 4 s after
# 1 s ramp.
# Usage: bench/policy.sh PLUGIN.so NBDRAID [REPS]
set -euo pipefail
PLUGIN=$1; NBDRAID=$2; REPS=${3:-3}
: "${BENCH_DIR:=/dev/shm}"
BENCH_NAME=policy.sh
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bench_tmp nbdraid-policy

declare -A URI
for pol in journal bitmap; do
  "$NBDRAID" create --level=5 --chunk=64K --consistency=$pol --size=256M \
    "$tmp/$pol"-m{0,1,2,3,4} >/dev/null
  serve "$pol" "$PLUGIN" "$tmp/$pol"-m{0,1,2,3,4}
  URI[$pol]=$uri
done

iops ()
{
  fio --name=b --ioengine=nbd --uri="${URI[$1]}" --rw=randwrite --bs=4k \
      --iodepth="$2" --size=384M --randrepeat=1 --norandommap --time_based \
      --runtime=4 --ramp_time=1 --output-format=json --output="$tmp/out.json" >/dev/null
  /usr/bin/python3 -c 'import json, sys
print(round(json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"]))' "$tmp/out.json"
}

for qd in 1 32; do
  for ((r = 0; r < REPS; r++)); do
    j=$(iops journal $qd); b=$(iops bitmap $qd)
    echo "qd=$qd journal $j bitmap $b ratio $(/usr/bin/python3 -c "print(round($j / $b, 2))")"
  done
done
