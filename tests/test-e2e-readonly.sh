#!/usr/bin/env bash
# nbdkit-raid: `nbdkit -r` writes nothing to any member.
#
# (a) a clean array served with -r (and with --readonly): the data reads
#     back, status answers, every state-changing control request is refused
#     with EROFS, and afterwards every member file is byte-for-byte what it
#     was (not even the event count moved);
# (b) an array left dirty by kill -9 under the journal policy is refused by
#     a read-only server with a message saying to start it read-write once,
#     and still nothing is written;
# (c) a raid1 left dirty by kill -9 is served read-only (reads of a row
#     always go to the same mirror): the data reads back, status shows
#     the resync it owes, nothing is written; started read-write, the
#     resync runs.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-readonly "$@"
requires nbdcopy
requires nbdinfo

d="$tmp/r"
mkdir -p "$d"
m=("$d/m0" "$d/m1" "$d/m2" "$d/m3")
create_array --level=5 --chunk=64K --size=24M "${m[@]}" || { fail "create"; finish; exit; }
start_raid w "${m[@]}" || { fail "start"; finish; exit; }
size="$(nbd_size "$uri")"
$PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 41
expect_run "write" nbdcopy "$d/expected.img" "$uri"
stop_nbdkit w
sums () { md5sum "${m[@]}" | awk '{ print $1 }' | tr '\n' ' '; }
before="$(sums)"

for flag in -r --readonly; do
  rm -f "$d/ctl"
  if ! start_nbdkit "ro$flag" "$flag" "$PLUGIN" "${m[@]}" control="$d/ctl"; then
    fail "(a) $flag: start"; continue; fi
  rm -f "$d/back.img"
  expect_run "(a) $flag: read" nbdcopy "$uri" "$d/back.img"
  expect_run "(a) $flag: the data" cmp "$d/back.img" "$d/expected.img"
  expect_status "(a) $flag: status" "$d/ctl" health optimal
  for req in "fail 0" "check" "resize 1M" "reshape --chunk=32K" "add $d/m0" \
             "set speed-max=1M"; do
    if out="$("$NBDRAID" -C "$d/ctl" $req 2>&1)"; then
      fail "(a) $flag: '$req' accepted"
    elif grep -q EROFS <<<"$out"; then ok; else fail "(a) $flag: '$req': $out"; fi
  done
  stop_nbdkit "ro$flag"
  expect_eq "(a) $flag: members unchanged" "$before" "$(sums)"
done

# (b) dirty + journal: refused
start_raid w2 "${m[@]}" || { fail "(b) start"; finish; exit; }
expect_run "(b) write" nbdcopy "$d/expected.img" "$uri"
kill -9 "$(cat "$tmp/w2.pid")"
wait "${pid_of[w2]}" 2>/dev/null || true
before="$(sums)"
if start_nbdkit rodirty -r "$PLUGIN" "${m[@]}" 2>/dev/null; then
  fail "(b) a dirty journal array was served read-only"
  stop_nbdkit rodirty
elif grep -q "start it read-write once" "$tmp/rodirty.log"; then ok; else
  fail "(b) message:"; sed 's/^/    /' "$tmp/rodirty.log" >&2; fi
expect_eq "(b) members unchanged" "$before" "$(sums)"

# (c) dirty raid1: served
m=("$d/r0" "$d/r1")
create_array --level=1 --size=24M "${m[@]}" || { fail "(c) create"; finish; exit; }
start_raid w3 "${m[@]}" || { fail "(c) start"; finish; exit; }
size="$(nbd_size "$uri")"
$PYTHON "$testsdir/e2e_basic.py" random "$d/expected1.img" "$size" 43
expect_run "(c) write" nbdcopy "$d/expected1.img" "$uri"
kill -9 "$(cat "$tmp/w3.pid")"
wait "${pid_of[w3]}" 2>/dev/null || true
before="$(sums)"
rm -f "$d/ctl"
if start_nbdkit rodirty1 -r "$PLUGIN" "${m[@]}" control="$d/ctl"; then
  rm -f "$d/back.img"
  expect_run "(c) read" nbdcopy "$uri" "$d/back.img"
  expect_run "(c) the data" cmp "$d/back.img" "$d/expected1.img"
  expect_status "(c) resync owed" "$d/ctl" resync_owed 0
  stop_nbdkit rodirty1
else
  fail "(c) a dirty raid1 was refused read-only"
fi
expect_eq "(c) members unchanged" "$before" "$(sums)"
start_raid_ctl w4 "$d/ctl" "${m[@]}" || { fail "(c) start read-write"; finish; exit; }
expect_run "(c) wait for the resync" "$NBDRAID" -C "$d/ctl" wait
expect_status "(c) nothing owed" "$d/ctl" resync_owed ""
stop_nbdkit w4
finish
