#!/usr/bin/python3
# nbdkit-raid: shared pieces of the Python halves of the end-to-end tests.
#
#   Checks     counts checks; prints one "FAIL: ..." line per failure and, as
#              the last stdout line, "checks: PASSED FAILED" (functions.sh's
#              run_py adds these to the shell test's totals).
#   Model      the expected content of the whole export (a bytearray) and
#              comparison of server reads against it, naming the first
#              differing byte.
#   examine    helpers over `nbdraid examine --json` output.
#
# As a program (used by functions.sh): `e2e_common.py field FILE KEY`,
# `e2e_common.py member-state FILE ROLE`, `e2e_common.py record-field FILE
# KEY` (a field of the newest record), `e2e_common.py status SOCKET KEY`,
# `e2e_common.py old-or-new URI OLD NEW OFFSET` (exit 1, naming the first
# few, when a 4 KiB block of the export's first len(OLD) bytes reads as
# neither OLD's bytes nor, inside [OFFSET, OFFSET + len(NEW)), NEW's: the
# check after a write torn by a crash).

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import raidcheck  # noqa: E402

MAX_IO = 4 << 20    # chunking of whole-device reads


class Checks:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s: %s" % (self.name, what), flush=True)
        return cond

    def done(self):
        print("checks: %d %d" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


def nbd_errno(e):
    """The numeric errno of an nbd.Error (its .errno attribute is the
    errno's name, e.g. 'EIO'; the number is the second argument)."""
    if len(e.args) > 1 and isinstance(e.args[1], int):
        return e.args[1]
    name = getattr(e, "errno", None)
    return getattr(__import__("errno"), name, None) if isinstance(name, str) else name


def first_diff(a, b):
    """Index of the first differing byte of two equal-length buffers."""
    if a == b:
        return -1
    lo, hi = 0, len(a)
    # binary search on slices: fast for large buffers
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    for k in range(lo, hi):
        if a[k] != b[k]:
            return k
    return min(len(a), len(b))


def describe_diff(off, got, want):
    k = first_diff(got, want)
    n = sum(1 for i in range(k, min(len(got), k + 65536)) if got[i] != want[i])
    return ("first difference at byte %d (0x%x): got 0x%02x want 0x%02x; "
            "%d of the next 64K bytes differ" % (off + k, off + k, got[k], want[k], n))


def pread_all(h, off, length):
    parts = []
    while length > 0:
        n = min(length, MAX_IO)
        parts.append(h.pread(n, off))
        off += n
        length -= n
    return b"".join(parts)


def compare_range(c, h, model, off, length, what):
    got = pread_all(h, off, length)
    want = bytes(model[off:off + length])
    if got == want:
        return c.check(True, what)
    return c.check(False, "%s: read [%d, +%d) differs from model: %s" % (
        what, off, length, describe_diff(off, got, want)))


def compare_all(c, h, model, what):
    return compare_range(c, h, model, 0, len(model), what)


# ---- examine output --------------------------------------------------------

def load_json_docs(path):
    text = open(path).read()
    try:
        return [json.loads(text)]
    except ValueError:
        return [json.loads(l) for l in text.splitlines() if l.strip()]


def _walk(o):
    if isinstance(o, dict):
        yield o
        for v in o.values():
            yield from _walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from _walk(v)


def newest_record(docs):
    """The record (a dict with "events" and a member table) with the highest
    event count anywhere in the examine output."""
    best = None
    for d in _walk(docs):
        if "events" in d and isinstance(d.get("members"), list) and \
           any(isinstance(m, dict) and "role" in m for m in d["members"]):
            if best is None or d["events"] > best["events"]:
                best = d
    return best


def member_state(path, role):
    rec = newest_record(load_json_docs(path))
    if rec is None:
        return "no-record"
    for m in rec["members"]:
        if isinstance(m, dict) and m.get("role") == role:
            return m.get("state", "no-state")
    return "absent"


def control_request(path, req, timeout=30):
    """Send one JSON request line on the control socket
    (nbdkit-raid-control(7)) and return the decoded reply line."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return json.loads(buf.decode())


def old_or_new(uri, old_file, new_file, offset):
    import nbd
    old = open(old_file, "rb").read()
    new = open(new_file, "rb").read()
    h = nbd.NBD()
    h.connect_uri(uri)
    bad = 0
    for base in range(0, len(old), MAX_IO):
        got = h.pread(min(MAX_IO, len(old) - base), base)
        for i in range(0, len(got), 4096):
            a = base + i
            g = got[i:i + 4096]
            if g == old[a:a + 4096] or (offset <= a < offset + len(new) and
                                        g == new[a - offset:a - offset + 4096]):
                continue
            bad += 1
            if bad <= 4:
                print("block at %d: neither old nor new" % a)
    h.shutdown()
    print("bad blocks:", bad)
    return 1 if bad else 0


def main(argv):
    if len(argv) == 5 and argv[0] == "old-or-new":
        return old_or_new(argv[1], argv[2], argv[3], int(argv[4]))
    if len(argv) == 3 and argv[0] == "field":
        ex = raidcheck.parse_examine(open(argv[1]).read())
        v = ex.get(argv[2])
        print("" if v is None else v)
        return 0
    if len(argv) == 3 and argv[0] == "record-field":
        rec = newest_record(load_json_docs(argv[1]))
        v = None if rec is None else rec.get(argv[2])
        print("" if v is None else v)
        return 0
    if len(argv) == 3 and argv[0] == "member-state":
        print(member_state(argv[1], int(argv[2])))
        return 0
    if len(argv) == 3 and argv[0] == "status":
        # The control socket's status reply: a top-level field, or
        # "member:ROLE" for the state of the member with that role
        # ("member:ROLE:FIELD" for another of its fields, "" when null),
        # "spec:TAIL" for the state of the member whose spec ends with TAIL
        # ("specfield:FIELD:TAIL" for another of its fields).
        try:
            d = control_request(argv[1], {"op": "status", "id": 1})
        except (OSError, ValueError) as e:
            print("ERROR(%s)" % e)
            return 0
        if d.get("ok") is not True:
            print("ERROR(%s)" % d)
            return 0
        if argv[2].startswith("member:"):
            # member:ROLE, or member:ROLE:FIELD for another field of it
            parts = argv[2].split(":")
            role, field = int(parts[1]), parts[2] if len(parts) > 2 else "state"
            st = [m.get(field) for m in d.get("members", []) if m.get("role") == role]
            print(("" if st[0] is None else st[0]) if st else "absent")
        elif argv[2].startswith("spec:") or argv[2].startswith("specfield:"):
            # spec:TAIL, or specfield:FIELD:TAIL for another field of it
            if argv[2].startswith("specfield:"):
                field, tail = argv[2][10:].split(":", 1)
            else:
                field, tail = "state", argv[2][5:]
            st = [m.get(field) for m in d.get("members", [])
                  if (m.get("spec") or "").endswith(tail)]
            print(("null" if st[0] is None else str(st[0]).lower() if isinstance(st[0], bool)
                   else st[0]) if st else "absent")
        else:
            v = d.get(argv[2])
            print("" if v is None else v)
        return 0
    print("usage: e2e_common.py field FILE KEY | member-state FILE ROLE | "
          "status FILE KEY|member:ROLE|spec:TAIL|specfield:FIELD:TAIL | "
          "old-or-new URI OLD NEW OFFSET", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
