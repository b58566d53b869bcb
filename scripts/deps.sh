#!/bin/bash
# Install everything nbdkit-raid needs to build, test and benchmark on
# Debian 12 (run as root).  Safe to run again: apt-get skips what is there.
set -euo pipefail
pkgs=(
  build-essential autoconf automake libtool pkg-config
  nbdkit nbdkit-plugin-dev libnbd-dev libnbd-bin python3-libnbd nbd-client
  libisal-dev libjson-c-dev
  libblkid-dev                         # nbdraid create: foreign signatures
  bash-completion                      # where nbdraid's completion goes
  qemu-utils fio util-linux e2fsprogs procps
  fdisk mdadm lvm2                     # tests/test-create.sh: real signatures
  spin                                 # tests/test-router-model.sh
  clang libclang-rt-14-dev             # make fuzz (libFuzzer)
  qemu-system-x86 busybox-static kmod xz-utils   # make check-clients: QEMU guests
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
