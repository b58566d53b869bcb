#!/usr/bin/env bash
# nbdkit-raid: the example systemd units (systemd/nbdkit-raid@.socket,
# nbdkit-raid@.service.in) serve an array with socket activation.
#
# Copies of the units are made with this build's plugin, nbdkit found on
# PATH, and /etc/nbdkit-raid, /run/nbdkit-raid moved into the test's temp
# dir.  Then:
#   (a) the generated build-tree service has every @VAR@ substituted and
#       an absolute ExecStart, and systemd-analyze verify accepts the units;
#   (b) the service's ExecStart, expanded as systemd expands it
#       (EnvironmentFile, %i, $VAR split at whitespace), runs under
#       systemd-socket-activate (the same LISTEN_FDS/LISTEN_PID protocol
#       and clean environment systemd gives it): nothing runs until the
#       first connection, then nbdkit serves the array on the passed
#       socket and its control socket; data written reads back; SIGTERM
#       stops it with the array clean; a second activation serves the same
#       data;
#   (c) where systemd is PID 1 (and we are root): the units are loaded
#       from /run/systemd/system under a test name, the socket unit is
#       started with systemctl, the first connection starts the service,
#       the data reads back, stopping the service leaves the array clean.
# Where systemd is not PID 1, (c) cannot run: the test then says why and
# exits 77 (SKIP) after (a) and (b) passed.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-systemd "$@"
requires nbdkit
requires nbdinfo
requires nbdcopy
requires systemd-socket-activate

nbdkit_bin="$(command -v nbdkit)"
d="$tmp/d"
mkdir -p "$d" "$tmp/etc" "$tmp/run"
m=("$d/m0" "$d/m1" "$d/m2")
create_array --level=5 --chunk=64K --size=24M "${m[@]}" || { fail "create"; finish; }
examine "$d/ex0" "${m[0]}"
size="$(exfield "$d/ex0" array_size)"

# make_units PREFIX: copies of the units named PREFIX@.socket/.service in
# $tmp/units, pointing at the test's plugin and directories.
make_units ()
{
  local p="$1"
  mkdir -p "$tmp/units"
  sed -e "s|/run/nbdkit-raid/|$tmp/run/|g" \
    "$abs_srcdir/systemd/nbdkit-raid@.socket" >"$tmp/units/$p@.socket"
  sed -e "s|@NBDKIT@|$nbdkit_bin|g" -e "s|@PLUGIN@|$PLUGIN|g" \
      -e "s|/etc/nbdkit-raid/|$tmp/etc/|g" -e "s|/run/nbdkit-raid/|$tmp/run/|g" \
      -e "s|nbdkit-raid@%i.socket|$p@%i.socket|g" \
    "$abs_srcdir/systemd/nbdkit-raid@.service.in" >"$tmp/units/$p@.service"
}
make_units nbdkit-raid
cat >"$tmp/etc/arr.conf" <<EOC
# as in systemd/nbdkit-raid.conf.example
MEMBERS="${m[*]}"
RAID_OPTIONS="member-timeout=10"
NBDKIT_OPTIONS=""
EOC

# (a) the generated unit
gen="$abs_builddir/systemd/nbdkit-raid@.service"
if [ -f "$gen" ]; then
  ok
  if grep -q '@[A-Z_]*@' "$gen"; then fail "(a) unsubstituted @VAR@ in $gen"; else ok; fi
  expect_eq "(a) ExecStart is an absolute path" / \
    "$(sed -n 's/^ExecStart=\(.\).*/\1/p' "$gen")"
  # systemd's own parser, offline: the units as installed.
  if command -v systemd-analyze >/dev/null; then
    mkdir -p "$tmp/verify"
    cp "$gen" "$abs_srcdir/systemd/nbdkit-raid@.socket" "$tmp/verify/"
    expect_run "(a) systemd-analyze verify" \
      systemd-analyze verify --man=no "$tmp/verify/nbdkit-raid@arr.socket" \
      "$tmp/verify/nbdkit-raid@arr.service"
  else
    echo "$test_name: systemd-analyze not installed: units not verified" >&2
  fi
else
  fail "(a) $gen was not generated (make all)"
fi

# The service's command line as systemd would run it for instance $1.
exec_start ()
{
  local line
  line="$(sed -n 's/^ExecStart=//p' "$tmp/units/nbdkit-raid@.service")"
  line="${line//%i/$1}"
  (
    set -a; source "$tmp/etc/$1.conf"; set +a
    eval "set -- $line"          # unquoted $VAR: split at whitespace, as systemd
    printf '%s\n' "$@"
  )
}
mapfile -t argv < <(exec_start arr)
expect_eq "(b) ExecStart expands to nbdkit PLUGIN MEMBERS control= options" \
  "$nbdkit_bin $PLUGIN ${m[*]} control=$tmp/run/arr.ctl member-timeout=10" "${argv[*]}"

sock="$tmp/run/arr.sock"
ctl="$tmp/run/arr.ctl"
uri="$(uri_of "$sock")"
san=()
if [ "$SANITIZERS" = yes ]; then
  san=(-E "LD_PRELOAD=$(gcc -print-file-name=libasan.so) $(ls /lib/*-linux-gnu/libp11-kit.so.0 2>/dev/null | head -n 1)"
       -E "ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}")
fi

# activate NAME: systemd-socket-activate listening on $sock, in the
# background; sets $act_pid (which becomes nbdkit's pid at the first
# connection).
activate ()
{
  local i
  rm -f "$sock"
  systemd-socket-activate -l "$sock" "${san[@]}" -- "${argv[@]}" \
    >>"$tmp/$1.log" 2>&1 </dev/null &
  act_pid=$!
  nbdkit_pids+=("$act_pid")
  for ((i = 0; i < 200; i++)); do [ -S "$sock" ] && return 0; sleep 0.05; done
  fail "(b) $1: systemd-socket-activate did not listen on $sock"
  sed 's/^/    /' "$tmp/$1.log" >&2
  return 1
}

if activate act1; then
  expect_eq "(b) nothing runs before the first connection" systemd-socket- \
    "$(cat "/proc/$act_pid/comm")"
  expect_eq "(b) size through the activated server" "$size" "$(nbdinfo --size "$uri" 2>>"$tmp/act1.log")"
  expect_eq "(b) the first connection started nbdkit" nbdkit "$(cat "/proc/$act_pid/comm")"
  grep -q "LISTEN" /proc/$act_pid/environ && ok || fail "(b) nbdkit has no LISTEN_FDS"
  expect_run "(b) control socket: status --test (optimal)" "$NBDRAID" -C "$ctl" status --test
  head -c 4M /dev/urandom >"$d/data"
  expect_run "(b) write" nbdcopy "$d/data" "$uri"
  if kill_pid "$act_pid"; then ok; else fail "(b) nbdkit did not stop on SIGTERM"; fi
  "$NBDRAID" examine "${m[0]}" >"$d/ex1" 2>&1 || true
  expect_eq "(b) stopped: the array is clean" "clean" \
    "$(sed -n 's/^ *State : //p' "$d/ex1")"
  expect_eq "(b) stopped: open by nobody" "nobody (stopped cleanly)" \
    "$(sed -n 's/^ *Open By : //p' "$d/ex1")"
fi
if activate act2; then
  rm -f "$d/back"
  expect_run "(b) second activation: read" nbdcopy "$uri" "$d/back"
  expect_run "(b) second activation: the data" cmp -n 4194304 "$d/back" "$d/data"
  if kill_pid "$act_pid"; then ok; else fail "(b) second activation did not stop"; fi
fi
for l in act1 act2; do
  if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$tmp/$l.log" 2>/dev/null; then
    fail "(b) $l: sanitizer report"; grep -A 20 ERROR "$tmp/$l.log" | head -n 40 >&2
  fi
done

# (c) systemd itself
why=
if [ ! -d /run/systemd/system ]; then
  why="systemd is not PID 1 here (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo '?'))"
elif [ "$(id -u)" -ne 0 ]; then
  why="not root: cannot load units into the system manager"
elif ! command -v systemctl >/dev/null; then
  why="no systemctl"
fi
if [ -z "$why" ]; then
  unit="nbdkit-raid-test$$"
  make_units "$unit"
  sys_cleanup ()
  {
    systemctl stop "$unit@arr.service" "$unit@arr.socket" 2>/dev/null
    rm -f "/run/systemd/system/$unit@.socket" "/run/systemd/system/$unit@.service"
    systemctl daemon-reload
  }
  cleanup_fns+=(sys_cleanup)
  if [ "$SANITIZERS" = yes ]; then
    sed -i "/^\[Service\]/a Environment=\"LD_PRELOAD=$(gcc -print-file-name=libasan.so)\" ASAN_OPTIONS=detect_leaks=0" \
      "$tmp/units/$unit@.service"
  fi
  cp "$tmp/units/$unit@.socket" "$tmp/units/$unit@.service" /run/systemd/system/
  systemctl daemon-reload
  rm -f "$sock" "$ctl"
  expect_run "(c) systemctl start $unit@arr.socket" systemctl start "$unit@arr.socket"
  expect_eq "(c) the service waits for a connection" inactive \
    "$(systemctl is-active "$unit@arr.service" || true)"
  expect_eq "(c) size through systemd's socket" "$size" "$(nbdinfo --size "$uri" 2>&1)"
  expect_eq "(c) the connection started the service" active \
    "$(systemctl is-active "$unit@arr.service" || true)"
  rm -f "$d/back"
  expect_run "(c) read" nbdcopy "$uri" "$d/back"
  expect_run "(c) the data" cmp -n 4194304 "$d/back" "$d/data"
  expect_run "(c) status --test" "$NBDRAID" -C "$ctl" status --test
  expect_run "(c) systemctl stop" systemctl stop "$unit@arr.service" "$unit@arr.socket"
  "$NBDRAID" examine "${m[0]}" >"$d/ex2" 2>&1 || true
  expect_eq "(c) stopped: the array is clean" clean "$(sed -n 's/^ *State : //p' "$d/ex2")"
  journalctl -u "$unit@arr.service" --no-pager -n 20 >"$tmp/journal" 2>&1 || true
  if [ "$checks_failed" -ne 0 ]; then sed 's/^/    [journal] /' "$tmp/journal" >&2; fi
  finish
fi
if [ "$checks_failed" -ne 0 ]; then finish; fi
echo "$test_name: (a) and (b) passed ($checks_passed checks); SKIP (c): $why:" \
  "the units were not started by systemd" >&2
exit 77
