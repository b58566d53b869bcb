#!/usr/bin/python3
# nbdkit-raid: the control socket, spoken raw (the Python half of
# tests/test-control.sh).  Every mode prints "checks: PASSED FAILED" last.
#
#   protocol SOCK            every kind of bad input: EPROTO / EINVAL / ENOSYS
#                            with the right id (also for a NUL in the op or
#                            in a field name), the connection surviving
#                            (or closed after an over-long line), and the
#                            status (events included) unchanged by each
#                            refused request; framing (pipelining, split
#                            writes, CRLF, blank lines, EOF without '\n');
#                            the 64 KiB boundary; the client cap.
#   ops SOCK DIR             happy paths of set, check, repair, freeze, start,
#                            abort, wait, resize, fail, remove, add (recovery),
#                            replace, on a 4-member raid5 whose members are
#                            DIR/m0..m3 (spares DIR/spare1, spare2); refusals
#                            in between leave the status unchanged.
#   reshape SOCK SPARE SPARE2  prepare (the plan), refusals while prepared,
#                            abort (array as before), prepare + start + wait:
#                            one member more (SPARE2 only when the grow with
#                            SPARE cannot be prepared again after the abort).
#   concurrency SOCK         20 clients doing status while one runs a `wait`
#                            with a timeout on a throttled check.
#   latency SOCK URI         status round trips while NBD I/O runs.
#   peer SOCK                a peer of uid nobody gets EACCES and is closed
#                            (run as root; the socket must be reachable).
#   hangup SOCK              a client in an unbounded `wait` that hangs up.

import json
import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from e2e_common import Checks  # noqa: E402

MAX_LINE = 64 << 10


class Conn:
    """One control connection: send lines, read reply lines."""

    def __init__(self, path, timeout=30.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        """The next reply line (bytes, without '\\n'), or None at EOF."""
        while b"\n" not in self.buf:
            try:
                d = self.s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                return None
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l

    def reply(self):
        l = self.line()
        return None if l is None else json.loads(l)

    def raw(self, data):
        self.send(data + b"\n")
        return self.reply()

    def req(self, obj):
        return self.raw(json.dumps(obj).encode())

    def at_eof(self, wait=5.0):
        """True when the server closed the connection (EOF or reset)."""
        self.s.settimeout(wait)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.s.settimeout(30.0)


def status(path):
    c = Conn(path)
    r = c.req({"op": "status"})
    c.close()
    return r


def strip(st):
    return {k: v for k, v in st.items() if k != "id"}


def check_error(c, reply, code, what, id_=None):
    ok = (isinstance(reply, dict) and reply.get("ok") is False and
          reply.get("error") == code and reply.get("id") == id_ and
          isinstance(reply.get("message"), str) and reply["message"] != "")
    if isinstance(code, (list, tuple)):
        ok = (isinstance(reply, dict) and reply.get("ok") is False and
              reply.get("error") in code and reply.get("id") == id_)
    return c.check(ok, "%s: expected error %s id %r, got %r" % (what, code, id_, reply))


def refused_unchanged(c, sock, conn, req, code, what, before=None):
    """Send req (dict or raw bytes); expect error code; status unchanged."""
    before = before or strip(status(sock))
    if isinstance(req, bytes):
        r = conn.raw(req)
        rid = None
    else:
        r = conn.req(req)
        rid = req.get("id")
    check_error(c, r, code, what, rid if code not in ("EPROTO",) else None)
    after = strip(status(sock))
    c.check(after == before, "%s: status changed by a refused request: %s" % (
        what, diff(before, after)))
    return r


def diff(a, b):
    keys = sorted(set(a) | set(b))
    return ", ".join("%s: %r -> %r" % (k, a.get(k), b.get(k))
                     for k in keys if a.get(k) != b.get(k))


# ---- protocol ---------------------------------------------------------------

EPROTO_LINES = [
    (b'{"op":"status"', "incomplete object"),
    (b"not json", "not JSON"),
    (b"[1,2]", "an array"),
    (b'["op","status"]', "an array of strings"),
    (b"42", "a number"),
    (b"-1e300", "a huge number"),
    (b'"status"', "a string"),
    (b"null", "null"),
    (b"true", "a boolean"),
    (b'{"op":"status"} trailing', "trailing garbage"),
    (b'{"op":"status"}{"op":"status"}', "two objects on one line"),
    (b'{"op":"status",}', "trailing comma"),
    (b'{"op":"status","id":"\xff\xfe"}', "invalid UTF-8"),
    (b'{"op":"status"\x00}', "a NUL byte"),
    (b'{"op":"status","id":' + b"[" * 200 + b"]" * 200 + b"}", "nesting 200 deep"),
    (b'{"op":"status", "id": 0x10}', "a hex number"),
    (b"}", "a lone brace"),
]


# A NUL character in a name: json-c keeps object keys as C strings, so
# without the rule "member\u0000x" would be read as "member", "op\u0000x" as
# "op", and "fail\u0000zzz" compared equal to "fail": each would run.  With a
# NUL in a field name not even the id can be read as sent: the reply's is null.
NUL_NAMES = [
    ({"op": "fail\u0000zzz", "id": "nul-op", "member": 1}, "an op with a NUL inside",
     "nul-op"),
    ({"op": "fail", "id": "nul-key", "member\u0000x": 1}, "a field name with a NUL", None),
    ({"op\u0000x": "fail", "id": "nul-op-key", "member": 1}, "the field name op with a NUL",
     None),
    ({"op": "fail", "id": "nul-dup", "member": 0, "member\u0000": 1},
     "a field name that differs from another only after a NUL", None),
    ({"op": "status", "id": {"k\u0000": 1}}, "a NUL in a key inside the id", None),
]


def bad_requests(spare_small):
    """(request, expected code, what) for requests that parse as objects."""
    B = []

    def add(req, code, what):
        B.append((req, code, what))

    add({}, "EINVAL", "missing op")
    add({"id": {"x": [1, 2]}}, "EINVAL", "missing op, object id")
    add({"op": None, "id": 1}, "EINVAL", "op null")
    add({"op": 5, "id": 2}, "EINVAL", "op a number")
    add({"op": ["status"], "id": 3}, "EINVAL", "op a list")
    add({"op": "nosuch", "id": 4}, "ENOSYS", "unknown op")
    add({"op": "STATUS", "id": 5}, "ENOSYS", "op in capitals")
    add({"op": "", "id": 6}, "ENOSYS", "empty op")
    add({"op": "status", "id": 7, "verbose": True}, "EINVAL", "status: unknown field")
    # wait
    for v, w in [("1", "a string"), (-1, "negative"), (86401, "above 86400"),
                 (1e300, "1e300"), (True, "a boolean"), (None, "null"),
                 (2 ** 64, "2^64"), (2 ** 63, "2^63"), (-2 ** 63, "-2^63"),
                 ([1], "a list"), (-0.5, "negative fraction")]:
        add({"op": "wait", "id": "w", "timeout": v}, "EINVAL", "wait: timeout " + w)
    add({"op": "wait", "id": "w", "timeout": 1, "extra": 1}, "EINVAL",
        "wait: unknown field")
    # fail / remove / replace: member
    for op in ("fail", "remove"):
        add({"op": op, "id": op}, "EINVAL", op + ": member missing")
        for v, w in [(-1, "-1"), (1.5, "1.5"), (True, "true"), ([], "[]"),
                     ({}, "{}"), ("", "empty"), (2 ** 64, "2^64"),
                     (2 ** 63, "2^63"), (99, "role 99"), (32, "role 32"),
                     ("-1", "string -1"), ("x" * 2000, "2000-byte spec"),
                     (None, "null"), ("a\u0000b", "NUL inside")]:
            add({"op": op, "id": op, "member": v}, "EINVAL", "%s: member %s" % (op, w))
        add({"op": op, "id": op, "member": 1, "with": "/x"}, "EINVAL",
            op + ": unknown field with")
        add({"op": op, "id": op, "member": 31}, "ENODEV", op + ": role 31 does not exist")
        add({"op": op, "id": op, "member": "/nonexistent/m9"}, "ENODEV",
            op + ": not a member")
    add({"op": "remove", "id": "r0", "member": 0}, "EBUSY", "remove: an in_sync member")
    add({"op": "replace", "id": "rp"}, "EINVAL", "replace: member missing")
    add({"op": "replace", "id": "rp", "member": 0, "with": 5}, "EINVAL",
        "replace: with a number")
    add({"op": "replace", "id": "rp", "member": 0, "with": ""}, "EINVAL",
        "replace: with empty")
    add({"op": "replace", "id": "rp", "member": 0, "with": True}, "EINVAL",
        "replace: with a boolean")
    # add
    add({"op": "add", "id": "a"}, "EINVAL", "add: member missing")
    add({"op": "add", "id": "a", "member": 3}, "EINVAL", "add: member a number")
    add({"op": "add", "id": "a", "member": ["/x"]}, "EINVAL", "add: member a list")
    add({"op": "add", "id": "a", "member": "/nonexistent/spare"}, "ENOENT",
        "add: a file that does not exist")
    add({"op": "add", "id": "a", "member": spare_small}, "ENOSPC", "add: too small")
    # resize
    add({"op": "resize", "id": "z"}, "EINVAL", "resize: size missing")
    for v, w in [(-1, "-1"), ("abc", "abc"), ("1X", "1X"), (1.5, "1.5"), (0, "0"),
                 ("0", "string 0"), (2 ** 64, "2^64"), (2 ** 63, "2^63"),
                 ("99999999999999T", "overflowing suffix"), (None, "null"),
                 (True, "true"), ("-5M", "-5M"), (" 5M", "leading space"),
                 ("5MiB", "5MiB")]:
        add({"op": "resize", "id": "z", "size": v}, "EINVAL", "resize: size " + w)
    add({"op": "resize", "id": "z", "size": 2 ** 62}, "ENOSPC", "resize: 2^62 bytes")
    # set
    add({"op": "set", "id": "s"}, "EINVAL", "set: nothing")
    add({"op": "set", "id": "s", "speed": 1}, "EINVAL", "set: unknown field")
    add({"op": "set", "id": "s", "speed-min": 1}, "EINVAL", "set: hyphenated field")
    for v, w in [(-5, "-5"), ("fast", "fast"), (True, "true"), (1e300, "1e300"),
                 (2 ** 64, "2^64"), (None, "null")]:
        add({"op": "set", "id": "s", "speed_min": v}, "EINVAL", "set: speed_min " + w)
        add({"op": "set", "id": "s", "speed_max": v}, "EINVAL", "set: speed_max " + w)
    add({"op": "set", "id": "s", "speed_min": "2M", "speed_max": "1M"}, "EINVAL",
        "set: min above max")
    # reshape
    add({"op": "reshape", "id": "rs"}, "EINVAL", "reshape: nothing to change")
    add({"op": "reshape", "id": "rs", "add": []}, "EINVAL", "reshape: empty add only")
    for v, w in [(3, "3"), (7, "7"), (-1, "-1"), ("5", "a string"), (5.0, "5.0"),
                 (2 ** 64, "2^64"), (None, "null")]:
        add({"op": "reshape", "id": "rs", "level": v}, "EINVAL", "reshape: level " + w)
    for v, w in [(5, "a number"), ("nonsense", "unknown"), ("", "empty"),
                 ("left-symmetric ", "trailing space")]:
        add({"op": "reshape", "id": "rs", "layout": v}, "EINVAL", "reshape: layout " + w)
    for v, w in [(3000, "3000"), ("64Q", "64Q"), (2048, "2K"), ("128M", "128M"),
                 (0, "0"), (2 ** 70, "2^70"), (-65536, "negative")]:
        add({"op": "reshape", "id": "rs", "chunk": v}, "EINVAL", "reshape: chunk " + w)
    for v, w in [(0, "0"), (1, "1"), (33, "33"), ("4", "a string"), (4.5, "4.5")]:
        add({"op": "reshape", "id": "rs", "raid_devices": v}, "EINVAL",
            "reshape: raid_devices " + w)
    for v, w in [("/x", "a string"), ([1], "a list of numbers"),
                 (["/a", "/a"], "a duplicate"), (["/s%d" % i for i in range(33)], "33 members"),
                 ([""], "an empty spec"), ({"a": 1}, "an object")]:
        add({"op": "reshape", "id": "rs", "add": v}, "EINVAL", "reshape: add " + w)
    add({"op": "reshape", "id": "rs", "raid_disks": 5}, "EINVAL",
        "reshape: misspelt field")
    # actions with nothing running (raidcore refuses)
    add({"op": "start", "id": "st"}, "EINVAL", "start: nothing frozen")
    add({"op": "freeze", "id": "fr"}, "EINVAL", "freeze: nothing running")
    add({"op": "abort", "id": "ab"}, "EINVAL", "abort: nothing running")
    for op in ("start", "freeze", "abort", "check", "repair"):
        add({"op": op, "id": op, "now": True}, "EINVAL", op + ": unknown field")
    return B


def mode_protocol(c, sock, spare_small):
    st0 = status(sock)
    c.check(st0.get("ok") is True and st0.get("sync_action") == "idle",
            "protocol tests need an idle array: %r" % st0)
    before = strip(st0)

    # A connection opened first must outlive every abuse below.
    keeper = Conn(sock)
    conn = Conn(sock)
    for line, what in EPROTO_LINES:
        refused_unchanged(c, sock, conn, line, "EPROTO", "EPROTO: " + what, before)
    r = conn.raw(b'{"op": "wait", "id": "n", "timeout": NaN}')
    check_error(c, r, ("EINVAL", "EPROTO"), "wait: timeout NaN",
                "n" if r and r.get("error") == "EINVAL" else None)
    r = conn.req({"op": "status", "id": "alive"})
    c.check(r and r.get("ok") is True and r.get("id") == "alive",
            "the connection survives every EPROTO line: %r" % r)

    for req, code, what in bad_requests(spare_small):
        refused_unchanged(c, sock, conn, req, code, what, before)
    for req, what, id_ in NUL_NAMES:
        r = conn.req(req)
        check_error(c, r, "EINVAL", what, id_)
        c.check(r and "NUL" in r.get("message", ""), "%s: the message says why: %r" % (
            what, r and r.get("message")))
        c.check(strip(status(sock)) == before, "%s: status changed" % what)
    c.check(strip(status(sock)) == before, "status unchanged after all refusals")

    # ids are echoed whatever their type
    for id_ in [0, -7, 2 ** 53, "x", "", None, True, 1.5, [1, "a", None],
                {"k": {"n": [1, 2]}}]:
        r = conn.req({"op": "status", "id": id_})
        c.check(r and r.get("ok") is True and r.get("id") == id_,
                "id %r echoed: got %r" % (id_, r and r.get("id")))
    r = conn.req({"op": "status"})
    c.check(r and "id" in r and r["id"] is None, "absent id replies null: %r" % r)

    # framing
    conn.send(b'{"op":"status","id":1}\n{"op":"nosuch","id":2}\n{"op":"status","id":3}\n')
    got = [conn.reply() for _ in range(3)]
    c.check([g.get("id") for g in got] == [1, 2, 3] and
            [g.get("ok") for g in got] == [True, False, True],
            "three pipelined requests answered in order: %r" % [
                (g.get("id"), g.get("ok")) for g in got])
    for b in b'{"op":"status","id":"split"}':
        conn.send(bytes([b]))
    conn.send(b"\n")
    r = conn.reply()
    c.check(r and r.get("id") == "split" and r.get("ok") is True,
            "a request sent one byte at a time: %r" % r)
    conn.send(b'\n  \n\t\r\n{"op":"status","id":"crlf"}\r\n')
    r = conn.reply()
    c.check(r and r.get("id") == "crlf" and r.get("ok") is True,
            "blank lines ignored, CRLF accepted: %r" % r)
    raw = conn.s
    conn.send(b'{"op":"status","id":"plain"}\n')
    l = conn.line()
    c.check(l is not None and b"\n" not in l and json.loads(l).get("id") == "plain",
            "a reply is exactly one line")
    del raw

    e = Conn(sock)
    e.send(b'{"op":"status","id":"eof"}')
    e.s.shutdown(socket.SHUT_WR)
    r = e.reply()
    c.check(r and r.get("id") == "eof" and r.get("ok") is True,
            "a last request without newline is answered at EOF: %r" % r)
    c.check(e.at_eof(), "the server closes after EOF")
    e.close()

    # The 64 KiB boundary: exactly MAX_LINE bytes is a request, one more is not.
    head, tail = b'{"op":"status","id":"', b'"}'
    pad = MAX_LINE - len(head) - len(tail)
    r = conn.raw(head + b"a" * pad + tail)
    c.check(r and r.get("ok") is True and len(r.get("id", "")) == pad,
            "a line of exactly 65536 bytes is accepted: %r" % (r and r.get("error")))
    big = Conn(sock)
    r = big.raw(head + b"a" * (pad + 1) + tail)
    check_error(c, r, "EPROTO", "a line of 65537 bytes")
    c.check(big.at_eof(), "connection closed after the over-long line")
    big.close()
    # A carriage return before the newline is not part of the line.
    r = conn.raw(head + b"b" * pad + tail + b"\r")
    c.check(r and r.get("ok") is True and len(r.get("id", "")) == pad,
            "a line of exactly 65536 bytes ending in CR LF is accepted: %r" % (
                r and r.get("error")))
    for extra in (b"x\r", b"xy", b"\rx"):
        big = Conn(sock)
        r = big.raw(head + b"a" * pad + tail + extra)
        check_error(c, r, "EPROTO", "a line of 65536 + %r bytes" % extra)
        c.check(big.at_eof(), "connection closed after 65536 + %r bytes" % extra)
        big.close()

    # A 1 MiB line: EPROTO (id null), then closed; others unaffected.
    big = Conn(sock)
    sent = []

    def flood():
        try:
            big.s.sendall(b"x" * (1 << 20) + b"\n")
            sent.append(True)
        except OSError:
            sent.append(False)
    t = threading.Thread(target=flood)
    t.start()
    r = big.reply()
    t.join(30)
    check_error(c, r, "EPROTO", "a 1 MiB line")
    c.check(big.at_eof(), "connection closed after the 1 MiB line")
    big.close()
    r = keeper.req({"op": "status", "id": "keeper"})
    c.check(r and r.get("ok") is True and r.get("id") == "keeper",
            "a connection opened before the 1 MiB line still works: %r" % r)
    r = conn.req({"op": "status", "id": "conn"})
    c.check(r and r.get("ok") is True, "the abused connection still works: %r" % r)
    c.check(strip(status(sock)) == before, "status unchanged after the 1 MiB line")
    keeper.close()
    conn.close()

    # The client cap: 64 served at once, the 65th told EAGAIN and closed.
    time.sleep(0.5)                   # let the closed connections' threads end
    conns = []
    for i in range(64):
        x = Conn(sock)
        r = x.req({"op": "status", "id": i})
        if not c.check(r and r.get("ok") is True, "client %d of 64 served: %r" % (i, r)):
            break
        conns.append(x)
    extra = Conn(sock)
    r = extra.reply()
    check_error(c, r, "EAGAIN", "the 65th client")
    c.check(extra.at_eof(), "the 65th client is closed")
    extra.close()
    for x in conns:
        x.close()
    deadline = time.time() + 5
    r = None
    while time.time() < deadline:
        x = Conn(sock)
        r = x.req({"op": "status", "id": "after"})
        x.close()
        if r and r.get("ok"):
            break
        time.sleep(0.1)
    c.check(r and r.get("ok") is True, "a client is served once the others left: %r" % r)


# ---- ops ------------------------------------------------------------------

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def member(st, role):
    for m in st["members"]:
        if m["role"] == role:
            return m
    return None


def wait_idle(c, conn, what, timeout=120):
    r = conn.req({"op": "wait", "id": "w", "timeout": timeout})
    c.check(r and r.get("ok") is True and r.get("sync_action") in ("idle", "frozen"),
            "%s: wait: %r" % (what, r and (r.get("sync_action"), r.get("error"))))
    return r


def check_schema(c, st):
    c.check(UUID_RE.match(st.get("uuid", "")) is not None, "uuid form: %r" % st.get("uuid"))
    ints = ["level", "chunk", "raid_devices", "data_disks", "size",
            "mismatch_count", "events"]
    for k in ints:
        c.check(isinstance(st.get(k), int) and not isinstance(st.get(k), bool),
                "status.%s is an integer: %r" % (k, st.get(k)))
    for k, allowed in [("health", {"optimal", "degraded", "failed"}),
                       ("sync_action", {"idle", "frozen", "resync", "recover", "check",
                                        "repair", "reshape"}),
                       ("consistency", {"journal", "bitmap", "resync"})]:
        c.check(st.get(k) in allowed, "status.%s: %r" % (k, st.get(k)))
    c.check(isinstance(st.get("layout"), str), "status.layout is a name")
    c.check("reshape" in st and "progress" in st, "reshape and progress present")
    for m in st.get("members", []):
        base = {"role", "spec", "state", "errors", "data_offset", "down", "away_seconds",
                "missed_regions"}
        c.check(set(m) == base or set(m) == base | {"missed_region_bytes"},
                "member fields: %r" % sorted(m))
        c.check((m["away_seconds"] is None) == (m["state"] != "missing"),
                "away_seconds set exactly for a missing member: %r" % m)
        c.check(m["down"] is True if m["state"] == "missing" else
                m["down"] is False if m["state"] != "spare" else isinstance(m["down"], bool),
                "down: true for a missing member, a boolean for a spare, else false: %r" % m)
        c.check(m["state"] in {"in_sync", "faulty", "missing", "spare",
                               "rebuilding", "stale"}, "member state %r" % m["state"])


def refusal(c, sock, conn, req, codes, what):
    before = strip(status(sock))
    r = conn.req(dict(req, id=what))
    ok = r and r.get("ok") is False and r.get("error") in codes and r.get("id") == what
    c.check(ok, "%s: expected %s, got %r" % (what, "/".join(codes), r))
    after = strip(status(sock))
    c.check(after == before, "%s: refused request changed the status: %s" % (
        what, diff(before, after)))
    return r


def mode_ops(c, sock, d):
    conn = Conn(sock)
    st = conn.req({"op": "status", "id": "s0"})
    check_schema(c, st)
    c.check(st["level"] == 5 and st["layout"] == "left-symmetric" and
            st["chunk"] == 65536 and st["raid_devices"] == 4 and st["data_disks"] == 3,
            "geometry: %r" % [st[k] for k in ("level", "layout", "chunk", "raid_devices")])
    c.check(st["health"] == "optimal" and st["sync_action"] == "idle" and
            st["reshape"] is None and st["progress"] is None,
            "fresh array: optimal, idle, no reshape/progress: %r" % (
                [st[k] for k in ("health", "sync_action", "reshape", "progress")]))
    c.check([member(st, r) and member(st, r)["spec"] for r in range(4)] ==
            ["%s/m%d" % (d, r) for r in range(4)], "member specs: %r" % st["members"])
    size0 = st["size"]
    width = st["chunk"] * st["data_disks"]

    # set
    ev = st["events"]
    r = conn.req({"op": "set", "id": 1, "speed_min": "1M", "speed_max": 8 << 20})
    c.check(r == {"id": 1, "ok": True}, "set: %r" % r)
    st = status(sock)
    c.check(st.get("speed_min") == 1 << 20 and st.get("speed_max") == 8 << 20,
            "set took effect: %r" % ([st.get("speed_min"), st.get("speed_max")],))
    c.check(st["events"] == ev, "set does not touch the journal")
    r = conn.req({"op": "set", "id": 2, "speed_max": 0})
    c.check(r and r.get("ok") is True and status(sock).get("speed_max") == 0,
            "set speed_max 0 (unlimited): %r" % r)

    # check, freeze, wait on frozen, start, abort, full check, repair
    conn.req({"op": "set", "id": 3, "speed_min": 0, "speed_max": "1M"})
    r = conn.req({"op": "check", "id": "chk"})
    c.check(r == {"id": "chk", "ok": True}, "check: %r" % r)
    st = status(sock)
    c.check(st["sync_action"] == "check" and st["progress"] and
            st["progress"]["action"] == "check" and st["progress"]["total"] > 0,
            "check running: %r" % ([st["sync_action"], st["progress"]],))
    r = conn.req({"op": "check", "id": "chk2"})
    c.check(r and r.get("error") == "EBUSY", "a second check: EBUSY: %r" % r)
    r = conn.req({"op": "repair", "id": "rep2"})
    c.check(r and r.get("error") == "EBUSY", "repair during check: EBUSY: %r" % r)
    r = conn.req({"op": "freeze", "id": "fz"})
    c.check(r and r.get("ok") is True, "freeze: %r" % r)
    t0 = time.time()
    r = conn.req({"op": "wait", "id": "wf", "timeout": 30})
    c.check(r and r.get("ok") is True and r.get("sync_action") == "frozen" and
            time.time() - t0 < 5, "wait on a frozen action returns at once: %r" % (
                r and r.get("sync_action")))
    c.check(r and r.get("progress") is not None, "frozen action keeps its progress")
    r = conn.req({"op": "start", "id": "go"})
    c.check(r and r.get("ok") is True and status(sock)["sync_action"] == "check",
            "start resumes the check: %r" % r)
    r = conn.req({"op": "start", "id": "go2"})
    c.check(r and r.get("error") == "EBUSY", "start while running: EBUSY: %r" % r)
    # the rate is measured over wall time, throttle pauses included: near
    # the 1M limit, not the speed of one unthrottled batch
    time.sleep(2.5)
    rate = status(sock)["progress"]["rate"]
    c.check(256 << 10 <= rate <= 4 << 20, "rate under a 1M limit: %d bytes/s" % rate)
    r = conn.req({"op": "abort", "id": "ab"})
    st = status(sock)
    c.check(r and r.get("ok") is True and st["sync_action"] == "idle" and
            st["progress"] is None, "abort: %r, then %r" % (r, st["sync_action"]))
    conn.req({"op": "set", "id": 4, "speed_max": 0})
    for op in ("check", "repair"):
        r = conn.req({"op": op, "id": op})
        c.check(r and r.get("ok") is True, "%s: %r" % (op, r))
        r = wait_idle(c, conn, op)
        c.check(r and r.get("sync_action") == "idle" and r.get("mismatch_count") == 0,
                "%s finished with no mismatches: %r" % (op, r and r.get("mismatch_count")))

    # resize: a shrink needs force; down and back; "max"
    r = refusal(c, sock, conn, {"op": "resize", "size": size0 - width}, ("EINVAL",),
                "resize down without force")
    c.check(r and "force" in r.get("message", ""), "the refusal says why: %r" % r)
    refusal(c, sock, conn, {"op": "resize", "size": size0 - width, "force": False},
            ("EINVAL",), "resize down with force false")
    refusal(c, sock, conn, {"op": "resize", "size": size0 - width, "force": "yes"},
            ("EINVAL",), "resize with a force that is not a boolean")
    for size, force, what in [(size0 - width, True, "down one stripe"),
                              (size0, False, "back")]:
        r = conn.req({"op": "resize", "id": "rz", "size": size, "force": force})
        c.check(r and r.get("ok") is True and status(sock)["size"] == size,
                "resize %s: %r" % (what, r))
    r = conn.req({"op": "resize", "id": "rz", "size": "%dK" % ((size0 - width) >> 10),
                  "force": True})
    c.check(r and r.get("ok") is True and status(sock)["size"] == size0 - width,
            "resize with a K suffix: %r" % r)
    r = conn.req({"op": "resize", "id": "rz", "size": "max"})
    c.check(r and r.get("ok") is True and status(sock)["size"] >= size0,
            "resize to max: %r, size %d" % (r, status(sock)["size"]))
    r = conn.req({"op": "resize", "id": "rz", "size": size0, "force": True})
    c.check(r and r.get("ok") is True and status(sock)["size"] == size0,
            "resize back from max: %r" % r)
    refusal(c, sock, conn, {"op": "resize", "size": size0 + 2 * width * 10 ** 6},
            ("ENOSPC",), "resize beyond the members")
    refusal(c, sock, conn, {"op": "resize", "size": "maximum"}, ("EINVAL",),
            "resize to a size word that is not max")

    # fail by spec, refusals while degraded, remove, add -> recovery
    ev = status(sock)["events"]
    r = conn.req({"op": "fail", "id": "f", "member": "%s/m3" % d})
    st = status(sock)
    c.check(r == {"id": "f", "ok": True}, "fail by spec: %r" % r)
    c.check(st["health"] == "degraded" and member(st, 3)["state"] == "faulty" and
            st["events"] > ev, "after fail: %r" % ([st["health"], member(st, 3), st["events"]],))
    refusal(c, sock, conn, {"op": "fail", "member": 2}, ("EBUSY",),
            "a second fail beyond redundancy")
    refusal(c, sock, conn, {"op": "fail", "member": "%s/m0" % d}, ("EBUSY",),
            "a second fail by spec")
    refusal(c, sock, conn, {"op": "fail", "member": 3}, ("EINVAL", "EBUSY"),
            "fail an already faulty member")
    refusal(c, sock, conn, {"op": "remove", "member": 0}, ("EBUSY",),
            "remove an in_sync member")
    refusal(c, sock, conn, {"op": "check"}, ("EBUSY", "EINVAL"), "check while degraded")
    r = conn.req({"op": "remove", "id": "rm", "member": 3})
    st = status(sock)
    c.check(r and r.get("ok") is True and
            all(m["spec"] != "%s/m3" % d for m in st["members"]),
            "remove the faulty member: %r, members %r" % (r, st["members"]))
    refusal(c, sock, conn, {"op": "add", "member": "%s/m1" % d}, ("EEXIST",),
            "add a current member")
    # A member removed from this array is no longer one of its members: it
    # may be added again, as a new spare (its old contents count for
    # nothing), and the degraded array recovers onto it.
    r = conn.req({"op": "add", "id": "readd", "member": "%s/m3" % d})
    c.check(r == {"id": "readd", "ok": True}, "add the removed member again: %r" % r)
    r = wait_idle(c, conn, "recovery onto the member added again")
    st = status(sock)
    m3 = member(st, 3)
    c.check(st["health"] == "optimal" and m3 and m3["spec"] == "%s/m3" % d and
            m3["state"] == "in_sync",
            "recovered onto the member added again: %r %r" % (st["health"], m3))
    r = conn.req({"op": "add", "id": "add", "member": "%s/spare1" % d})
    c.check(r == {"id": "add", "ok": True}, "add a spare: %r" % r)
    st = status(sock)
    c.check(any(m["state"] == "spare" and m["spec"] == "%s/spare1" % d
                for m in st["members"]), "spare1 is a spare: %r" % st["members"])

    # replace, reshape: happy path where raidcore has them, else a clean refusal
    r = refusal(c, sock, conn, {"op": "replace", "member": 0, "with": "%s/nospare" % d},
                ("ENODEV", "ENOENT", "EINVAL", "ENOTSUP"), "replace with a non-spare")
    r = conn.req({"op": "add", "id": "add2", "member": "%s/spare2" % d})
    c.check(r and r.get("ok") is True, "add a second spare: %r" % r)
    st = status(sock)
    c.check(any(m["role"] is None and m["state"] == "spare" and
                m["spec"] == "%s/spare2" % d for m in st["members"]),
            "the second spare is listed with role null: %r" % st["members"])
    before = strip(st)
    r = conn.req({"op": "replace", "id": "rp", "member": 0})
    if r and r.get("error") == "ENOTSUP":
        print("note: replace is not implemented by raidcore yet (ENOTSUP)")
        c.check(strip(status(sock)) == before, "refused replace changed nothing")
    else:
        c.check(r and r.get("ok") is True, "replace role 0: %r" % r)
        wait_idle(c, conn, "replace")
        st = status(sock)
        c.check(member(st, 0) and member(st, 0)["spec"] == "%s/spare1" % d and
                st["health"] == "optimal", "replaced onto the first spare: %r" % st["members"])
        c.check(all(m["spec"] != "%s/m0" % d for m in st["members"]),
                "the replaced member is no longer listed: %r" % st["members"])

    conn.close()


# ---- reshape ----------------------------------------------------------------

def mode_reshape(c, sock, spare, spare2):
    """Prepare, abort, prepare again, start, wait: a 4 -> 5 member grow."""
    conn = Conn(sock)
    st0 = status(sock)
    c.check(st0["health"] == "optimal" and st0["sync_action"] == "idle" and
            st0["reshape"] is None, "reshape test starts optimal and idle: %r" % (
                [st0["health"], st0["sync_action"], st0["reshape"]],))
    req = {"op": "reshape", "id": "rs", "raid_devices": st0["raid_devices"] + 1,
           "add": [spare]}
    r = conn.req(req)
    if not c.check(r and r.get("ok") is True, "reshape prepare: %r" % r):
        conn.close()
        return
    rs = r.get("reshape")
    c.check(isinstance(rs, dict) and rs.get("state") == "frozen" and
            rs.get("position") == 0 and rs.get("direction") in ("forward", "backward") and
            rs["from"]["raid_devices"] == st0["raid_devices"] and
            rs["to"]["raid_devices"] == st0["raid_devices"] + 1 and
            rs["from"]["level"] == rs["to"]["level"] == 5,
            "the plan: frozen at 0, one more device: %r" % rs)
    c.check(r.get("raid_devices") == st0["raid_devices"] and r.get("size") == st0["size"],
            "the plan's top-level geometry is still the old one")
    st = status(sock)
    c.check(st["reshape"] == rs, "status shows the plan's reshape record: %r" % st["reshape"])
    c.check(st["sync_action"] in ("frozen", "idle"), "prepared reshape: %r" % st["sync_action"])
    c.check(st["health"] == "optimal", "prepared reshape keeps health: %r" % st["health"])
    refusal(c, sock, conn, dict(req, raid_devices=st0["raid_devices"] + 2),
            ("EBUSY",), "a second reshape while one is prepared")
    refusal(c, sock, conn, {"op": "check"}, ("EBUSY",), "check while a reshape is prepared")

    r = conn.req({"op": "abort", "id": "ab"})
    st = status(sock)
    c.check(r == {"id": "ab", "ok": True}, "abort the prepared reshape: %r" % r)
    c.check(st["reshape"] is None and st["sync_action"] == "idle",
            "after abort: no reshape, idle: %r" % ([st["reshape"], st["sync_action"]],))
    same = {k: st[k] for k in ("level", "layout", "chunk", "raid_devices", "data_disks",
                               "size", "health")}
    want = {k: st0[k] for k in same}
    c.check(same == want, "abort restores the array: %s" % diff(want, same))

    # The member named in `add` is either gone again after the abort, or
    # stays as a spare (md keeps added spares) that the next grow can use
    # without naming it.  Either way the same grow must be possible again.
    kept = any(m["spec"] == spare and m["state"] == "spare" for m in st["members"])
    req["id"] = "rs2"
    if kept:
        del req["add"]
    r = conn.req(req)
    c.check(r and r.get("ok") is True,
            "after abort, the same grow again (%s): %r" % (
                "its member kept as a spare" if kept else "naming it again", r))
    if not (r and r.get("ok") is True):
        req = dict(req, id="rs3", add=[spare2])
        r = conn.req(req)
        if not c.check(r and r.get("ok") is True, "reshape prepare with %s: %r" % (spare2, r)):
            conn.close()
            return
        spare = spare2
    spares_before = [spare] + [m["spec"] for m in status(sock)["members"]
                               if m["role"] is None or m["role"] == st0["raid_devices"]]
    r = conn.req({"op": "start", "id": "go"})
    c.check(r == {"id": "go", "ok": True}, "start the reshape: %r" % r)
    r = wait_idle(c, conn, "reshape", timeout=240)
    st = status(sock)
    c.check(st["raid_devices"] == st0["raid_devices"] + 1 and
            st["data_disks"] == st0["data_disks"] + 1 and st["reshape"] is None and
            st["health"] == "optimal" and st["sync_action"] == "idle",
            "after the reshape: %r" % ([st[k] for k in ("raid_devices", "data_disks",
                                                         "reshape", "health", "sync_action")],))
    c.check(st["size"] >= st0["size"], "a grow does not shrink the export")
    c.check(member(st, st0["raid_devices"]) is not None and
            member(st, st0["raid_devices"])["spec"] in spares_before,
            "the added member (a spare before) holds the new role: %r" % st["members"])
    conn.close()


# ---- concurrency ----------------------------------------------------------

def mode_concurrency(c, sock):
    conn = Conn(sock)
    conn.req({"op": "set", "id": 1, "speed_min": 0, "speed_max": "1M"})
    r = conn.req({"op": "check", "id": 2})
    c.check(r and r.get("ok") is True, "check for the concurrency test: %r" % r)
    results = {}

    def waiter():
        w = Conn(sock)
        t0 = time.time()
        results["wait"] = (w.req({"op": "wait", "id": "w", "timeout": 2.5}),
                           time.time() - t0)
        w.close()

    lat = []
    errors = []
    lock = threading.Lock()

    def statuser(i):
        try:
            s = Conn(sock)
            for k in range(10):
                t0 = time.time()
                r = s.req({"op": "status", "id": [i, k]})
                dt = time.time() - t0
                with lock:
                    lat.append(dt)
                    if not (r and r.get("ok") and r.get("id") == [i, k]):
                        errors.append(r)
            s.close()
        except Exception as e:     # noqa: BLE001
            with lock:
                errors.append(repr(e))

    wt = threading.Thread(target=waiter)
    wt.start()
    time.sleep(0.2)
    t0 = time.time()
    ts = [threading.Thread(target=statuser, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    t_status = time.time() - t0
    wt.join(60)
    c.check(not errors, "200 status requests from 20 clients all ok: %r" % errors[:3])
    c.check(len(lat) == 200, "200 status replies: %d" % len(lat))
    lat.sort()
    print("status latency with a wait in progress: median %.1f ms, max %.1f ms, "
          "all 20 clients done in %.2f s" % (lat[len(lat) // 2] * 1e3, lat[-1] * 1e3, t_status))
    c.check(t_status < 2.0, "the 20 clients finished while the wait ran (%.2f s)" % t_status)
    c.check(lat and lat[-1] < 1.0, "slowest status %.0f ms (< 1000)" % (lat[-1] * 1e3))
    w, dt = results.get("wait", (None, 0))
    c.check(w and w.get("ok") is True and w.get("sync_action") == "check",
            "wait with timeout 2.5 while check runs: ok, still check: %r" % (
                (w and (w.get("sync_action"), w.get("error")),)))
    c.check(2.3 <= dt <= 4.0, "wait returned after its timeout (%.2f s)" % dt)
    r = conn.req({"op": "abort", "id": 3})
    c.check(r and r.get("ok") is True, "abort the check: %r" % r)
    conn.req({"op": "set", "id": 4, "speed_max": 0, "speed_min": "16M"})
    conn.close()


# ---- latency under I/O ----------------------------------------------------

def mode_latency(c, sock, uri):
    import nbd
    stop = []
    done = [0]

    def io():
        h = nbd.NBD()
        h.connect_uri(uri)
        size = h.get_size()
        buf = bytearray(os.urandom(1 << 20))
        off = 0
        while not stop:
            h.pwrite(buf, off)
            h.pread(1 << 20, (off * 7) % (size - (1 << 20)))
            off = (off + (1 << 20)) % (size - (1 << 20))
            done[0] += 2
        h.flush()
        h.shutdown()

    ts = [threading.Thread(target=io) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(0.3)
    s = Conn(sock)
    lat = []
    bad = []
    t_end = time.time() + 3
    while time.time() < t_end:
        t0 = time.time()
        r = s.req({"op": "status"})
        lat.append(time.time() - t0)
        if not (r and r.get("ok") is True):
            bad.append(r)
        time.sleep(0.02)
    c.check(not bad, "every status during I/O ok: %r" % bad[:3])
    stop.append(True)
    for t in ts:
        t.join(60)
    s.close()
    lat.sort()
    print("status latency during NBD I/O (%d requests of 1 MiB done): median %.2f ms, "
          "p99 %.2f ms, max %.2f ms over %d requests" % (
              done[0], lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3,
              lat[-1] * 1e3, len(lat)))
    c.check(done[0] > 0, "I/O made progress during the test")
    c.check(lat[-1] < 1.0, "slowest status during I/O %.1f ms (< 1000)" % (lat[-1] * 1e3))


# ---- throttle ---------------------------------------------------------------

def mode_throttle(c, sock, uri):
    """speed_max caps a background action, idle and under client I/O (also
    when speed_min is below it), and a low limit means small steps, not one
    big batch then a long pause."""
    import nbd
    conn = Conn(sock)
    stop = []

    def io():
        h = nbd.NBD()
        h.connect_uri(uri)
        buf = bytearray(os.urandom(4096))
        off = 0
        while not stop:
            h.pwrite(buf, off)
            off = (off + 4096 * 37) % (64 << 20)
        h.shutdown()

    def rate(seconds):
        st0 = status(sock)
        t0 = time.time()
        time.sleep(seconds)
        st1 = status(sock)
        t1 = time.time()
        if not (st0.get("progress") and st1.get("progress")):
            return None
        return (st1["progress"]["done"] - st0["progress"]["done"]) / (t1 - t0)

    limit = 4 << 20
    for load in (False, True):
        r = conn.req({"op": "set", "id": 1, "speed_min": "1M", "speed_max": limit})
        c.check(r and r.get("ok") is True, "set: %r" % r)
        ts = []
        if load:
            ts = [threading.Thread(target=io) for _ in range(2)]
            for t in ts:
                t.start()
        r = conn.req({"op": "check", "id": "chk"})
        c.check(r and r.get("ok") is True, "check: %r" % r)
        time.sleep(0.5)
        got = rate(2.5)
        what = "under client writes" if load else "idle"
        print("check at speed_max %d MiB/s, %s: %.2f MiB/s" % (
            limit >> 20, what, (got or 0) / (1 << 20)))
        c.check(got is not None and 0 < got <= limit * 1.3,
                "speed_max %d MiB/s holds %s: measured %r B/s" % (limit >> 20, what, got))
        stop.append(True)
        for t in ts:
            t.join(30)
        stop.clear()
        r = conn.req({"op": "abort", "id": "ab"})
        c.check(r and r.get("ok") is True, "abort: %r" % r)
    conn.req({"op": "set", "id": 2, "speed_min": "16M", "speed_max": 0})
    conn.close()


# ---- peer -----------------------------------------------------------------

def mode_peer(c, sock):
    if os.geteuid() != 0:
        print("note: not root, cannot test a peer of another uid")
        return
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            x = Conn(sock)
            r = x.reply()             # refused at once, before any request
            eof = x.at_eof()
            os.write(wr, json.dumps({"reply": r, "eof": eof}).encode())
        except Exception as e:       # noqa: BLE001
            os.write(wr, json.dumps({"exc": repr(e)}).encode())
        os._exit(0)
    os.close(wr)
    data = b""
    while True:
        d = os.read(rd, 65536)
        if not d:
            break
        data += d
    os.waitpid(pid, 0)
    res = json.loads(data or b"{}")
    r = res.get("reply")
    c.check("exc" not in res, "peer test child: %r" % res.get("exc"))
    check_error(c, r, "EACCES", "a peer of uid 65534")
    c.check(res.get("eof") is True, "the refused peer is disconnected")
    r = status(sock)
    c.check(r and r.get("ok") is True, "root is still served: %r" % r)


def mode_hangup(c, sock):
    """A client in an unbounded wait hangs up; the server keeps serving."""
    conn = Conn(sock)
    conn.req({"op": "set", "id": 1, "speed_min": 0, "speed_max": "1M"})
    r = conn.req({"op": "check", "id": 2})
    c.check(r and r.get("ok") is True, "check: %r" % r)
    for _ in range(3):
        w = Conn(sock)
        w.send(b'{"op":"wait","id":"forever"}\n')
        time.sleep(0.3)
        w.close()
    time.sleep(0.6)                   # > CONTROL_WAIT_SLICE_MS: they noticed
    r = conn.req({"op": "status", "id": 3})
    c.check(r and r.get("ok") is True and r.get("sync_action") == "check",
            "status after clients hung up in wait: %r" % (r and r.get("sync_action")))
    # Their slots are free again: 63 more clients (64 with conn) are served.
    others, served = [], 0
    for i in range(63):
        x = Conn(sock)
        others.append(x)
        try:
            r = x.req({"op": "status", "id": i})
        except OSError:               # refused (EAGAIN) and closed
            r = None
        served += bool(r and r.get("ok") is True)
    c.check(served == 63, "the hung-up waits released their connections: "
            "%d of 63 more clients served" % served)
    for x in others:
        x.close()
    conn.close()


def main(argv):
    c = Checks("e2e_control " + argv[0])
    if argv[0] == "protocol":
        mode_protocol(c, argv[1], argv[2])
    elif argv[0] == "ops":
        mode_ops(c, argv[1], argv[2])
    elif argv[0] == "reshape":
        mode_reshape(c, argv[1], argv[2], argv[3])
    elif argv[0] == "concurrency":
        mode_concurrency(c, argv[1])
    elif argv[0] == "latency":
        mode_latency(c, argv[1], argv[2])
    elif argv[0] == "throttle":
        mode_throttle(c, argv[1], argv[2])
    elif argv[0] == "peer":
        mode_peer(c, argv[1])
    elif argv[0] == "hangup":
        mode_hangup(c, argv[1])
    else:
        print("unknown mode", argv[0], file=sys.stderr)
        return 2
    c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
