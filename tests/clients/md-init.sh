#!/bin/sh
# nbdkit-raid: what the QEMU guest of test-md-driver.sh runs (as
# /guest/init.sh, started by the generic /init of scripts/guest-image.sh,
# busybox sh).
#
# Theory.  The host wrote arrays through nbdkit-raid (and reshaped some of
# them live), recorded the sha256 of each export, and attached the members
# of every array to this guest as SCSI disks (virtio-scsi, target id = the
# host's disk number, snapshot=on so the host's files stay untouched).  Here
# the real Linux md driver (md-mod, raid0, raid1, raid456) assembles each
# array from those disks with mdadm --create --assume-clean and the geometry
# nbdraid examine gave: if nbdkit-raid placed data, P and Q as md does, md
# reads the same bytes the export served, and md's own scrub (sync_action
# "check") finds no parity mismatch.
#
# /guest/params sets NDISK (disks attached).  /guest/arrays has one line
# per step, in order:
#   A NAME LEVEL LAYOUT CHUNK_K N COMP_K BYTES ID:OFF_K...
#       assemble NAME: md level, mdadm layout name ("-" for none), chunk
#       and component size in KiB, N raid devices given in role order as
#       SCSI target ID and data offset in KiB; hash its first BYTES bytes,
#       scrub it, stop it.
#   FLIP ID BYTE
#       invert one byte of disk ID at byte offset BYTE (for the negative
#       control: a later A line assembles the damaged array again).
#
# Report (second serial port, /dev/ttyS1), one line each (the host counts
# them, tests/clients/lib.sh guest_results, and reads the rest itself):
#   STEP WHAT ok | STEP WHAT FAIL RC
#   SUM SHA256 NAME          sha256 of the first BYTES bytes of NAME's md0
#   MDSIZE NAME BYTES        the size md gave the array
#   MISMATCH NAME COUNT      mismatch_cnt after the check
#   INFO TEXT
#   DONE                     last line, only when the script got there

. /guest/params
. /guest/lib.sh                    # report, step, die, uptime_s

# Quiet md's informational lines on the console; dmesg keeps them.
echo 4 >/proc/sys/kernel/printk
step modprobe modprobe -a virtio_scsi sd_mod raid0 raid1 raid456 || die modprobe
report "INFO md modules loaded at $(uptime_s) s"

# SCSI target ID -> /dev/sdX (the scan is asynchronous).
dev_of ()
{
  for b in /sys/bus/scsi/devices/*:0:"$1":0/block/*; do
    [ -e "$b" ] && { echo "/dev/${b##*/}"; return 0; }
  done
  return 1
}
wait_disks ()
{
  i=0
  while [ $i -lt 1200 ]; do
    n=$(ls -d /sys/bus/scsi/devices/*:0:*:0/block/* 2>/dev/null | wc -l)
    if [ "$n" -ge "$NDISK" ]; then
      # and their nodes
      id=0
      while [ $id -lt "$NDISK" ]; do
        d=$(dev_of $id) && [ -b "$d" ] || break
        id=$((id + 1))
      done
      [ $id -eq "$NDISK" ] && return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  echo "guest: only $n of $NDISK disks after 120 s"
  return 1
}
step disks wait_disks || die disks
report "INFO $NDISK disks at $(uptime_s) s"

# Wait until md0 reads VALUE in md/ATTR, at most $2 seconds.
wait_attr ()
{
  attr="$1" want="$2" bound="$3" i=0
  while [ $i -lt $((bound * 10)) ]; do
    [ "$(cat /sys/block/md0/md/$attr 2>/dev/null)" = "$want" ] && return 0
    sleep 0.1
    i=$((i + 1))
  done
  echo "guest: md0 $attr is '$(cat /sys/block/md0/md/$attr 2>/dev/null)', not '$want', after $bound s"
  return 1
}

# assemble NAME LEVEL LAYOUT CHUNK_K N COMP_K ID:OFF_K...: mdadm --create on
# the disks in role order (the md superblock goes onto our snapshot).
assemble ()
{
  name="$1" level="$2" layout="$3" chunk="$4" n="$5" comp="$6"
  shift 6
  plain="" withoff="" first="" same=yes
  for spec in "$@"; do
    d=$(dev_of "${spec%%:*}") || { echo "guest: no disk ${spec%%:*}"; return 1; }
    off="${spec#*:}"
    plain="$plain $d"
    withoff="$withoff $d:$off"
    [ -n "$first" ] || first="$off"
    [ "$off" = "$first" ] || same=no
  done
  set -- --metadata=1.2 --assume-clean --run --force \
    --level="$level" --raid-devices="$n"
  case "$level" in
    0) set -- "$@" --chunk="$chunk" ;;
    1) set -- "$@" --bitmap=none --size="$comp" ;;
    *) set -- "$@" --bitmap=none --chunk="$chunk" --size="$comp"
       [ "$layout" = - ] || set -- "$@" --layout="$layout" ;;
  esac
  if [ "$same" = yes ]; then
    # shellcheck disable=SC2086
    set -- "$@" --data-offset="$first" $plain
  else
    # shellcheck disable=SC2086
    set -- "$@" --data-offset=variable $withoff
  fi
  echo "guest: mdadm --create /dev/md0 $*"
  mdadm --create /dev/md0 "$@" </dev/null
}

checks_done () { dmesg | grep -c 'md0: data-check done'; }

# one_array NAME LEVEL LAYOUT CHUNK_K N COMP_K BYTES ID:OFF_K...
one_array ()
{
  name="$1" bytes="$7"
  a1="$1" a2="$2" a3="$3" a4="$4" a5="$5" a6="$6"
  shift 7
  t0=$(uptime_s)
  step "$name-create" assemble "$a1" "$a2" "$a3" "$a4" "$a5" "$a6" "$@" || return 1
  if [ "$a2" -ge 1 ]; then
    step "$name-clean" wait_attr array_state clean 30
  fi
  report "MDSIZE $name $(($(cat /sys/block/md0/size) * 512))"
  sum=$(head -c "$bytes" /dev/md0 | sha256sum | cut -d' ' -f1)
  report "SUM $sum $name"
  t1=$(uptime_s)
  if [ "$a2" -ge 1 ]; then
    before=$(checks_done)
    echo check >/sys/block/md0/md/sync_action
    step "$name-check" wait_attr sync_action idle 300
    report "MISMATCH $name $(cat /sys/block/md0/md/mismatch_cnt)"
    step "$name-check-ran" test "$(checks_done)" -gt "$before"
    step "$name-check-was-check" test "$(cat /sys/block/md0/md/last_sync_action)" = check
  fi
  step "$name-stop" mdadm --stop /dev/md0
  report "INFO $name: $a2 $a3 chunk ${a4}K, $a5 devices: assembled+hashed $t0 -> $t1, checked -> $(uptime_s) s"
}

# flip ID BYTE: invert one byte on a disk, past every cache md could see.
flip ()
{
  d=$(dev_of "$1") || return 1
  v=$(dd if="$d" bs=1 skip="$2" count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
  [ -n "$v" ] || return 1
  # shellcheck disable=SC2059
  printf "\\$(printf %o $((v ^ 255)))" | dd of="$d" bs=1 seek="$2" conv=notrunc 2>/dev/null || return 1
  sync
  blockdev --flushbufs "$d"
}

while read -r kind rest; do
  # shellcheck disable=SC2086
  case "$kind" in
    A) one_array $rest ;;
    FLIP) step "flip-$(echo $rest | tr ' ' '-')" flip $rest ;;
  esac
done </guest/arrays

report DONE
