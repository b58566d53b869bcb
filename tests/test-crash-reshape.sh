#!/usr/bin/env bash
# nbdkit-raid: the crash-simulation harness applied to live reshape (see the
# RESHAPE part of tests/test-crash.c): every member write of each scripted
# reshape is a crash point, each checked in one crash mode (cycling through
# all four), reassembled with any one member left out, resumed to the end,
# verified sector by sector and scrubbed.  The full run (every mode at every
# point) is part of `make check-crash-long`.
set -euo pipefail
if [ "${NBDKIT_RAID_CHECK:-}" = unit ]; then   # see e2e_scope_gate in functions.sh
  echo "test-crash-reshape: SKIP: NBDKIT_RAID_CHECK=unit: script test not run" >&2; exit 77
fi
exec "${abs_builddir:-.}/tests/test-crash" --reshape --rotate-modes
