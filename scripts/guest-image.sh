#!/usr/bin/env bash
# nbdkit-raid: build (or reuse) the QEMU guest used by tests/clients/.
#
# What it makes, from Debian packages only:
#   DIR/vmlinux         the Debian kernel (linux-image-amd64's current
#                       flavour), decompressed from the packaged bzImage into
#                       the uncompressed ELF vmlinux; QEMU's -kernel boots an
#                       ELF through its PVH entry note, which under TCG
#                       reaches /init in a few seconds, skipping the bzImage
#                       real-mode setup and the in-guest decompression.
#   DIR/initramfs.img   a gzip'd newc cpio with busybox-static (every applet
#                       linked), nbd-client, mke2fs/e2fsck, mdadm (with the
#                       shared libraries ldd names), and the modules a test
#                       needs: virtio PCI/block/net/SCSI, SCSI disks, nbd,
#                       ext4, crc32c and the md drivers (md-mod, raid0,
#                       raid1, raid10, raid456) with their dependencies from
#                       modules.dep; a generic /init (below).  Only the
#                       modules in /etc/guest-modules are loaded at boot; a
#                       test modprobes the others (md, virtio_scsi) itself.
#   DIR/kernel-version  the module directory name (uname -r in the guest).
#   DIR/manifest        package versions and the hash of this script: the key.
# DIR is printed on stdout (the only thing printed there).
#
# The generic /init mounts proc, sysfs and devtmpfs, loads the modules named
# in /etc/guest-modules, runs /guest/init.sh (which the test adds as a second
# cpio archive appended to initramfs.img: the kernel unpacks concatenated
# archives in order) with its output on the console, prints
# "guest-init: /guest/init.sh exited RC" and powers off.  A kernel panic
# powers off too when the test boots with panic=-1 and -no-reboot.
#
# Cache: $NBDKIT_RAID_GUEST_CACHE, else /var/cache/nbdkit-raid-guest as root,
# else ${XDG_CACHE_HOME:-$HOME/.cache}/nbdkit-raid-guest.  One subdirectory
# per key (hash of this script and of the package versions), built in a
# temporary directory and renamed into place, under flock: concurrent callers
# build it once.  The downloaded kernel .deb is deleted after extraction.
#
# Installs what it needs with apt-get when run as root: qemu-system-x86,
# busybox-static, nbd-client, e2fsprogs, kmod (depmod), xz-utils; the kernel
# and mdadm packages are fetched with `apt-get download` and unpacked, never
# installed (mdadm on the host would bring udev rules that assemble arrays on
# the host's own devices).
#
# Exit status: 0 ok; 77 when the packages cannot be had (not root, or apt
# fails), with the reason on stderr; 1 on any other failure.

set -euo pipefail
export LC_ALL=C
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

me="guest-image.sh"
say () { echo "$me: $*" >&2; }
die () { say "ERROR: $*"; exit 1; }
skip () {
  say "**************************************************************"
  say "SKIP: $*"
  say "**************************************************************"
  exit 77
}

if [ "$(id -u)" -eq 0 ]; then
  cache_root="${NBDKIT_RAID_GUEST_CACHE:-/var/cache/nbdkit-raid-guest}"
else
  cache_root="${NBDKIT_RAID_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nbdkit-raid-guest}"
fi

# ---- packages ---------------------------------------------------------------
host_pkgs=(qemu-system-x86 busybox-static nbd-client e2fsprogs kmod xz-utils)

pkg_installed () {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_updated=no
apt_update () {
  [ "$apt_updated" = yes ] && return 0
  apt-get update -qq >&2 || return 1
  apt_updated=yes
}

ensure_packages () {
  local missing=() p
  for p in "${host_pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || skip "packages missing (${missing[*]}) and not root to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt_update || skip "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
      || skip "apt-get install ${missing[*]} failed"
  fi
}

# The versioned kernel package linux-image-amd64 points at.
kernel_package () {
  local p
  p="$(apt-cache depends linux-image-amd64 2>/dev/null \
       | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')"
  if [ -z "$p" ]; then
    apt_update || return 1
    p="$(apt-cache depends linux-image-amd64 2>/dev/null \
         | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')"
  fi
  [ -n "$p" ] && echo "$p"
}

pkg_version () {
  dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none
}

ensure_packages
kpkg="$(kernel_package)" || skip "cannot resolve linux-image-amd64 (apt-cache)"
kver_pkg="$(apt-cache policy "$kpkg" | awk '/Candidate:/ { print $2; exit }')"
mdadm_ver="$(apt-cache policy mdadm 2>/dev/null | awk '/Candidate:/ { print $2; exit }')"
if [ -z "$mdadm_ver" ] || [ "$mdadm_ver" = "(none)" ]; then
  apt_update || skip "apt-get update failed"
  mdadm_ver="$(apt-cache policy mdadm 2>/dev/null | awk '/Candidate:/ { print $2; exit }')"
fi
[ -n "$mdadm_ver" ] && [ "$mdadm_ver" != "(none)" ] || skip "no mdadm package candidate (apt-cache)"

# ---- the cache key ----------------------------------------------------------
manifest="$(
  echo "script $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
  echo "kernel $kpkg $kver_pkg"
  echo "mdadm $mdadm_ver"
  for p in busybox-static nbd-client e2fsprogs libc6 libgnutls30; do
    echo "$p $(pkg_version "$p")"
  done
)"
key="$(printf '%s\n' "$manifest" | sha256sum | cut -c1-16)"
out="$cache_root/$key"

if [ -f "$out/manifest" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock -w 900 9 || die "cannot lock $cache_root/.lock"
if [ -f "$out/manifest" ]; then echo "$out"; exit 0; fi

work="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say "building the guest image in $out ($kpkg $kver_pkg)"

# download_unpack PKG DIR: `apt-get download PKG` (the candidate version)
# and unpack it into DIR; the .deb is deleted.
download_unpack () {
  local pkg="$1" dir="$2" deb
  mkdir -p "$work/dl"
  (cd "$work/dl" && apt-get download "$pkg" >/dev/null 2>"$work/download.err") || {
    apt_update || skip "apt-get update failed"
    (cd "$work/dl" && apt-get download "$pkg" >/dev/null 2>"$work/download.err") \
      || { cat "$work/download.err" >&2; skip "apt-get download $pkg failed"; }
  }
  deb="$(ls "$work"/dl/*.deb)"
  mkdir -p "$dir"
  dpkg-deb -x "$deb" "$dir"
  rm -f "$deb"
}

# ---- kernel -----------------------------------------------------------------
download_unpack "$kpkg" "$work/pkg"
kver="$(ls "$work/pkg/lib/modules" | head -n 1)"
[ -n "$kver" ] || die "no lib/modules in $kpkg"
bz="$work/pkg/boot/vmlinuz-$kver"
[ -f "$bz" ] || die "no /boot/vmlinuz-$kver in $kpkg"

# The bzImage carries the kernel ELF as one compressed stream after the
# setup code: find the stream's magic and decompress the first stream.
extract_vmlinux () {
  local bz="$1" dst="$2" magic tool off
  for magic in xz gzip zstd; do
    case $magic in
      xz)   tool=(xz -dc --single-stream); off="$(grep -abo $'\xfd7zXZ\x00' "$bz" | head -n 1 | cut -d: -f1)" ;;
      gzip) tool=(gzip -dc); off="$(grep -abo $'\x1f\x8b\x08' "$bz" | head -n 1 | cut -d: -f1)" ;;
      zstd) tool=(zstd -dcq); off="$(grep -abo $'\x28\xb5\x2f\xfd' "$bz" | head -n 1 | cut -d: -f1)" ;;
    esac
    [ -n "$off" ] || continue
    command -v "${tool[0]}" >/dev/null || continue
    tail -c +$((off + 1)) "$bz" | "${tool[@]}" >"$dst" 2>/dev/null || true
    if [ "$(head -c 4 "$dst" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then return 0; fi
  done
  return 1
}
extract_vmlinux "$bz" "$work/vmlinux" || die "cannot extract vmlinux from $bz"
if command -v readelf >/dev/null && ! readelf -n "$work/vmlinux" 2>/dev/null | grep -q Xen; then
  say "warning: vmlinux has no Xen/PVH note; QEMU may not boot it"
fi

# ---- initramfs --------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,run,guest,lib64}
mkdir -p "$root"/etc/mdadm "$root"/run/mdadm

# busybox with every applet as a symlink.
cp /bin/busybox "$root/bin/busybox"
busybox --list-full | while read -r a; do
  [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done

# Dynamically linked tools and their libraries (ldd's resolved paths).
copy_with_libs () {
  local src="$1" dst="$2" lib
  rm -f "$root$dst"
  mkdir -p "$(dirname "$root$dst")"
  cp -L "$src" "$root$dst"
  ldd "$src" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$(dirname "$root$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_with_libs /usr/sbin/nbd-client /sbin/nbd-client
copy_with_libs /usr/sbin/mke2fs /sbin/mke2fs
copy_with_libs /usr/sbin/e2fsck /sbin/e2fsck
# mdadm from its unpacked package (the host need not have it installed).
download_unpack mdadm "$work/mdadm"
mdadm_bin="$work/mdadm/sbin/mdadm"
[ -x "$mdadm_bin" ] || mdadm_bin="$work/mdadm/usr/sbin/mdadm"
[ -x "$mdadm_bin" ] || die "no sbin/mdadm in the mdadm package"
copy_with_libs "$mdadm_bin" /sbin/mdadm
rm -rf "$work/mdadm"
for n in mkfs.ext4 mkfs.ext2; do rm -f "$root/sbin/$n"; ln -s mke2fs "$root/sbin/$n"; done
for n in fsck.ext4 fsck.ext2; do rm -f "$root/sbin/$n"; ln -s e2fsck "$root/sbin/$n"; done
cp /etc/mke2fs.conf "$root/etc/" 2>/dev/null || true
# The multiarch library directory must be searched without ld.so.cache.
ldconfig -r "$root" 2>/dev/null || true

# Modules and their dependencies, at their paths under lib/modules.
mods=(virtio_pci virtio_blk virtio_net nbd crc32c_generic ext4
      virtio_scsi sd_mod md-mod raid0 raid1 raid10 raid456)
kmod_dir="$work/pkg/lib/modules/$kver"
depmod -b "$work/pkg" "$kver"
declare -A want=()
add_module () {
  local name="$1" line path dep
  line="$(grep -E "(^|/)${name//-/[-_]}\.ko(\.[a-z]+)?:" "$kmod_dir/modules.dep" | head -n 1)" || true
  if [ -z "$line" ]; then
    grep -qE "(^|/)${name//-/[-_]}\.ko" "$kmod_dir/modules.builtin" && return 0
    die "module $name is neither in modules.dep nor built in"
  fi
  path="${line%%:*}"
  want[$path]=1
  for dep in ${line#*:}; do want[$dep]=1; done
}
for m in "${mods[@]}"; do add_module "$m"; done
for p in "${!want[@]}"; do
  mkdir -p "$(dirname "$root/lib/modules/$kver/$p")"
  cp "$kmod_dir/$p" "$root/lib/modules/$kver/$p"
done
cp "$kmod_dir"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
# Loaded at boot, in this order (modprobe pulls in the dependencies);
# nbd, virtio_scsi/sd_mod and the md drivers are left to the tests that use
# them.
printf '%s\n' virtio_pci virtio_blk virtio_net crc32c_generic ext4 \
  >"$root/etc/guest-modules"

cat >"$root/init" <<'EOF'
#!/bin/sh
# Generic guest init (scripts/guest-image.sh): mount, load modules, run the
# test's /guest/init.sh, power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t tmpfs tmpfs /tmp
while read -r m; do modprobe "$m" 2>/dev/null || echo "guest-init: modprobe $m failed"; done </etc/guest-modules
ip link set lo up
echo "guest-init: up after $(cut -d' ' -f1 /proc/uptime) s"
if [ -x /guest/init.sh ]; then
  /guest/init.sh
  rc=$?
else
  echo "guest-init: no /guest/init.sh"
  rc=127
fi
echo "guest-init: /guest/init.sh exited $rc"
sync
poweroff -f
reboot -f
EOF
chmod 755 "$root/init"

(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$work/initramfs.img"
mv "$work/vmlinux" "$work/out.vmlinux"
mkdir "$work/out"
mv "$work/out.vmlinux" "$work/out/vmlinux"
mv "$work/initramfs.img" "$work/out/initramfs.img"
echo "$kver" >"$work/out/kernel-version"
printf '%s\n' "$manifest" >"$work/out/manifest"
rm -rf "$out"
mv "$work/out" "$out"
# Older builds of other keys are stale.
for d in "$cache_root"/*/; do
  [ "${d%/}" = "$out" ] || rm -rf "${d%/}"
done
say "guest image ready: $out ($(du -sh "$out" | cut -f1))"
echo "$out"
