#!/usr/bin/env bash
# nbdkit-raid: end-to-end basics through real clients (nbdinfo, nbdcopy,
# qemu-io, libnbd), for raid5, raid6 and raid4.
#
# For each array: create it with nbdraid, serve it, and check that
#   - the export size is component_size * data_disks from `examine --json`,
#     and the handshake advertises what nbdkit-raid-plugin(1), Serving,
#     promises (e2e_basic.py);
#   - 24 MiB of random data written with nbdcopy and a qemu-io pattern near
#     the end read back identical (the whole export is compared with an
#     expected image);
#   - after a clean shutdown the members hold md-correct parity
#     (raidcheck verify) and the array reconstructed from the member files
#     alone (raidcheck extract) is byte for byte the expected image;
#   - after a restart with the members named in another order (roles come
#     from the superblocks) the same bytes are served.
# The independent checker itself is self-tested first.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-basic "$@"
requires nbdinfo
requires nbdcopy
requires qemu-io

run_py raidcheck-selftest "$testsdir/e2e_raidcheck_selftest.py"

random_img="$tmp/random.img"
$PYTHON "$testsdir/e2e_basic.py" random "$random_img" $((24 << 20)) 1

# one_array LABEL LEVEL LAYOUT NMEMBERS CHUNK PARITY_DISKS
one_array ()
{
  local label="$1" level="$2" layout="$3" n="$4" chunk="$5" np="$6"
  local d="$tmp/$label" i
  mkdir "$d"
  local -a members=()
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done

  if ! create_array --level="$level" --layout="$layout" --chunk="$chunk" \
       --size=64M --data-offset=4M "${members[@]}"; then
    fail "$label: nbdraid create failed"
    return 0
  fi
  ok
  examine "$d/ex.json" "${members[@]}"
  local comp dd size width asize
  comp="$(exfield "$d/ex.json" component_size)"
  dd=$((n - np))
  size=$((comp * dd))
  width=$(( $(exfield "$d/ex.json" chunk) * dd ))
  expect_eq "$label: examine level" "$level" "$(exfield "$d/ex.json" level)"
  expect_eq "$label: examine raid_disks" "$n" "$(exfield "$d/ex.json" raid_disks)"
  expect_eq "$label: examine data_offset" $((4 << 20)) "$(exfield "$d/ex.json" data_offset)"
  asize="$(exfield "$d/ex.json" array_size)"
  [ -z "$asize" ] || expect_eq "$label: examine array_size" "$size" "$asize"
  if [ "$comp" -le 0 ] || [ "$comp" -gt $((60 << 20)) ]; then
    fail "$label: component_size $comp not in (0, 60M]"
  fi

  # Members named bare (the plugin's magic key).
  if ! start_raid "$label" "${members[@]}"; then
    fail "$label: nbdkit raid did not start"
    return 0
  fi
  expect_eq "$label: nbdinfo --size" "$size" "$(nbd_size "$uri")"
  run_py "$label info" "$testsdir/e2e_basic.py" info "$uri" "$size" "$width"

  # Expected image: zeros, the random file at 0, 0xa5 near the end.
  local expected="$d/expected.img" qoff=$((size - (1 << 20) - 12345)) qlen=$((1 << 20))
  truncate -s "$size" "$expected"
  dd if="$random_img" of="$expected" conv=notrunc status=none
  $PYTHON "$testsdir/e2e_basic.py" pattern "$expected" "$qoff" "$qlen" 0xa5

  expect_run "$label: nbdcopy write" nbdcopy "$random_img" "$uri"
  qemu_io "$label: qemu-io write" -c "write -P 0xa5 $qoff $qlen" -c flush "$uri"
  qemu_io "$label: qemu-io read -P 0xa5" -c "read -P 0xa5 $qoff $qlen" "$uri"
  rm -f "$d/back.img"
  expect_run "$label: nbdcopy read" nbdcopy "$uri" "$d/back.img"
  expect_run "$label: read back equals what was written" cmp "$d/back.img" "$expected"
  rm -f "$d/back.img"
  stop_nbdkit "$label"

  # The member files, checked without the server.
  expect_run "$label: raidcheck verify (md parity on the members)" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"
  expect_run "$label: raidcheck verify (explicit geometry)" \
    $RAIDCHECK --level "$level" --layout "$layout" --chunk "$chunk" \
    --data-offset 4M --size "$size" verify "${members[@]}"
  expect_run "$label: raidcheck extract" \
    $RAIDCHECK --from-examine "$d/ex.json" -q extract "$d/ext.img" "${members[@]}"
  expect_run "$label: members hold exactly the written array" cmp "$d/ext.img" "$expected"
  rm -f "$d/ext.img"
  examine "$d/ex2.json" "${members[@]}"
  for ((i = 0; i < n; i++)); do
    expect_eq "$label: role $i state after clean stop" in_sync "$(member_state "$d/ex2.json" "$i")"
  done
  expect_eq "$label: array state after clean stop" clean \
    "$($PYTHON "$testsdir/e2e_common.py" record-field "$d/ex2.json" state)"

  # Restart with the members in reverse order, named with member=.
  local -a rev=()
  for ((i = n - 1; i >= 0; i--)); do rev+=("member=${members[$i]}"); done
  if ! start_raid "$label-rev" "${rev[@]}"; then
    fail "$label: nbdkit raid did not start with members reordered"
    return 0
  fi
  expect_eq "$label: size after reorder" "$size" "$(nbd_size "$uri")"
  expect_run "$label: nbdcopy read after reorder" nbdcopy "$uri" "$d/back.img"
  expect_run "$label: reordered members serve the same bytes" cmp "$d/back.img" "$expected"
  qemu_io "$label: qemu-io read -P after reorder" -r -c "read -P 0xa5 $qoff $qlen" "$uri"
  stop_nbdkit "$label-rev"
  rm -f "$d/back.img" "$expected"
}

one_array raid5 5 left-symmetric 4 64K 1
one_array raid6 6 left-symmetric 5 64K 2
one_array raid4 4 parity-last 5 32K 1

finish
