#!/usr/bin/python3
# nbdkit-raid: self-test of tests/raidcheck.py, the independent checker the
# end-to-end tests trust.  Before the checker may judge the plugin it must
# be right itself:
#   1. its placement reproduces md's well-known pictures (hand-written below
#      from the md/mdadm documentation, not computed), including the
#      syndrome slots of raid6 layouts where slot != data index;
#   2. its Q equals a byte-by-byte Horner evaluation of md's syndrome
#      (Q = sum 2^slot * D_slot over GF(2^8)/0x11d) done without tables;
#   3. on member images built here, `verify` passes, flags a corrupted P, Q
#      or data byte naming the right row, and `extract` returns the written
#      array with 0, 1 and (raid6) 2 roles missing, for every layout.
# Exit 0 on success, 1 on failure; prints "e2e_raidcheck_selftest: N checks passed".

import contextlib
import io
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import raidcheck as rc  # noqa: E402

checks = 0
fails = 0


def check(cond, what):
    global checks, fails
    checks += 1
    if not cond:
        fails += 1
        print("FAIL: %s" % what)


# 1. Pictures.  Cells: "P", "Q", or "D<n>" (n = array chunk number), or
# "D<n>/s<slot>" for raid6.
PICTURES = [
    (5, "left-symmetric", 4, [
        "D0 D1 D2 P", "D4 D5 P D3", "D8 P D6 D7", "P D9 D10 D11", "D12 D13 D14 P"]),
    (5, "left-asymmetric", 4, [
        "D0 D1 D2 P", "D3 D4 P D5", "D6 P D7 D8", "P D9 D10 D11"]),
    (5, "right-asymmetric", 4, [
        "P D0 D1 D2", "D3 P D4 D5", "D6 D7 P D8", "D9 D10 D11 P"]),
    (5, "right-symmetric", 4, [
        "P D0 D1 D2", "D5 P D3 D4", "D7 D8 P D6", "D9 D10 D11 P"]),
    (5, "parity-first", 4, ["P D0 D1 D2", "P D3 D4 D5"]),
    (5, "parity-last", 4, ["D0 D1 D2 P", "D3 D4 D5 P"]),
    (4, "parity-last", 3, ["D0 D1 P", "D2 D3 P"]),
    (5, "left-symmetric", 2, ["D0 P", "P D1", "D2 P"]),
    (6, "left-symmetric", 5, [
        "Q D0/s0 D1/s1 D2/s2 P", "D3/s0 D4/s1 D5/s2 P Q", "D7/s1 D8/s2 P Q D6/s0",
        "D11/s2 P Q D9/s0 D10/s1", "P Q D12/s0 D13/s1 D14/s2"]),
    (6, "right-symmetric", 5, [
        "P Q D0/s0 D1/s1 D2/s2", "D5/s2 P Q D3/s0 D4/s1",
        "D7/s1 D8/s2 P Q D6/s0", "D9/s0 D10/s1 D11/s2 P Q", "Q D12/s0 D13/s1 D14/s2 P"]),
    (6, "left-asymmetric", 5, [
        "Q D0/s0 D1/s1 D2/s2 P", "D3/s0 D4/s1 D5/s2 P Q", "D6/s1 D7/s2 P Q D8/s0",
        "D9/s2 P Q D10/s0 D11/s1", "P Q D12/s0 D13/s1 D14/s2"]),
    (6, "right-asymmetric", 5, [
        "P Q D0/s0 D1/s1 D2/s2", "D3/s2 P Q D4/s0 D5/s1", "D6/s1 D7/s2 P Q D8/s0",
        "D9/s0 D10/s1 D11/s2 P Q", "Q D12/s0 D13/s1 D14/s2 P"]),
    (6, "parity-first", 5, ["P Q D0/s0 D1/s1 D2/s2"]),
    (6, "parity-last", 5, ["D0/s0 D1/s1 D2/s2 P Q"]),
    # -6 variants: raid5 rotation over roles 0..3, Q on role 4; syndrome
    # order walks from role 0 skipping P.
    (6, "left-symmetric-6", 5, [
        "D0/s0 D1/s1 D2/s2 P Q", "D4/s0 D5/s1 P D3/s2 Q",
        "D8/s0 P D6/s1 D7/s2 Q", "P D9/s0 D10/s1 D11/s2 Q", "D12/s0 D13/s1 D14/s2 P Q"]),
    (6, "left-asymmetric-6", 5, [
        "D0/s0 D1/s1 D2/s2 P Q", "D3/s0 D4/s1 P D5/s2 Q", "D6/s0 P D7/s1 D8/s2 Q",
        "P D9/s0 D10/s1 D11/s2 Q"]),
    (6, "right-asymmetric-6", 5, [
        "P D0/s0 D1/s1 D2/s2 Q", "D3/s0 P D4/s1 D5/s2 Q", "D6/s0 D7/s1 P D8/s2 Q",
        "D9/s0 D10/s1 D11/s2 P Q"]),
    (6, "right-symmetric-6", 5, [
        "P D0/s0 D1/s1 D2/s2 Q", "D5/s0 P D3/s1 D4/s2 Q", "D7/s0 D8/s1 P D6/s2 Q",
        "D9/s0 D10/s1 D11/s2 P Q"]),
    (6, "parity-first-6", 5, ["P D0/s0 D1/s1 D2/s2 Q"]),
]


def picture(level, layout, n, rows):
    g = rc.Geometry(level, rc.parse_layout(layout), 4096, n)
    out = []
    for row in range(rows):
        pd, qd, roles, slots = g.row(row)
        cells = []
        for r in range(n):
            if r == pd:
                cells.append("P")
            elif r == qd:
                cells.append("Q")
            else:
                i = roles.index(r)
                c = "D%d" % (row * g.data_disks + i)
                if slots is not None:
                    c += "/s%d" % slots[i]
                cells.append(c)
        out.append(" ".join(cells))
    return out


for level, layout, n, want in PICTURES:
    got = picture(level, layout, n, len(want))
    for row, (w, gt) in enumerate(zip(want, got)):
        check(w == gt, "raid%d %s n=%d row %d: want %r got %r" % (level, layout, n, row, w, gt))


# 2. Q against a table-free Horner evaluation.
def slow_mul2(x):
    x <<= 1
    if x & 0x100:
        x ^= 0x11d
    return x


def slow_q(blocks_by_slot):
    L = len(blocks_by_slot[0])
    q = bytearray(L)
    for k in range(L):
        acc = 0
        for s in reversed(range(len(blocks_by_slot))):
            acc = slow_mul2(acc) ^ blocks_by_slot[s][k]
        q[k] = acc
    return bytes(q)


rnd = random.Random(20240601)
for k in (2, 3, 5, 13):
    blocks = [bytes(rnd.getrandbits(8) for _ in range(512)) for _ in range(k)]
    order = list(range(k))
    rnd.shuffle(order)
    # compute_q takes (data, slots) in any order
    fast = rc.compute_q([blocks[s] for s in order], order, 512)
    check(fast == slow_q(blocks), "Q of %d blocks differs from Horner" % k)
check(rc.gf_mul(0x80, 2) == 0x1d, "gf_mul(0x80,2) = %#x" % rc.gf_mul(0x80, 2))
check(all(rc.gf_mul(a, rc.gf_inv(a)) == 1 for a in range(1, 256)), "gf_inv")


# 3. Member images.
def build_members(d, g, data, off, paths):
    """Write array image `data` onto member files per g (uses the geometry
    under test for placement, which part 1 pinned down)."""
    comp = len(data) // g.data_disks
    for p in paths:
        with open(p, "wb") as f:
            f.truncate(off + comp + 8192)
    fds = [os.open(p, os.O_WRONLY) for p in paths]
    L = g.chunk
    for row in range(len(data) // g.width):
        pd, qd, roles, slots = g.row(row)
        blocks = [data[row * g.width + i * L: row * g.width + (i + 1) * L]
                  for i in range(g.data_disks)]
        for i, r in enumerate(roles):
            os.pwrite(fds[r], blocks[i], off + row * L)
        os.pwrite(fds[pd], rc.compute_p(blocks, L), off + row * L)
        if qd >= 0:
            bys = [None] * g.data_disks
            for i, s in enumerate(slots):
                bys[s] = blocks[i]
            os.pwrite(fds[qd], slow_q(bys) if L <= 512 else rc.compute_q(blocks, slots, L),
                      off + row * L)
    for fd in fds:
        os.close(fd)


def run(args, fork=False):
    """Run raidcheck with args: in-process (fast), or as a program."""
    if fork:
        p = subprocess.run([sys.executable, os.path.join(HERE, "raidcheck.py")] + args,
                           capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rcode = rc.main(args)
    return rcode, buf.getvalue()


CASES = [(5, l, 4) for l in ("left-asymmetric", "right-asymmetric", "left-symmetric",
                             "right-symmetric", "parity-first", "parity-last")]
CASES += [(4, "parity-last", 4), (5, "left-symmetric", 3)]
CASES += [(6, l, 6) for l in ("left-asymmetric", "right-asymmetric", "left-symmetric",
                              "right-symmetric", "parity-first", "parity-last",
                              "left-asymmetric-6", "right-asymmetric-6",
                              "left-symmetric-6", "right-symmetric-6", "parity-first-6")]

with tempfile.TemporaryDirectory(prefix="raidcheck-selftest.") as d:
    for level, layout, n in CASES:
        chunk = 4096 if level != 6 else 512 * 8
        g = rc.Geometry(level, rc.parse_layout(layout), chunk, n)
        rows = 2 * n + 1
        data = bytes(rnd.getrandbits(8) for _ in range(rows * g.width))
        off = 8192
        paths = [os.path.join(d, "m%d" % r) for r in range(n)]
        build_members(d, g, data, off, paths)
        base = ["--level", str(level), "--layout", layout, "--chunk", str(chunk),
                "--data-offset", "8K", "--size", str(len(data))]
        tag = "raid%d %s" % (level, layout)
        rcode, out = run(base + ["verify"] + paths, fork=True)
        check(rcode == 0, "%s: verify of good members: rc %d: %s" % (tag, rcode, out))

        img = os.path.join(d, "img")
        miss_sets = [[]] + [[r] for r in range(n)]
        if level == 6:
            miss_sets += [[a, b] for a in range(n) for b in range(a + 1, n)]
        for ms in miss_sets:
            margs = []
            for r in ms:
                margs += ["--missing", str(r)]
            given = [p for r, p in enumerate(paths) if r not in ms]
            rcode, out = run(base + margs + ["-q", "extract", img] + given)
            ok = rcode == 0 and open(img, "rb").read() == data
            check(ok, "%s: extract missing %s: rc %d %s" % (tag, ms, rcode, out))
            if level == 6 and len(ms) == 1:
                rcode, out = run(base + margs + ["-q", "verify"] + given)
                check(rcode == 0, "%s: verify missing %s: rc %d %s" % (tag, ms, rcode, out))

        # Corrupt one byte of P, Q and data in a chosen row: verify names it.
        for what in ("P", "Q", "D"):
            if what == "Q" and level != 6:
                continue
            row = n + 1
            pd, qd, roles, slots = g.row(row)
            role = {"P": pd, "Q": qd, "D": roles[-1]}[what]
            pos = off + row * chunk + 77
            with open(paths[role], "r+b") as f:
                f.seek(pos)
                b = f.read(1)
                f.seek(pos)
                f.write(bytes([b[0] ^ 0x40]))
            rcode, out = run(base + ["verify"] + paths)
            check(rcode == 1 and ("row %d " % row) in out,
                  "%s: corrupt %s role %d row %d: rc %d: %s" % (tag, what, role, row, rcode, out))
            with open(paths[role], "r+b") as f:
                f.seek(pos)
                f.write(b)
        rcode, out = run(base + ["verify"] + paths)
        check(rcode == 0, "%s: verify after undo: rc %d %s" % (tag, rcode, out))

    # raid5 with two members gone cannot be reconstructed: exit 1, not a crash.
    g = rc.Geometry(5, 2, 4096, 4)
    data = bytes(rnd.getrandbits(8) for _ in range(4 * g.width))
    paths = [os.path.join(d, "r%d" % r) for r in range(4)]
    build_members(d, g, data, 8192, paths)
    rcode, out = run(["--level", "5", "--chunk", "4K", "--data-offset", "8192",
                      "--missing", "0", "--missing", "1", "extract", os.path.join(d, "x"),
                      paths[2], paths[3]])
    check(rcode == 1 and "cannot reconstruct" in out, "raid5 two missing: rc %d %s" % (rcode, out))
    # Default size from member sizes: 4 rows + 8192 tail = 6 chunks.
    rcode, out = run(["--level", "5", "--chunk", "4K", "--data-offset", "8192", "verify"] + paths)
    check(rcode == 0 and "6 rows" in out, "default size: rc %d %s" % (rcode, out))

    # --from-examine: geometry from JSON shaped like `nbdraid examine
    # --json` (one object per examined member, newest record at its top
    # level, a member table without paths, a reshape target with no events).
    ex = os.path.join(d, "ex.json")
    table = [{"slot": r, "uuid": "u%d" % r, "role": r, "state": "in_sync",
              "data_offset": 8192} for r in range(4)]
    objs = []
    for r in range(4):
        objs.append({"spec": paths[r], "superblock": "valid", "role": r,
                     "events": 7 if r != 1 else 6, "level": 5, "layout": "left-symmetric",
                     "chunk": 4096, "raid_devices": 4, "data_disks": 3,
                     "data_offset": 8192, "component_size": 4 * 4096,
                     "array_size": len(data),
                     "reshape": None if r else {"to": {"level": 6, "chunk": 65536,
                                                       "layout": "left-symmetric-6",
                                                       "raid_devices": 5}},
                     "members": table})
    import json
    with open(ex, "w") as f:
        json.dump({"members": objs}, f)
    rcode, out = run(["--from-examine", ex, "verify"] + paths)
    check(rcode == 0 and "4 rows" in out and "raid5 left-symmetric chunk 4096" in out,
          "from-examine: rc %d %s" % (rcode, out))
    # Members (in role order) from examine when none are named.
    rcode, out = run(["--from-examine", ex, "verify"])
    check(rcode == 0 and "4 rows" in out, "from-examine members: rc %d %s" % (rcode, out))
    # ... and a missing one left out.
    rcode, out = run(["--from-examine", ex, "--missing", "2", "-q", "extract",
                      os.path.join(d, "x2")] + [paths[0], paths[1], paths[3]])
    check(rcode == 0 and open(os.path.join(d, "x2"), "rb").read() == data,
          "from-examine, role 2 missing: rc %d %s" % (rcode, out))

print("checks: %d %d" % (checks - fails, fails))
print("e2e_raidcheck_selftest: %d checks passed" % (checks - fails) if not fails
      else "e2e_raidcheck_selftest: %d of %d checks FAILED" % (fails, checks))
sys.exit(1 if fails else 0)
