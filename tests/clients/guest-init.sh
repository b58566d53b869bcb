#!/bin/sh
# nbdkit-raid: the workload a QEMU guest runs (as /guest/init.sh, started by
# the generic /init of scripts/guest-image.sh, busybox sh).
#
# /guest/params (written by the host test) sets:
#   MODE=virtio   the array is the guest's virtio disk /dev/vda (QEMU's own
#                 NBD client, nbd+unix on the host);
#   MODE=nbd      the kernel NBD client: nbd-client to 10.0.2.2:$PORT (the
#                 host's 127.0.0.1:$PORT through QEMU's user network) with
#                 $CONNS connections, device /dev/nbd0;
#   SEQ_LINES     lines of `seq` in /seq.txt (the host computes that file's
#                 checksum on its own, so the guest's report is checked too);
#   HOST_SYNC=1   (optional) the host acts on the array while this runs (a
#                 live reshape): the script stops at two sync points, before
#                 mkfs ("write-phase") and after the last write is synced
#                 ("written"), reports "SYNC NAME" and goes on only when the
#                 host answers "GO" on the third serial port (/dev/ttyS2),
#                 within SYNC_TIMEOUT seconds (default 240); any other
#                 answer, or none, ends the script.
#
# What it does: mkfs.ext4 (discarding), mount -o discard, write files of
# random and of known content at aligned and unaligned sizes, overwrite
# parts, delete some (trims), record sha256 of every file, sync, unmount,
# e2fsck -fn must be clean, drop caches, remount read-only and check every
# checksum, unmount, disconnect.
#
# Report (second serial port, /dev/ttyS1), one line each; the host counts
# them (tests/clients/lib.sh guest_results):
#   STEP WHAT ok | STEP WHAT FAIL RC
#   SUM SHA256 PATH      (PATH relative to the filesystem root)
#   INFO TEXT
#   SYNC NAME            a sync point (HOST_SYNC=1): waiting for the host
#   DONE                 last line, written only when the script got there
# A failed step that makes the rest meaningless ends the script (no DONE).

. /guest/params
. /guest/lib.sh                    # report, step, die, uptime_s

# The host's channel is opened once, before the first sync point: opening a
# serial port resets its FIFO, so a line sent before the open would be lost.
if [ "${HOST_SYNC:-0}" = 1 ]; then
  exec 3</dev/ttyS2 || die "no /dev/ttyS2"
  stty raw -echo <&3 || die "stty /dev/ttyS2"
fi
# host_sync NAME: report the sync point, wait for the host's "GO".
host_sync ()
{
  [ "${HOST_SYNC:-0}" = 1 ] || return 0
  report "SYNC $1"
  echo "guest: at sync point $1, uptime $(cut -d' ' -f1 /proc/uptime) s"
  line=
  read -r -t "${SYNC_TIMEOUT:-240}" line <&3
  line=$(echo "$line" | tr -d '\r')
  if [ "$line" = GO ]; then
    report "STEP sync-$1 ok"
    return 0
  fi
  report "STEP sync-$1 FAIL host said '$line'"
  die "host said '$line' at sync point $1"
}

DEV=/dev/vda
if [ "$MODE" = nbd ]; then
  DEV=/dev/nbd0
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  step modprobe-nbd modprobe nbd nbds_max=2 || die modprobe nbd
  # -N '': nbdkit's default export; -b 4096: the ext4 block size.
  step nbd-client nbd-client 10.0.2.2 "$PORT" "$DEV" -N '' -b 4096 \
    -connections "$CONNS" -t 60 || die nbd-client
  report "INFO nbd0 size $(cat /sys/block/nbd0/size) sectors, connections $CONNS"
fi
[ -b "$DEV" ] || die "no $DEV"
report "INFO $DEV $(cat /sys/block/${DEV#/dev/}/size) sectors"

# The kernel NBD client maps each CPU's queue to one connection: direct
# I/O issued from every CPU in turn puts requests on every connection.
per_cpu_io ()
{
  cpu=0
  while [ $cpu -lt "$(nproc)" ]; do
    taskset -c $cpu dd if="$DEV" of=/dev/null bs=64k count=32 skip=$((cpu * 32)) \
      iflag=direct 2>/dev/null || return 1
    taskset -c $cpu dd if=/dev/zero of="$DEV" bs=64k count=4 seek=$((cpu * 4 + 100)) \
      oflag=direct 2>/dev/null || return 1
    cpu=$((cpu + 1))
  done
}
if [ "$MODE" = nbd ]; then
  report "INFO $(nproc) cpus"
  step per-cpu-io per_cpu_io
fi

# With HOST_SYNC=1 the host starts its reshape now: mkfs (discarding and
# writing the whole device), the files and the sync below run while it
# moves data; the host lets it finish before the "written" sync point
# returns, so the checks after it read the new layout.
host_sync write-phase

t0=$(cut -d' ' -f1 /proc/uptime)
step mkfs mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "$DEV" || die mkfs
t1=$(cut -d' ' -f1 /proc/uptime)
report "INFO mkfs took $t0 -> $t1 s uptime"
mkdir -p /mnt
step mount mount -t ext4 -o discard "$DEV" /mnt || die mount

write_files ()
(
  cd /mnt || return 1
  seq 1 "$SEQ_LINES" >seq.txt || return 1
  dd if=/dev/urandom of=rand1 bs=1M count=8 2>/dev/null || return 1
  # a sparse file: three extents with holes between them
  dd if=/dev/urandom of=sparse bs=4096 count=100 seek=0 2>/dev/null || return 1
  dd if=/dev/urandom of=sparse bs=4096 count=37 seek=1000 conv=notrunc 2>/dev/null || return 1
  dd if=/dev/urandom of=sparse bs=65536 count=9 seek=200 conv=notrunc 2>/dev/null || return 1
  # unaligned overwrites inside a file
  dd if=/dev/urandom of=rand1 bs=512 seek=777 count=33 conv=notrunc 2>/dev/null || return 1
  dd if=/dev/urandom of=rand1 bs=1 seek=4194301 count=7001 conv=notrunc 2>/dev/null || return 1
  mkdir -p dir/sub || return 1
  i=1
  while [ $i -le 120 ]; do
    dd if=/dev/urandom of=dir/small.$i bs=1000 count=$((i % 9 + 1)) 2>/dev/null || return 1
    i=$((i + 1))
  done
  # files that are written, then deleted: their blocks are discarded
  dd if=/dev/urandom of=dir/sub/gone bs=1M count=6 2>/dev/null || return 1
  sync
  rm -f dir/sub/gone dir/small.1? || return 1
  dd if=/dev/urandom of=dir/sub/after-trim bs=1M count=3 2>/dev/null || return 1
)
step write write_files || die write

sums ()
(
  cd /mnt && find . -type f | sort | sed 's|^\./||' | xargs sha256sum >/tmp/sums
)
step checksum sums || die checksum
while read -r sum path; do report "SUM $sum $path"; done </tmp/sums
report "INFO $(wc -l </tmp/sums) files, $(du -sk /mnt | cut -f1) KiB"

step sync sync
host_sync written
step umount umount /mnt || die umount
step fsck e2fsck -fn "$DEV"

# Read back through the server, not the page cache.
sync
blockdev --flushbufs "$DEV"
echo 3 >/proc/sys/vm/drop_caches
step mount-ro mount -t ext4 -o ro "$DEV" /mnt || die mount-ro
step verify sh -c 'cd /mnt && sha256sum -c -s /tmp/sums'
step umount-ro umount /mnt

if [ "$MODE" = nbd ]; then
  step nbd-disconnect nbd-client -d "$DEV"
fi
report DONE
