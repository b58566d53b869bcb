#!/usr/bin/env bash
# nbdkit-raid: degraded and failed arrays through real clients.
#
# (a) raid5: data written, server stopped, one member file deleted,
#     restart: reads return the same bytes (reconstructed), writes work,
#     the survivors' superblocks record the lost role missing (not written
#     off: named again, it would rejoin and be resynced), and the member
#     files alone (raidcheck extract, role missing) hold the client's data.
# (b) raid5 with one member reached over NBD through nbdkit's error filter:
#     the member starts failing every request while 16 requests are in
#     flight; every request still succeeds with correct data, status and
#     examine say the member is faulty, the survivors hold the data.
# (c) raid6 with two member files deleted still serves and accepts writes;
#     the two-erasure reconstruction from the files agrees.
# (d) raid5 losing two members at run time: reads, writes and zeroes fail
#     with EIO (libnbd and nbdsh), the server keeps accepting connections
#     (nbdinfo), the control socket says "failed", the process does not spin
#     (< 0.2 s CPU over 2 s idle) and it stops on SIGTERM; a raid5 started
#     with two member files gone is refused at start with a message.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-degraded "$@"
requires nbdcopy
requires nbdinfo
requires nbdsh

CHUNK=64K
CHUNKB=65536

new_array () # DIR LEVEL N -> sets members[]
{
  local d="$1" level="$2" n="$3" i
  mkdir -p "$d"
  members=()
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done
  create_array --level="$level" --chunk="$CHUNK" --size=24M --data-offset=4M "${members[@]}"
}

# ---- (a) raid5, one member file deleted ------------------------------------
part_a ()
{
  local d="$tmp/a" n=4 size W
  if ! new_array "$d" 5 $n; then fail "(a) create"; return 0; fi
  examine "$d/ex.json" "${members[@]}"
  W=$((CHUNKB * (n - 1)))
  start_raid a1 "${members[@]}" || { fail "(a) start"; return 0; }
  size="$(nbd_size "$uri")"
  $PYTHON "$testsdir/e2e_basic.py" random "$d/data.img" $((16 << 20)) 11
  truncate -s "$size" "$d/expected.img"
  dd if="$d/data.img" of="$d/expected.img" conv=notrunc status=none
  expect_run "(a) nbdcopy write" nbdcopy "$d/data.img" "$uri"
  stop_nbdkit a1

  rm "$d/m2"
  if ! start_raid a2 "$d/m0" "$d/m1" "$d/m3"; then
    fail "(a) raid5 with one member deleted did not start (within redundancy)"
    return 0
  fi
  expect_eq "(a) degraded size" "$size" "$(nbd_size "$uri")"
  rm -f "$d/back.img"
  expect_run "(a) nbdcopy read degraded" nbdcopy "$uri" "$d/back.img"
  expect_run "(a) degraded reads return the data written" cmp "$d/back.img" "$d/expected.img"
  rm -f "$d/back.img"
  examine "$d/ex-deg.json" "$d/m0" "$d/m1" "$d/m3"
  expect_eq "(a) examine: lost role 2 (right after the degraded start)" missing \
    "$(member_state "$d/ex-deg.json" 2)"
  run_py "(a) rw" "$testsdir/e2e_degraded.py" rw "$uri" "$W" "$d/expected.img" "$d/model.img" 5
  stop_nbdkit a2
  examine "$d/ex-deg.json" "$d/m0" "$d/m1" "$d/m3"
  expect_eq "(a) examine: lost role 2" missing "$(member_state "$d/ex-deg.json" 2)"
  local r
  for r in 0 1 3; do
    expect_eq "(a) examine: survivor role $r" in_sync "$(member_state "$d/ex-deg.json" $r)"
  done
  expect_run "(a) raidcheck extract without role 2" \
    $RAIDCHECK --from-examine "$d/ex.json" --missing 2 -q extract "$d/ext.img" \
    "$d/m0" "$d/m1" "$d/m3"
  expect_run "(a) survivors hold the client's data" cmp "$d/ext.img" "$d/model.img"
  rm -f "$d/ext.img"

  # A second degraded start keeps serving the same bytes.
  if start_raid a3 "$d/m3" "$d/m1" "$d/m0"; then
    ok
    expect_run "(a) nbdcopy read, second degraded start" nbdcopy "$uri" "$d/back.img"
    expect_run "(a) second degraded start serves the same bytes" cmp "$d/back.img" "$d/model.img"
    stop_nbdkit a3
  else
    fail "(a) second degraded start"
  fi
  rm -rf "$d"
}

# ---- (b) a member over NBD that starts failing mid-workload ----------------
part_b ()
{
  local d="$tmp/b" n=4 W msock
  if ! new_array "$d" 5 $n; then fail "(b) create"; return 0; fi
  examine "$d/ex.json" "${members[@]}"
  W=$((CHUNKB * (n - 1)))
  rm -f "$d/trigger"
  start_nbdkit bm2 --filter=error file "$d/m2" error-rate=100% error-file="$d/trigger" \
    || { fail "(b) member server"; return 0; }
  msock="$sock"
  start_raid_ctl b1 "$d/ctl" "$d/m0" "$d/m1" "$(uri_of "$msock")" "$d/m3" \
    || { fail "(b) raid start with an NBD member"; return 0; }
  expect_status "(b) status health before" "$d/ctl" health optimal
  run_py "(b) trigger" "$testsdir/e2e_degraded.py" trigger "$uri" "$W" "$d/trigger" \
    "$d/model.img" 7 16
  expect_status "(b) status health after the member failed" "$d/ctl" health degraded
  expect_status "(b) status: role 2" "$d/ctl" member:2 faulty
  if grep -q -F "$msock" "$tmp/b1.log"; then ok; else
    fail "(b) the server log does not name the failed member ($msock)"; fi
  stop_nbdkit b1
  stop_nbdkit bm2
  examine "$d/ex2.json" "$d/m0" "$d/m1" "$d/m3"
  expect_eq "(b) examine: failed role 2" faulty "$(member_state "$d/ex2.json" 2)"
  expect_run "(b) raidcheck verify of the survivors" \
    $RAIDCHECK --from-examine "$d/ex.json" --missing 2 verify "$d/m0" "$d/m1" "$d/m3"
  expect_run "(b) raidcheck extract without role 2" \
    $RAIDCHECK --from-examine "$d/ex.json" --missing 2 -q extract "$d/ext.img" \
    "$d/m0" "$d/m1" "$d/m3"
  expect_run "(b) survivors hold the client's data" cmp "$d/ext.img" "$d/model.img"
  rm -rf "$d"
}

# ---- (c) raid6, two member files deleted ------------------------------------
part_c ()
{
  local d="$tmp/c" n=5 size W
  if ! new_array "$d" 6 $n; then fail "(c) create"; return 0; fi
  examine "$d/ex.json" "${members[@]}"
  W=$((CHUNKB * (n - 2)))
  start_raid c1 "${members[@]}" || { fail "(c) start"; return 0; }
  size="$(nbd_size "$uri")"
  $PYTHON "$testsdir/e2e_basic.py" random "$d/expected.img" "$size" 12
  expect_run "(c) nbdcopy write" nbdcopy "$d/expected.img" "$uri"
  stop_nbdkit c1
  rm "$d/m1" "$d/m3"
  if ! start_raid c2 "$d/m4" "$d/m2" "$d/m0"; then
    fail "(c) raid6 with two members deleted did not start (within redundancy)"
    return 0
  fi
  run_py "(c) rw" "$testsdir/e2e_degraded.py" rw "$uri" "$W" "$d/expected.img" "$d/model.img" 6
  stop_nbdkit c2
  examine "$d/ex2.json" "$d/m0" "$d/m2" "$d/m4"
  expect_eq "(c) examine: role 1" missing "$(member_state "$d/ex2.json" 1)"
  expect_eq "(c) examine: role 3" missing "$(member_state "$d/ex2.json" 3)"
  expect_run "(c) raidcheck extract without roles 1 and 3" \
    $RAIDCHECK --from-examine "$d/ex.json" --missing 1 --missing 3 -q extract "$d/ext.img" \
    "$d/m0" "$d/m2" "$d/m4"
  expect_run "(c) survivors hold the client's data" cmp "$d/ext.img" "$d/model.img"
  rm -rf "$d"
}

# ---- (d) raid5 beyond redundancy --------------------------------------------
part_d ()
{
  local d="$tmp/d" n=4 W pid t0 t1 hz out
  if ! new_array "$d" 5 $n; then fail "(d) create"; return 0; fi
  W=$((CHUNKB * (n - 1)))
  rm -f "$d/t1" "$d/t2"
  start_nbdkit dm1 --filter=error file "$d/m1" error-rate=100% error-file="$d/t1" \
    || { fail "(d) member server 1"; return 0; }
  local s1="$sock"
  start_nbdkit dm2 --filter=error file "$d/m2" error-rate=100% error-file="$d/t2" \
    || { fail "(d) member server 2"; return 0; }
  local s2="$sock"
  start_raid_ctl d1 "$d/ctl" "$d/m0" "$(uri_of "$s1")" "$(uri_of "$s2")" "$d/m3" \
    || { fail "(d) raid start"; return 0; }
  qemu_io "(d) write while optimal" -c "write -P 0x33 0 4M" "$uri"
  touch "$d/t1"
  qemu_io "(d) one member failed: I/O must still work" \
    -c "read -P 0x33 0 4M" -c "write -P 0x44 4M 1M" -c "read -P 0x44 4M 1M" "$uri"
  touch "$d/t2"
  run_py "(d) dead" "$testsdir/e2e_degraded.py" dead "$uri" "$W"
  # A real nbdsh session sees the error too.
  out="$(nbdsh -u "$uri" -c 'h.pread(4096, 0)' 2>&1)" && \
    fail "(d) nbdsh read on a failed array succeeded" || {
      if [[ "$out" == *"Input/output error"* || "$out" == *EIO* ]]; then ok
      else fail "(d) nbdsh read failed without EIO: $out"; fi; }
  expect_run "(d) nbdinfo still connects to a failed array" nbdinfo "$uri"
  expect_status "(d) status health" "$d/ctl" health failed

  # Not spinning: CPU time over 2 s of idleness.
  pid="$(cat "$tmp/d1.pid")"
  hz="$(getconf CLK_TCK)"
  t0="$(cpu_ticks "$pid")"
  sleep 2
  t1="$(cpu_ticks "$pid")"
  if [ $(( (t1 - t0) * 1000 / hz )) -lt 200 ]; then ok; else
    fail "(d) failed array: nbdkit used $(( (t1 - t0) * 1000 / hz )) ms of CPU in 2 s idle (spinning)"
  fi
  expect_status "(d) status still answers" "$d/ctl" health failed
  stop_nbdkit d1
  stop_nbdkit dm1
  stop_nbdkit dm2

  # Started with two of four members: refused, with a message, promptly.
  rm -f "$d/t1" "$d/t2"
  rm "$d/m1" "$d/m2"
  if start_raid d2 "$d/m0" "$d/m3" 2>/dev/null; then
    fail "(d) raid5 with two of four members started; expected a refusal"
    stop_nbdkit d2
  else
    ok
    if [ -s "$tmp/d2.log" ]; then ok; else fail "(d) refusal without a message"; fi
  fi
  rm -rf "$d"
}

part_a
part_b
part_c
part_d
finish
