# nbdkit-raid: helpers of the real-client tests in tests/clients/ (source
# it, do not run).
#
# Builds on tests/functions.sh (bounded run, $tmp, start_nbdkit on UNIX
# sockets, counted checks, finish) and adds what real clients need:
#   - defaults for PLUGIN and NBDRAID (the lead's out-of-tree build) when
#     automake did not set them;
#   - start_nbdkit_tcp: a server on 127.0.0.1:PORT (a free port);
#   - guest_image / guest_probe / run_guest: the QEMU guest of
#     scripts/guest-image.sh, booted under TCG with the test's own
#     /guest/init.sh appended as a second initramfs archive; its console
#     goes to $tmp/NAME.console, what it reports to $tmp/NAME.results
#     (second serial port);
#   - guest_results: turns the guest's report into counted checks;
#   - guest_channel / wait_guest_line / tell_guest: sync points with a
#     running guest (it reports "SYNC NAME" and waits for the host's line
#     on its third serial port);
#   - run_bounded: a background command with a bound, killed at exit;
#     py_checks: the counted checks of a Python helper run in the background;
#   - at_exit / at_exit_late: cleanup steps (unmount, detach loop devices;
#     delete network namespaces) run by the exit trap before / after the
#     servers are stopped;
#   - verify_fs_image: the host's own check of an ext4 image (e2fsck,
#     debugfs rdump, checksums);
#   - timing: now / elapsed for the figures each test prints.
#
# Invariant: everything a test starts or creates (QEMU, nbdkit, FUSE mounts,
# loop devices, mounts, network namespaces, veth links) is registered for
# cleanup before the step that can fail after creating it, so an exit at
# any point -- a failed check, set -e, the timeout -- leaves nothing behind.

clients_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${abs_srcdir:=$(cd "$clients_dir/../.." && pwd)}"
: "${PLUGIN:=/tmp/raid-build/.libs/nbdkit-raid-plugin.so}"
: "${NBDRAID:=/tmp/raid-build/nbdraid/nbdraid}"
export abs_srcdir PLUGIN NBDRAID
# shellcheck source=../functions.sh
source "$abs_srcdir/tests/functions.sh"

GUEST_IMAGE_SH="$abs_srcdir/scripts/guest-image.sh"
QEMU="${QEMU:-qemu-system-x86_64}"

# ---- time ------------------------------------------------------------------
now () { date +%s.%N; }
# elapsed T0 [T1]: seconds between two `now` readings, 2 decimals.
elapsed () { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.2f", b - a }'; }

# ---- cleanup ---------------------------------------------------------------
# At exit, in this order (each step's failures are ignored):
#   1. the at_exit commands, last registered first (umount, losetup -d);
#   2. our background children (QEMU, nbdfuse, ...): SIGTERM, then SIGKILL;
#   3. the nbdkit servers, last started first: a raid server goes before
#      the member servers it is connected to (member nbdkits 1.32 whose
#      client had been torn down were seen to ignore SIGTERM: threads
#      blocked on a lock; hence SIGKILL after 5 s);
#   4. the at_exit_late commands, last registered first (network
#      namespaces and links, which the servers needed until step 3).
# functions.sh's own cleanup then finds every server gone and removes $tmp.
clients_exit_cmds=()
clients_late_cmds=()
at_exit () { clients_exit_cmds=("$(printf '%q ' "$@")" "${clients_exit_cmds[@]}"); }
at_exit_late () { clients_late_cmds=("$(printf '%q ' "$@")" "${clients_late_cmds[@]}"); }
clients_cleanup ()
{
  local c i pid
  for c in "${clients_exit_cmds[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  clients_exit_cmds=()
  kill_bg_children
  for ((i = ${#nbdkit_pids[@]} - 1; i >= 0; i--)); do
    pid="${nbdkit_pids[$i]}"
    if our_running_child "$pid"; then kill_pid_quick "$pid"; fi
  done
  for c in "${clients_late_cmds[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  clients_late_cmds=()
}

# clients_init NAME "$@": e2e_init plus our cleanup (under a longer bound:
# E2E_TIMEOUT, default 600 s, since a TCG guest is slow).
clients_init ()
{
  export E2E_TIMEOUT="${E2E_TIMEOUT:-600}"
  e2e_init "$@"
  cleanup_fns+=(clients_cleanup)
  test_t0="$(now)"
}

# Skip loudly: only for a machine that lacks something fundamental.
skip_loudly ()
{
  {
    echo "**********************************************************************"
    echo "$test_name: SKIP: $*"
    echo "**********************************************************************"
  } >&2
  exit 77
}

# clients_finish: print the run time, then finish.
clients_finish ()
{
  echo "$test_name: run time $(elapsed "$test_t0") s"
  finish
}

# ---- servers ---------------------------------------------------------------
# free_port: a TCP port on 127.0.0.1 that nobody listens on right now.
free_port ()
{
  $PYTHON -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# start_nbdkit_tcp NAME ARGS...: like start_nbdkit, but listening on
# 127.0.0.1:$port (a free port, chosen here; a few tries if it is taken
# between the choice and the bind).  Sets $port, $pidfile, $uri.
start_nbdkit_tcp ()
{
  local name="$1" try i pid; shift
  pidfile="$tmp/$name.pid"
  for ((try = 0; try < 5; try++)); do
    port="$(free_port)"
    uri="nbd://127.0.0.1:$port"
    rm -f "$pidfile"
    local -a pre=()
    if [ "$SANITIZERS" = yes ]; then
      pre=(env LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
           ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}")
    fi
    "${pre[@]}" nbdkit -f -i 127.0.0.1 -p "$port" -P "$pidfile" --log=stderr "$@" \
      >>"$tmp/$name.log" 2>&1 </dev/null &
    pid=$!
    nbdkit_pids+=("$pid")
    pid_of[$name]=$pid
    for ((i = 0; i < 600; i++)); do
      if [ -s "$pidfile" ]; then return 0; fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$test_name: nbdkit $name (tcp) not ready after 30 s" >&2
      kill_pid_quick "$pid"
      break
    fi
    wait "$pid" 2>/dev/null || true
    grep -q -i 'address already in use' "$tmp/$name.log" || break
  done
  echo "$test_name: nbdkit $name (tcp) did not start; log:" >&2
  sed 's/^/    /' "$tmp/$name.log" >&2
  return 1
}

# detach_loop_if_ours LOOP FILE: losetup -d LOOP only while its backing file
# is still FILE (a loop device released earlier may belong to someone else
# by now).
detach_loop_if_ours ()
{
  local back
  back="$(losetup -n -O BACK-FILE "$1" 2>/dev/null)" || return 0
  [ "$back" = "$2" ] && losetup -d "$1"
}

# ---- bounded background processes ------------------------------------------
# run_bounded BOUND LOG CMD...: run CMD in the background (stdout and stderr
# to LOG), wait for it at most BOUND seconds, then SIGTERM, 5 s later
# SIGKILL.  CMD is our direct child (no timeout(1) in between, whose own
# process group the outer bound would not reach), and it is killed by the
# exit trap if the test ends while it runs.  Returns CMD's exit status,
# 124 when the bound was hit.
bg_pids=()
run_bounded ()
{
  local bound="$1" log="$2" pid rc=0 i n; shift 2
  "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  bg_pids+=("$pid")
  n=$((bound * 10))
  for ((i = 0; i < n; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$test_name: $1 still running after $bound s: terminating it" >&2
    kill_pid_quick "$pid"
    return 124
  fi
  wait "$pid" || rc=$?
  return "$rc"
}

# kill_pid_quick PID: SIGTERM, up to 5 s, SIGKILL; reaps it.
kill_pid_quick ()
{
  local pid="$1" i
  if ! kill -TERM "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    return 0
  fi
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# our_running_child PID: PID is a child of this shell that has not been
# reaped (`jobs -pr` lists no reaped pid, so a pid reused by another
# process is never signalled).
our_running_child ()
{
  case " $(jobs -pr | tr '\n' ' ') " in *" $1 "*) return 0 ;; esac
  return 1
}

# Children of run_bounded and the like still running at exit.
kill_bg_children ()
{
  local pid
  for pid in "${bg_pids[@]}"; do
    if our_running_child "$pid"; then kill_pid_quick "$pid"; fi
  done
}

# ---- the QEMU guest --------------------------------------------------------
# guest_image: build or reuse the guest (scripts/guest-image.sh); sets
# $guest_dir.  Skips (77) only when guest-image.sh says the packages
# cannot be had; any other failure of it is a failure of the test.
guest_image ()
{
  local rc=0 t0
  t0="$(now)"
  guest_dir="$("$GUEST_IMAGE_SH" 2>"$tmp/guest-image.log")" || rc=$?
  if [ "$rc" -eq 77 ]; then
    cat "$tmp/guest-image.log" >&2
    skip_loudly "the guest image cannot be built here (see above)"
  fi
  if [ "$rc" -ne 0 ] || [ ! -f "$guest_dir/vmlinux" ]; then
    sed 's/^/    /' "$tmp/guest-image.log" >&2
    fail "scripts/guest-image.sh failed (exit $rc)"
    finish
  fi
  ok
  echo "$test_name: guest image $guest_dir ready in $(elapsed "$t0") s"
}

# qemu_base_args: the machine every guest runs on.  TCG explicitly: /dev/kvm
# may exist and still hang (seen on this machine kind).  GUEST_SMP vCPUs
# (default 1).
qemu_base_args ()
{
  qemu_args=(-accel tcg -M pc -m 512 -smp "${GUEST_SMP:-1}" -nographic -nodefaults -no-reboot
             -monitor none -kernel "$guest_dir/vmlinux"
             -append "console=ttyS0 panic=-1 quiet")
}

# guest_probe: boot the bare guest (no /guest/init.sh: it powers off at
# once).  QEMU that cannot start a guest at all is the one reason to skip;
# prints the boot time (QEMU start to power-off) and the guest's own
# uptime at /init.
guest_probe ()
{
  local t0 t1 rc=0 up
  qemu_base_args
  t0="$(now)"
  run_bounded 120 "$tmp/probe.qemu" "$QEMU" "${qemu_args[@]}" \
    -initrd "$guest_dir/initramfs.img" -serial "file:$tmp/probe.console" || rc=$?
  t1="$(now)"
  if ! grep -q 'guest-init: up after' "$tmp/probe.console" 2>/dev/null; then
    sed 's/^/    /' "$tmp/probe.qemu" >&2
    tail -n 30 "$tmp/probe.console" 2>/dev/null | sed 's/^/    [console] /' >&2 || true
    skip_loudly "QEMU ($QEMU, TCG) could not boot the bare guest (exit $rc)"
  fi
  ok
  up="$(sed -n 's/.*guest-init: up after \([0-9.]*\) s.*/\1/p' "$tmp/probe.console")"
  guest_boot_time="$(elapsed "$t0" "$t1")"
  echo "$test_name: guest boot: /init reached at guest uptime ${up} s; QEMU start to power-off $guest_boot_time s"
}

# run_guest NAME OVERLAY-DIR BOUND QEMU-ARGS...: boot the guest with
# OVERLAY-DIR (which holds guest/init.sh) appended to the initramfs; wait
# at most BOUND seconds.  Console: $tmp/NAME.console, report: $tmp/NAME.results.
# Returns QEMU's exit status (124 on the bound).
run_guest ()
{
  local name="$1" overlay="$2" bound="$3" rc=0 t0; shift 3
  mkdir -p "$overlay/guest"
  install -m 644 "$clients_dir/guest-lib.sh" "$overlay/guest/lib.sh"
  (cd "$overlay" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$tmp/$name.overlay.gz"
  cat "$guest_dir/initramfs.img" "$tmp/$name.overlay.gz" >"$tmp/$name.initrd"
  rm -f "$tmp/$name.console" "$tmp/$name.results"
  qemu_base_args
  t0="$(now)"
  run_bounded "$bound" "$tmp/$name.qemu" "$QEMU" "${qemu_args[@]}" \
    -initrd "$tmp/$name.initrd" -serial "file:$tmp/$name.console" \
    -serial "file:$tmp/$name.results" "$@" || rc=$?
  guest_run_time="$(elapsed "$t0")"
  rm -f "$tmp/$name.initrd"
  echo "$test_name: guest $name ran $guest_run_time s (QEMU exit $rc)"
  if [ "$rc" -ne 0 ]; then
    fail "guest $name: QEMU exited $rc"
    sed 's/^/    [qemu] /' "$tmp/$name.qemu" >&2
  fi
  return 0
}

# guest_results NAME: the report protocol of guest-init.sh, one line each:
#   STEP WHAT ok | STEP WHAT FAIL RC   a counted check
#   SUM SHA256 PATH                    collected into $tmp/NAME.sums
#   INFO TEXT                          shown
#   DONE                               the script reached its end
# Missing DONE is a failure (the console's tail is shown).
guest_results ()
{
  local name="$1" r="$tmp/$1.results" kind a b c
  : >"$tmp/$name.sums"
  if [ ! -s "$r" ]; then
    fail "guest $name reported nothing"
  else
    tr -d '\r' <"$r" >"$r.txt"
    while read -r kind a b c; do
      case "$kind" in
        STEP) if [ "$b" = ok ]; then ok; else fail "guest $name: step $a: ${b} ${c}"; fi ;;
        SUM) echo "$a  $b" >>"$tmp/$name.sums" ;;
        INFO) echo "$test_name: guest $name: $a $b $c" ;;
        SYNC) echo "$test_name: guest $name: passed sync point $a" ;;
      esac
    done <"$r.txt"
  fi
  if grep -qx DONE "$r.txt" 2>/dev/null; then ok; else
    fail "guest $name did not finish its script"
    tail -n 40 "$tmp/$name.console" 2>/dev/null | sed 's/^/    [console] /' >&2 || true
  fi
}

# py_checks WHAT OUT RC: like functions.sh's run_py for a Python helper that
# ran in the background (output in OUT, exit status RC): its lines are
# shown, its "checks: PASSED FAILED" line is added to our counts.
py_checks ()
{
  local what="$1" out="$2" rc="$3" last p f
  grep -v '^checks: ' "$out" | sed "s/^/    [$what] /" >&2 || true
  last="$(grep '^checks: ' "$out" | tail -n 1 || true)"
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

# ---- talking to a running guest ----------------------------------------------
# A test that acts on the array while the guest works (a reshape, a
# rebuild) meets the guest at sync points: the guest reports "SYNC NAME" on
# its report port and then waits for a line from the host on its third
# serial port (/dev/ttyS2), which the host writes into a FIFO (QEMU's pipe
# chardev).  No sleeps: each side waits for the other's line, bounded.
#
# guest_channel NAME: make the FIFOs $tmp/NAME.go.in/.out; sets
# $guest_channel_args, the QEMU arguments (after run_guest's two serial
# ports, so the guest sees it as /dev/ttyS2).
guest_channel ()
{
  local p="$tmp/$1.go"
  rm -f "$p.in" "$p.out"
  mkfifo "$p.in" "$p.out"
  guest_channel_args=(-chardev "pipe,id=go,path=$p" -serial chardev:go)
}

# tell_guest NAME LINE: send LINE to guest NAME's /dev/ttyS2.  Bounded:
# with no QEMU holding the FIFO open the write would block; returns 1 then.
tell_guest ()
{
  timeout 10 bash -c 'printf "%s\n" "$1" >"$2"' _ "$2" "$tmp/$1.go.in"
}

# wait_guest_line NAME LINE BOUND: wait until guest NAME's report holds the
# line LINE (exactly; carriage returns ignored), at most BOUND seconds.
# Returns 1 on the bound.
wait_guest_line ()
{
  local f="$tmp/$1.results" n=$(($3 * 10)) i
  for ((i = 0; i < n; i++)); do
    if [ -f "$f" ] && tr -d '\r' <"$f" | grep -qxF "$2"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# ---- host-side verification of a filesystem ---------------------------------
# verify_fs_image WHAT IMAGE SUMS: e2fsck -fn IMAGE is clean and every file
# in SUMS (sha256sum format, paths relative to the root of the fs) dumped
# by debugfs has the recorded checksum.
verify_fs_image ()
{
  local what="$1" img="$2" sums="$3" out="$tmp/rdump" n
  expect_run "$what: host e2fsck -fn" e2fsck -fn "$img"
  rm -rf "$out"; mkdir -p "$out"
  if debugfs -R "rdump / $out" "$img" >"$tmp/debugfs.log" 2>&1; then ok; else
    fail "$what: debugfs rdump"; sed 's/^/    /' "$tmp/debugfs.log" >&2
  fi
  n="$(wc -l <"$sums")"
  if [ "$n" -gt 0 ]; then ok; else fail "$what: no checksums to verify"; fi
  if (cd "$out" && sha256sum --quiet -c "$sums") >"$tmp/sumcheck.log" 2>&1; then
    ok
    echo "$test_name: $what: $n files verified on the host"
  else
    fail "$what: checksums differ on the host:"
    head -n 20 "$tmp/sumcheck.log" | sed 's/^/    /' >&2
  fi
  rm -rf "$out"
}
