#!/usr/bin/env bash
# nbdkit-raid: a member away while a shrunk array grows again.
#
# A RAID5 of four NBD members is filled, shrunk to half its size, and
# member 3's server is killed: it is away, with a map of the regions it
# misses.  The array grows back to its full size while it is away: the
# rows past the old size are zeroed on the members in use.  Member 3
# comes back and rejoins by a delta; its blocks of those rows held the
# bytes the shrink cut off, and the grow's zeroes went unmarked in its
# map (a raw write, outside the write-hole policy), so they read back as
# those old bytes.  Every byte past the old size must read as zero, the
# rest as written, and a scrub find no mismatch.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-resize-away "$@"
requires nbdinfo

mu () { uri_of "$tmp/m$1.sock"; }
ALL="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
for i in 0 1 2 3; do truncate -s 40M "$tmp/f$i"; start_nbdkit "m$i" file "$tmp/f$i"; done
create_array --level=5 --chunk=64K --layout=left-symmetric --data-offset=8M $ALL
start_raid raid $ALL control="$tmp/ctl" member-timeout=60
raid_uri="$(uri_of "$tmp/raid.sock")"
size="$(nbd_size "$raid_uri")"
half=$((size / 2))

expect_run "fill" $PYTHON -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for off in range(0, int(sys.argv[2]), 4 << 20):
    h.pwrite(b'\x45' * min(4 << 20, int(sys.argv[2]) - off), off)
h.flush(); h.shutdown()" "$raid_uri" "$size"
expect_run "shrink to half" "$NBDRAID" -C "$tmp/ctl" resize --force "$half"
kill -9 "${pid_of[m3]}"; wait "${pid_of[m3]}" 2>/dev/null || true
rm -f "$tmp/m3.sock"
expect_run "a read finds member 3 gone" $PYTHON -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pread(1 << 20, 0)" "$raid_uri"
wait_status "$tmp/ctl" member:3 missing 30
expect_eq "member 3 away" missing "$(status_get "$tmp/ctl" member:3)"
expect_run "grow back" "$NBDRAID" -C "$tmp/ctl" resize max
expect_eq "full size again" "$size" "$(nbd_size "$raid_uri")"
start_nbdkit m3 file "$tmp/f3"
wait_status "$tmp/ctl" member:3 in_sync 60
expect_eq "member 3 rejoined" in_sync "$(status_get "$tmp/ctl" member:3)"
expect_run "settled" "$NBDRAID" -C "$tmp/ctl" wait --timeout=120
expect_run "old bytes below the old size, zeroes past it" $PYTHON -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size, half = int(sys.argv[2]), int(sys.argv[3])
rd = lambda off, n: b''.join(h.pread(min(4 << 20, off + n - o), o) for o in range(off, off + n, 4 << 20))
lo = rd(0, half); hi = rd(half, size - half)
bad_lo = sum(1 for i in range(0, half, 4096) if lo[i:i + 4096] != b'\x45' * 4096)
bad_hi = [half + i for i in range(0, size - half, 4096) if hi[i:i + 4096] != bytes(4096)]
print('blocks not as written below', half, ':', bad_lo, '; not zero past it:', len(bad_hi),
      'first at', bad_hi[:1])
sys.exit(1 if bad_lo or bad_hi else 0)" "$raid_uri" "$size" "$half"
expect_run "scrub" "$NBDRAID" -C "$tmp/ctl" check
expect_run "scrub ends" "$NBDRAID" -C "$tmp/ctl" wait --timeout=120
expect_eq "scrub mismatches" 0 "$(status_get "$tmp/ctl" mismatch_count)"
stop_nbdkit raid
finish
