#!/usr/bin/env bash
# nbdkit-raid: the Linux kernel NBD client (nbd.ko + Debian's nbd-client)
# with two connections (multi-conn).
#
# A RAID5 of 4 members (256M files) is served on TCP 127.0.0.1:PORT; a
# Debian guest (TCG) reaches it as 10.0.2.2:PORT through QEMU's user network,
# connects /dev/nbd0 with `nbd-client -connections 2` and runs guest-init.sh:
# mkfs.ext4 with discard, mount, files of random and known content,
# overwrites, deletes (trims), checksums, sync, unmount, e2fsck -fn clean,
# drop caches, remount read-only, every checksum verified, disconnect.
# The host then restarts the server with the members in another order and
# verifies the filesystem on its own (nbdcopy, e2fsck -fn, debugfs, every
# checksum the guest reported, seq.txt's checksum computed by the host).
#
# Proves: the kernel client's requests, spread over two connections whose
# flushes must cover each other's writes (multi-conn, SPEC 4.3), reach the
# members durably; the export advertises multi-conn.

set -euo pipefail
source "$(dirname "$0")/lib.sh"
clients_init test-nbd-client "$@"
requires "$QEMU"
requires nbdcopy
requires nbdinfo
requires debugfs
requires busybox

SEQ_LINES=150000
CONNS=2
# The kernel client ties each CPU's request queue to one connection: with
# one vCPU the second connection would carry nothing.
export GUEST_SMP=$CONNS

guest_image
guest_probe

# ---- the array -------------------------------------------------------------
d="$tmp/array"
mkdir -p "$d"
members=("$d/m0" "$d/m1" "$d/m2" "$d/m3")
create_array --level=5 --size=256M "${members[@]}" || { fail "nbdraid create"; finish; }
ok
# The log filter records each connection ("Connect" lines) so that the
# test sees how many the kernel client really opened.
start_nbdkit_tcp raid1 --filter=log "$PLUGIN" "${members[@]}" \
  logfile="$tmp/raid1.requests" || { fail "serve the array on TCP"; finish; }
ok
size="$(nbd_size "$uri")"
echo "$test_name: array of $((size >> 20)) MiB on $uri"
if nbdinfo --can multi-conn "$uri"; then ok; else
  fail "the export does not advertise multi-conn (SPEC 4.3); nbd-client -connections $CONNS relies on it"
fi

# ---- the guest ---------------------------------------------------------------
ov="$tmp/overlay"
mkdir -p "$ov/guest"
install -m 755 "$clients_dir/guest-init.sh" "$ov/guest/init.sh"
cat >"$ov/guest/params" <<EOF
MODE=nbd
PORT=$port
CONNS=$CONNS
SEQ_LINES=$SEQ_LINES
EOF

# ---- LATER (reshape issue): start a live reshape here (e.g. raid5 4 -> 5
# members, then 5 -> 6) through the control socket while the guest's
# workload runs, and let the guest verify after the reshape ends.

# The only network the guest has: QEMU's user network, in which 10.0.2.2 is
# the host's loopback.  The guest connects to nothing else.
log_lines="$(wc -l <"$tmp/raid1.requests")"
run_guest kguest "$ov" 500 \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0
guest_results kguest
# The kernel client opened CONNS connections and used each of them.
n="$(sed -n "$((log_lines + 1)),\$p" "$tmp/raid1.requests" | grep -c ' Connect ' || true)"
expect_eq "connections the guest opened" "$CONNS" "$n"
used="$(sed -n "$((log_lines + 1)),\$p" "$tmp/raid1.requests" \
  | sed -n 's/.*connection=\([0-9]*\) \(Write\|Read\) .*/\1/p' | sort -u | wc -l)"
expect_eq "connections that carried reads or writes" "$CONNS" "$used"

want="$(seq 1 "$SEQ_LINES" | sha256sum | cut -d' ' -f1)"
expect_eq "guest's checksum of seq.txt" "$want" \
  "$(awk '$2 == "seq.txt" { print $1 }' "$tmp/kguest.sums")"
stop_nbdkit raid1

# ---- the host, through a fresh assembly --------------------------------------
start_raid raid2 "$d/m2" "$d/m0" "$d/m3" "$d/m1" || { fail "restart with the members reordered"; finish; }
ok
expect_eq "size after restart" "$size" "$(nbd_size "$uri")"
expect_run "nbdcopy the export out" nbdcopy "$uri" "$tmp/fs.img"
stop_nbdkit raid2
verify_fs_image "after restart" "$tmp/fs.img" "$tmp/kguest.sums"
rm -f "$tmp/fs.img"

echo "$test_name: guest boot $guest_boot_time s; guest workload run $guest_run_time s"
clients_finish
