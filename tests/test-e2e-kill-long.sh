#!/usr/bin/env bash
# nbdkit-raid: test-e2e-kill.sh with many more seeded kill moments and a
# longer window (0.2-2 s into the load), for `make check-long`.
# E2E_KILL_SEEDS / E2E_KILL_WINDOW / E2E_TIMEOUT override the defaults.
export E2E_KILL_NAME=test-e2e-kill-long
export E2E_KILL_SEEDS="${E2E_KILL_SEEDS:-$(seq -s ' ' 1 40)}"
export E2E_KILL_WINDOW="${E2E_KILL_WINDOW:-0.2 2.0}"
export E2E_TIMEOUT="${E2E_TIMEOUT:-3600}"
exec bash "$(dirname "$0")/test-e2e-kill.sh" "$@"
