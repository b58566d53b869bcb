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
# (c) An array with no room at all (data offset 4 MiB, members full): a grow
#     is refused with ENOSPC saying how much head and tail room each way
#     needs and by how much to enlarge the members; a too-small added
#     member is named as such; a shrink without --force says how many bytes
#     it would cut; none of these changes a byte of any member.  Following
#     the advice (members exactly that many bytes larger) the grow runs,
#     and `resize max` afterwards takes what members gained since.

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

# (c) no room: the messages, and the way out they give
d="$tmp/c"
mkdir -p "$d"
create_array --level=5 --size=64M --data-offset=4M "$d/m0" "$d/m1" "$d/m2" ||
  { fail "(c) create"; finish; exit; }
start_raid_ctl c "$d/ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "(c) start"; finish; exit; }
size="$(nbd_size "$uri")"
$PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 33
expect_run "(c) fill" nbdcopy "$d/expected.img" "$uri"
truncate -s 64M "$d/m3"
truncate -s 32M "$d/small"
sums () { md5sum "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/small" | awk '{ print $1 }' | tr '\n' ' '; }
before="$(sums) $(status_get "$d/ctl" events)"
if "$NBDRAID" -C "$d/ctl" reshape --add="$d/m3" >"$tmp/out" 2>&1; then
  fail "(c) a grow with no room was prepared"
else
  msg="$(cat "$tmp/out")"
  re='ENOSPC: not enough room to reshape out of place: moving forward needs ([0-9]+) bytes of head room per member \(the members have 0\), moving backward ([0-9]+) bytes of tail room \(they have ([0-9]+)\); make every member at least ([0-9]+) bytes larger and prepare the reshape again \(resize to max after it to use the rest\)'
  if [[ "$msg" =~ $re ]] && [ "${BASH_REMATCH[4]}" -eq $((BASH_REMATCH[2] - BASH_REMATCH[3])) ]; then
    ok; more="${BASH_REMATCH[4]}"
  else
    fail "(c) ENOSPC message: $msg"; more=$((1 << 20))
  fi
fi
if "$NBDRAID" -C "$d/ctl" reshape --add="$d/small" >"$tmp/out" 2>&1; then
  fail "(c) a too-small member was accepted"
elif grep -q "ENOSPC: $d/small is too small: it holds 33554432 bytes, the members of the array 67108864" "$tmp/out"
then ok; else fail "(c) too-small message: $(cat "$tmp/out")"; fi
if "$NBDRAID" -C "$d/ctl" resize $((size - 196608)) >"$tmp/out" 2>&1; then
  fail "(c) a shrink without --force"
elif grep -q "shrinking from $size to $((size - 196608)) bytes cuts off the last 196608 bytes of the array: give force" "$tmp/out"
then ok; else fail "(c) shrink message: $(cat "$tmp/out")"; fi
expect_eq "(c) the refusals changed nothing" "$before" "$(sums) $(status_get "$d/ctl" events)"
expect_eq "(c) no reshape recorded" idle "$(status_get "$d/ctl" sync_action)"
# the advice: every member that many bytes larger
for f in m0 m1 m2 m3; do truncate -s $(((64 << 20) + more)) "$d/$f"; done
expect_run "(c) the grow runs once the members are larger" \
  "$NBDRAID" -C "$d/ctl" reshape --add="$d/m3" --start --wait
expect_status "(c) four members" "$d/ctl" raid_devices 4
expect_eq "(c) the grow keeps the size" "$size" "$(status_get "$d/ctl" size)"
for f in m0 m1 m2 m3; do truncate -s 80M "$d/$f"; done
expect_run "(c) members grown again: resize max" "$NBDRAID" -C "$d/ctl" resize max
new="$(status_get "$d/ctl" size)"
if [ "$new" -gt "$size" ]; then ok; else fail "(c) resize max: $new <= $size"; fi
rm -f "$d/back.img"
expect_run "(c) read back" nbdcopy "$uri" "$d/back.img"
expect_run "(c) the data" cmp -n "$size" "$d/back.img" "$d/expected.img"
stop_nbdkit c
examine "$d/ex.json" "$d/m0" "$d/m1" "$d/m2" "$d/m3"
expect_run "(c) member files hold md's bytes and parity" \
  $RAIDCHECK --from-examine "$d/ex.json" verify "$d/m0" "$d/m1" "$d/m2" "$d/m3"
finish
