#!/usr/bin/env bash
# nbdkit-raid: room that does not run out.
#
# (a) An array created with the defaults (data offset 16 MiB) grows six
#     times in a row, one member added each time, through `nbdraid reshape
#     --add --start --wait` while it serves (each grow takes a fraction of
#     the head room left, so it never runs out); after each the data reads
#     back unchanged; at the end the member files hold md's bytes and
#     parity.
# (b) An array with no head room (data offset 4 MiB) but made smaller than
#     its members holds (resize) grows backward, through the tail room.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-grow "$@"
requires nbdcopy
requires nbdinfo

d="$tmp/g"
mkdir -p "$d"
members=("$d/m0" "$d/m1" "$d/m2")
create_array --level=5 --size=64M "${members[@]}" || { fail "create"; finish; exit; }
start_raid_ctl g "$d/ctl" "${members[@]}" || { fail "start"; finish; exit; }
size="$(nbd_size "$uri")"
$PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 31
expect_run "fill" nbdcopy "$d/expected.img" "$uri"

for ((k = 3; k < 9; k++)); do
  truncate -s 64M "$d/m$k"
  if ! "$NBDRAID" -C "$d/ctl" reshape --add="$d/m$k" --start --wait >"$tmp/out" 2>&1; then
    fail "grow $((k - 2)) (to $((k + 1)) members):"; sed 's/^/    /' "$tmp/out" >&2
    break
  fi
  ok
  members+=("$d/m$k")
  expect_status "grow $((k - 2)): members" "$d/ctl" raid_devices $((k + 1))
  rm -f "$d/back.img"
  expect_run "grow $((k - 2)): read back" nbdcopy "$uri" "$d/back.img"
  expect_run "grow $((k - 2)): the data" cmp -n "$size" "$d/back.img" "$d/expected.img"
done
stop_nbdkit g
examine "$d/ex.json" "${members[@]}"
expect_eq "six grows" 9 "$(exfield "$d/ex.json" raid_disks)"
expect_run "member files hold md's bytes and parity" \
  $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"

# (b) no head room, tail room after a resize: the grow runs backward
d="$tmp/b"
mkdir -p "$d"
create_array --level=5 --size=64M --data-offset=4M "$d/m0" "$d/m1" "$d/m2" ||
  { fail "(b) create"; finish; exit; }
start_raid_ctl b "$d/ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "(b) start"; finish; exit; }
expect_run "(b) resize to 64M" "$NBDRAID" -C "$d/ctl" resize --force 64M
$PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" $((64 << 20)) 32
expect_run "(b) fill" nbdcopy "$d/expected.img" "$uri"
truncate -s 64M "$d/m3"
expect_run "(b) grow with no head room" "$NBDRAID" -C "$d/ctl" reshape --add="$d/m3" --start --wait
rm -f "$d/back.img"
expect_run "(b) read back" nbdcopy "$uri" "$d/back.img"
expect_run "(b) the data" cmp -n $((64 << 20)) "$d/back.img" "$d/expected.img"
stop_nbdkit b
examine "$d/ex.json" "$d/m0" "$d/m1" "$d/m2" "$d/m3"
# Backward moves the data higher (there was no room below it).
off="$(exfield "$d/ex.json" data_offset)"
if [ "$off" -gt $((4 << 20)) ]; then ok; else fail "(b) data offset $off: the grow did not run backward"; fi
expect_run "(b) member files hold md's bytes and parity" \
  $RAIDCHECK --from-examine "$d/ex.json" verify "$d/m0" "$d/m1" "$d/m2" "$d/m3"
finish
