#!/usr/bin/python3
# nbdkit-raid: the independent crash checker of test-e2e-kill.sh.
#
# THEORY.  The NBD contract says what a client may rely on after the server
# dies: a write is durable once it was acknowledged with FUA, or once it was
# acknowledged and a FLUSH sent after that acknowledgement completed (on any
# connection, since the server advertises multi-conn).  Nothing else is
# promised for acknowledged-but-unflushed writes or writes still in flight,
# except that the bytes are one of the versions a client wrote.  This
# program checks exactly that, through NBD only; it shares no code with
# the server.
#
#   run     Drive a loaded server with several writers (threads with their
#           own connections, synchronous, and one aio connection with up to
#           8 writes in flight) plus a thread that flushes on its own
#           connection, then SIGKILL the server at a seeded moment.
#           Every block the writers touch is owned by one writer and never
#           has two writes in flight at once, so the writes to one block are
#           totally ordered by issue order: v0 (the initial content), v1,
#           v2, ... vn.  Each writer appends to its journal file in $DIR,
#           before it sends a write ("I seq off len kind fua"), after the
#           acknowledgement ("A seq tick", fsync), and after a flush ("F
#           snap", fsync).  tick comes from one global counter taken after
#           the acknowledgement; snap is the counter's value taken before
#           the flush was sent, so a completed flush covers every write
#           whose tick < snap (its reply came before the flush was sent).
#   verify  From the journal files alone: write k is durable when acked
#           with FUA or its tick < the highest completed snap.  For each
#           4 KiB block with versions v0..vn and d = its last durable
#           version (0 if none), the block must read back as one of
#           v_d, v_{d+1}, ..., v_n — the last durable write or any write
#           issued after it.  Blocks never written must read as v0.  A
#           block that fails is reported precisely: which version it holds
#           if any (a stale one = a lost durable write), what header it
#           carries (a misdirected block names its own offset), and how it
#           differs from the candidates.
#
# Blocks are self-describing: every 4 KiB block of an aligned write starts
# with a 48-byte header (magic, seed, writer, kind, seq, block offset,
# write offset and length, a BLAKE2b-32 of the block) followed by seeded
# random bytes; unaligned writes carry seeded random bytes; zero writes
# (NBD_CMD_WRITE_ZEROES, which must read back as zeros) carry zeros.  Trim
# is not used: its content afterwards is unspecified.  All content is a
# function of (seed, writer, seq, offset, length, kind), so verify
# recomputes every version from the journal.
#
# Units (fixed by size, chunk, data disks, writers): the first half of the
# export is cut into 4 KiB units (unit u owned by writer u % W; neighbours
# in a row belong to different writers, so concurrent writes share rows and
# parity), the second half into units of 2 full stripe rows + 8 KiB, so
# whole-unit writes always cover complete rows and cross chunk and row
# boundaries.  The first three quarters of the export start with seeded
# self-describing content (v0), the last quarter with zeros, unless
# --baseline gives v0 (a chained crash: the image read by the previous
# verify).
#
#   e2e_kill.py run --uri URI --dir DIR --seed N --pidfile F
#                   --chunk BYTES --data-disks D [--kill-window LO HI]
#                   [--baseline IMG]
#   e2e_kill.py verify --uri URI --dir DIR [--save IMG] [--expect-bad N]
#                   [--inflight-unspecified | --exempt-inflight-rows]
#   e2e_kill.py tamper --dir DIR --image FILE   (self-test, see cmd_tamper)
#   e2e_kill.py sequence write|check --uri URI --chunk BYTES --data-disks D
#                   (deterministic replay-order cases, see cmd_sequence)
#   e2e_kill.py pick SEED N K      K distinct indices < N (seeded)
#   e2e_kill.py shuffle SEED ITEM...    the items in a seeded order, one a line
#   e2e_kill.py role-order EXAMINE_JSON member specs in role order, one a line
#
# A write is "in flight at the kill" below when it was not durable then:
# not acknowledged, or acknowledged but neither flushed nor FUA.  The
# array acknowledges gathered partial-row writes before it writes them
# (nbdkit-raid-plugin(1), Write gathering), so it may still have been
# writing them, possibly completed into a whole row that the journal logs
# by its range only; and a power cut may lose any unflushed member write.
#
# --inflight-unspecified (for a restart with members lost): the bytes a
# write in flight at the kill covers may hold anything — the journal
# policy promises only that a crash changes no block OUTSIDE the range of
# the writes in progress (nbdkit-raid-plugin(1), Crash consistency, BUGS),
# even when a member is lost afterwards; inside it, a full-row write torn
# by the crash cannot be rebuilt for the lost member (md's PPL behaves the
# same).  Such blocks are printed as notes; every byte outside the range of
# the in-flight writes is still checked strictly.  Without members lost,
# every block is read from its own member and must be its last durable
# version with some of the later writes applied whole and the others lost:
# any of them, not only the latest (subset_ok).
#
# --exempt-inflight-rows (for a force=true start of a dirty degraded array
# without a write-hole log, where the write hole is accepted): blocks in
# stripe rows touched by a write that was in flight at the kill are not
# checked (they are counted and reported); every other block still must be.

import argparse
import hashlib
import json
import os
import random
import signal
import struct
import sys
import threading
import time
import zlib

import nbd

from e2e_common import Checks

BS = 4096
MAX_IO = 4 << 20
MAGIC = b"E2EKILL1"
HDR = struct.Struct("<8sIHHQQQII")      # 48 bytes
KIND_CODE = {"b": 1, "u": 2, "z": 3, "i": 4}
KIND_NAME = {1: "aligned", 2: "unaligned", 3: "zero", 4: "initial"}
INIT_WRITER = 0xFFFF
AIO_DEPTH = 8


# ---------------------------------------------------------------------------
# Content: a function of the write's identity only.

def block_hash(fields, rest):
    """A non-linear checksum: an XOR of three valid blocks (what RAID
    reconstruction from inconsistent parity produces) has a valid CRC32 but
    not a valid BLAKE2b."""
    return int.from_bytes(hashlib.blake2b(fields + rest, digest_size=4).digest(), "little")


def block_header(seed, writer, kind, seq, boff, woff, wlen, rest):
    fields = HDR.pack(MAGIC, seed & 0xFFFFFFFF, writer, KIND_CODE[kind], seq,
                      boff, woff, wlen, 0)[:HDR.size - 4]
    return fields + struct.pack("<I", block_hash(fields, rest))


def gen_write(seed, writer, seq, off, length, kind):
    """The bytes of write (writer, seq) of `length` bytes at `off`."""
    if kind == "z":
        return bytes(length)
    buf = bytearray(random.Random("%d:%d:%d" % (seed, writer, seq)).randbytes(length))
    if kind == "b":
        for p in range(0, length, BS):
            buf[p:p + HDR.size] = block_header(seed, writer, kind, seq, off + p, off,
                                               length, bytes(buf[p + HDR.size:p + BS]))
    return bytes(buf)


def gen_initial(seed, end):
    """v0 of [0, end) when no baseline is given (end is a multiple of BS)."""
    buf = bytearray(random.Random("%d:init" % seed).randbytes(end))
    for p in range(0, end, BS):
        buf[p:p + HDR.size] = block_header(seed, INIT_WRITER, "i", 0, p, 0, end,
                                           bytes(buf[p + HDR.size:p + BS]))
    return buf


def decode_header(blk):
    if blk[:8] != MAGIC:
        return None
    _, seed, w, k, seq, boff, woff, wlen, hsh = HDR.unpack_from(blk)
    valid = block_hash(bytes(blk[:HDR.size - 4]), bytes(blk[HDR.size:])) == hsh
    return {"valid": valid, "seed": seed, "writer": w, "kind": KIND_NAME.get(k, k),
            "seq": seq, "block_off": boff, "write_off": woff, "write_len": wlen}


# ---------------------------------------------------------------------------
# Units and ownership.

class Units:
    def __init__(self, size, chunk, ddisks, writers):
        self.size = size
        self.writers = writers
        self.a_end = size // 2 // BS * BS
        self.g = 2 * ddisks * chunk + 2 * BS
        self.nb = (size - self.a_end) // self.g
        self.na = self.a_end // BS
        self.prefill_end = size * 3 // 4 // BS * BS

    def owned(self, rng, t):
        """(region, base, unit length) of a random unit owned by writer t."""
        W = self.writers
        if rng.random() < 0.5:
            k = rng.randrange((self.na - t + W - 1) // W)
            return "A", (t + k * W) * BS, BS
        k = rng.randrange((self.nb - t + W - 1) // W)
        return "B", self.a_end + (t + k * W) * self.g, self.g


def choose_write(rng, units, t):
    """(off, len, kind, unit key) of a random write in a unit of writer t."""
    reg, base, g = units.owned(rng, t)
    x = rng.random()
    if reg == "A":
        if x < 0.65:
            return base, BS, "b", base
        s = rng.randrange(BS - 1)
        n = rng.randint(1, BS - s)
        return base + s, n, ("z" if x > 0.93 else "u"), base
    if x < 0.2:
        return base, g, "b", base
    if x < 0.6:
        nblk = g // BS
        s = rng.randrange(nblk)
        e = rng.randint(s + 1, nblk)
        return base + s * BS, (e - s) * BS, "b", base
    s = rng.randrange(g - 1)
    n = rng.randint(1, g - s)
    return base + s, n, ("z" if x > 0.9 else "u"), base


# ---------------------------------------------------------------------------
# run

class Journal:
    """One writer's journal file: appended as it goes, fsync'd on the records
    that claim an acknowledgement or durability."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(self, line, sync=False):
        os.write(self.fd, (line + "\n").encode())
        if sync:
            os.fsync(self.fd)

    def close(self):
        os.fsync(self.fd)
        os.close(self.fd)


class Shared:
    def __init__(self, c, can_fua):
        self.lock = threading.Lock()
        self.tick = 0
        self.killed = threading.Event()
        self.c = c
        self.can_fua = can_fua
        self.stats = {"issued": 0, "acked": 0, "flushes": 0}

    def ack(self):
        with self.lock:
            t = self.tick
            self.tick += 1
            self.stats["acked"] += 1
            return t

    def snapshot(self):
        with self.lock:
            return self.tick

    def count(self, key):
        with self.lock:
            self.stats[key] += 1

    def error(self, who, e):
        """A failed request: expected after the kill, a failure before it."""
        if self.killed.is_set():
            return
        with self.lock:
            self.c.check(False, "%s: request failed before the kill: %s" % (who, e))


def do_flush(h, sh, j):
    snap = sh.snapshot()
    j.log("S %d" % snap)
    h.flush()
    j.log("F %d" % snap, sync=True)
    sh.count("flushes")


def writer_sync(args, sh, units, t, start):
    rng = random.Random("%d:writer:%d" % (args.seed, t))
    j = Journal(os.path.join(args.dir, "w%d.log" % t))
    h = nbd.NBD()
    h.connect_uri(args.uri)
    seq = 0
    start.wait()
    try:
        while not sh.killed.is_set():
            if rng.random() < 0.04:
                do_flush(h, sh, j)
                continue
            off, n, kind, _ = choose_write(rng, units, t)
            fua = sh.can_fua and rng.random() < 0.1
            seq += 1
            j.log("I %d %d %d %s %d" % (seq, off, n, kind, fua))
            sh.count("issued")
            flags = nbd.CMD_FLAG_FUA if fua else 0
            if kind == "z":
                h.zero(n, off, flags)
            else:
                h.pwrite(gen_write(args.seed, t, seq, off, n, kind), off, flags)
            j.log("A %d %d" % (seq, sh.ack()), sync=True)
    except nbd.Error as e:
        j.log("X %d %s" % (seq, str(e).replace("\n", " ")))
        sh.error("writer %d" % t, e)
    finally:
        j.close()
        try:
            h.close()
        except Exception:
            pass


def writer_aio(args, sh, units, t, start):
    rng = random.Random("%d:writer:%d" % (args.seed, t))
    j = Journal(os.path.join(args.dir, "w%d.log" % t))
    h = nbd.NBD()
    h.connect_uri(args.uri)
    seq = 0
    inflight = {}                       # cookie -> (seq, unit key)
    busy = set()
    start.wait()
    try:
        while True:
            while not sh.killed.is_set() and len(inflight) < AIO_DEPTH:
                off, n, kind, key = choose_write(rng, units, t)
                if key in busy:
                    continue
                busy.add(key)
                fua = sh.can_fua and rng.random() < 0.1
                seq += 1
                j.log("I %d %d %d %s %d" % (seq, off, n, kind, fua))
                sh.count("issued")
                flags = nbd.CMD_FLAG_FUA if fua else 0
                if kind == "z":
                    ck = h.aio_zero(n, off, flags=flags)
                else:
                    ck = h.aio_pwrite(gen_write(args.seed, t, seq, off, n, kind), off,
                                      flags=flags)
                inflight[ck] = (seq, key)
            if not inflight:
                break
            h.poll(-1)
            while inflight:
                ck = h.aio_peek_command_completed()
                if not ck:
                    break
                s, key = inflight.pop(ck)
                busy.discard(key)
                h.aio_command_completed(ck)      # raises on a failed write
                j.log("A %d %d" % (s, sh.ack()), sync=True)
    except nbd.Error as e:
        j.log("X %s %s" % (",".join(str(s) for s, _ in inflight.values()) or "-",
                           str(e).replace("\n", " ")))
        sh.error("aio writer %d" % t, e)
    finally:
        j.close()
        try:
            h.close()
        except Exception:
            pass


def flusher(args, sh, start):
    rng = random.Random("%d:flusher" % args.seed)
    j = Journal(os.path.join(args.dir, "flusher.log"))
    h = nbd.NBD()
    h.connect_uri(args.uri)
    start.wait()
    try:
        while not sh.killed.wait(rng.uniform(0.005, 0.06)):
            do_flush(h, sh, j)
    except nbd.Error as e:
        sh.error("flusher", e)
    finally:
        j.close()
        try:
            h.close()
        except Exception:
            pass


def pwrite_all(h, buf, off):
    for p in range(0, len(buf), MAX_IO):
        h.pwrite(bytes(buf[p:p + MAX_IO]), off + p)


def pread_all(h, off, length):
    parts = []
    for p in range(0, length, MAX_IO):
        parts.append(h.pread(min(MAX_IO, length - p), off + p))
    return b"".join(parts)


def process_gone(pid):
    """True when pid has exited (a zombie counts as gone: it holds no fds)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True                     # already reaped by the shell


def cmd_run(args):
    c = Checks("kill-run seed %d" % args.seed)
    os.makedirs(args.dir, exist_ok=True)
    rng = random.Random("%d:kill" % args.seed)
    kill_after = rng.uniform(args.kill_window[0], args.kill_window[1])
    W = args.writers
    h0 = nbd.NBD()
    h0.connect_uri(args.uri)
    size = h0.get_size()
    c.check(h0.can_multi_conn(), "server does not advertise multi-conn")
    c.check(h0.can_flush(), "server does not advertise flush")
    can_fua = h0.can_fua()
    c.check(can_fua, "server does not advertise FUA")
    units = Units(size, args.chunk, args.data_disks, W)
    if args.baseline:
        c.check(os.path.getsize(args.baseline) == size,
                "baseline %s is not %d bytes" % (args.baseline, size))
    else:
        pwrite_all(h0, gen_initial(args.seed, units.prefill_end), 0)
    h0.flush()                           # v0 is durable
    h0.shutdown()
    meta = {"seed": args.seed, "size": size, "chunk": args.chunk,
            "data_disks": args.data_disks, "writers": W,
            "baseline": os.path.abspath(args.baseline) if args.baseline else None,
            "prefill_end": units.prefill_end, "kill_after": kill_after}
    with open(os.path.join(args.dir, "meta.json"), "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())

    sh = Shared(c, can_fua)
    start = threading.Barrier(W + 2, timeout=30)
    ts = [threading.Thread(target=writer_sync, args=(args, sh, units, t, start))
          for t in range(W - 1)]
    ts.append(threading.Thread(target=writer_aio, args=(args, sh, units, W - 1, start)))
    ts.append(threading.Thread(target=flusher, args=(args, sh, start)))
    for t in ts:
        t.start()
    start.wait()
    t0 = time.monotonic()
    with open(args.pidfile) as f:
        pid = int(f.read().split()[0])
    time.sleep(kill_after)
    alive = sum(t.is_alive() for t in ts)
    c.check(alive == len(ts), "only %d of %d client threads still running at the kill"
            % (alive, len(ts)))
    sh.killed.set()
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic() - t0
    deadline = time.monotonic() + 30
    for t in ts:
        t.join(max(0.1, deadline - time.monotonic()))
    c.check(not any(t.is_alive() for t in ts),
            "client threads still blocked 30 s after the server was killed")
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    c.check(process_gone(pid), "nbdkit pid %d survived SIGKILL" % pid)
    st = sh.stats
    c.check(st["acked"] > 0, "no write was acknowledged before the kill")
    print("note: seed %d: killed after %.3f s: %d writes issued, %d acked, %d flushes"
          % (args.seed, t_kill, st["issued"], st["acked"], st["flushes"]))
    c.done()


# ---------------------------------------------------------------------------
# verify

class Write:
    __slots__ = ("writer", "seq", "off", "len", "kind", "fua", "tick")

    def __init__(self, writer, seq, off, length, kind, fua):
        self.writer, self.seq, self.off, self.len = writer, seq, off, length
        self.kind, self.fua = kind, fua
        self.tick = None

    def acked(self):
        return self.tick is not None

    def durable(self, cut):
        return self.tick is not None and (self.fua or self.tick < cut)

    def describe(self, cut):
        st = ("durable (FUA)" if self.acked() and self.fua else
              "durable (flushed)" if self.durable(cut) else
              "acked, not flushed" if self.acked() else
              "in flight at the kill")
        return "writer %d seq %d %s [%d, +%d) %s" % (
            self.writer, self.seq, KIND_NAME[KIND_CODE[self.kind]], self.off, self.len, st)


def read_journals(d, meta):
    """Writes per writer (issue order) and the durable cut."""
    cut = 0
    writes = []
    for t in range(meta["writers"]):
        by_seq = {}
        order = []
        with open(os.path.join(d, "w%d.log" % t)) as f:
            for line in f:
                p = line.split()
                if not p:
                    continue
                if p[0] == "I":
                    w = Write(t, int(p[1]), int(p[2]), int(p[3]), p[4], p[5] == "1")
                    by_seq[w.seq] = w
                    order.append(w)
                elif p[0] == "A":
                    by_seq[int(p[1])].tick = int(p[2])
                elif p[0] == "F":
                    cut = max(cut, int(p[1]))
        writes.append(order)
    fl = os.path.join(d, "flusher.log")
    if os.path.exists(fl):
        with open(fl) as f:
            for line in f:
                p = line.split()
                if p and p[0] == "F":
                    cut = max(cut, int(p[1]))
    return writes, cut


class BlockModel:
    """Per block: every version written (for diagnosis: writes and CRCs) and
    the candidates it may legally hold."""

    def __init__(self):
        self.writes = []          # Write objects in issue order
        self.crcs = []            # crc32 of v1..vn
        self.cands = []           # (version index, bytes) allowed


def build_model(meta, writes, cut, v0_of, c):
    blocks = {}
    owner = {}
    for order in writes:
        for w in order:
            for b in range(w.off // BS, (w.off + w.len - 1) // BS + 1):
                o = owner.setdefault(b, w.writer)
                if o != w.writer:
                    c.check(False, "test bug: block %d written by writers %d and %d"
                            % (b, o, w.writer))
                m = blocks.get(b)
                if m is None:
                    m = blocks[b] = BlockModel()
                m.writes.append(w)
    last_durable = {}
    for b, m in blocks.items():
        d = 0
        for k, w in enumerate(m.writes, 1):
            if w.durable(cut):
                d = k
        last_durable[b] = d
    cur = {}
    for b, m in blocks.items():
        cur[b] = v0_of(b)
        if last_durable[b] == 0:
            m.cands.append((0, cur[b]))
    index = {b: 0 for b in blocks}
    for order in writes:
        for w in order:
            data = gen_write(meta["seed"], w.writer, w.seq, w.off, w.len, w.kind)
            for b in range(w.off // BS, (w.off + w.len - 1) // BS + 1):
                bo = b * BS
                lo, hi = max(w.off, bo), min(w.off + w.len, bo + BS)
                old = cur[b]
                new = old[:lo - bo] + data[lo - w.off:hi - w.off] + old[hi - bo:]
                cur[b] = new
                index[b] += 1
                m = blocks[b]
                m.crcs.append(zlib.crc32(new))
                if index[b] >= last_durable[b]:
                    m.cands.append((index[b], new))
    return blocks, last_durable


def ndiff(a, b):
    n = sum(1 for x, y in zip(a, b) if x != y)
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), -1)
    return n, k


def explain(b, got, m, d, cut, v0):
    bo = b * BS
    lines = ["block %d [0x%x, +4096): holds none of its %d allowed versions "
             "(last durable: v%d)" % (bo, bo, len(m.cands), d)]
    lines.append("  v0: initial content%s" % (" (zeros)" if not any(v0) else ""))
    for k, w in enumerate(m.writes, 1):
        lines.append("  v%d: %s%s" % (k, w.describe(cut), "  <- allowed" if k >= d else ""))
    crc = zlib.crc32(got)
    if got == v0:
        lines.append("  got: v0, the initial content (lost durable write v%d)" % d)
    elif crc in m.crcs:
        k = m.crcs.index(crc) + 1
        lines.append("  got: v%d, an older version: durable write v%d was lost" % (k, d))
    elif not any(got):
        lines.append("  got: all zeros")
    else:
        h = decode_header(got)
        if h and h["valid"]:
            lines.append("  got: a complete block of another write: %s%s" % (
                h, "" if h["block_off"] == bo else " (MISDIRECTED: written for offset %d)"
                % h["block_off"]))
        elif h:
            lines.append("  got: garbage with a block magic but a bad checksum (e.g. "
                         "rebuilt from inconsistent parity): %s" % h)
        else:
            lines.append("  got: unrecognised bytes (no block header), first 16: %s"
                         % bytes(got[:16]).hex())
        for k, blk in m.cands:
            n, first = ndiff(got, blk)
            lines.append("  vs v%d: %d bytes differ, first at block byte %d" % (k, n, first))
    return "\n".join(lines)


def load_model(d, c):
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    writes, cut = read_journals(d, meta)
    if meta["baseline"]:
        with open(meta["baseline"], "rb") as f:
            base = f.read()
    else:
        base = bytes(gen_initial(meta["seed"], meta["prefill_end"]))
    zero = bytes(BS)

    def v0_of(b):
        blk = base[b * BS:(b + 1) * BS]
        return blk if len(blk) == BS else zero

    blocks, last_durable = build_model(meta, writes, cut, v0_of, c)
    return meta, writes, cut, v0_of, blocks, last_durable


def inflight_outside_ok(b, got, m, cut):
    """--inflight-unspecified: the bytes of block b that writes not durable at
    the kill cover may hold anything: in flight, or acknowledged but not
    flushed (the array acknowledges gathered partial-row writes before it
    writes them, and a power cut may lose any unflushed member write); the
    others must hold the block's last durable version (every candidate
    agrees there)."""
    bo = b * BS
    spans = sorted((max(w.off, bo) - bo, min(w.off + w.len, bo + BS) - bo)
                   for w in m.writes if not w.durable(cut))
    if not spans:
        return False
    last, at = m.cands[0][1], 0
    for lo, hi in spans + [(BS, BS)]:
        if lo > at and got[at:lo] != last[at:lo]:
            return False
        at = max(at, hi)
    return True


def subset_ok(b, got, m):
    """Whether block b holds its last durable version with some of the
    later writes (none durable at the kill) applied, in order, and the
    others lost.  Each such write is there whole or not at all within the
    block (a 4K block of one write is one member write), but any of them may
    be lost independently of the others: an acknowledged write is durable
    only after a flush, and the array may write a later one before an
    earlier one it still holds gathered (a zero beside a gathered partial
    row; nbdkit-raid-plugin(1), Write gathering), as a disk's cache may."""
    bo = b * BS
    base = m.cands[0][1]
    later = []
    for k, blk in m.cands[1:]:
        w = m.writes[k - 1]
        lo, hi = max(w.off, bo) - bo, min(w.off + w.len, bo + BS) - bo
        later.append((lo, hi, blk[lo:hi]))
    if not later or len(later) > 12:
        return False
    for mask in range(1, 1 << len(later)):
        cur = base
        for j, (lo, hi, data) in enumerate(later):
            if mask >> j & 1:
                cur = cur[:lo] + data + cur[hi:]
        if cur == got:
            return True
    return False


def cmd_verify(args):
    c = Checks("kill-verify")
    meta, writes, cut, v0_of, blocks, last_durable = load_model(args.dir, c)
    c.name = "kill-verify seed %d" % meta["seed"]
    exempt = set()
    roww = meta["chunk"] * meta["data_disks"]
    if args.exempt_inflight_rows:
        # rows of every write not durable at the kill: in flight, or acked
        # but not flushed (maybe still gathered in the array, unwritten)
        for order in writes:
            for w in order:
                if not w.durable(cut):
                    exempt.update(range(w.off // roww, (w.off + w.len - 1) // roww + 1))

    h = nbd.NBD()
    h.connect_uri(args.uri)
    size = h.get_size()
    c.check(size == meta["size"], "size after restart %d, before %d" % (size, meta["size"]))
    img = pread_all(h, 0, meta["size"])
    h.shutdown()
    if args.save:
        with open(args.save, "wb") as f:
            f.write(img)

    bad = 0
    n_exempt = n_untouched = n_torn = n_subset = 0
    n_durable = sum(1 for d in last_durable.values() if d > 0)
    for b in range(meta["size"] // BS):
        got = img[b * BS:(b + 1) * BS]
        if args.exempt_inflight_rows and b * BS // roww in exempt:
            n_exempt += 1
            continue
        m = blocks.get(b)
        if m is None:
            n_untouched += 1
            if got != v0_of(b):
                bad += 1
                if bad <= args.max_report:
                    h0 = decode_header(got)
                    c.check(False, "block %d [0x%x, +4096) was never written in this run "
                            "but does not hold its initial content; got %s"
                            % (b * BS, b * BS, h0 or ("zeros" if not any(got) else
                                                      "unrecognised bytes")))
                else:
                    c.failed += 1
            else:
                c.passed += 1
            continue
        if any(got == blk for _, blk in m.cands):
            c.passed += 1
            continue
        if subset_ok(b, got, m):
            n_subset += 1
            c.passed += 1
            continue
        if args.inflight_unspecified and inflight_outside_ok(b, got, m, cut):
            n_torn += 1
            c.passed += 1
            if n_torn <= args.max_report:
                print("note: block %d [0x%x, +4096) inside a write in flight at the "
                      "kill (not durable) holds neither its old nor its new content "
                      "(allowed on a degraded restart):\n%s"
                      % (b * BS, b * BS, explain(b, got, m, last_durable[b], cut, v0_of(b))))
            continue
        bad += 1
        if bad <= args.max_report:
            c.check(False, explain(b, got, m, last_durable[b], cut, v0_of(b)))
        else:
            c.failed += 1
    nw = sum(len(o) for o in writes)
    na = sum(1 for o in writes for w in o if w.acked())
    nd = sum(1 for o in writes for w in o if w.durable(cut))
    print("note: seed %d: %d writes (%d acked, %d durable, %d unacknowledged), %d blocks "
          "written (%d with a durable write), %d untouched, %d exempt, %d with some "
          "writes not durable lost and later ones kept, %d torn by a write not "
          "durable; %d bad"
          % (meta["seed"], nw, na, nd, nw - na, len(blocks), n_durable, n_untouched,
             n_exempt, n_subset, n_torn, bad))
    if bad > args.max_report:
        print("note: %d more bad blocks not shown" % (bad - args.max_report))
    if args.expect_bad is not None:
        # Self-test of the checker (after `tamper`): exactly the tampered
        # blocks must be reported, each being one failed check above.
        c.failed -= bad
        c.check(bad == args.expect_bad, "self-test: %d bad blocks found, %d tampered"
                % (bad, args.expect_bad))
    c.done()


def cmd_tamper(args):
    """Self-test of the checker on a plain file image after a kill: give one
    block with a durable write its previous version back (a lost durable
    write) and tear another one (its second half replaced by garbage)."""
    c = Checks("kill-tamper")
    meta, writes, cut, v0_of, blocks, last_durable = load_model(args.dir, c)
    rng = random.Random("%d:tamper" % meta["seed"])
    durable = sorted(b for b, d in last_durable.items() if d > 0 and len(blocks[b].cands) == 1)
    if not c.check(len(durable) >= 2, "self-test: fewer than 2 blocks with a durable write"):
        c.done()
    stale_b, torn_b = rng.sample(durable, 2)
    with open(args.image, "r+b") as f:
        m = blocks[stale_b]
        d = last_durable[stale_b]
        old = v0_of(stale_b)
        # previous version: rebuild it from v0 and the writes before v_d
        for w in m.writes[:d - 1]:
            data = gen_write(meta["seed"], w.writer, w.seq, w.off, w.len, w.kind)
            bo = stale_b * BS
            lo, hi = max(w.off, bo), min(w.off + w.len, bo + BS)
            old = old[:lo - bo] + data[lo - w.off:hi - w.off] + old[hi - bo:]
        if old == m.cands[0][1]:
            old = bytes(b ^ 0x5A for b in old)      # previous equal to current: alter
        f.seek(stale_b * BS)
        f.write(old)
        f.seek(torn_b * BS + BS // 2)
        f.write(rng.randbytes(BS // 2))
    print("note: tampered blocks %d (stale) and %d (torn)" % (stale_b * BS, torn_b * BS))
    c.done()


# ---------------------------------------------------------------------------
# sequence: deterministic orderings of partial-row and full-row writes to
# the same stripe rows (a write-hole log may record a partial row by its new
# blocks but a full row only by its range; replay must still leave the
# newest data).  `write` issues them on a fresh array and flushes; the
# shell then kills the server, restarts it and runs `check`: every write
# was acknowledged and flushed, so the rows must hold exactly the model.

def sequence_ops(chunk, ddisks):
    W = chunk * ddisks
    sub = min(BS, chunk)
    ops = []                     # (offset, length, fill byte, fua)
    r = 1 * W                    # partial, then full row (FUA)
    ops += [(r + sub, sub, 0x11, False), (r, W, 0x22, True)]
    r = 3 * W                    # full row, then partial in another chunk
    ops += [(r, W, 0x33, False), (r + chunk + sub, sub, 0x44, True)]
    r = 5 * W                    # partial, full, partial in another chunk
    ops += [(r, sub, 0x55, False), (r, W, 0x66, False),
            (r + (ddisks - 1) * chunk, sub, 0x77, False)]
    r = 7 * W                    # partial, then two full rows + a bit
    ops += [(r + W + 3 * sub, 2 * sub, 0x88, False), (r, 2 * W + sub, 0x99, False)]
    r = 11 * W                   # unaligned partial inside a full-row write
    ops += [(r + 100, 3000, 0xAA, False), (r, W, 0xBB, False),
            (r + 5000, 700, 0xCC, False), (r + W - 10, 20, 0xDD, False)]
    return ops, 14 * W


def cmd_sequence(args):
    c = Checks("kill-sequence %s" % args.action)
    ops, span = sequence_ops(args.chunk, args.data_disks)
    model = bytearray(span)
    h = nbd.NBD()
    h.connect_uri(args.uri)
    for i, (off, n, fill, fua) in enumerate(ops):
        data = bytes([fill]) * n
        if args.action == "write":
            h.pwrite(data, off, nbd.CMD_FLAG_FUA if fua else 0)
        model[off:off + n] = data
    if args.action == "write":
        h.flush()
        c.check(True, "writes acknowledged and flushed")
    else:
        got = pread_all(h, 0, span)
        W = args.chunk * args.data_disks
        for r in range(span // W):
            g, w = got[r * W:(r + 1) * W], model[r * W:(r + 1) * W]
            if g == w:
                c.check(True, "")
                continue
            k = next(i for i in range(W) if g[i] != w[i])
            c.check(False, "row %d: array byte %d holds 0x%02x, the last flushed write "
                    "put 0x%02x there (fills: %s)" % (
                        r, r * W + k, g[k], w[k],
                        ", ".join("0x%02x@[%d,+%d)%s" % (f, o, n, " FUA" if u else "")
                                  for o, n, f, u in ops if o < (r + 1) * W and o + n > r * W)))
    h.shutdown()
    c.done()


# ---------------------------------------------------------------------------
# helpers for the shell script

def cmd_pick(a):
    rng = random.Random("%d:pick" % int(a[0]))
    print(" ".join(str(i) for i in sorted(rng.sample(range(int(a[1])), int(a[2])))))


def cmd_shuffle(a):
    rng = random.Random("%d:shuffle" % int(a[0]))
    items = a[1:]
    rng.shuffle(items)
    print("\n".join(items))


def cmd_role_order(a):
    with open(a[0]) as f:
        ex = json.load(f)
    ms = sorted((m["role"], m["spec"]) for m in ex["members"])
    print("\n".join(s for _, s in ms))


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("pick", "shuffle", "role-order"):
        {"pick": cmd_pick, "shuffle": cmd_shuffle,
         "role-order": cmd_role_order}[sys.argv[1]](sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--uri", required=True)
    r.add_argument("--dir", required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--pidfile", required=True)
    r.add_argument("--chunk", type=int, required=True)
    r.add_argument("--data-disks", type=int, required=True)
    r.add_argument("--writers", type=int, default=5)
    r.add_argument("--kill-window", type=float, nargs=2, default=[0.2, 2.0])
    r.add_argument("--baseline")
    v = sub.add_parser("verify")
    v.add_argument("--uri", required=True)
    v.add_argument("--dir", required=True)
    v.add_argument("--save")
    v.add_argument("--exempt-inflight-rows", action="store_true")
    v.add_argument("--inflight-unspecified", action="store_true")
    v.add_argument("--max-report", type=int, default=8)
    v.add_argument("--expect-bad", type=int)
    q = sub.add_parser("sequence")
    q.add_argument("action", choices=["write", "check"])
    q.add_argument("--uri", required=True)
    q.add_argument("--chunk", type=int, required=True)
    q.add_argument("--data-disks", type=int, required=True)
    t = sub.add_parser("tamper")
    t.add_argument("--dir", required=True)
    t.add_argument("--image", required=True)
    args = ap.parse_args()
    {"run": cmd_run, "verify": cmd_verify, "tamper": cmd_tamper,
     "sequence": cmd_sequence}[args.cmd](args)


if __name__ == "__main__":
    main()
