#!/bin/bash
# The full test suite: install dependencies, then build and run `make check`
# three ways: warnings as errors, pinned to one CPU, and with ASan+UBSan;
# then `make distcheck` (the release tarball builds out of tree, passes its
# C tests, installs under a temporary prefix and uninstalls cleanly).  The
# distcheck runs the C tests only (NBDKIT_RAID_CHECK=unit: every
# tests/*.sh script is a visible SKIP there, the suite having run above);
# DISTCHECK_FULL=1 runs the whole suite inside it too.  Last, the Debian
# package is built from the tarball and checked by lintian (scripts/deb.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
status=0
pass=0; fail=0; skip=0
# show_log LOG: a failed test's log: every line naming a failed check
# (wherever it stands), then its tail.
show_log() {
  echo "--- $1"
  grep -n -E '(^|: )(FAIL|not ok)' "$1" | grep -v -E '^[0-9]+:(PASS|FAIL)(:| tests/)' | head -n 20 || true
  echo "--- its last 60 lines"
  tail -n 60 "$1"
}
# run NAME BUILDDIR COMMAND...: run one `make check`, count its results.
run() {
  local name=$1 dir=$2 t; shift 2
  echo "=== $name"
  if ! "$@"; then
    echo "=== $name: FAILED"; status=1
    grep -l -E '^:test-result: (FAIL|ERROR)' "$dir"/tests/*.trs 2>/dev/null |
      while read -r t; do show_log "${t%.trs}.log"; done
  fi
  for t in "$dir"/tests/*.trs; do
    [ -f "$t" ] || continue
    case "$(sed -n 's/^:test-result: //p' "$t")" in
      PASS) pass=$((pass+1)) ;; SKIP) skip=$((skip+1)) ;; *) fail=$((fail+1)) ;;
    esac
  done
}
"$top/scripts/build.sh" "$top/build" --enable-werror
run "make check (-Werror build)" "$top/build" make -C "$top/build" -s check
run "make check pinned to one CPU" "$top/build" taskset -c 0 make -C "$top/build" -s check
echo "=== make check-clients (QEMU guests, kernel nbd-client, nbdfuse, qemu-img, netns)"
out=$(make -C "$top/build" -s check-clients 2>&1) || status=1
printf '%s\n' "$out" | grep -E '^(===|PASS|FAIL|SKIP|check-clients:|failed:)' || true
# A failed client test: its own output (the section after its "=== NAME").
for t in $(printf '%s\n' "$out" | sed -n 's/^failed: //p'); do
  echo "--- $t"
  printf '%s\n' "$out" | awk -v t="=== $t" '$0 == t { on = 1; next } /^=== / { on = 0 } on' |
    tail -n 80
done
read -r cp cf cs < <(printf '%s\n' "$out" |
  sed -n 's/^check-clients: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped.*/\1 \2 \3/p')
pass=$((pass + ${cp:-0})); fail=$((fail + ${cf:-1})); skip=$((skip + ${cs:-0}))
"$top/scripts/build.sh" "$top/build-sanitizers" --enable-werror --enable-sanitizers
run "make check (ASan+UBSan)" "$top/build-sanitizers" make -C "$top/build-sanitizers" -s check
# distcheck counts as one result; on failure the failed tests' logs of the
# tarball's build (left in place by distcheck) are shown.
if [ -n "${DISTCHECK_FULL:-}" ]; then scope=; what="full make check"
else scope=unit; what="C tests only: NBDKIT_RAID_CHECK=unit"; fi
echo "=== make distcheck ($what)"
if NBDKIT_RAID_CHECK=$scope make -C "$top/build" -s distcheck; then
  pass=$((pass+1))
else
  echo "=== make distcheck: FAILED"; status=1; fail=$((fail+1))
  grep -l -E '^:test-result: (FAIL|ERROR)' "$top"/build/nbdkit-raid-*/_build/sub/tests/*.trs 2>/dev/null |
    while read -r t; do show_log "${t%.trs}.log"; done
fi
echo "=== Debian package (scripts/deb.sh: dpkg-buildpackage, lintian)"
if "$top/scripts/deb.sh" "$top/build-deb"; then pass=$((pass+1))
else echo "=== Debian package: FAILED"; status=1; fail=$((fail+1)); fi
echo "$pass passed, $fail failed, $skip skipped"
exit $status
