# nbdkit-raid: helpers of the guest scripts (guest-init.sh, md-init.sh);
# run_guest (lib.sh) puts this file at /guest/lib.sh in every guest.
# Busybox sh.  Reports go to the second serial port, one line each, and
# the host counts them (tests/clients/lib.sh guest_results).
# shellcheck shell=sh

R=/dev/ttyS1
report () { echo "$*" >"$R"; }
step ()  # step WHAT CMD...: run CMD, report, return its status
{
  what="$1"; shift
  "$@"
  rc=$?
  if [ "$rc" -eq 0 ]; then report "STEP $what ok"; else report "STEP $what FAIL $rc"; fi
  return "$rc"
}
die () { echo "guest: giving up: $*"; exit 1; }
uptime_s () { cut -d' ' -f1 /proc/uptime; }
