#!/usr/bin/env bash
# nbdkit-raid: a write torn by a crash in a row that has a block on no
# member (the default journal policy).
#
# A RAID6 of six NBD members with two of them failed: data row 1 has its Q
# block and one data block on no member.  Member 0 (a data block of that
# row) answers writes and zeroes 1.5 s late.  A write of the row (or of all of it but
# its first 32 KiB, a partial row the write gather acknowledges at once,
# or a zero of the row) is under way when the array server is killed
# (-9), with the row's P and two of its data blocks written and member 0's
# not.  Started again, the array replays its journal; every 4 KiB block of
# the row must read back as its old or its new contents.  The missing data
# block is read through P: a journal record that only names the row (an
# "intent": make its parity match its data) cannot make such a row whole,
# since nothing can recompute P without that block, and the block read
# back as neither version.  A fast zero of whole rows of the degraded
# array is refused (ENOTSUP): such rows are written with zeroes.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-torn "$@"
requires nbdinfo

TORN="$PYTHON $testsdir/e2e_torn.py"
mu () { uri_of "$tmp/m$1.sock"; }
all () { echo "$(mu 0) $(mu 1) $(mu 2) $(mu 3) $(mu 4) $(mu 5)"; }

n=0
for case in "write 0" "write 32768" "zero 0"; do
  read -r op skip <<<"$case"
  n=$((n + 1))
  name="($op, first $skip bytes left out)"
  for i in 0 1 2 3 4 5; do rm -f "$tmp/f$i"; truncate -s 32M "$tmp/f$i"; done
  for i in 1 2 3 4 5; do start_nbdkit "m$i" file "$tmp/f$i"; done
  start_nbdkit m0 --filter=delay file "$tmp/f0" delay-write=1500ms delay-zero=1500ms
  rm -f "$tmp/new.bin"
  create_array --level=6 --chunk=64K --layout=right-asymmetric --data-offset=8M $(all)
  ctl="$tmp/ctl$n"
  start_raid "raid$n" $(all) control="$ctl" member-timeout=60
  expect_run "$name fill" $PYTHON -c "
import nbd, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
b = random.Random(1).randbytes(2 << 18)
h.pwrite(b[:1 << 18], 0); h.pwrite(b[1 << 18:], 1 << 18); h.flush(); h.shutdown()" "$uri"
  expect_run "$name fail member 2 (Q of the row)" "$NBDRAID" -C "$ctl" fail "$(mu 2)"
  expect_run "$name fail member 3 (a data block of the row)" "$NBDRAID" -C "$ctl" fail "$(mu 3)"
  if [ "$n" = 1 ]; then
    expect_eq "a fast zero of whole rows of the degraded array is refused" ENOTSUP "$($PYTHON -c "
import errno, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    h.zero(1 << 18, 1 << 18, nbd.CMD_FLAG_FAST_ZERO); print('done')
except nbd.Error as e:
    print('ENOTSUP' if e.errnum == errno.ENOTSUP else e.errnum)" "$uri")"
  fi
  expect_run "$name tear the row with a kill -9" $TORN tear "$uri" "$tmp" "${pid_of[raid$n]}" "$op" "$skip"
  wait "${pid_of[raid$n]}" 2>/dev/null || true
  kill "${pid_of[m0]}"; wait "${pid_of[m0]}" 2>/dev/null || true
  start_nbdkit m0 file "$tmp/f0"
  start_raid "raid${n}b" $(all) control="$ctl" member-timeout=60
  expect_eq "$name every block of the row reads back old or new" 0 \
    "$($TORN judge "$uri" "$tmp" "$op" "$skip")"
  stop_nbdkit "raid${n}b"
  for i in 0 1 2 3 4 5; do stop_nbdkit "m$i"; done
done
finish
