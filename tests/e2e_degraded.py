#!/usr/bin/python3
# nbdkit-raid: client workloads of test-e2e-degraded.sh.
#
#   e2e_degraded.py rw URI WIDTH MODEL_IN MODEL_OUT SEED
#     The export must read exactly as MODEL_IN (an image of what was written
#     before members were lost).  Then random writes — sub-sector, partial
#     and whole stripe rows, across rows — each compared in its
#     neighbourhood, a flush, and a full comparison.  Writes MODEL_OUT.
#
#   e2e_degraded.py trigger URI WIDTH TRIGGER MODEL_OUT SEED QD
#     Fills the export with known data, then runs an aio workload (QD
#     requests in flight, disjoint ranges) and creates the file TRIGGER
#     (which makes one member's error filter fail every request) while
#     requests are in flight.  Every request must still succeed with the
#     right data; then a full comparison.  Writes MODEL_OUT.
#
#   e2e_degraded.py dead URI WIDTH
#     The array has lost more members than it tolerates: once a request has
#     touched the dead members, every read, write and zero, wherever it
#     lands, must fail with EIO (not hang, not return wrong data), and the
#     connection must keep answering.

import errno
import os
import random
import sys

import nbd

from e2e_common import Checks, compare_all, compare_range, describe_diff, nbd_errno

c = Checks("degraded-" + sys.argv[1])


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def random_writes(h, model, rnd, W, count, what):
    size = len(model)
    for i in range(count):
        kind = rnd.random()
        if kind < 0.3:
            length = rnd.randint(1, 600)
        elif kind < 0.6:
            length = rnd.randint(1, 2 * W)
        elif kind < 0.8:
            length = W * rnd.randint(1, 3)
        else:
            length = rnd.randint(W, 5 * W)
        off = rnd.randrange(0, size - length)
        if kind >= 0.6 and kind < 0.8:
            off -= off % W           # whole rows
        buf = rnd.randbytes(length)
        try:
            h.pwrite(buf, off)
        except nbd.Error as e:
            c.check(False, "%s: write #%d [%d, +%d) failed: %s" % (what, i, off, length, e))
            continue
        model[off:off + length] = buf
        lo = max(0, off - W)
        hi = min(size, off + length + W)
        compare_range(c, h, model, lo, hi - lo, "%s: after write #%d [%d, +%d)"
                      % (what, i, off, length))


def cmd_rw(uri, W, model_in, model_out, seed):
    rnd = random.Random(seed)
    h = connect(uri)
    model = bytearray(open(model_in, "rb").read())
    c.check(h.get_size() == len(model), "size %d, expected %d" % (h.get_size(), len(model)))
    compare_all(c, h, model, "degraded read of the data written before")
    random_writes(h, model, rnd, W, 250, "degraded")
    h.flush()
    compare_all(c, h, model, "after degraded writes")
    h.shutdown()
    with open(model_out, "wb") as f:
        f.write(model)
    c.done()


def cmd_trigger(uri, W, trigger, model_out, seed, qd):
    rnd = random.Random(seed)
    h = connect(uri)
    size = h.get_size()
    model = bytearray(rnd.randbytes(size))
    for off in range(0, size, 4 << 20):
        h.pwrite(bytes(model[off:off + (4 << 20)]), off)
    h.flush()
    compare_all(c, h, model, "before the member fails")

    # Units of 1.5 rows, disjoint per in-flight request.
    unit = W + W // 2
    nunits = size // unit
    inflight = {}
    busy = set()
    total, fired_at = 1500, 300
    submitted = 0
    fired = False
    while submitted < total or inflight:
        while submitted < total and len(inflight) < qd:
            u = rnd.randrange(nunits)
            if u in busy:
                continue
            busy.add(u)
            base = u * unit
            s = rnd.randrange(unit)
            n = rnd.randint(1, unit - s)
            if rnd.random() < 0.4:
                buf = nbd.Buffer(unit)
                ck = h.aio_pread(buf, base)
                inflight[ck] = ("read", u, base, unit, buf)
            else:
                data = rnd.randbytes(n)
                ck = h.aio_pwrite(data, base + s)
                model[base + s:base + s + n] = data
                inflight[ck] = ("write", u, base + s, n, None)
            submitted += 1
            if submitted == fired_at:
                open(trigger, "w").close()      # the member dies now
                fired = True
        h.poll(-1)
        while inflight:
            ck = h.aio_peek_command_completed()
            if not ck:
                break
            kind, u, off, n, buf = inflight.pop(ck)
            busy.discard(u)
            try:
                h.aio_command_completed(ck)
            except nbd.Error as e:
                c.check(False, "%s [%d, +%d) failed after a member failed (within "
                        "redundancy): %s" % (kind, off, n, e))
                continue
            if kind == "read":
                got = bytes(buf.to_bytearray())
                want = bytes(model[off:off + n])
                c.check(got == want, "read [%d, +%d) while the member failed: %s"
                        % (off, n, got == want or describe_diff(off, got, want)))
    c.check(fired, "trigger was created")
    h.flush()
    compare_all(c, h, model, "after the member failed")
    random_writes(h, model, rnd, W, 60, "after failure")
    h.flush()
    compare_all(c, h, model, "after writes on the degraded array")
    h.shutdown()
    h2 = connect(uri)
    compare_all(c, h2, model, "through a new connection")
    h2.shutdown()
    with open(model_out, "wb") as f:
        f.write(model)
    c.done()


def expect_eio(what, fn):
    try:
        fn()
    except nbd.Error as e:
        c.check(nbd_errno(e) == errno.EIO, "%s: failed with %s, expected EIO" % (what, e))
        return
    c.check(False, "%s: succeeded on a failed array, expected EIO" % what)


def cmd_dead(uri, W):
    h = connect(uri)
    size = h.get_size()
    # The array learns that a member died from I/O to that member: a write of
    # whole rows touches every member, so it must fail and mark the array
    # failed.  (A read served by a healthy member before that may succeed
    # with correct data, as in md.)  From then on every request fails.
    expect_eio("write of two whole rows (touches every member)",
               lambda: h.pwrite(bytes(2 * W), 8 * W))
    for off, n in [(0, 1), (0, 4096), (W // 3, 512), (W - 1, 2), (5 * W, 3 * W),
                   (size - 4096, 4096), (size // 2 + 7, 100000)]:
        expect_eio("read [%d, +%d)" % (off, n), lambda: h.pread(n, off))
        expect_eio("write [%d, +%d)" % (off, n), lambda: h.pwrite(bytes(n), off))
    expect_eio("zero [0, +%d)" % (4 * W), lambda: h.zero(4 * W, 0))
    # The connection (and the server) still answer.
    try:
        h.flush()
        print("note: flush on a failed array succeeded")
    except nbd.Error as e:
        print("note: flush on a failed array: %s" % e)
    expect_eio("read after flush", lambda: h.pread(512, 0))
    h.shutdown()
    h2 = connect(uri)
    c.check(h2.get_size() == size, "new connection to a failed array works")
    expect_eio("read on a new connection", lambda: h2.pread(4096, W))
    h2.shutdown()
    c.done()


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "rw" and len(a) == 6:
        cmd_rw(a[1], int(a[2]), a[3], a[4], int(a[5]))
    elif a[0] == "trigger" and len(a) == 7:
        cmd_trigger(a[1], int(a[2]), a[3], a[4], int(a[5]), int(a[6]))
    elif a[0] == "dead" and len(a) == 3:
        cmd_dead(a[1], int(a[2]))
    else:
        sys.exit("usage: see the comment at the top")
