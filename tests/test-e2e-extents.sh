#!/usr/bin/env bash
# nbdkit-raid: extents through a real client (nbdinfo --map).
#
# A fresh array on sparse member files is one zero extent.  A write makes
# exactly the stripe rows it touches data (a RAID5 of 4 members with 64K
# chunks has 192 KiB rows); zeroing whole rows punches them back to holes
# on every member, while the partially covered rows at the edges stay data.
# Reads agree with the map: every byte of a zero extent reads as zero.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-extents "$@"
requires nbdinfo
requires qemu-io

d="$tmp/a"; mkdir "$d"
create_array --level=5 --size=64M --data-offset=4M "$d"/m0 "$d"/m1 "$d"/m2 "$d"/m3
start_raid raid "$d"/m0 "$d"/m1 "$d"/m2 "$d"/m3
size=$(nbdinfo --size "$uri")
row=$((192 << 10))

map () { nbdinfo --map "$uri" | awk '{print $1, $2, $4}' | tr '\n' ';'; }

expect_eq "fresh array" "0 $size hole,zero;" "$(map)"

qemu_io "1M write" -c "write -P 0x11 $((10 << 20)) 1M" "$uri"
first=$(( (10 << 20) / row * row )); last=$(( ((11 << 20) - 1) / row * row + row ))
expect_eq "after a 1M write" \
  "0 $first hole,zero;$first $((last - first)) data;$last $((size - last)) hole,zero;" "$(map)"

qemu_io "1M zero" -c "write -z $((10 << 20)) 1M" "$uri"
# rows wholly inside [10M, 11M) are punched; the edge rows keep data
in0=$(( ((10 << 20) + row - 1) / row * row )); in1=$(( (11 << 20) / row * row ))
expect_eq "after zeroing it" \
  "0 $first hole,zero;$first $((in0 - first)) data;$in0 $((in1 - in0)) hole,zero;$in1 $((last - in1)) data;$last $((size - last)) hole,zero;" \
  "$(map)"
qemu_io "zeroed range reads as zero" -c "read -P 0 $((10 << 20)) 1M" "$uri"

# A write smaller than a chunk (the member's hole ends inside the row)
# makes its whole row data, and the map agrees with what reads return.
qemu_io "sub-chunk write" -c "write -P 0x33 $((row * 60 + 70000)) 1000" "$uri"
m=$(nbdinfo --map "$uri" | awk -v o=$((row * 60)) '$1 <= o && o < $1 + $2 {print $1, $2, $4}')
expect_eq "row of a sub-chunk write is data" "$((row * 60)) $row data" "$m"
qemu_io "sub-chunk data reads back" -c "read -P 0x33 $((row * 60 + 70000)) 1000" "$uri"

# Degraded: a member gone, zero extents must still read as zero and data
# outside them is rebuilt.
qemu_io "row-aligned data" -c "write -P 0x22 $((row * 100)) $row" "$uri"
stop_nbdkit raid
rm -f "$d"/m2
start_raid raid "$d"/m0 "$d"/m1 "$d"/m3
expect_eq "degraded map" \
  "0 $first hole,zero;$first $((in0 - first)) data;$in0 $((in1 - in0)) hole,zero;$in1 $((last - in1)) data;$last $((row * 60 - last)) hole,zero;$((row * 60)) $row data;$((row * 61)) $((row * 39)) hole,zero;$((row * 100)) $row data;$((row * 101)) $((size - row * 101)) hole,zero;" \
  "$(map)"
qemu_io "degraded zero read" -c "read -P 0 0 $first" "$uri"
qemu_io "degraded data read" -c "read -P 0x22 $((row * 100)) $row" "$uri"
finish
