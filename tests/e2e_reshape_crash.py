#!/usr/bin/python3
# nbdkit-raid: control-socket and NBD helpers of test-e2e-reshape-crash.sh.
#
#   q SOCK JSON EXPR        send one request; print EXPR evaluated on the
#                           reply `r` (exit 1 when the reply is not ok)
#   waitpos SOCK MIN SECS   poll status until a running reshape has
#                           MIN < position < total; print "POSITION TOTAL"
#                           (exit 1 on timeout, with the last status)
#   idle SOCK SECS          `wait` until sync_action is idle; print the
#                           last status's sync_action and health
#   writes URI MODEL SEED N write N seeded 4K blocks (anywhere in the old
#                           size) through NBD, read each back, and keep the
#                           model file MODEL up to date; exit 1 on a
#                           difference
#   readerr URI             a 1 MiB read at 0 must fail; print its errno name
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import control_request  # noqa: E402


def status(sock):
    return control_request(sock, {"op": "status", "id": "st"}, timeout=10)


def main(argv):
    cmd = argv[0]
    if cmd == "q":
        r = control_request(argv[1], json.loads(argv[2]), timeout=30)
        if r.get("ok") is not True:
            print("request %s failed: %s" % (argv[2], r), file=sys.stderr)
            return 1
        print(eval(argv[3], {}, {"r": r}))              # noqa: S307
        return 0
    if cmd == "waitpos":
        sock, lo, secs = argv[1], int(argv[2]), float(argv[3])
        deadline = time.monotonic() + secs
        st = None
        while time.monotonic() < deadline:
            st = status(sock)
            rs = st.get("reshape") or {}
            pos, total = rs.get("position", 0), rs.get("total", 0)
            if rs.get("state") == "running" and lo < pos < total:
                print(pos, total)
                return 0
            time.sleep(0.05)
        print("no reshape progress past %d within %gs: %s" % (lo, secs, st),
              file=sys.stderr)
        return 1
    if cmd == "idle":
        sock, secs = argv[1], float(argv[2])
        deadline = time.monotonic() + secs
        while True:
            st = control_request(sock, {"op": "wait", "id": "w", "timeout": 5},
                                 timeout=30)
            if st.get("sync_action") == "idle" or time.monotonic() > deadline:
                break
        print(st.get("sync_action"), st.get("health"))
        return 0
    if cmd == "writes":
        import nbd
        uri, model, seed, n = argv[1], argv[2], int(argv[3]), int(argv[4])
        rnd = random.Random(seed)
        h = nbd.NBD()
        h.connect_uri(uri)
        size = os.path.getsize(model)
        with open(model, "r+b") as f:
            for _ in range(n):
                off = rnd.randrange(size // 4096) * 4096
                data = rnd.randbytes(4096)
                h.pwrite(data, off)
                f.seek(off)
                f.write(data)
                if h.pread(4096, off) != data:
                    print("block at %d reads back differently" % off, file=sys.stderr)
                    return 1
        h.flush()
        h.shutdown()
        return 0
    if cmd == "readerr":
        import nbd
        h = nbd.NBD()
        h.connect_uri(argv[1])
        try:
            h.pread(1 << 20, 0)
        except nbd.Error as e:
            print(e.errno)
            return 0
        print("read succeeded")
        return 1
    print("usage: see the header of %s" % argv[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
