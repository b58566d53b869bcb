#!/usr/bin/python3
# nbdkit-raid: the I/O pattern workload of test-e2e-patterns.sh.
#
#   e2e_patterns.py URI CHUNK DATA_DISKS RAID_DISKS MODEL_OUT [SEED]
#
# Drives one export through libnbd with requests chosen to hit every place
# where a RAID engine splits or merges work, keeping a model (bytearray) of
# the whole export and comparing the server against it after every step
# (the neighbourhood of each request) and in full between phases:
#   1. a fresh array reads as zeros;
#   2. writes starting and ending at -1/0/+1 bytes of chunk boundaries,
#      stripe-row boundaries, the parity-rotation period and the end of the
#      export, of lengths 1 .. a stripe and a half;
#   3. unaligned and sub-sector writes and reads (1, 511, 513, 4097 bytes at
#      odd offsets) and random unaligned writes across rows;
#   4. large requests: 8, 16 and 32 MiB, aligned and not;
#   5. flush and FUA writes;
#   6. trim and zero (may_trim, NO_HOLE, FAST_ZERO) over aligned rows and
#      odd ranges read back as zeros; a fast zero may be refused with
#      ENOTSUP, and then must have changed nothing;
#   7. block status: every extent reported as zero reads as zeros, extents
#      are contiguous and cover the request.
# At the end the model is written to MODEL_OUT so the shell can compare it
# with what raidcheck extracts from the member files.

import errno
import random
import sys

import nbd

from e2e_common import Checks, compare_all, compare_range, nbd_errno, pread_all

uri, chunk, D, N, model_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]
seed = int(sys.argv[6]) if len(sys.argv) > 6 else 1
rnd = random.Random(seed)
c = Checks("patterns")
W = chunk * D

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
size = h.get_size()
model = bytearray(size)
nops = 0


def around(off, length):
    lo = max(0, off - W)
    hi = min(size, off + length + W)
    return lo, hi - lo


def do_write(off, length, flags=0, what="write"):
    global nops
    if off < 0 or length <= 0 or off + length > size:
        return
    buf = rnd.randbytes(length)
    try:
        h.pwrite(buf, off, flags)
    except nbd.Error as e:
        c.check(False, "%s [%d, +%d) flags %#x failed: %s" % (what, off, length, flags, e))
        return
    model[off:off + length] = buf
    nops += 1
    lo, n = around(off, length)
    compare_range(c, h, model, lo, n, "after %s [%d, +%d)" % (what, off, length))


def full(what):
    compare_all(c, h, model, "full device %s" % what)


# 1. fresh
full("when fresh (expect zeros)")

# 2. boundaries
bounds = sorted({chunk, 2 * chunk, W - chunk, W, 2 * W, N * W, (N + 1) * W + chunk,
                 (size // 2) // W * W, size - W, size - chunk, size})
lengths = [1, 2, 511, 513, 4096, 4097, chunk - 1, chunk + 1, W - 1, W + 1, W + W // 2]
for k, b in enumerate(bounds):
    if b <= 0 or b > size:
        continue
    for delta in (-1, 0, 1):
        for length in lengths:
            do_write(b + delta, length, what="write starting at boundary %d%+d" % (b, delta))
            do_write(b + delta - length, length,
                     what="write ending at boundary %d%+d" % (b, delta))
    if k % 4 == 3:
        full("after boundary %d" % b)

# 3. unaligned / sub-sector
for off, length in [(1, 1), (511, 1), (513, 511), (4097, 4097), (chunk - 1, 4097),
                    (W + 777, 511), (3 * W - 1, 3), (5 * chunk + 3, 2 * W + 5)]:
    do_write(off, length, what="unaligned write")
for i in range(60):
    length = rnd.randint(1, 3 * W)
    off = rnd.randrange(0, size - length) | 1
    do_write(off, length, what="random unaligned write #%d" % i)
for off, length in [(1, 1), (511, 1), (3, 511), (chunk - 1, 2), (W - 3, 4097),
                    (size - 1, 1), (size - 4097, 4097)]:
    compare_range(c, h, model, off, length, "unaligned read [%d, +%d)" % (off, length))
full("after unaligned writes")

# 4. large requests
for length, off in [(8 << 20, 0), (16 << 20, chunk + 1), (32 << 20, size - (32 << 20) - 3),
                    (32 << 20, W * 3)]:
    if off + length <= size:
        do_write(off, length, what="large write %d MiB" % (length >> 20))
    else:
        print("note: export too small for a %d MiB write at %d" % (length >> 20, off))
full("after large writes")
for length, off in [(32 << 20, 7), (16 << 20, W)]:
    if off + length <= size:
        compare_range(c, h, model, off, length, "large read %d MiB" % (length >> 20))

# 5. flush and FUA
try:
    h.flush()
    c.check(True, "flush")
except nbd.Error as e:
    c.check(False, "flush failed: %s" % e)
for off, length in [(0, W), (chunk + 5, 1000), (7 * W - 3, W + 7), (size - 4096, 4096)]:
    do_write(off, length, nbd.CMD_FLAG_FUA, what="FUA write")
try:
    h.flush()
    c.check(True, "flush after FUA")
except nbd.Error as e:
    c.check(False, "flush failed: %s" % e)
full("after FUA writes")


# 6. trim and zero
def fill(off, length):
    buf = rnd.randbytes(length)
    h.pwrite(buf, off)
    model[off:off + length] = buf


ranges = [(0, W), (W, 3 * W), (chunk, chunk), (chunk + 1, W), (3 * W - 7, 2 * W + 14),
          (4 * W + 100, 100), (size - 2 * W, 2 * W), (size - 513, 513)]
ops = [("trim", 0), ("zero", 0), ("zero", nbd.CMD_FLAG_NO_HOLE),
       ("zero", nbd.CMD_FLAG_FAST_ZERO), ("zero", nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)]
fast_refused = fast_done = 0
for off, length in ranges:
    for op, flags in ops:
        if off + length > size:
            continue
        fill(max(0, off - chunk), min(size, off + length + chunk) - max(0, off - chunk))
        what = "%s flags %#x [%d, +%d)" % (op, flags, off, length)
        try:
            if op == "trim":
                h.trim(length, off)
            else:
                h.zero(length, off, flags)
            model[off:off + length] = bytes(length)
            if flags & nbd.CMD_FLAG_FAST_ZERO:
                fast_done += 1
            c.check(True, what)
        except nbd.Error as e:
            if flags & nbd.CMD_FLAG_FAST_ZERO and nbd_errno(e) in (errno.ENOTSUP, errno.EOPNOTSUPP):
                fast_refused += 1      # allowed: nothing may have changed
            else:
                c.check(False, "%s failed: %s" % (what, e))
        lo, n = around(off, length)
        compare_range(c, h, model, lo, n, "after %s" % what)
print("note: fast zero done %d times, refused (ENOTSUP) %d times" % (fast_done, fast_refused))
# A fast zero of whole aligned stripe rows is what the engine says it can do
# quickly (raidcore/array.h); it must not be refused.
off = 8 * W
fill(off, 4 * W)
try:
    h.zero(4 * W, off, nbd.CMD_FLAG_FAST_ZERO)
    model[off:off + 4 * W] = bytes(4 * W)
    c.check(True, "fast zero of whole rows")
except nbd.Error as e:
    c.check(False, "fast zero of 4 whole rows at %d refused: %s" % (off, e))
compare_range(c, h, model, off - W, 6 * W, "after fast zero of whole rows")
full("after trim/zero")

# 7. block status
ext = []


def cb(metacontext, offset, entries, err):
    if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
        for i in range(0, len(entries), 2):
            ext.append((entries[i], entries[i + 1]))
    return 0


pos = 0
bs_ok = True
while pos < size:
    ext.clear()
    want = min(size - pos, 1 << 30)
    try:
        h.block_status(want, pos, cb)
    except nbd.Error as e:
        c.check(False, "block_status(%d, %d) failed: %s" % (want, pos, e))
        bs_ok = False
        break
    if not c.check(len(ext) > 0, "block_status at %d returned no extents" % pos):
        bs_ok = False
        break
    for length, flags in ext:
        if length == 0:
            c.check(False, "block_status: zero-length extent at %d" % pos)
            bs_ok = False
            break
        end = min(pos + length, size)
        if flags & nbd.STATE_ZERO:
            seg = pread_all(h, pos, end - pos)
            if not c.check(seg.count(0) == len(seg) and model[pos:end] == seg,
                           "extent [%d, %d) flagged zero but does not read as zeros "
                           "(or differs from the model)" % (pos, end)):
                bs_ok = False
        pos = end
        if pos >= size:
            break
c.check(bs_ok, "block status consistent")

full("at the end")
h.flush()
h.shutdown()
with open(model_out, "wb") as f:
    f.write(model)
print("note: %d writes, export %d bytes" % (nops, size))
c.done()
