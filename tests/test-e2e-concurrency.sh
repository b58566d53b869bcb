#!/usr/bin/env bash
# nbdkit-raid: concurrent clients on shared stripe rows.
#
# e2e_concurrency.py writes and reads concurrently, either from 8 threads
# with 8 connections (multi-conn) or with 32 requests in flight on one
# connection (aio), on units interleaved down to 16 bytes so that
# concurrent requests share rows, chunks and sectors while never sharing a
# byte (the final content is then determined).  It compares every read and,
# after a flush on one connection, the whole export with its model.  After
# shutdown the member files must hold md parity for every row (raidcheck
# verify) and exactly the model (raidcheck extract).

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-concurrency "$@"

# one LABEL LEVEL LAYOUT NMEMBERS CHUNK PARITY_DISKS
one ()
{
  local label="$1" level="$2" layout="$3" n="$4" chunk="$5" np="$6"
  local d="$tmp/$label" i mode workers ops seed=1
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
  local chunkb dd
  chunkb="$(exfield "$d/ex.json" chunk)"
  dd=$((n - np))
  for mode in multi aio; do
    case $mode in
      multi) workers=8; ops=800 ;;
      aio) workers=32; ops=6000 ;;
    esac
    seed=$((seed + 1))
    if ! start_raid "$label-$mode" "${members[@]}"; then
      fail "$label: nbdkit raid did not start"
      return 0
    fi
    rm -f "$d/model.img"
    run_py "$label $mode" "$testsdir/e2e_concurrency.py" "$uri" "$chunkb" "$dd" \
      "$mode" "$workers" "$ops" "$d/model.img" "$seed"
    stop_nbdkit "$label-$mode"
    if [ ! -s "$d/model.img" ]; then
      fail "$label $mode: the workload did not finish (no model written)"
      continue
    fi
    expect_run "$label $mode: raidcheck verify" \
      $RAIDCHECK --from-examine "$d/ex.json" verify "${members[@]}"
    expect_run "$label $mode: raidcheck extract" \
      $RAIDCHECK --from-examine "$d/ex.json" -q extract "$d/ext.img" "${members[@]}"
    expect_run "$label $mode: members hold exactly the model" cmp "$d/ext.img" "$d/model.img"
    rm -f "$d/ext.img"
  done
  rm -rf "$d"
}

one raid5 5 left-symmetric 4 16K 1
one raid6 6 left-asymmetric 5 64K 2

finish
