#!/usr/bin/python3
# nbdkit-raid: an independent checker of RAID 4/5/6 member images.
#
# Theory.  The end-to-end tests must not trust the code they test, so this
# file re-derives, from Linux md's placement rules alone, where every data,
# P and Q block of an array lives on its members, and what P and Q must
# hold.  It shares no code with raidcore/: a bug in the plugin's geometry or
# parity shows up as a disagreement between the two.
#
# md's rules, as used here (facts about drivers/md/raid5.c, not its code):
#   - array byte b lies in chunk c = b // chunk, stripe row r = c // D
#     (D = data members), data index i = c % D, at member offset
#     data_offset + r*chunk + b % chunk;
#   - the row's P role, Q role and the role holding data index i follow from
#     level, layout (md's algorithm number), raid_disks and r
#     (raid5_compute_sector);
#   - P is the XOR of the row's data blocks;  Q = XOR over data blocks of
#     g^s * D in GF(2^8) with polynomial 0x11d and g = 2, where s (the
#     block's syndrome slot) is its position in the walk over roles that
#     starts just after Q (role 0 when Q is the last role), wraps, and skips
#     P and Q (raid6_d0 / raid6_idx_to_slot).  For some layouts s differs
#     from the data index i.
#
# GF(2^8) multiplication by a constant is a byte substitution, done with
# bytes.translate; XOR of whole blocks is done on Python integers.  Both run
# in C inside the interpreter, so a 64 MiB member takes well under a second.
#
# Usage: see `raidcheck.py --help`.  Members are given in role order; a
# missing role is named with --missing ROLE (its argument may then be
# omitted from the list, or given as "-" / "missing", or given and ignored).
# Exit status: 0 good, 1 a check failed (the first bad row is named),
# 2 usage or input error.

import argparse
import json
import os
import sys

# ---------------------------------------------------------------------------
# Layouts: md's algorithm numbers and mdadm's names.

LAYOUTS = {
    "left-asymmetric": 0,
    "right-asymmetric": 1,
    "left-symmetric": 2,
    "right-symmetric": 3,
    "parity-first": 4,
    "parity-last": 5,
    "left-asymmetric-6": 16,
    "right-asymmetric-6": 17,
    "left-symmetric-6": 18,
    "right-symmetric-6": 19,
    "parity-first-6": 20,
}
ALIASES = {"la": 0, "ra": 1, "ls": 2, "rs": 3, "default": 2}
LAYOUT_NAMES = {v: k for k, v in LAYOUTS.items()}

RAID5_LAYOUTS = {0, 1, 2, 3, 4, 5}
RAID6_LAYOUTS = {0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 20}


class Error(Exception):
    """Bad arguments or unreadable input (exit 2)."""


def parse_layout(s):
    if isinstance(s, int):
        return s
    t = str(s).strip().lower()
    if t in LAYOUTS:
        return LAYOUTS[t]
    if t in ALIASES:
        return ALIASES[t]
    try:
        return int(t, 0)
    except ValueError:
        raise Error("unknown layout %r" % s)


def parse_size(s):
    """SIZE as on nbdkit/nbdraid command lines: a number of bytes with an
    optional binary suffix K, M, G, T."""
    if isinstance(s, int):
        return s
    t = str(s).strip()
    mult = 1
    if t and t[-1] in "kKmMgGtT":
        mult = 1 << (10 * ("kmgt".index(t[-1].lower()) + 1))
        t = t[:-1]
    try:
        v = int(t, 10)
    except ValueError:
        raise Error("bad size %r" % s)
    if v < 0:
        raise Error("bad size %r" % s)
    return v * mult


# ---------------------------------------------------------------------------
# Geometry.

class Geometry:
    def __init__(self, level, layout, chunk, raid_disks):
        if level not in (4, 5, 6):
            raise Error("level %r is not 4, 5 or 6" % level)
        if level == 4:
            layout = 5                  # raid4 is parity-last placement
        if level == 5 and layout not in RAID5_LAYOUTS:
            raise Error("layout %r does not exist for raid5" % layout)
        if level == 6 and layout not in RAID6_LAYOUTS:
            raise Error("layout %r does not exist for raid6" % layout)
        if chunk < 512 or chunk & (chunk - 1):
            raise Error("chunk %d is not a power of two >= 512" % chunk)
        nparity = 2 if level == 6 else 1
        if raid_disks < nparity + 1 or (level == 6 and raid_disks < 4) \
           or (level == 4 and raid_disks < 3):
            raise Error("raid%d cannot have %d members" % (level, raid_disks))
        self.level = level
        self.layout = layout
        self.chunk = chunk
        self.n = raid_disks
        self.nparity = nparity
        self.data_disks = raid_disks - nparity
        self.width = chunk * self.data_disks

    def describe(self):
        return "raid%d %s chunk %d, %d members (%d data)" % (
            self.level, LAYOUT_NAMES.get(self.layout, str(self.layout)),
            self.chunk, self.n, self.data_disks)

    def _place(self, row, i):
        """(pd, qd, role) of data index i in stripe row `row` (qd -1 when
        the level has no Q)."""
        n, D, alg = self.n, self.data_disks, self.layout
        if self.level == 4:
            return D, -1, i
        if self.level == 5:
            if alg == 0:                 # left-asymmetric
                pd = D - row % n
                return pd, -1, i + 1 if i >= pd else i
            if alg == 1:                 # right-asymmetric
                pd = row % n
                return pd, -1, i + 1 if i >= pd else i
            if alg == 2:                 # left-symmetric
                pd = D - row % n
                return pd, -1, (pd + 1 + i) % n
            if alg == 3:                 # right-symmetric
                pd = row % n
                return pd, -1, (pd + 1 + i) % n
            if alg == 4:                 # parity-first
                return 0, -1, i + 1
            if alg == 5:                 # parity-last
                return D, -1, i
            raise Error("bad raid5 layout %d" % alg)
        # raid6
        if alg in (0, 1):                # left/right-asymmetric
            pd = (n - 1 - row % n) if alg == 0 else row % n
            if pd == n - 1:              # Q D D D P
                return pd, 0, i + 1
            return pd, pd + 1, i + 2 if i >= pd else i
        if alg in (2, 3):                # left/right-symmetric
            pd = (n - 1 - row % n) if alg == 2 else row % n
            return pd, (pd + 1) % n, (pd + 2 + i) % n
        if alg == 4:                     # parity-first
            return 0, 1, i + 2
        if alg == 5:                     # parity-last
            return D, D + 1, i
        # the -6 variants: raid5 placement on roles 0..n-2, Q on role n-1
        m = n - 1
        if alg == 16:
            pd = D - row % m
            return pd, n - 1, i + 1 if i >= pd else i
        if alg == 17:
            pd = row % m
            return pd, n - 1, i + 1 if i >= pd else i
        if alg == 18:
            pd = D - row % m
            return pd, n - 1, (pd + 1 + i) % m
        if alg == 19:
            pd = row % m
            return pd, n - 1, (pd + 1 + i) % m
        if alg == 20:
            return 0, n - 1, i + 1
        raise Error("bad raid6 layout %d" % alg)

    def row(self, row):
        """Return (pd, qd, data_roles, slots): data_roles[i] is the role of
        data index i, slots[i] its Q exponent (None without Q)."""
        pd = qd = None
        roles = []
        for i in range(self.data_disks):
            p, q, r = self._place(row, i)
            pd, qd = p, q
            roles.append(r)
        # Self-consistency: every role used exactly once.
        used = sorted(roles + [pd] + ([qd] if qd >= 0 else []))
        assert used == list(range(self.n)), (row, pd, qd, roles)
        if qd < 0:
            return pd, -1, roles, None
        # md's syndrome order: start after Q, wrap, skip P and Q.
        slot_of_role = {}
        r = (qd + 1) % self.n
        s = 0
        for _ in range(self.n):
            if r != pd and r != qd:
                slot_of_role[r] = s
                s += 1
            r = (r + 1) % self.n
        return pd, qd, roles, [slot_of_role[x] for x in roles]


# ---------------------------------------------------------------------------
# GF(2^8), polynomial 0x11d, generator 2.

_EXP = [0] * 512
_LOG = [0] * 256
_x = 1
for _e in range(255):
    _EXP[_e] = _x
    _LOG[_x] = _e
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11d
for _e in range(255, 512):
    _EXP[_e] = _EXP[_e - 255]


def gf_mul(a, b):
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a):
    if a == 0:
        raise ZeroDivisionError("gf_inv(0)")
    return _EXP[255 - _LOG[a]]


def gf_pow2(e):
    return _EXP[e % 255]


_TABLES = {}


def mul_table(c):
    t = _TABLES.get(c)
    if t is None:
        t = bytes(gf_mul(c, x) for x in range(256))
        _TABLES[c] = t
    return t


def gf_scale(c, block):
    if c == 1:
        return block
    return block.translate(mul_table(c))


def xor_blocks(blocks, length):
    acc = 0
    for b in blocks:
        acc ^= int.from_bytes(b, "little")
    return acc.to_bytes(length, "little")


def compute_p(data, length):
    return xor_blocks(data, length)


def compute_q(data, slots, length):
    return xor_blocks([gf_scale(gf_pow2(s), d) for d, s in zip(data, slots)],
                      length)


def first_diff(a, b):
    for k in range(len(a)):
        if a[k] != b[k]:
            return k
    return -1


# ---------------------------------------------------------------------------
# Member access.

class Members:
    """Role-ordered member files; None for a missing role."""

    def __init__(self, paths, offsets):
        self.paths = paths
        self.offsets = offsets
        self.fds = []
        self.sizes = []
        for p in paths:
            if p is None:
                self.fds.append(None)
                self.sizes.append(None)
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError as e:
                raise Error("%s: %s" % (p, e.strerror))
            self.fds.append(fd)
            self.sizes.append(os.fstat(fd).st_size)
        self.short_reads = 0

    def read(self, role, off, length):
        fd = self.fds[role]
        pos = self.offsets[role] + off
        buf = os.pread(fd, length, pos)
        if len(buf) < length:
            self.short_reads += 1
            buf = buf + bytes(length - len(buf))
        return buf

    def close(self):
        for fd in self.fds:
            if fd is not None:
                os.close(fd)


# ---------------------------------------------------------------------------
# One stripe row: read, reconstruct what is missing, check what is left.

class RowResult:
    def __init__(self):
        self.data = None          # list of data blocks, by data index
        self.bad = []             # list of (what, role, first differing byte)
        self.unrecoverable = None


def process_row(g, mem, row, missing):
    pd, qd, roles, slots = g.row(row)
    L = g.chunk
    off = row * L
    res = RowResult()
    blk = {}
    for r in range(g.n):
        if r not in missing:
            blk[r] = mem.read(r, off, L)
    data = [blk.get(r) for r in roles]
    lost = [i for i, r in enumerate(roles) if r in missing]
    have_p = pd not in missing
    have_q = qd >= 0 and qd not in missing
    check_p, check_q = have_p, have_q

    if len(lost) == 1:
        i = lost[0]
        others = [d for k, d in enumerate(data) if k != i]
        if have_p:
            data[i] = xor_blocks(others + [blk[pd]], L)
            check_p = False
        elif have_q:
            qx = xor_blocks([blk[qd], compute_q(others, [s for k, s in enumerate(slots) if k != i], L)], L)
            data[i] = gf_scale(gf_inv(gf_pow2(slots[i])), qx)
            check_q = False
        else:
            res.unrecoverable = "data index %d (role %d) and its parity are missing" % (i, roles[i])
            return res
    elif len(lost) == 2:
        if not (have_p and have_q):
            res.unrecoverable = "two data blocks (roles %d, %d) missing without P and Q" % (
                roles[lost[0]], roles[lost[1]])
            return res
        x, y = lost
        others = [d for k, d in enumerate(data) if k not in lost]
        oslots = [s for k, s in enumerate(slots) if k not in lost]
        pxy = xor_blocks(others + [blk[pd]], L)                    # Dx ^ Dy
        qxy = xor_blocks([blk[qd], compute_q(others, oslots, L)], L)  # gx*Dx ^ gy*Dy
        gx, gy = gf_pow2(slots[x]), gf_pow2(slots[y])
        # Dx = (qxy ^ gy*pxy) / (gx ^ gy)
        t = xor_blocks([qxy, gf_scale(gy, pxy)], L)
        dx = gf_scale(gf_inv(gx ^ gy), t)
        data[x] = dx
        data[y] = xor_blocks([pxy, dx], L)
        check_p = check_q = False
    elif len(lost) > 2:
        res.unrecoverable = "%d data blocks missing" % len(lost)
        return res

    res.data = data
    if check_p:
        p = compute_p(data, L)
        if p != blk[pd]:
            res.bad.append(("P", pd, first_diff(p, blk[pd])))
    if check_q:
        q = compute_q(data, slots, L)
        if q != blk[qd]:
            res.bad.append(("Q", qd, first_diff(q, blk[qd])))
    return res


# ---------------------------------------------------------------------------
# Reading `nbdraid examine --json`.

def _walk(o):
    if isinstance(o, dict):
        yield o
        for v in o.values():
            yield from _walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from _walk(v)


def _first(d, *keys):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


PATH_KEYS = ("path", "member", "spec", "device", "file", "filename", "name")


def parse_examine(text):
    """Return a dict with level, layout, chunk, raid_disks and, when
    present, data_offset, array_size, component_size, members ({role:
    path}) and member_offsets ({role: data_offset}).  Accepts one JSON
    document or one per line.  The geometry is taken from the object with
    the highest "events" that has "level" and "chunk" (nbdraid prints one
    object per examined member, its newest record's fields at its top
    level; a reshape target nested in it has no events and is ignored)."""
    docs = []
    try:
        docs.append(json.loads(text))
    except ValueError:
        for line in text.splitlines():
            line = line.strip()
            if line:
                docs.append(json.loads(line))
    out = {"members": {}, "member_offsets": {}}
    best_events = None
    for d in _walk(docs):
        if "level" in d and _first(d, "chunk", "chunk_size") is not None:
            ev = d.get("events")
            if best_events is not None and ev is not None and ev <= best_events:
                continue
            if best_events is not None and ev is None:
                continue
            best_events = ev if ev is not None else -1
            out["level"] = int(d["level"])
            lay = _first(d, "layout", "algorithm")
            out["layout"] = parse_layout(lay) if lay is not None else None
            out["chunk"] = parse_size(_first(d, "chunk", "chunk_size"))
            rd = _first(d, "raid_devices", "raid_disks")
            if rd is not None:
                out["raid_disks"] = int(rd)
            for k in ("data_offset", "array_size", "component_size"):
                if d.get(k) is not None:
                    out[k] = parse_size(d[k])
    # Members: the examined devices, each an object naming its path and
    # its own role (member-table entries name no path and are skipped).
    for d in _walk(docs):
        path = _first(d, *PATH_KEYS)
        role = d.get("role")
        if not isinstance(path, str) or not isinstance(role, int) or role < 0:
            continue
        out["members"][role] = path
        if d.get("data_offset") is not None:
            out["member_offsets"][role] = parse_size(d["data_offset"])
    if "level" not in out:
        raise Error("no geometry (level, chunk) found in examine output")
    return out


# ---------------------------------------------------------------------------
# Command line.

def build(args):
    ex = {}
    if args.from_examine:
        try:
            with open(args.from_examine) as f:
                ex = parse_examine(f.read())
        except (OSError, ValueError) as e:
            raise Error("%s: %s" % (args.from_examine, e))
    level = args.level if args.level is not None else ex.get("level")
    layout = parse_layout(args.layout) if args.layout is not None else ex.get("layout")
    chunk = parse_size(args.chunk) if args.chunk is not None else ex.get("chunk", 64 << 10)
    if level is None:
        raise Error("--level (or --from-examine) is required")
    if layout is None:
        layout = 5 if level == 4 else 2

    missing = set(args.missing or [])
    members = list(args.members)
    raid_disks = args.raid_disks or ex.get("raid_disks")
    if not members and ex.get("members"):
        raid_disks = raid_disks or (max(ex["members"]) + 1)
        members = [ex["members"].get(r) or "-" for r in range(raid_disks)]
    if raid_disks is None:
        raid_disks = len(members) + len(missing) \
            if not any(m in ("-", "missing") for m in members) else len(members)
    if len(members) == raid_disks:
        paths = [None if (r in missing or members[r] in ("-", "missing")) else members[r]
                 for r in range(raid_disks)]
        for r in range(raid_disks):
            if paths[r] is None:
                missing.add(r)
    elif len(members) == raid_disks - len(missing):
        it = iter(members)
        paths = [None if r in missing else next(it) for r in range(raid_disks)]
    else:
        raise Error("%d members given for %d roles with %d missing" % (
            len(members), raid_disks, len(missing)))
    for r in missing:
        if not 0 <= r < raid_disks:
            raise Error("missing role %d out of range" % r)

    g = Geometry(level, layout, chunk, raid_disks)

    if args.data_offset is not None:
        offsets = [parse_size(args.data_offset)] * raid_disks
    else:
        base = ex.get("data_offset")
        mo = ex.get("member_offsets", {})
        if base is None and not mo:
            raise Error("--data-offset (or --from-examine) is required")
        offsets = [mo.get(r, base if base is not None else 0) for r in range(raid_disks)]

    mem = Members(paths, offsets)

    if args.size is not None:
        size = parse_size(args.size)
    elif ex.get("array_size"):
        size = ex["array_size"]
    elif ex.get("component_size"):
        size = ex["component_size"] * g.data_disks
    else:
        comp = min(mem.sizes[r] - offsets[r] for r in range(raid_disks)
                   if mem.sizes[r] is not None)
        size = (comp // chunk) * chunk * g.data_disks
    if size % 512:
        raise Error("array size %d is not a multiple of 512" % size)
    return g, mem, missing, size


def cmd_verify(g, mem, missing, size, quiet):
    rows = (size + g.width - 1) // g.width
    first = None
    nbad = 0
    for row in range(rows):
        res = process_row(g, mem, row, missing)
        if res.unrecoverable:
            print("raidcheck: row %d: cannot reconstruct: %s" % (row, res.unrecoverable),
                  file=sys.stderr)
            return 1
        if res.bad:
            nbad += 1
            if first is None:
                what, role, k = res.bad[0]
                first = ("row %d (array bytes %d..%d): %s mismatch on role %d (%s), "
                         "member offset %d, first differing byte +%d" % (
                             row, row * g.width, (row + 1) * g.width - 1, what, role,
                             mem.paths[role], mem.offsets[role] + row * g.chunk + k, k))
    if mem.short_reads:
        print("raidcheck: warning: %d short reads (members shorter than the array), "
              "read as zeros" % mem.short_reads, file=sys.stderr)
    if first:
        print("raidcheck: FAIL: %s; %d of %d rows bad" % (first, nbad, rows), file=sys.stderr)
        return 1
    if not quiet:
        print("raidcheck: %s: %d rows, %d bytes: parity OK%s" % (
            g.describe(), rows, size,
            " (missing roles %s)" % sorted(missing) if missing else ""))
    return 0


def cmd_extract(g, mem, missing, size, out, quiet):
    rows = (size + g.width - 1) // g.width
    written = 0
    with open(out, "wb") as f:
        for row in range(rows):
            res = process_row(g, mem, row, missing)
            if res.unrecoverable:
                print("raidcheck: row %d: cannot reconstruct: %s" % (row, res.unrecoverable),
                      file=sys.stderr)
                return 1
            buf = b"".join(res.data)
            buf = buf[:size - written]
            f.write(buf)
            written += len(buf)
    if not quiet:
        print("raidcheck: extracted %d bytes to %s" % (written, out))
    return 0


def cmd_map(g, rows):
    for row in range(rows):
        pd, qd, roles, slots = g.row(row)
        cells = []
        for r in range(g.n):
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
        print("row %d: %s" % (row, " ".join("%-8s" % c for c in cells)).rstrip())
    return 0


def main(argv):
    ap = argparse.ArgumentParser(
        description="Check or extract a Linux-md-compatible RAID 4/5/6 from its member files.")
    ap.add_argument("--level", type=int)
    ap.add_argument("--layout")
    ap.add_argument("--chunk")
    ap.add_argument("--data-offset")
    ap.add_argument("--size", help="array bytes (default: from examine or member sizes)")
    ap.add_argument("--raid-disks", type=int,
                    help="number of roles (default: members given + missing)")
    ap.add_argument("--missing", type=int, action="append", metavar="ROLE")
    ap.add_argument("--from-examine", metavar="FILE",
                    help="geometry from `nbdraid examine --json` output")
    ap.add_argument("-q", "--quiet", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("members", nargs="*")
    e = sub.add_parser("extract")
    e.add_argument("out")
    e.add_argument("members", nargs="*")
    m = sub.add_parser("map", help="print md's placement of the first ROWS rows")
    m.add_argument("rows", type=int)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "map":
            if args.level is None or args.raid_disks is None:
                raise Error("map needs --level and --raid-disks")
            layout = parse_layout(args.layout) if args.layout else (5 if args.level == 4 else 2)
            g = Geometry(args.level, layout,
                         parse_size(args.chunk) if args.chunk else 65536, args.raid_disks)
            return cmd_map(g, args.rows)
        g, mem, missing, size = build(args)
        try:
            if args.cmd == "verify":
                return cmd_verify(g, mem, missing, size, args.quiet)
            return cmd_extract(g, mem, missing, size, args.out, args.quiet)
        finally:
            mem.close()
    except Error as e:
        print("raidcheck: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
