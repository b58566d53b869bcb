#!/usr/bin/python3
# nbdkit-raid: the concurrent workload of test-e2e-concurrency.sh.
#
#   e2e_concurrency.py URI CHUNK DATA_DISKS MODE WORKERS OPS MODEL_OUT SEED
#     MODE multi: WORKERS threads, each with its own connection (multi-conn),
#                 synchronous requests;
#     MODE aio:   one connection, up to WORKERS requests in flight (aio).
#
# Determinism under concurrency.  Concurrent overlapping writes have no
# defined order, so the export is cut into units and two requests in flight
# at the same time never share a byte, while units are small and interleaved
# so that concurrent requests constantly share stripe rows, chunks and even
# sectors (the read-modify-write of parity is what is under test):
#   region A (first quarter)          4 KiB units
#   region B (second quarter)         512-byte units
#   region C (next eighth)            16-byte units (sub-sector neighbours)
#   region D (rest)                   units of 3 chunks + 4.5 KiB, so single
#                                     requests cross chunk and row boundaries
# In multi mode thread t owns the units u with u % WORKERS == t; in aio mode
# a unit is locked while a request on it is in flight.  Each request writes
# fresh random bytes to a random sub-range of one unit (some with FUA), or
# reads a unit back and compares it with the model (the unit cannot change
# meanwhile).  At the end: flush, compare the whole export with the model
# through a new connection, write the model to MODEL_OUT.

import random
import sys
import threading

import nbd

from e2e_common import Checks, compare_all, describe_diff

uri, chunk, D, mode, workers, ops, model_out, seed = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]),
    int(sys.argv[6]), sys.argv[7], int(sys.argv[8]))
c = Checks("concurrency-%s" % mode)
lock = threading.Lock()          # protects c (counters) only

h0 = nbd.NBD()
h0.connect_uri(uri)
size = h0.get_size()
c.check(h0.can_multi_conn(), "server does not advertise multi-conn")
model = bytearray(size)
# Start from a known non-zero content so reads of untouched bytes mean something.
init = random.Random(seed).randbytes(size)
for off in range(0, size, 4 << 20):
    h0.pwrite(init[off:off + (4 << 20)], off)
model[:] = init
del init
h0.flush()


def make_regions():
    u_big = 3 * chunk + 4608
    cuts = [0, size // 4 // 4096 * 4096, size // 2 // 4096 * 4096,
            (size // 2 + size // 8) // 4096 * 4096, size]
    regs = []
    for (lo, hi), g in zip(zip(cuts, cuts[1:]), (4096, 512, 16, u_big)):
        n = (hi - lo) // g
        regs.append((lo, g, n))
    return regs


REGIONS = make_regions()
WEIGHTS = [40, 20, 15, 25]


def pick(rng, owner=None):
    """(region index, unit) — owned by `owner` when given."""
    r = rng.choices(range(len(REGIONS)), WEIGHTS)[0]
    lo, g, n = REGIONS[r]
    if owner is None:
        return r, rng.randrange(n)
    k = rng.randrange((n - owner + workers - 1) // workers)
    return r, owner + k * workers


def subrange(rng, r, u):
    lo, g, n = REGIONS[r]
    base = lo + u * g
    if rng.random() < 0.15:
        return base, g
    s = rng.randrange(g)
    return base + s, rng.randint(1, g - s)


def unit_span(r, u):
    lo, g, n = REGIONS[r]
    return lo + u * g, g


def report(ok, what):
    with lock:
        c.check(ok, what)


def worker_sync(t):
    rng = random.Random(seed * 1000 + t)
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        for i in range(ops):
            r, u = pick(rng, t)
            x = rng.random()
            if x < 0.12:
                off, n = unit_span(r, u)
                got = h.pread(n, off)
                want = bytes(model[off:off + n])
                report(got == want, "thread %d op %d: read of own unit [%d, +%d): %s"
                       % (t, i, off, n, got == want or describe_diff(off, got, want)))
            elif x < 0.13:
                h.flush()
            else:
                off, n = subrange(rng, r, u)
                buf = rng.randbytes(n)
                flags = nbd.CMD_FLAG_FUA if rng.random() < 0.05 else 0
                h.pwrite(buf, off, flags)
                model[off:off + n] = buf
        report(True, "thread %d ran %d ops" % (t, ops))
    except nbd.Error as e:
        report(False, "thread %d: request failed: %s" % (t, e))
    finally:
        h.shutdown()


def run_multi():
    ts = [threading.Thread(target=worker_sync, args=(t,)) for t in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run_aio():
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    inflight = {}            # cookie -> (kind, unit key, off, n, buffer)
    busy = set()
    submitted = 0
    max_seen = 0
    while submitted < ops or inflight:
        while submitted < ops and len(inflight) < workers:
            r, u = pick(rng)
            if (r, u) in busy:
                continue
            busy.add((r, u))
            if rng.random() < 0.12:
                off, n = unit_span(r, u)
                buf = nbd.Buffer(n)
                ck = h.aio_pread(buf, off)
                inflight[ck] = ("read", (r, u), off, n, buf)
            else:
                off, n = subrange(rng, r, u)
                data = rng.randbytes(n)
                flags = nbd.CMD_FLAG_FUA if rng.random() < 0.05 else 0
                ck = h.aio_pwrite(data, off, flags=flags)
                model[off:off + n] = data
                inflight[ck] = ("write", (r, u), off, n, None)
            submitted += 1
        max_seen = max(max_seen, h.aio_in_flight())
        h.poll(-1)
        while inflight:
            ck = h.aio_peek_command_completed()
            if not ck:
                break
            kind, key, off, n, buf = inflight.pop(ck)
            busy.discard(key)
            try:
                h.aio_command_completed(ck)
            except nbd.Error as e:
                c.check(False, "aio %s [%d, +%d) failed: %s" % (kind, off, n, e))
                continue
            if kind == "read":
                got = bytes(buf.to_bytearray())
                want = bytes(model[off:off + n])
                c.check(got == want, "aio read of unit [%d, +%d): %s"
                        % (off, n, got == want or describe_diff(off, got, want)))
    c.check(max_seen > 1, "aio: never more than %d request in flight" % max_seen)
    print("note: aio ran %d requests, up to %d in flight" % (submitted, max_seen))
    h.shutdown()


if mode == "multi":
    run_multi()
elif mode == "aio":
    run_aio()
else:
    sys.exit("bad mode %s" % mode)

# Flush on one connection covers every connection's completed writes
# (multi-conn); then compare everything through a fresh connection.
h0.flush()
h0.shutdown()
h = nbd.NBD()
h.connect_uri(uri)
compare_all(c, h, model, "whole export after %s workload" % mode)
h.shutdown()
with open(model_out, "wb") as f:
    f.write(model)
c.done()
