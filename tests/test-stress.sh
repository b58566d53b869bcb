#!/usr/bin/env bash
# nbdkit-raid: the stress tester (tests/stress.py, "our ztest") on real
# servers, for a fixed short budget per array kind with fixed seeds.
#
# stress.py creates arrays from its seed (members: sparse files and NBD
# exports behind nbdkit's error/rate/delay filters), drives client I/O
# checked against an exact model, management requests of every kind from
# several control connections at once, member faults, member servers that
# vanish, kill -9 of the array server, and quiet points that check parity
# (`check`, raidcheck.py on the member images), the contents and idle CPU.
# See the theory comment at the top of stress.py.
#
# make check: levels 4, 5, 6 and the 0 -> 4/5 takeover, STRESS_CHECK_BUDGET
# seconds each (default 20), seeds fixed below (STRESS_SEEDS overrides:
# "LEVEL:SEED ...").  make check-stress: one long run (STRESS_LONG=1) of
# STRESS_BUDGET seconds (default 3 hours) with STRESS_SEED or a new random
# seed (printed first); STRESS_ARGS adds stress.py options (e.g. --ops).
# A failing run prints the replay command and keeps its temp dir.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
if [ -n "${STRESS_LONG:-}" ]; then
  : "${STRESS_BUDGET:=10800}"
  export E2E_TIMEOUT="${E2E_TIMEOUT:-$((${STRESS_BUDGET%.*} + 900))}"
else
  export E2E_TIMEOUT="${E2E_TIMEOUT:-600}"
fi
e2e_init test-stress "$@"
requires nbdkit

stress ()
{
  local what="$1" rc; shift
  echo "$test_name: $what: stress.py $*"
  set +e
  # SANITIZERS=yes: stress.py preloads libasan into the array server it
  # starts, as start_nbdkit does (passed explicitly: functions.sh only
  # defaults it, it may not be exported).
  SANITIZERS="$SANITIZERS" \
  $PYTHON "$testsdir/stress.py" --plugin "$PLUGIN" --nbdraid "$NBDRAID" \
    ${STRESS_ARGS:-} "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then ok; else fail "$what: stress.py $* exited $rc"; fi
}

if [ -n "${STRESS_LONG:-}" ]; then
  stress "long run" --budget "$STRESS_BUDGET" ${STRESS_SEED:+--seed "$STRESS_SEED"}
else
  for ls in ${STRESS_SEEDS:-4:4101 5:5101 6:6101 0:101}; do
    stress "raid${ls%%:*}" --level "${ls%%:*}" --seed "${ls#*:}" \
      --budget "${STRESS_CHECK_BUDGET:-20}" --epoch 600
  done
fi
finish
