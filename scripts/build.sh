#!/bin/bash
# Build nbdkit-raid out of tree: scripts/build.sh BUILDDIR [configure args...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=$1; shift
[ -x "$top/configure" ] || (cd "$top" && mkdir -p m4 && autoreconf -fi >/dev/null)
mkdir -p "$builddir"
cd "$builddir"
[ -f Makefile ] || "$top/configure" -q "$@"
make -s -j"$(nproc)"
