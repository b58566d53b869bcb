#!/bin/bash
# Build the Debian package nbdkit-plugin-raid from the release tarball:
# scripts/deb.sh [OUTDIR] (default build-deb/).  The tarball (make dist in
# build/) is unpacked in a temporary directory and built there with
# `dpkg-buildpackage -us -uc -b` (the C tests run, the end-to-end ones are
# skipped: debian/rules); the .deb, .buildinfo and .changes land in OUTDIR
# and lintian checks the result: any error fails the build.  Needs root
# for apt-get the first time (debhelper, lintian and scripts/deps.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$top/build-deb}" && cd "${1:-$top/build-deb}" && pwd)
"$top/scripts/deps.sh"
for p in debhelper lintian fakeroot; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      debhelper lintian fakeroot >/dev/null; break; }
done
"$top/scripts/build.sh" "$top/build"
make -C "$top/build" -s dist >/dev/null
ver=$(sed -n 's/^PACKAGE_VERSION = //p' "$top/build/Makefile")
tarball="$top/build/nbdkit-raid-$ver.tar.gz"
work=$(mktemp -d "${TMPDIR:-/tmp}/nbdkit-raid-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work"
cd "$work/nbdkit-raid-$ver"
debver=$(dpkg-parsechangelog -SVersion)
if [ "$debver" != "$ver" ]; then
  echo "deb.sh: debian/changelog says $debver, configure.ac says $ver" >&2
  exit 1
fi
jobs=$(nproc); [ "$jobs" -le 2 ] || jobs=2
dpkg-buildpackage -us -uc -b -j"$jobs" >"$work/build.log" 2>&1 || {
  tail -n 80 "$work/build.log"; echo "deb.sh: dpkg-buildpackage failed" >&2; exit 1; }
grep -E '^(PASS|FAIL|SKIP|ERROR|# [A-Z]+:)' "$work/build.log" || true
changes=$(ls "$work"/nbdkit-raid_"$ver"_*.changes)
cp "$work"/*.deb "$work"/*.buildinfo "$changes" "$out"/
echo "deb.sh: built $(cd "$out" && ls nbdkit-plugin-raid_"$ver"_*.deb)"
lintian --fail-on error --info "$out/$(basename "$changes")"
echo "deb.sh: lintian: no errors"
