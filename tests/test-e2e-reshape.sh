#!/usr/bin/env bash
# nbdkit-raid: live reshape through a real server and real clients.
#
# Each case: create an array, serve it with a control socket, and run
# e2e_reshape.py, which fills it, keeps a writer and a reader busy through
# libnbd, prepares the reshape over the socket (frozen, position 0),
# starts it, waits, checks the geometry, and verifies every byte against
# its model.  Then the server is stopped and tests/raidcheck.py (an
# independent implementation of md's placement) verifies the parity of
# every row of the new layout on the member files.
# Also: the seed regression (prepare adding a member and start at once,
# pinned to one CPU, I/O in flight: completes within the timeout), and
# freeze mid-reshape (I/O across the boundary does not wait; start again
# continues from the recorded position).

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-reshape "$@"
requires nbdinfo

# one_case LABEL "CREATE ARGS" NMEMBERS NADD REQUEST_JSON [driver options]
one_case ()
{
  local label="$1" cargs="$2" n="$3" nadd="$4" req="$5"; shift 5
  local d="$tmp/$label" i
  mkdir "$d"
  local -a members=()
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done
  # shellcheck disable=SC2086
  if ! create_array $cargs --size=40M "${members[@]}"; then
    fail "$label: create"; return 0
  fi
  for ((i = n; i < n + nadd; i++)); do truncate -s 40M "$d/m$i"; done
  req="${req//@D@/$d}"
  if ! start_raid "$label" "${members[@]}" control="$d/ctl"; then
    fail "$label: server did not start"; return 0
  fi
  if [ "${PIN_CPU0:-}" = 1 ]; then
    taskset -apc 0 "$(cat "$pidfile")" >/dev/null   # every server thread on CPU 0
  fi
  run_py "$label" "$testsdir/e2e_reshape.py" run "$uri" "$d/ctl" "$req" "$@"
  stop_nbdkit "$label"
  local -a all=()
  for ((i = 0; i < n + nadd; i++)); do all+=("$d/m$i"); done
  examine "$d/ex.json" "${all[@]}" || true
  local level
  level="$(exfield "$d/ex.json" level)"
  if [ "$level" -ge 4 ]; then
    # raidcheck wants the members of the new layout in role order.
    local -a roles
    mapfile -t roles < <($PYTHON - "$d/ex.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
m = [x for x in doc["members"] if x.get("superblock") == "valid" and x.get("role") is not None and x["role"] >= 0]
n = m[0]["raid_devices"]
by = {x["role"]: x["spec"] for x in m if x["role"] < n}
print("\n".join(by[r] for r in range(n)))
PY
    )
    expect_run "$label: md parity of the new layout (raidcheck)" \
      $RAIDCHECK --from-examine "$d/ex.json" verify "${roles[@]}"
  fi
  rm -f "$d"/m*
}

one_case grow5 "--level=5" 4 1 \
  '{"add":["@D@/m4"],"want":{"raid_devices":5,"level":5}}'
one_case shrink-chunk "--level=5 --chunk=64K" 4 0 \
  '{"chunk":"16K","want":{"chunk":16384}}'
one_case layout "--level=5" 4 0 \
  '{"layout":"right-asymmetric","want":{"layout":"right-asymmetric"}}'
one_case r5to6 "--level=5" 4 1 \
  '{"level":6,"add":["@D@/m4"],"want":{"level":6,"layout":"left-symmetric-6"}}'
one_case r6to5 "--level=6" 5 0 \
  '{"level":5,"raid_devices":4,"want":{"level":5,"raid_devices":4}}'
one_case r4to5 "--level=4" 4 0 '{"level":5,"want":{"level":5,"layout":"parity-last"}}'
one_case r0to5 "--level=0" 3 1 '{"level":5,"add":["@D@/m3"],"want":{"level":5}}'
one_case r6grow "--level=6 --chunk=16K" 5 1 '{"add":["@D@/m5"],"want":{"raid_devices":6}}'
# freeze mid-reshape, slowed down so there is a middle
one_case freeze "--level=5 --chunk=16K" 4 0 '{"chunk":"4K","want":{"chunk":4096}}' \
  --freeze --speed 4194304
# the seed regression: prepare adding a member, start at once, one CPU
PIN_CPU0=1 one_case seed "--level=5" 4 2 \
  '{"add":["@D@/m4","@D@/m5"],"want":{"raid_devices":6}}'
finish
