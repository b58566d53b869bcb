#!/usr/bin/python3
# nbdkit-raid: the client-side checks of test-e2e-basic.sh.
#
#   e2e_basic.py info URI SIZE STRIPE_WIDTH
#     What a client sees at the handshake, from two real clients: nbdinfo
#     --json and libnbd (nbd module).  Checks the export size, the
#     advertised capabilities nbdkit-raid-plugin(1) (Serving) promises
#     (flush, FUA, trim, zero, fast zero, multi-conn, block status), and the
#     block size constraints: minimum 1, preferred = the largest power of
#     two dividing the full stripe width (the width itself when it is a
#     power of two), maximum >= 32 MiB.
#
#   e2e_basic.py pattern FILE OFFSET LENGTH BYTE
#     Patch FILE (an expected image) with LENGTH bytes of BYTE at OFFSET.
#
#   e2e_basic.py random FILE LENGTH SEED
#     Write LENGTH deterministic pseudo-random bytes to FILE.

import json
import random
import subprocess
import sys

import nbd

from e2e_common import Checks


def pow2_divisor(w):
    return w & -w


def cmd_info(uri, size, width):
    c = Checks("info")
    p = subprocess.run(["nbdinfo", "--json", uri], capture_output=True, text=True)
    c.check(p.returncode == 0, "nbdinfo --json exited %d: %s" % (p.returncode, p.stderr))
    if p.returncode == 0:
        info = json.loads(p.stdout)["exports"][0]
        c.check(info.get("export-size") == size,
                "nbdinfo export-size: expected %d, got %s" % (size, info.get("export-size")))
        for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
                  "can_multi_conn"):
            c.check(info.get(k) is True, "nbdinfo %s: expected true, got %s" % (k, info.get(k)))
        c.check(info.get("is_read_only") is False,
                "nbdinfo is_read_only: expected false, got %s" % info.get("is_read_only"))
        c.check("base:allocation" in info.get("contexts", []),
                "nbdinfo contexts lack base:allocation: %s" % info.get("contexts"))
        want_pref = pow2_divisor(width)
        if "block_size_preferred" in info:
            c.check(info["block_size_preferred"] == want_pref,
                    "nbdinfo block_size_preferred: expected %d (stripe width %d), got %d"
                    % (want_pref, width, info["block_size_preferred"]))

    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    c.check(h.get_size() == size, "libnbd size: expected %d, got %d" % (size, h.get_size()))
    mn = h.get_block_size(nbd.SIZE_MINIMUM)
    pr = h.get_block_size(nbd.SIZE_PREFERRED)
    mx = h.get_block_size(nbd.SIZE_MAXIMUM)
    c.check(mn == 1, "block size minimum: expected 1, got %d" % mn)
    c.check(pr == pow2_divisor(width),
            "block size preferred: expected %d (largest power of two dividing stripe "
            "width %d), got %d" % (pow2_divisor(width), width, pr))
    c.check(mx >= 32 << 20, "block size maximum: expected >= 33554432, got %d" % mx)
    for name in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
                 "can_multi_conn"):
        c.check(getattr(h, name)(), "libnbd %s() is false" % name)
    c.check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
            "base:allocation not negotiated")
    h.shutdown()
    c.done()


def cmd_pattern(path, off, length, byte):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(bytes([byte]) * length)


def cmd_random(path, length, seed):
    with open(path, "wb") as f:
        f.write(random.Random(seed).randbytes(length))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a and a[0] == "info" and len(a) == 4:
        cmd_info(a[1], int(a[2]), int(a[3]))
    elif a and a[0] == "pattern" and len(a) == 5:
        cmd_pattern(a[1], int(a[2]), int(a[3]), int(a[4], 0))
    elif a and a[0] == "random" and len(a) == 4:
        cmd_random(a[1], int(a[2]), int(a[3]))
    else:
        print("usage: see the comment at the top", file=sys.stderr)
        sys.exit(2)
