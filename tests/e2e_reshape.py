#!/usr/bin/python3
# nbdkit-raid: live reshape through a real server, driven over the control
# socket, with clients reading and writing through libnbd the whole time.
#
#   e2e_reshape.py run URI CTL REQUEST_JSON [--freeze] [--speed BYTES]
#
# 1. Fill the export with a known pattern (a model kept here).
# 2. Start a writer thread (its own handle: writes of varied sizes at varied
#    offsets, updating the model; one writer so the model stays exact) and a
#    reader thread (reads and compares regions the writer does not own).
# 3. Send `reshape` (prepare): the reply must show a frozen plan at
#    position 0; then `start`; with --freeze: `freeze` part-way, check that
#    the position stays put, that I/O across the boundary completes quickly
#    (no request waits on a frozen reshape), then `start` again and check
#    the position never goes back (it continues, it does not restart).
# 4. `wait` until idle; check the new geometry in `status`.
# 5. Stop the writers; read the whole old-size range and compare with the
#    model; the new capacity (if it grew) reads as zeroes.
# Exit 0 and print "ok ..." lines, or exit 1 naming the first difference.
import json
import os
import random
import socket
import sys
import threading
import time

import nbd

BLOCK = 4096


def ctl(path, req, timeout=120):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall((json.dumps(req) + "\n").encode())
    line = s.makefile().readline()
    s.close()
    return json.loads(line)


def must(reply, what):
    if not reply.get("ok"):
        print("FAIL: %s: %s" % (what, reply), file=sys.stderr)
        sys.exit(1)
    return reply


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def pattern(off, length, gen):
    # Deterministic bytes that depend on offset and generation.
    return random.Random(off * 1000003 + gen).randbytes(length)


def main():
    _, cmd, uri, ctlpath, request = sys.argv[:5]
    opts = sys.argv[5:]
    freeze = "--freeze" in opts
    speed = int(opts[opts.index("--speed") + 1]) if "--speed" in opts else 0
    req = json.loads(request)
    want = req.pop("want", {})          # expectations, not sent to the server

    h = connect(uri)
    size = h.get_size()
    model = bytearray(size)
    # 1. fill (in 1 MiB writes)
    for off in range(0, size, 1 << 20):
        n = min(1 << 20, size - off)
        data = pattern(off, n, 0)
        h.pwrite(data, off)
        model[off:off + n] = data
    h.flush()
    st0 = must(ctl(ctlpath, {"op": "status", "id": 0}), "status")
    if speed:
        must(ctl(ctlpath, {"op": "set", "id": "s", "speed_min": 0, "speed_max": speed}), "set")

    stop = threading.Event()
    errors = []
    nblocks = size // BLOCK

    def writer():
        hw = connect(uri)
        gen, x = 1, 12345
        try:
            while not stop.is_set():
                x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
                b = (x >> 20) % (nblocks // 2) * 2          # even blocks only
                off = b * BLOCK + (gen % 3) * 100
                length = [BLOCK - 300, BLOCK - 100, 700][gen % 3]
                length = min(length, size - off)
                data = pattern(off, length, gen)
                hw.pwrite(data, off)
                model[off:off + length] = data
                gen += 1
        except Exception as e:                              # noqa: BLE001
            errors.append("writer: %r" % e)

    def reader():
        hr = connect(uri)
        x = 999
        try:
            while not stop.is_set():
                x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
                b = (x >> 20) % (nblocks // 2) * 2 + 1      # odd blocks only
                if b >= nblocks:
                    continue
                got = hr.pread(BLOCK, b * BLOCK)
                if got != bytes(model[b * BLOCK:(b + 1) * BLOCK]):
                    errors.append("reader: block %d differs during reshape" % b)
                    return
        except Exception as e:                              # noqa: BLE001
            errors.append("reader: %r" % e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()

    plan = must(ctl(ctlpath, dict(req, op="reshape", id="prep")), "reshape")
    r = plan.get("reshape") or {}
    if plan["sync_action"] != "frozen" or r.get("state") != "frozen" or r.get("position") != 0:
        errors.append("prepare did not leave a frozen plan at 0: %s" % plan)
    print("ok prepared: %s -> %s" % (r.get("from"), r.get("to")))
    time.sleep(0.2)
    st = must(ctl(ctlpath, {"op": "status", "id": 1}), "status")
    if (st.get("reshape") or {}).get("position") != 0:
        errors.append("data moved before start: %s" % st.get("reshape"))
    must(ctl(ctlpath, {"op": "start", "id": "go"}), "start")

    if freeze:
        time.sleep(0.6)
        must(ctl(ctlpath, {"op": "freeze", "id": "fr"}), "freeze")
        p1 = (must(ctl(ctlpath, {"op": "status", "id": 2}), "status")["reshape"] or {})
        pos = p1.get("position", 0)
        boundary = p1.get("boundary", 0)
        # I/O across the boundary while frozen must not wait on the reshape.
        hb = connect(uri)
        lo = max(0, boundary - 3 * BLOCK) // BLOCK * BLOCK
        t0 = time.monotonic()
        for _ in range(20):
            hb.pread(6 * BLOCK, lo)
            hb.pwrite(bytes(model[lo:lo + 6 * BLOCK]), lo)  # same bytes: model stays
        dt = time.monotonic() - t0
        if dt > 2.0:
            errors.append("I/O across a frozen boundary took %.2fs" % dt)
        time.sleep(0.5)
        p2 = (must(ctl(ctlpath, {"op": "status", "id": 3}), "status")["reshape"] or {})
        if p2.get("position") != pos:
            errors.append("position moved while frozen: %s -> %s" % (pos, p2.get("position")))
        print("ok frozen at %d (boundary %d), I/O across it took %.3fs" % (pos, boundary, dt))
        must(ctl(ctlpath, {"op": "start", "id": "go2"}), "start again")
        time.sleep(0.1)
        p3 = (must(ctl(ctlpath, {"op": "status", "id": 4}), "status")["reshape"] or {})
        if p3 and p3.get("position", 0) < pos:
            errors.append("restarted from %s, frozen at %s" % (p3.get("position"), pos))
    if speed:
        must(ctl(ctlpath, {"op": "set", "id": "s2", "speed_max": 0}), "set")

    deadline = time.monotonic() + 180
    while True:
        st = must(ctl(ctlpath, {"op": "wait", "id": "w", "timeout": 10}), "wait")
        if st["sync_action"] == "idle" or time.monotonic() > deadline:
            break
    stop.set()
    for t in threads:
        t.join()
    if st["sync_action"] != "idle" or st.get("reshape"):
        errors.append("reshape did not finish: %s" % st)
    for k, v in want.items():
        if st.get(k) != v:
            errors.append("status %s = %r, expected %r" % (k, st.get(k), v))
    print("ok finished: raid%s %s chunk %s x%s, size %s (was %s)" % (
        st["level"], st["layout"], st["chunk"], st["raid_devices"], st["size"], st0["size"]))

    # 5. verify everything through a new connection (it sees the new size)
    hv = connect(uri)
    for off in range(0, size, 4 << 20):
        n = min(4 << 20, size - off)
        got = hv.pread(n, off)
        if got != bytes(model[off:off + n]):
            i = next(i for i in range(n) if got[i] != model[off + i])
            errors.append("byte %d differs after reshape" % (off + i))
            break
    newsize = hv.get_size()
    if newsize > size:
        z = hv.pread(min(newsize - size, 8 << 20), size)
        if z.count(0) != len(z):
            errors.append("new capacity is not zero")
    if errors:
        for e in errors[:10]:
            print("FAIL: " + e, file=sys.stderr)
        sys.exit(1)
    print("ok verified %d bytes" % size)


if __name__ == "__main__":
    main()
