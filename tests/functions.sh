# nbdkit-raid: shared helpers of the end-to-end tests (source it, do not run).
#
# What every e2e test gets from here:
#   - a bounded run: the test re-executes itself under `timeout 300` once;
#   - a private temp dir $tmp, removed on exit together with every nbdkit
#     the test started (stop_nbdkit: SIGTERM, bounded wait, then SIGKILL);
#   - start_nbdkit: a server on a UNIX socket, in the foreground of a
#     background job so its log (stderr) is kept in $tmp, ready when its
#     pidfile appears (nbdkit writes it after it listens), under ASan when
#     SANITIZERS=yes;
#   - non-aborting checks (ok / fail / expect_eq / expect_run) that count
#     and print precisely what failed, and `finish` that prints
#     "NAME: N checks passed" or the failures and sets the exit status.
#
# Environment (from automake's TESTS_ENVIRONMENT, or set by hand):
#   PLUGIN   absolute path of nbdkit-raid-plugin.so
#   NBDRAID  absolute path of nbdraid
#   abs_srcdir, abs_builddir, SANITIZERS=yes|no

export PATH="/usr/bin:$PATH"
export LC_ALL=C
export PYTHONDONTWRITEBYTECODE=1     # no __pycache__ in the source tree

: "${abs_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${abs_builddir:=$abs_srcdir}"
: "${PLUGIN:=$abs_builddir/.libs/nbdkit-raid-plugin.so}"
: "${NBDRAID:=$abs_builddir/nbdraid/nbdraid}"
: "${SANITIZERS:=no}"
testsdir="$abs_srcdir/tests"
PYTHON=/usr/bin/python3
RAIDCHECK="$PYTHON $testsdir/raidcheck.py"

# ---- scope -------------------------------------------------------------
# NBDKIT_RAID_CHECK=unit (make distcheck in scripts/test.sh sets it): only
# the C test programs run (unit tests, tests/test-crash's write harness,
# the fuzz corpus replays); every tests/*.sh script says so and exits 77
# (SKIP).  Scripts that do not source this file repeat the same lines.
e2e_scope_gate ()
{
  if [ "${NBDKIT_RAID_CHECK:-}" = unit ]; then
    echo "$1: SKIP: NBDKIT_RAID_CHECK=unit: end-to-end test not run" >&2
    exit 77
  fi
}

# ---- bounded run -------------------------------------------------------
# Call first thing: e2e_init NAME "$@".  Re-executes the script under
# timeout(1) (300 s unless E2E_TIMEOUT says otherwise), then sets up $tmp
# and the exit trap.
e2e_init ()
{
  test_name="$1"; shift
  e2e_scope_gate "$test_name"
  if [ -z "${E2E_UNDER_TIMEOUT:-}" ]; then
    export E2E_UNDER_TIMEOUT=1
    exec timeout -k 10 "${E2E_TIMEOUT:-300}" bash "$0" "$@"
  fi
  checks_passed=0
  checks_failed=0
  nbdkit_pids=()
  declare -gA pid_of=()
  cleanup_fns=()
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/$test_name.XXXXXX")"
  trap e2e_cleanup EXIT
  trap 'echo "$test_name: interrupted (timeout?)" >&2; exit 124' INT TERM
  requires_file "$PLUGIN"
  requires_file "$NBDRAID"
}

e2e_cleanup ()
{
  local rc=$? f pid
  set +e
  for f in "${cleanup_fns[@]}"; do $f; done
  for pid in "${nbdkit_pids[@]}"; do
    kill_pid "$pid"
  done
  if [ "$rc" -ne 0 ] && [ -n "${E2E_KEEP:-}" ]; then
    echo "$test_name: keeping $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}

# Skip (77) when a tool is genuinely missing.
requires ()
{
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$test_name: SKIP: $1 is not installed" >&2
    exit 77
  fi
}
requires_file ()
{
  if [ ! -e "$1" ]; then
    echo "$test_name: FAIL: $1 does not exist (build first)" >&2
    exit 1
  fi
}

# ---- checks ------------------------------------------------------------
ok () { checks_passed=$((checks_passed + 1)); }
fail ()
{
  checks_failed=$((checks_failed + 1))
  echo "FAIL: $test_name: $*" >&2
}
# expect_eq WHAT EXPECTED GOT
expect_eq ()
{
  if [ "$2" = "$3" ]; then ok; else fail "$1: expected '$2', got '$3'"; fi
}
# expect_run WHAT CMD...: CMD must exit 0; its output is shown on failure.
expect_run ()
{
  local what="$1" out rc; shift
  set +e
  out="$("$@" 2>&1)"; rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then ok; else
    fail "$what: '$*' exited $rc"
    printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /' >&2
  fi
  return 0
}
# expect_fail WHAT CMD...: CMD must exit non-zero.
expect_fail ()
{
  local what="$1" out rc; shift
  set +e
  out="$("$@" 2>&1)"; rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then ok; else
    fail "$what: '$*' succeeded, expected failure"
    printf '%s\n' "$out" | tail -n 10 | sed 's/^/    /' >&2
  fi
  return 0
}
# Python helpers print "checks: PASSED FAILED" as their last stdout line;
# run_py WHAT SCRIPT ARGS... adds those counts to ours.
run_py ()
{
  local what="$1" out rc last p f; shift
  set +e
  out="$($PYTHON "$@" 2>&1)"; rc=$?
  set -e
  printf '%s\n' "$out" | grep -v '^checks: ' | sed "s/^/    [$what] /" >&2 || true
  last="$(printf '%s\n' "$out" | grep '^checks: ' | tail -n 1 || true)"
  if [ -n "$last" ]; then
    read -r _ p f <<<"$last"
    checks_passed=$((checks_passed + p))
    checks_failed=$((checks_failed + f))
  fi
  if [ "$rc" -ne 0 ] && { [ -z "$last" ] || [ "${f:-0}" -eq 0 ]; }; then
    fail "$what: python exited $rc without reporting a failed check"
  fi
  return 0
}

finish ()
{
  if [ "$checks_failed" -ne 0 ]; then
    echo "$test_name: $checks_failed checks FAILED, $checks_passed passed" >&2
    exit 1
  fi
  echo "$test_name: $checks_passed checks passed"
  exit 0
}

# qemu_io WHAT QEMU-IO-ARGS...: qemu-io must exit 0 and print no error or
# pattern mismatch (some versions exit 0 after a failed request).
qemu_io ()
{
  local what="$1" out rc; shift
  set +e
  out="$(qemu-io -f raw "$@" 2>&1)"; rc=$?
  set -e
  if [ "$rc" -eq 0 ] && ! grep -q -i -E 'error|fail|mismatch' <<<"$out"; then ok; else
    fail "$what: qemu-io $* exited $rc:"
    printf '%s\n' "$out" | tail -n 10 | sed 's/^/    /' >&2
  fi
  return 0
}

# ---- nbdkit --------------------------------------------------------------
uri_of () { echo "nbd+unix:///?socket=$1"; }

# sanitizer_prefix: san_env=(the command prefix every nbdkit of the tests
# runs under): empty, or under the sanitizers `env` with libasan preloaded
# and libp11-kit after it (libp11-kit's constructor calls newlocale before
# ASan initialises, which corrupts glibc's locale lock: json-c then
# deadlocks).
sanitizer_prefix ()
{
  san_env=()
  [ "$SANITIZERS" = yes ] || return 0
  san_env=(env LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(ls /lib/*-linux-gnu/libp11-kit.so.0 2>/dev/null | head -n 1)"
           ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}")
}

# nbdkit_run ARGS...: nbdkit ARGS in the foreground, under the sanitizers
# with the preload that start_nbdkit uses (a one-shot: --dump-plugin, --help).
nbdkit_run ()
{
  local -a san_env
  sanitizer_prefix
  "${san_env[@]}" nbdkit "$@"
}

# start_nbdkit NAME ARGS...: start `nbdkit -f -U $tmp/NAME.sock -P
# $tmp/NAME.pid --log=stderr ARGS...` in the background, log to
# $tmp/NAME.log, wait (bounded) until its pidfile exists.  Sets
# $sock, $pidfile, $uri and records the pid for cleanup.  Returns 1
# (after printing the log) when nbdkit exits before it is ready.
start_nbdkit ()
{
  local name="$1" i pid; shift
  sock="$tmp/$name.sock"
  pidfile="$tmp/$name.pid"
  uri="$(uri_of "$sock")"
  rm -f "$sock" "$pidfile"
  local -a san_env
  sanitizer_prefix
  "${san_env[@]}" nbdkit -f -U "$sock" -P "$pidfile" --log=stderr "$@" \
    >>"$tmp/$name.log" 2>&1 </dev/null &
  pid=$!
  nbdkit_pids+=("$pid")
  pid_of[$name]=$pid
  for ((i = 0; i < 600; i++)); do
    if [ -s "$pidfile" ] && [ -S "$sock" ]; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      echo "$test_name: nbdkit $name exited before it was ready; log:" >&2
      sed 's/^/    /' "$tmp/$name.log" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "$test_name: nbdkit $name not ready after 30 s" >&2
  return 1
}

# Terminate pid: SIGTERM, wait up to 30 s, then SIGKILL.  Returns 1 if it
# had to be killed.
kill_pid ()
{
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    sleep 0.05
  done
  echo "$test_name: pid $pid did not exit within 30 s of SIGTERM; killing" >&2
  if command -v gdb >/dev/null 2>&1; then
    echo "$test_name: threads of the stuck process:" >&2
    timeout 60 gdb -p "$pid" -batch -ex 'thread apply all bt' 2>/dev/null \
      | grep -E '^(Thread|#)' | head -n 80 | sed 's/^/    /' >&2 || true
  fi
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null
  return 1
}

# stop_nbdkit NAME: clean shutdown of the server started as NAME; a check
# that it exited within the bound and that its log has no sanitizer report
# and no internal error.
stop_nbdkit ()
{
  local name="$1" pid
  pid="${pid_of[$name]:-}"
  [ -n "$pid" ] || return 0
  if kill_pid "$pid"; then ok; else fail "nbdkit $name did not stop on SIGTERM"; fi
  pid_of[$name]=
  if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$tmp/$name.log"; then
    fail "nbdkit $name: sanitizer report in its log:"
    grep -A 20 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$tmp/$name.log" \
      | head -n 40 | sed 's/^/    /' >&2
  fi
  # An invariant the engine found broken (a refused state transition, a
  # superblock record that breaks a validation rule).
  if grep -q 'internal:' "$tmp/$name.log"; then
    fail "nbdkit $name: internal error in its log:"
    grep 'internal:' "$tmp/$name.log" | head -n 5 | sed 's/^/    /' >&2
  fi
}

# Serve the raid plugin: start_raid NAME MEMBER-ARGS...
start_raid () { local n="$1"; shift; start_nbdkit "$n" "$PLUGIN" "$@"; }

# ---- arrays --------------------------------------------------------------
# create_array ARGS... (the nbdraid create options and members).
create_array ()
{
  local out
  if ! out="$("$NBDRAID" create "$@" 2>&1)"; then
    echo "$test_name: nbdraid create $* failed:" >&2
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    return 1
  fi
}

# examine OUTFILE MEMBER...: `nbdraid examine --json` into OUTFILE.
examine ()
{
  local out="$1"; shift
  "$NBDRAID" examine --json "$@" >"$out"
}

# exfield FILE KEY: a geometry field from examine output (level, layout,
# chunk, raid_disks, data_offset, array_size, component_size), as parsed by
# raidcheck's reader.
exfield () { $PYTHON "$testsdir/e2e_common.py" field "$1" "$2"; }

# member_state FILE ROLE: the state that the newest record in examine
# output gives to ROLE (in_sync, faulty, ...).
member_state () { $PYTHON "$testsdir/e2e_common.py" member-state "$1" "$2"; }

# status_get SOCKET KEY: a field of the control socket's "status" reply,
# asked directly in the control protocol of nbdkit-raid-control(7) (KEY
# "member:ROLE" gives that member's state); "ERROR(...)" when the request
# fails.
status_get () { $PYTHON "$testsdir/e2e_common.py" status "$1" "$2"; }

# start_raid_ctl NAME CTL MEMBER-ARGS...: serve with control=CTL.  A plugin
# that does not know control= yet (a parameter of nbdkit-raid-plugin(1)) is
# one failed check, and the server is then started without it so that the
# other checks still run;
# $have_ctl says which happened (expect_status is a no-op without it).
start_raid_ctl ()
{
  local name="$1" ctl="$2"; shift 2
  have_ctl=yes
  if start_raid "$name" "$@" control="$ctl" 2>"$tmp/start.err"; then return 0; fi
  if grep -q "unknown parameter 'control'" "$tmp/$name.log"; then
    fail "$name: the plugin does not accept control=; control checks skipped"
    have_ctl=no
    start_raid "$name" "$@"
    return
  fi
  cat "$tmp/start.err" >&2
  return 1
}

# wait_status SOCKET KEY WANT SECONDS: poll status_get until KEY reads
# WANT, for at most SECONDS; the caller checks the outcome (expect_eq).
wait_status ()
{
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    [ "$(status_get "$1" "$2")" = "$3" ] && return 0
    sleep 0.1
  done
  return 0
}

# expect_status WHAT SOCKET KEY EXPECTED
expect_status ()
{
  [ "${have_ctl:-yes}" = yes ] || return 0
  expect_eq "$1" "$4" "$(status_get "$2" "$3")"
}

# The array size nbdinfo reports.
nbd_size () { nbdinfo --size "$1"; }

# cpu_ticks PID: utime+stime of a process in clock ticks.
cpu_ticks ()
{
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
