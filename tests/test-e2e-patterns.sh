#!/usr/bin/env bash
# nbdkit-raid: request patterns at every boundary, for several levels and
# layouts, checked three ways:
#   - through libnbd against a model of the whole export (e2e_patterns.py:
#     boundaries +-1 byte, sub-sector and unaligned requests, 8/16/32 MiB
#     requests, flush, FUA, trim, zero with and without may_trim and fast
#     zero, block status);
#   - after shutdown, md parity of every row on the member files
#     (raidcheck verify);
#   - the array rebuilt from the member files alone equals the model byte
#     for byte (raidcheck extract + cmp).
# The layouts chosen include ones where md's Q syndrome order differs from
# the data order (raid6 left-asymmetric, left-symmetric-6).

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-patterns "$@"

# one LABEL LEVEL LAYOUT NMEMBERS CHUNK PARITY_DISKS
one ()
{
  local label="$1" level="$2" layout="$3" n="$4" chunk="$5" np="$6"
  local d="$tmp/$label" i
  mkdir "$d"
  local -a members=()
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done
  if ! create_array --level="$level" --layout="$layout" --chunk="$chunk" \
       --size=24M --data-offset=4M "${members[@]}"; then
    fail "$label: nbdraid create failed"
    return 0
  fi
  ok
  examine "$d/ex.json" "${members[@]}"
  local comp chunkb dd
  comp="$(exfield "$d/ex.json" component_size)"
  chunkb="$(exfield "$d/ex.json" chunk)"
  dd=$((n - np))
  if ! start_raid "$label" "${members[@]}"; then
    fail "$label: nbdkit raid did not start"
    return 0
  fi
  expect_eq "$label: export size" $((comp * dd)) "$(nbd_size "$uri")"
  run_py "$label" "$testsdir/e2e_patterns.py" "$uri" "$chunkb" "$dd" "$n" "$d/model.img" "$n"
  stop_nbdkit "$label"
  if [ ! -s "$d/model.img" ]; then
    fail "$label: the workload did not finish (no model written)"
    return 0
  fi
  expect_run "$label: raidcheck verify" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"
  expect_run "$label: raidcheck extract" \
    $RAIDCHECK --from-examine "$d/ex.json" -q extract "$d/ext.img" "${members[@]}"
  expect_run "$label: members hold exactly the model" cmp "$d/ext.img" "$d/model.img"
  rm -rf "$d"
}

one raid5-ls 5 left-symmetric 4 64K 1
one raid5-ra 5 right-asymmetric 4 16K 1
one raid5-pf 5 parity-first 3 64K 1
one raid6-ls 6 left-symmetric 5 64K 2
one raid6-la 6 left-asymmetric 6 32K 2
one raid6-ls6 6 left-symmetric-6 5 64K 2
one raid4 4 parity-last 4 64K 1

finish
