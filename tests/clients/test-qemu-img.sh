#!/usr/bin/env bash
# nbdkit-raid: qemu-img, QEMU's own block layer, on RAID5 and RAID6.
#
# For RAID5 (4 members) and RAID6 (5 members): a 64 MiB raw image of
# fixed-seed random data with zeroed stretches (which qemu-img writes as
# zero requests) is converted into the export (-n -O raw, and once more
# over already written data with -W: out-of-order parallel writes);
# `qemu-img compare` says the export equals the image (the rest of the
# export reads as zeros); converted back out the bytes are identical (cmp);
# after a restart with the members in another order and with members
# removed (one for RAID5, two for RAID6) `qemu-img compare` still agrees.
#
# Proves: QEMU's NBD client (block-status, zero writes, parallel
# requests) writes and reads the array correctly, optimal and degraded.

set -euo pipefail
source "$(dirname "$0")/lib.sh"
clients_init test-qemu-img "$@"
requires qemu-img

img="$tmp/src.img"
$PYTHON - "$img" <<'EOF'
import random, sys
r = random.Random(6464)
MiB = 1 << 20
buf = bytearray(r.randbytes(64 * MiB))
# zeroed stretches: whole MiBs, an unaligned one and a single sector
for off, n in ((8 * MiB, 4 * MiB), (30 * MiB + 1234, 700000), (50 * MiB, 512)):
    buf[off:off + n] = bytes(n)
open(sys.argv[1], "wb").write(buf)
EOF

# one_level LEVEL NMEMBERS NMISSING
one_level ()
{
  local level="$1" n="$2" miss="$3" d="$tmp/r$1" i t0 size
  local -a members=() reordered=() degraded=()
  mkdir -p "$d"
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done
  create_array --level="$level" --size=64M "${members[@]}" || { fail "raid$level: create"; return 0; }
  ok
  start_raid "raid$level" "${members[@]}" || { fail "raid$level: serve"; return 0; }
  ok
  size="$(nbd_size "$uri")"
  t0="$(now)"
  expect_run "raid$level: qemu-img convert into the export" \
    qemu-img convert -n -f raw -O raw "$img" "$uri"
  echo "$test_name: raid$level ($((size >> 20)) MiB): convert in $(elapsed "$t0") s"
  expect_run "raid$level: qemu-img compare" qemu-img compare -f raw -F raw "$img" "$uri"
  t0="$(now)"
  expect_run "raid$level: qemu-img convert -W over written data" \
    qemu-img convert -n -W -m 8 -f raw -O raw "$img" "$uri"
  echo "$test_name: raid$level: convert -W -m 8 in $(elapsed "$t0") s"
  expect_run "raid$level: qemu-img compare after -W" qemu-img compare -f raw -F raw "$img" "$uri"
  rm -f "$d/out.img"
  expect_run "raid$level: qemu-img convert out of the export" \
    qemu-img convert -f raw -O raw "$uri" "$d/out.img"
  cp "$img" "$d/expected.img"
  truncate -s "$size" "$d/expected.img"
  expect_run "raid$level: converted back out, identical" cmp "$d/out.img" "$d/expected.img"
  rm -f "$d/out.img" "$d/expected.img"
  stop_nbdkit "raid$level"

  for ((i = n - 1; i >= 0; i--)); do reordered+=("${members[$i]}"); done
  start_raid "raid$level-2" "${reordered[@]}" || { fail "raid$level: restart reordered"; return 0; }
  ok
  expect_run "raid$level: compare after restart" qemu-img compare -f raw -F raw "$img" "$uri"
  stop_nbdkit "raid$level-2"

  # Degraded: remove the first MISS members.
  for ((i = 0; i < n; i++)); do
    if [ "$i" -lt "$miss" ]; then rm -f "${members[$i]}"; else degraded+=("${members[$i]}"); fi
  done
  start_raid "raid$level-3" "${degraded[@]}" || { fail "raid$level: degraded start"; return 0; }
  ok
  expect_run "raid$level: compare degraded ($miss missing)" \
    qemu-img compare -f raw -F raw "$img" "$uri"
  stop_nbdkit "raid$level-3"
  rm -rf "$d"
}

one_level 5 4 1
one_level 6 5 2

clients_finish
