#!/usr/bin/python3
# nbdkit-raid: the stress tester ("our ztest").
#
# THEORY
#
# For a seeded time budget this program runs real servers (nbdkit + the
# plugin, NBD members behind their own nbdkit processes) and tries to make
# the product lose data or lie.  It prints its seed first; the same seed
# replays the same schedule: every random choice comes from a Random seeded
# by (seed, epoch, actor), and each scheduled step draws a fixed number of
# values, so state-dependent choices (which member, which spare) map the
# same draws onto the state of the moment.  Thread timing varies.
#
# A run is a series of EPOCHS.  Each creates a fresh array from seeded
# choices (level 4, 5, 6, 0 as the source of a takeover reshape, or 1:
# two mirrors, taken over to raid5 in half the epochs; 3-6 members;
# chunk 4K-256K; consistency journal/bitmap/resync; members a mix of
# sparse files and NBD exports served by `nbdkit --filter=error
# --filter=rate --filter=delay file` on UNIX sockets, plus spares) and runs
# PHASES separated by QUIET POINTS.
#
# What is modelled.  The expected content of the whole export (a
# bytearray).  Client threads own disjoint sets of units (4 KiB units
# interleaved between threads, and units of about two stripe rows, also
# interleaved), so every byte has one writer and its history is a total
# order: the model is exact without locks.  Per 4 KiB block, a thread also
# keeps the versions written since the block was last durable (the NBD
# contract: a write is durable when acknowledged with FUA, or acknowledged
# before a flush that completed; we only credit a thread's own flushes,
# which under-approximates durability and so is sound), and its one write
# in flight.  Trimmed and zeroed bytes read back as zeros
# (nbdkit-raid-plugin(1), Serving).
#
# What is checked, and why it is sound.
#  - Every client read of a thread's own bytes returns the model's bytes
#    (nobody else writes them; the thread's own writes were acknowledged).
#  - Block status never says HOLE or ZERO for a range whose model bytes are
#    not all zero (those bytes would read back non-zero: a lie).
#  - No client request fails while the faults injected, plus the roles the
#    array already lacks, stay within the level's tolerance (the injector
#    takes one lock and a fresh status before each fault, so it never
#    exceeds it); beyond redundancy ("doom") the array must say failed
#    within a bound, I/O must fail (EIO) without hanging, control requests
#    must still be answered, and the server must not spin.
#
#    What a loss costs follows the engine's documented rules
#    (nbdkit-raid-plugin(1), Assembly, Failures, Members that come and go;
#    parameter member-timeout; nbdkit-raid-control(7), status members):
#    a member that fails I/O is faulty, and a member recorded faulty is not
#    taken back at a start.  An NBD member whose server dies while it holds
#    a role is *away*: missing (not faulty), not usable, the array
#    degraded; the engine reconnects it by itself (every 0.1 s backing off
#    to 5 s) and takes it back as stale, resyncing only its missed regions,
#    then in_sync.  So it counts as lost from its server's death until a
#    status taken after its server is back shows it in_sync again, not one
#    moment longer (two such members of a raid5 are beyond redundancy: the
#    array fails).  Away longer than member-timeout it is written off
#    (faulty) and a spare, if there is one, takes its role; within that
#    grace no spare does.  At a start a member absent or unreachable is
#    missing (recorded so), an NBD spec unreachable is kept pending and
#    rejoins when it answers; a missing member given at a later start, or
#    handed to add, rejoins (by a delta when its record allows, else it is
#    rebuilt); a member absent since the start is never written off, but
#    after the grace a spare may take its role.  Roles lost in a reshape's
#    target count too.  The away watcher checks these rules on a status
#    four times a second while a member is away: after its server's death
#    (and a flush of the array, so the engine meets the dead connection) it
#    is not in_sync; missing until it is back within BACK_BOUND of its
#    server being up; faulty not before member-timeout and at most
#    WRITE_OFF_SLACK after it (never when absent since the start); no spare
#    in its role within the grace; once written off, a usable spare begins
#    its recovery within RECOVER_BOUND while the array idles degraded; and
#    it is back in_sync by itself (quiet points do not wipe or re-add it).
#    A spare whose server dies holds no role: the engine shows it down,
#    reconnects it and uses it again once it has checked its superblock;
#    the tester does not count on it until the next quiet point (severed).
#  - Every control reply arrives within --reply-bound, is well formed, and
#    only carries error codes nbdkit-raid-control(7) lists under Replies;
#    after every management step (and every second from a monitor) the
#    status is self-consistent:
#    schema, reshape.state running exactly when sync_action is reshape,
#    members ordered by role with spares last, no two members on one role
#    (except a replace's rebuilding target), health matching member states
#    and the level's tolerance (during a reshape also the target's: failed
#    beyond it once data moved, degraded before), and a running action that
#    is not throttled makes progress within --stall-bound.
#  - After kill -9 of the array server (at random moments, also right
#    after management requests and during reshape/replace/rebuild) and a
#    restart (sometimes leaving one member out, within the redundancy that
#    is left after the roles the newest superblock record already lacks,
#    only with the journal policy; sometimes with the servers of away
#    members still down, within that redundancy too, outside a reshape:
#    the array starts degraded with them missing and they rejoin when
#    their server is back): every block holds its last durable
#    version or a later one (the in-flight write: old or new; with a member
#    left out its own bytes may be torn: a crash only promises to change
#    no block outside the writes in flight, nbdkit-raid-plugin(1), Crash
#    consistency); the server assembles; a
#    reshape that was frozen stays frozen and one that was running resumes
#    or is done, unless the documented start rules refuse it (a member it
#    adds lost before data moved: then it stays frozen).
#  - At quiet points: clients paused, faults healed, the array brought to
#    idle and optimal (a frozen reshape started or aborted; a reshape that
#    cannot be finished is a violation), server CPU near zero while idle,
#    `check` finds no mismatch, the export reads back as the model, and
#    after a clean stop the member images hold md's bytes: data and P/Q of
#    every row, checked by raidcheck.py from the superblocks' geometry and
#    each member's data_offset, and the data equal to the model (raid1:
#    every mirror's data area equal to the model).
#
#    With consistency bitmap/resync a dirty degraded restart is refused
#    (nbdkit-raid-plugin(1), Crash consistency) and then forced
#    (force=true): the write hole is the accepted risk there, so the
#    stripe rows of writes in flight at the kill are
#    exempt; every other block is still checked.  The same rows are exempt
#    when a member is lost after a dirty restart that did not need force,
#    before the resync it owes has run (the same documented risk), until
#    the next quiet point; with the journal policy nothing is exempt.
#
# On the first violation: print what failed (operation, offsets, expected
# vs got, the request that last changed a bad block and the state changes
# since), the last --history events of the schedule, the server log tail;
# keep the temp dir (every event of the epoch in events.log, the model of
# the export in model.bin); exit 1.  Exit 0 when the budget ends clean.  Things
# that deviate from the man pages but are not lies about data or state (an
# unknown plugin parameter, a refused "max") are printed as notes.
#
# Focus knobs, to reproduce one defect quickly: --ops (management and fault
# mix), --io (client mix), --level, --members, --chunk, --consistency,
# --slow (member latency/bandwidth), --nbd-fraction, --member-timeout,
# --kill-after, --doom, --phase, --epoch; --relax RULE,... logs violations
# of the named rules (member-order, reshape-state, health, data, mismatch,
# away, rejoin, ...) instead of stopping, to get past a defect already
# reported.  The default mix covers every op.

import argparse
import collections
import glob
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from bisect import bisect_right

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import nbd  # noqa: E402
import raidcheck  # noqa: E402
from e2e_common import describe_diff, nbd_errno, newest_record, pread_all  # noqa: E402
from e2e_kill import BS, gen_write  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
TOLERANCE = {0: 0, 4: 1, 5: 1, 6: 2}
NPARITY = {4: 1, 5: 1, 6: 2}
RAID5_LAYOUTS = ["left-asymmetric", "right-asymmetric", "left-symmetric",
                 "right-symmetric", "parity-first", "parity-last"]
RAID6_LAYOUTS = RAID5_LAYOUTS + ["left-asymmetric-6", "right-asymmetric-6",
                                 "left-symmetric-6", "right-symmetric-6", "parity-first-6"]
# Error codes nbdkit-raid-control(7) (Replies) allows for a well-formed
# request; EPROTO, ENOSYS (we only send valid lines and known ops), EACCES
# and EAGAIN (we are the owner, with few connections) are violations.
ALLOWED_ERRORS = {"EBUSY", "EINVAL", "ENOSPC", "ENODEV", "ENOENT", "EEXIST",
                  "ENOTSUP", "EIO"}
STATUS_FIELDS = {"uuid": str, "level": int, "layout": str, "chunk": int,
                 "raid_devices": int, "data_disks": int, "size": int, "health": str,
                 "sync_action": str, "members": list, "mismatch_count": int,
                 "events": int, "consistency": str}
SYNC_ACTIONS = {"idle", "frozen", "resync", "recover", "check", "repair", "reshape"}
MEMBER_STATES = {"in_sync", "faulty", "missing", "spare", "rebuilding", "stale"}

# The default op mix (name -> weight).  Management ops go through the
# control socket; fault ops act on member servers; kill ops on the array.
DEFAULT_OPS = {
    "status": 3, "wait": 3, "fail": 3, "remove": 3, "add": 4, "replace": 4,
    "check": 2, "repair": 2, "resize": 3, "set": 3, "reshape": 10, "freeze": 3,
    "start": 3, "abort": 2, "twin": 3,
    "error": 3, "error_permanent": 1, "heal": 2, "vanish": 2, "slow": 2,
    "kill": 2, "kill_missing": 1,
}
CLIENT_OPS = {"write": 26, "read": 22, "zero": 9, "trim": 8, "flush": 6,
              "fua": 8, "unaligned": 7, "extents": 10}


# Rules after whose violation the run cannot go on meaningfully: never
# relaxed by --relax all (only by name).
FATAL = {"stop", "settle", "client-hang", "reply-bound", "doom", "resume"}


class Violation(Exception):
    """The product broke a promise; the message says which."""


class Stopped(Exception):
    """The run is ending (another thread found a violation)."""


# ---------------------------------------------------------------------------
# The run: options, the event history, the first violation.

class Run:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.violation = None
        self.where = None
        self.events = collections.deque(maxlen=args.history)          # schedule
        self.io_events = collections.deque(maxlen=args.history // 2)  # client I/O
        self.relax = set(args.relax.split(",")) if args.relax else set()
        self.dodge = set(args.dodge.split(",")) if args.dodge else set()
        self.has_member_timeout = True
        self.san_env = sanitizer_env()  # LD_PRELOAD for the array server, or None
        self.changes = []           # (t, text) of accepted state-changing requests
        self.notes = []
        self.log = None             # the epoch's full event log (events.log)

    def note(self, text):
        """A deviation worth telling that is not what this tester hunts."""
        if text not in self.notes:
            self.notes.append(text)
            print("stress: note: " + text, flush=True)

    def now(self):
        return time.monotonic() - self.t0

    def event(self, who, text):
        t = self.now()
        line = "%8.3f %-8s %s" % (t, who, text)
        with self.lock:
            (self.io_events if who[0] == "c" and who[1:].isdigit() else
             self.events).append((t, line))
            if self.log is not None:
                self.log.write(line + "\n")
            if self.args.verbose:
                print(line, flush=True)

    def violate(self, what, rule=None):
        """Record the first violation and stop everything.  A rule named in
        --relax is only logged (to get past an already-reported defect)."""
        if rule and (rule in self.relax or "all" in self.relax and rule not in FATAL):
            self.event("relaxed", "[%s] %s" % (rule, what.splitlines()[0]))
            return
        with self.lock:
            if self.violation is None:
                self.violation = what
                self.where = "".join(traceback.format_stack(limit=6)[:-1])
        self.stop.set()
        raise Violation(what)

    def check_stop(self):
        if self.stop.is_set():
            raise Stopped()


# ---------------------------------------------------------------------------
# Processes: nbdkit servers we start and end.

class Launcher:
    """Every nbdkit is forked by this one long-lived thread: a server
    started from a short-lived thread gets SIGTERM when that thread ends
    (seen with nbdkit 1.32.5 here: a parent-death signal), which would make
    the tester itself stop servers at random."""
    lock = threading.Lock()
    q = None

    @classmethod
    def popen(cls, argv, logf, env=None):
        with cls.lock:
            if cls.q is None:
                import queue
                cls.q = queue.Queue()
                threading.Thread(target=cls.loop, name="launcher", daemon=True).start()
        done = {}
        ev = threading.Event()
        cls.q.put((argv, logf, env, done, ev))
        ev.wait()
        if "error" in done:
            raise done["error"]
        return done["p"]

    @classmethod
    def loop(cls):
        while True:
            argv, logf, env, done, ev = cls.q.get()
            try:
                done["p"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, env=env)
            except OSError as e:
                done["error"] = e
            ev.set()


def sanitizer_env():
    """The environment for an nbdkit that loads our plugin when it was
    built with --enable-sanitizers (SANITIZERS=yes, from automake's
    TESTS_ENVIRONMENT through test-stress.sh), as start_nbdkit in
    tests/functions.sh does: nbdkit itself is not instrumented, so the
    ASan runtime must come first in its library list (LD_PRELOAD), else
    the plugin refuses to load ("ASan runtime does not come first in
    initial library list"); libp11-kit is preloaded after it because its
    constructor calls newlocale before ASan initialises, which corrupts
    glibc's locale lock (json-c then deadlocks); leak detection is off.
    None when not a sanitizer build.  Only for the processes we start:
    never for python itself."""
    if os.environ.get("SANITIZERS") != "yes":
        return None
    asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True).stdout.strip()
    if not os.path.isabs(asan):
        raise SystemExit("stress: SANITIZERS=yes but gcc does not know libasan.so (%r)" % asan)
    p11 = sorted(glob.glob("/lib/*-linux-gnu/libp11-kit.so.0"))[:1]
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join([asan] + p11)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    return env


class Server:
    """One nbdkit process on a UNIX socket, in the foreground (-f), its log
    kept in a file.  env: its environment (None: ours)."""

    def __init__(self, name, dirpath, argv_tail, env=None):
        self.name = name
        self.sock = os.path.join(dirpath, name + ".sock")
        self.pidfile = os.path.join(dirpath, name + ".pid")
        self.log = os.path.join(dirpath, name + ".log")
        self.argv_tail = argv_tail
        self.env = env
        self.p = None

    def start(self, extra=()):
        for f in (self.sock, self.pidfile):
            if os.path.exists(f):
                os.unlink(f)
        self.last_extra = extra
        argv = ["nbdkit", "-f", "-U", self.sock, "-P", self.pidfile,
                "--log=stderr"] + list(self.argv_tail) + list(extra)
        with open(self.log, "a") as logf:
            logf.write("==== %s\n" % " ".join(argv))
            logf.flush()
            self.p = Launcher.popen(argv, logf, self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0 \
               and os.path.exists(self.sock):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def alive(self):
        return self.p is not None and self.p.poll() is None

    @property
    def pid(self):
        return self.p.pid

    def kill9(self):
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
        if self.p is not None:
            self.p.wait(30)

    def stop(self, bound=30):
        """SIGTERM; True when it exited within the bound (else SIGKILL)."""
        if not self.alive():
            return True
        self.p.terminate()
        try:
            self.p.wait(bound)
            return True
        except subprocess.TimeoutExpired:
            self.kill9()
            return False

    def cpu_ticks(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def log_tail(self, n=40):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(collections.deque(f, maxlen=n))
        except OSError:
            return "(no log)"


class Device:
    """A member or spare the tester owns: a sparse file, served directly or
    by its own nbdkit (error filter: fails every request while errfile
    exists; rate filter: bandwidth set at run time in ratefile; delay
    filter: fixed latency chosen when the server starts)."""

    def __init__(self, d, name, size, nbd_served):
        self.name = name
        self.path = os.path.join(d, name + ".img")
        self.size = size
        self.nbd = nbd_served
        self.errfile = os.path.join(d, name + ".err")
        self.ratefile = os.path.join(d, name + ".rate")
        self.delay_ms = 0
        with open(self.path, "wb") as f:
            f.truncate(size)
        self.srv = None
        self.slow_rate = 0
        self.killed = False         # its server was killed by us and is not back
        if nbd_served:
            self.srv = Server(name, d, [])
            self.spec = "nbd+unix:///?socket=" + self.srv.sock
        else:
            self.spec = self.path

    def start(self, delay_ms=None):
        if not self.nbd:
            return True
        if delay_ms is not None:
            self.delay_ms = delay_ms
        self.killed = False
        tail = ["--filter=error", "--filter=rate", "--filter=delay", "file", self.path,
                "error-file=" + self.errfile, "error-rate=1", "rate=100G",
                "rate-file=" + self.ratefile]
        if self.delay_ms:
            tail += ["rdelay=%dms" % self.delay_ms, "wdelay=%dms" % self.delay_ms]
        self.srv.argv_tail = tail
        return self.srv.start()

    def set_rate(self, bits):
        tmp = "%s.%d.new" % (self.ratefile, threading.get_ident())
        with open(tmp, "w") as f:
            f.write("%d\n" % bits)
        os.rename(tmp, self.ratefile)

    def wipe(self):
        """Back to a blank sparse file (an admin's --zero-superblock)."""
        with open(self.path, "r+b") as f:
            f.truncate(0)
            f.truncate(self.size)


# ---------------------------------------------------------------------------
# The control socket (nbdkit-raid-control(7)).

class ServerGone(Exception):
    """The control connection failed because the server is down."""


class Control:
    """One control connection (reconnected when it breaks)."""

    def __init__(self, ep, who):
        self.ep = ep
        self.who = who
        self.s = None
        self.buf = b""
        self.n = 0

    def close(self):
        if self.s:
            self.s.close()
        self.s = None
        self.buf = b""

    def _connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.ep.ctl)
        self.s = s
        self.gen = self.ep.gen
        self.buf = b""

    def call(self, op, log=True, bound=None, **args):
        """Send {"op": op, ...}; return the checked reply.  Raises
        ServerGone when the server is down on purpose (kill, stop)."""
        run = self.ep.run
        bound = bound or run.args.reply_bound
        self.n += 1
        rid = "%s-%d" % (self.who, self.n)
        req = dict(op=op, id=rid, **args)
        t = time.monotonic()
        try:
            if self.s is not None and self.gen != self.ep.gen:
                self.close()            # a connection to a server since restarted
            if self.s is None:
                self._connect()
            self.s.settimeout(bound)
            self.s.sendall((json.dumps(req) + "\n").encode())
            while b"\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed")
                self.buf += chunk
        except socket.timeout:
            self.close()
            if self.ep.server_down():
                raise ServerGone()
            run.violate("control request %s got no reply within %.0f s" % (
                json.dumps(req), bound), rule="reply-bound")
            raise ServerGone()
        except OSError as e:
            self.close()
            if self.ep.server_down() or getattr(self, "gen", None) != self.ep.gen:
                raise ServerGone()
            self.ep.check_server_alive(grace=10)
            run.violate("control request %s failed: %s (server pid %d alive)" % (
                json.dumps(req), e, self.ep.srv.pid))
        line, self.buf = self.buf.split(b"\n", 1)
        dt = time.monotonic() - t
        reply = self._parse(req, line)
        if log:
            run.event(self.who, "%s -> %s (%.2fs)" % (brief_req(req), brief_reply(reply), dt))
        if reply["ok"] and op in STATEFUL:
            run.changes.append((t - run.t0, "%s ok at t=%.3f-%.3f" % (
                brief_req(req)[:80], t - run.t0, t - run.t0 + dt)))
        return reply

    def _parse(self, req, line):
        run = self.ep.run
        try:
            r = json.loads(line.decode())
        except ValueError as e:
            run.violate("reply to %s is not JSON (%s): %r" % (json.dumps(req), e, line[:300]))
        bad = reply_problems(req, r)
        if bad:
            run.violate("malformed reply to %s: %s; reply: %s" % (
                json.dumps(req), bad, json.dumps(r)[:1500]), rule="reply-schema")
        if r["ok"] and req["op"] in ("status", "wait", "reshape"):
            if getattr(self.ep, "by_spec", None):
                self.ep.own_specs(r)        # full specs from here on
            self.ep.saw_status(r, "reply to " + brief_req(req))
        return r


def brief_req(req):
    args = {k: v for k, v in req.items() if k not in ("op", "id")}
    return req["op"] + (json.dumps(args, separators=(",", ":")) if args else "")


def brief_reply(r):
    if not r.get("ok"):
        return "%s %s" % (r.get("error"), r.get("message"))
    if "health" in r:
        return "ok %s" % brief_status(r)
    return "ok"


def brief_status(st):
    rs = st.get("reshape")
    rtxt = ""
    if rs:
        rtxt = " reshape %s %d/%d to %s" % (rs.get("state"), rs.get("position", -1),
                                            rs.get("total", -1), geom_str(rs.get("to") or {}))
    return "raid%s %s %s/%d disks, %s %s size %d%s [%s]" % (
        st.get("level"), st.get("layout"), st.get("chunk"), st.get("raid_devices", 0),
        st.get("health"), st.get("sync_action"), st.get("size", 0), rtxt,
        " ".join("%s:%s" % (m.get("role"), m.get("state")) for m in st.get("members", [])))


def geom_str(g):
    return "raid%s/%s/%s/%s" % (g.get("level"), g.get("layout"), g.get("chunk"),
                                g.get("raid_devices"))


def reply_problems(req, r):
    if not isinstance(r, dict):
        return "not an object"
    if r.get("id") != req["id"]:
        return "id %r, sent %r" % (r.get("id"), req["id"])
    if not isinstance(r.get("ok"), bool):
        return "no boolean ok"
    if not r["ok"]:
        if not isinstance(r.get("message"), str) or not r["message"]:
            return "error without message"
        if r.get("error") not in ALLOWED_ERRORS:
            return ("error code %r is not one nbdkit-raid-control(7) lists for this request"
                    % r.get("error"))
        return None
    if req["op"] in ("status", "wait", "reshape"):
        return "; ".join(schema_problems(r)) or None
    return None


def schema_problems(st):
    out = []
    for k, t in STATUS_FIELDS.items():
        if not isinstance(st.get(k), t) or (t is int and isinstance(st.get(k), bool)):
            out.append("field %s is %r" % (k, st.get(k)))
    if out:
        return out
    if st["health"] not in ("optimal", "degraded", "failed"):
        out.append("health %r" % st["health"])
    if st["sync_action"] not in SYNC_ACTIONS:
        out.append("sync_action %r" % st["sync_action"])
    if st["consistency"] not in ("journal", "bitmap", "resync"):
        out.append("consistency %r" % st["consistency"])
    for m in st["members"]:
        if not isinstance(m, dict) or m.get("state") not in MEMBER_STATES or \
           not (m.get("role") is None or isinstance(m.get("role"), int)) or \
           not (m.get("spec") is None or isinstance(m.get("spec"), str)) or \
           not isinstance(m.get("errors"), int) or not isinstance(m.get("data_offset"), int):
            out.append("member entry %s" % json.dumps(m))
    rs = st.get("reshape", "absent")
    if rs == "absent":
        out.append("no reshape field")
    elif rs is not None:
        if not isinstance(rs, dict) or rs.get("state") not in ("frozen", "running") or \
           rs.get("direction") not in ("forward", "backward") or \
           not all(isinstance(rs.get(k), int) for k in ("position", "total", "boundary")) or \
           not all(isinstance(rs.get(k), dict) and
                   all(f in rs[k] for f in ("level", "layout", "chunk", "raid_devices"))
                   for k in ("from", "to")):
            out.append("reshape %s" % json.dumps(rs))
        elif not 0 <= rs["position"] <= rs["total"]:
            out.append("reshape position %d outside [0, total %d]" % (rs["position"], rs["total"]))
    pg = st.get("progress", "absent")
    if pg == "absent":
        out.append("no progress field")
    elif pg is not None:
        if not isinstance(pg, dict) or not all(isinstance(pg.get(k), int)
                                               for k in ("done", "total", "rate")):
            out.append("progress %s" % json.dumps(pg))
        elif not 0 <= pg["done"] <= pg["total"]:
            out.append("progress done %d outside [0, total %d]" % (pg["done"], pg["total"]))
    return out


def tolerance(level, raid_devices):
    if level == 1:
        return raid_devices - 1
    return TOLERANCE.get(level, 0)


def down_roles(st, rd=None):
    """Roles in [0, rd) (default: the current raid_devices) with no in_sync
    member.  A role keeps its number in a reshape's target layout."""
    up = {m["role"] for m in st["members"] if m["role"] is not None and m["state"] == "in_sync"}
    return {r for r in range(st["raid_devices"] if rd is None else rd) if r not in up}


def lost_roles(st):
    """Roles without an in_sync member in the current layout or in a
    reshape's target (a member a grow adds can be lost too)."""
    rs = st.get("reshape")
    return down_roles(st, max(st["raid_devices"], rs["to"]["raid_devices"] if rs else 0))


def expected_health(st):
    """Health from the member states: failed when the current layout lacks
    more roles than its level tolerates; during a reshape the target counts
    too (failed beyond its tolerance once it holds data, position > 0;
    before that the current layout alone serves, so degraded)."""
    n0 = len(down_roles(st))
    if n0 > tolerance(st["level"], st["raid_devices"]):
        return "failed"
    rs = st["reshape"]
    n1 = len(down_roles(st, rs["to"]["raid_devices"])) if rs else 0
    if rs and n1 > tolerance(rs["to"]["level"], rs["to"]["raid_devices"]):
        return "failed" if rs["position"] > 0 else "degraded"
    return "degraded" if n0 or n1 else "optimal"


def consistency_problems(st):
    """The status self-consistency rules, as (rule, text): the reshape is
    running exactly when sync_action is reshape, members are ordered by
    role with spares last, and the rest below (nbdkit-raid-control(7),
    STATUS FIELDS; nbdkit-raid-plugin(1), Management)."""
    out = []
    rs = st["reshape"]
    running = rs is not None and rs["state"] == "running"
    if running != (st["sync_action"] == "reshape"):
        out.append(("reshape-state", "reshape.state is %s but sync_action is %s" % (
            rs and rs["state"], st["sync_action"])))
    pg = st["progress"]
    if running and pg and pg["action"] == "reshape" and pg["done"] != rs["position"]:
        out.append(("reshape-progress", "progress.done %d but reshape.position %d" % (
            pg["done"], rs["position"])))
    roles = [m["role"] for m in st["members"]]
    ranked = [r for r in roles if r is not None]
    first_none = roles.index(None) if None in roles else len(roles)
    if ranked != sorted(ranked) or any(r is not None for r in roles[first_none:]):
        out.append(("member-order", "members not ordered by role with spares last: roles %s"
                    % roles))
    by_role = collections.defaultdict(list)
    for m in st["members"]:
        if m["role"] is not None:
            by_role[m["role"]].append(m["state"])
    for r, states in sorted(by_role.items()):
        if len(states) > 1 and not (len(states) == 2 and states.count("rebuilding") == 1):
            out.append(("role-unique", "role %d is held by %d members (%s)" % (
                r, len(states), ", ".join(states))))
    nroles = max(st["raid_devices"], rs["to"]["raid_devices"] if rs else 0)
    for m in st["members"]:
        if m["role"] is not None and not 0 <= m["role"] < nroles:
            out.append(("member-role", "member %s (%s) has role %d, outside the array's %d "
                        "roles" % (m["spec"], m["state"], m["role"], nroles)))
    for m in st["members"]:
        if m["role"] is None and m["state"] in ("in_sync", "rebuilding"):
            out.append(("member-state", "member %s is %s without a role" % (m["spec"], m["state"])))
    if st["level"] in NPARITY and st["data_disks"] != st["raid_devices"] - NPARITY[st["level"]]:
        out.append(("geometry", "data_disks %d with raid%d of %d members" % (
            st["data_disks"], st["level"], st["raid_devices"])))
    want = expected_health(st)
    if st["health"] != want:
        out.append(("health", "health %s but the member states say %s: role(s) %s lack an "
                    "in_sync member (raid%d of %d tolerates %d%s)" % (
                        st["health"], want, sorted(lost_roles(st)), st["level"],
                        st["raid_devices"], tolerance(st["level"], st["raid_devices"]),
                        "; the reshape's target raid%d of %d tolerates %d, position %d" % (
                            rs["to"]["level"], rs["to"]["raid_devices"],
                            tolerance(rs["to"]["level"], rs["to"]["raid_devices"]),
                            rs["position"]) if rs else "")))
    return out


# ---------------------------------------------------------------------------
# The model and the ownership of units.

class Units:
    """The export cut into units owned by one client thread each: per slab,
    A_PER 4 KiB units per thread (interleaved), then one big unit (about
    two stripe rows + 8 KiB, so whole-unit writes cover complete rows) per
    thread, rotating."""
    A_PER = 32

    def __init__(self, max_size, threads, big):
        self.by_thread = [[] for _ in range(threads)]
        off, k = 0, 0
        while off < max_size:
            for i in range(threads * self.A_PER):
                if off + BS <= max_size:
                    self.by_thread[i % threads].append((off, BS))
                off += BS
            for i in range(threads):
                if off + big <= max_size:
                    self.by_thread[(i + k) % threads].append((off, big))
                off += big
            k += 1
        self.ends = [[o + n for o, n in us] for us in self.by_thread]

    def pick(self, t, limit, x):
        """A unit of thread t that ends at or below limit (x in [0,1))."""
        n = bisect_right(self.ends[t], limit)
        if n == 0:
            return None
        return self.by_thread[t][int(x * n)]


class Conn:
    """An NBD connection that is closed at the end of a with block, also on
    an error (an open connection keeps nbdkit from exiting on SIGTERM)."""

    def __init__(self, uri):
        self.h = nbd.NBD()
        self.h.connect_uri(uri)

    def __enter__(self):
        return self.h

    def __exit__(self, *exc):
        try:
            self.h.shutdown()
        except Exception:
            pass
        del self.h                  # the handle closes when it is freed


def blocks_of(off, n):
    return range(off // BS, (off + n - 1) // BS + 1)


# ---------------------------------------------------------------------------
# Client threads.

class Client(threading.Thread):
    """One NBD connection doing random I/O on its own units, checked
    against the model.  Pauses at op boundaries when the epoch asks."""

    def __init__(self, ep, t):
        super().__init__(name="client%d" % t, daemon=True)
        self.ep = ep
        self.t = t
        self.who = "c%d" % t
        self.rng = random.Random("%d:%d:client:%d" % (ep.run.args.seed, ep.n, t))
        self.h = None
        self.hist = {}           # block -> [versions since the last durable one]
        self.inflight = None     # (off, n, data|None) of the request on the wire
        self.busy = False
        self.seq = 0
        self.current = None
        self.unknown = False     # a request failed on a doomed array
        self.touched = {}        # block -> (time, request) that last changed it
        self.ops_done = 0

    # -- connection ------------------------------------------------------
    def connect(self):
        self.close()
        h = nbd.NBD()
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        self.gen = self.ep.gen
        h.connect_uri(self.ep.uri)
        self.h = h
        self.size = h.get_size()
        self.can_trim = h.can_trim()
        self.can_zero = h.can_zero()
        self.can_fua = h.can_fua()
        self.can_fast_zero = h.can_fast_zero()

    def reconnect(self):
        try:
            self.connect()
        except nbd.Error as e:
            if self.ep.killing or self.ep.stopping or self.ep.doomed:
                self.close()
                time.sleep(0.05)
                return
            self.ep.check_server_alive(grace=10)
            self.ep.run.violate("client %s: cannot connect: %s" % (self.who, e))

    def close(self):
        if self.h is not None:
            try:
                self.h.shutdown()
            except Exception:
                pass
        self.h = None                # the handle closes when it is freed

    # -- the loop --------------------------------------------------------
    def run(self):
        try:
            while not self.ep.run.stop.is_set() and not self.ep.clients_done:
                if self.ep.gate.checkpoint(self):
                    continue
                if self.h is None or self.gen != self.ep.gen or self.ops_done % 300 == 299:
                    self.reconnect()
                    if self.h is None:
                        continue
                self.one_op()
        except (Violation, Stopped):
            pass
        except Exception:
            try:
                self.ep.run.violate("tester bug in %s: %s" % (self.who, traceback.format_exc()))
            except Violation:
                pass
        finally:
            self.close()
            self.ep.gate.leave(self)

    def one_op(self):
        ep = self.ep
        r = [self.rng.random() for _ in range(6)]
        op = weighted(self.ep.run.args.io_weights, r[0])
        self.busy = True
        self.seq += 1
        try:
            limit = min(ep.limit, self.size, ep.run.args.hot or self.size)
            unit = ep.units.pick(self.t, limit, r[1])
            if unit is None:
                return
            self.current = (op, unit, time.monotonic())
            getattr(self, "op_" + op)(unit, r)
            self.ops_done += 1
        except nbd.Error as e:
            self.request_failed(op, e)
        finally:
            self.inflight = None
            self.current = None
            self.busy = False

    def request_failed(self, op, e):
        ep = self.ep
        if ep.killing or ep.doomed:
            # The server was killed (outcome of the request on the wire is
            # old-or-new, kept in self.inflight until the kill check), or
            # the array is failed on purpose (outcome unknown).
            if ep.doomed:
                self.unknown = True
                time.sleep(0.05)
            if self.inflight is not None and ep.killing:
                self.ep.gate.park_inflight(self, self.inflight)
            self.close()
            return
        ep.check_server_alive(grace=10)
        cur = self.current
        ep.run.violate("client %s: %s of [%d, +%d) failed: %s (errno %s) while the array "
                       "was within redundancy" % (self.who, op, cur[1][0] if cur else -1,
                                                  cur[1][1] if cur else -1, e, nbd_errno(e)),
                       rule="client-error")

    # -- range choice -----------------------------------------------------
    @staticmethod
    def aligned_range(unit, x, y):
        off, n = unit
        if n == BS or x < 0.3:
            return off, n
        nb = n // BS
        s = int(x * nb) % nb
        e = s + 1 + int(y * (nb - s))
        return off + s * BS, (min(e, nb) - s) * BS

    @staticmethod
    def byte_range(unit, x, y):
        off, n = unit
        s = int(x * (n - 1))
        m = 1 + int(y * (n - s - 1))
        return off + s, m

    # -- model updates ---------------------------------------------------
    def apply(self, off, data, durable):
        """An acknowledged write of data at off: remember the old versions
        of its blocks that are not durable, then update the model."""
        model = self.ep.model
        n = len(data)
        # FUA makes this write durable, not the earlier bytes of a block it
        # only partly covers: such a block keeps its history.
        whole = {b for b in blocks_of(off, n) if off <= b * BS and (b + 1) * BS <= off + n}
        for b in blocks_of(off, n):
            if b not in self.hist and not (durable and b in whole):
                self.hist[b] = [bytes(model[b * BS:(b + 1) * BS])]
        model[off:off + n] = data
        t_issue = self.current[2] - self.ep.run.t0 if self.current else 0
        st = self.ep.last_status
        what = (t_issue, "%s [%d,+%d)%s issued at t=%.3f (sync_action then: %s)" % (
            self.current[0] if self.current else "?", off, n, " FUA" if durable else "",
            t_issue, st and st["sync_action"]))
        for b in blocks_of(off, n):
            self.touched[b] = what
            if durable and b in whole:
                self.hist.pop(b, None)
            else:
                self.hist[b].append(bytes(model[b * BS:(b + 1) * BS]))

    def write(self, off, data, flags, kind):
        self.inflight = (off, len(data), data)
        self.h.pwrite(data, off, flags)
        self.apply(off, data, bool(flags & nbd.CMD_FLAG_FUA))
        self.ep.run.event(self.who, "%s [%d,+%d)%s" % (
            kind, off, len(data), " FUA" if flags & nbd.CMD_FLAG_FUA else ""))

    def verify_read(self, off, n, why):
        got = pread_all(self.h, off, n)
        want = bytes(self.ep.model[off:off + n])
        if got != want:
            self.ep.read_mismatch(self.who, why, off, got, want)

    def fua_flag(self, x):
        return nbd.CMD_FLAG_FUA if self.can_fua and x < 0.5 else 0

    # -- the ops ---------------------------------------------------------
    def op_write(self, unit, r):
        off, n = self.aligned_range(unit, r[2], r[3])
        self.seq += 1
        data = gen_write(self.ep.run.args.seed, self.ep.writer_id(self.t), self.seq, off, n, "b")
        self.write(off, data, 0, "write")
        if r[4] < 0.3:
            self.verify_read(off, n, "read-back after write")

    def op_fua(self, unit, r):
        off, n = self.aligned_range(unit, r[2], r[3])
        self.seq += 1
        data = gen_write(self.ep.run.args.seed, self.ep.writer_id(self.t), self.seq, off, n, "b")
        self.write(off, data, self.fua_flag(0), "write")

    def op_unaligned(self, unit, r):
        off, n = self.byte_range(unit, r[2], r[3])
        self.seq += 1
        data = gen_write(self.ep.run.args.seed, self.ep.writer_id(self.t), self.seq, off, n, "u")
        self.write(off, data, self.fua_flag(r[4] * 4), "uwrite")

    def op_zero(self, unit, r):
        if not self.can_zero:
            return
        off, n = (self.aligned_range if r[4] < 0.7 else self.byte_range)(unit, r[2], r[3])
        flags = self.fua_flag(r[5])
        if r[5] > 0.8:
            flags |= nbd.CMD_FLAG_NO_HOLE
        fast = self.can_fast_zero and 0.6 < r[5] < 0.7
        self.inflight = (off, n, bytes(n))
        try:
            self.h.zero(n, off, flags | (nbd.CMD_FLAG_FAST_ZERO if fast else 0))
        except nbd.Error as e:
            if fast and nbd_errno(e) in (95, 38):       # ENOTSUP: fast zero declined
                self.inflight = None
                return
            raise
        self.apply(off, bytes(n), bool(flags & nbd.CMD_FLAG_FUA))
        self.ep.run.event(self.who, "zero [%d,+%d)%s" % (off, n, " FUA" if flags & 1 else ""))
        if r[4] > 0.5:
            self.verify_read(off, n, "read-back after zero")

    def op_trim(self, unit, r):
        if not self.can_trim:
            return
        off, n = (self.aligned_range if r[4] < 0.7 else self.byte_range)(unit, r[2], r[3])
        flags = self.fua_flag(r[5])
        self.inflight = (off, n, bytes(n))
        self.h.trim(n, off, flags)
        # Trimmed bytes read back as zeros (nbdkit-raid-plugin(1), Serving).
        self.apply(off, bytes(n), bool(flags & nbd.CMD_FLAG_FUA))
        self.ep.run.event(self.who, "trim [%d,+%d)" % (off, n))
        if r[4] > 0.5:
            self.verify_read(off, n, "read-back after trim")

    def op_flush(self, unit, r):
        self.h.flush()
        self.hist.clear()       # every write of this thread was acked before it

    def op_read(self, unit, r):
        off, n = self.byte_range(unit, r[2], r[3]) if r[4] < 0.3 else unit
        self.verify_read(off, n, "read")

    def op_extents(self, unit, r):
        off, n = unit
        ents = []

        def cb(ctx, o, entries, err):
            if ctx == nbd.CONTEXT_BASE_ALLOCATION:
                ents.append((o, list(entries)))
            return 0
        self.h.block_status(n, off, cb)
        model = self.ep.model
        for o, e in ents:
            pos = o
            for i in range(0, len(e) - 1, 2):
                ln, fl = e[i], e[i + 1]
                a, b = max(pos, off), min(pos + ln, off + n)
                if a < b and fl & (nbd.STATE_HOLE | nbd.STATE_ZERO) and \
                   model[a:b].count(0) != b - a:
                    k = next(j for j in range(a, b) if model[j])
                    self.ep.run.violate(
                        "client %s: block status says [%d, +%d) is %s but byte %d holds "
                        "0x%02x (written, not zero)%s" % (
                            self.who, pos, ln, flag_names(fl), k, model[k],
                            self.ep.reshape_note()), rule="extents")
                pos += ln


def flag_names(fl):
    return "|".join(n for b, n in ((1, "HOLE"), (2, "ZERO")) if fl & b) or "DATA"


def weighted(weights, x):
    total = sum(weights.values())
    acc = 0
    for k, w in weights.items():
        acc += w
        if x * total < acc:
            return k
    return k


class Gate:
    """Pausing the clients at op boundaries, with a bound."""

    def __init__(self, ep):
        self.ep = ep
        self.cond = threading.Condition()
        self.paused = False
        self.parked = set()
        self.gone = set()
        self.at_kill = []                # (client, (off, n, data)) in flight
        self.disconnect = False

    def checkpoint(self, c):
        with self.cond:
            if not self.paused:
                return False
            if self.disconnect:
                c.close()           # nbdkit waits for NBD clients on SIGTERM
            self.parked.add(c)
            self.cond.notify_all()
            while self.paused and not self.ep.run.stop.is_set() and not self.ep.clients_done:
                self.cond.wait(0.2)
            self.parked.discard(c)
            return True

    def park_inflight(self, c, inflight):
        with self.cond:
            self.at_kill.append((c, inflight))

    def leave(self, c):
        with self.cond:
            self.gone.add(c)
            self.cond.notify_all()

    def pause(self, why, disconnect=False):
        ep = self.ep
        with self.cond:
            self.paused = True
            self.disconnect = disconnect
            deadline = time.monotonic() + ep.run.args.reply_bound * 2
            while len(self.parked | self.gone) < len(ep.clients):
                ep.run.check_stop()
                left = deadline - time.monotonic()
                if left <= 0:
                    stuck = [(c.who, c.current[0], c.current[1],
                              time.monotonic() - c.current[2])
                             for c in ep.clients if c not in self.parked and c.current]
                    ep.run.violate("clients did not finish their requests within %.0f s "
                                   "(pausing for %s): %s" % (
                                       ep.run.args.reply_bound * 2, why,
                                       "; ".join("%s %s [%d,+%d) for %.1f s" % (
                                           w, o, u[0], u[1], d) for w, o, u, d in stuck)),
                                   rule="client-hang")
                self.cond.wait(min(left, 0.2))

    def resume(self):
        with self.cond:
            self.paused = False
            self.cond.notify_all()


# ---------------------------------------------------------------------------
# Epoch: one array from creation to its end.

class Epoch:
    def __init__(self, run, n, dirpath):
        self.run = run
        self.n = n
        self.dir = dirpath
        a = run.args
        self.rng = random.Random("%d:%d:setup" % (a.seed, n))
        self.killing = False
        self.stopping = False
        self.doomed = False
        self.clients_done = False
        self.injected = set()          # devices with an error file
        # Members whose server died while they held a role (device -> Away):
        # away from then on, so not usable, until a status taken after
        # their server is back shows them in_sync again (reconnected and
        # resynced by the engine itself), or written off (faulty), or no
        # longer in the role (nbdkit-raid-plugin(1), Members that come and
        # go).  The away watcher checks what the engine does with them.
        self.away = {}
        # Spares whose server died while the array ran: only a member with
        # a role is reconnected, so their connection stays dead until the
        # array server starts again (the engine fails them when it uses
        # them).  They hold no role: no redundancy is lost.
        self.severed = set()
        self.wrote_off = {}            # role -> [t, device, idle since]: a spare owes it
        self.fault_lock = threading.RLock()
        self.limit_lock = threading.Lock()
        self.status_lock = threading.Lock()
        self.last_status = None
        self.progress_seen = None      # (key, value, since)
        self.left_out = None
        self.hole = []                 # write-hole rows since the last quiet point
        self.hole_open = False         # ... and a member was lost since
        self.timers = []
        self.gen = 1
        self.died = False
        self.last_quiet = run.now()     # changes of earlier epochs are not ours
        self.nquiet = 0
        self.limit = 0
        self.srv = None

    # -- setup -----------------------------------------------------------
    def setup(self):
        """Seeded array: geometry, devices, create, serve, prefill."""
        r = [self.rng.random() for _ in range(16)]
        g = self.choose(r)
        self.make_devices(g)
        self.threads = self.run.args.threads or 3 + int(r[8] * 3)
        # member-timeout also bounds every NBD member operation (connect,
        # superblock and journal reads included): a member slowed to a few
        # MB/s would time out and go away by itself, a loss the tester did
        # not inject and cannot count.  Slow members get the long bound.
        self.member_timeout = [2, 5, 10, 30][int(r[9] * 4)]
        if any(d.slow_rate or d.delay_ms for d in self.devs):
            self.member_timeout = 30
        if self.run.args.member_timeout is not None:
            self.member_timeout = self.run.args.member_timeout
        members = self.devs[:g["nmem"]]
        self.create(g, members)
        # Only the array server loads our (maybe instrumented) plugin; the
        # member servers run nbdkit's own file plugin and filters.
        self.srv = Server("raid", self.dir, [self.run.args.plugin], env=self.run.san_env)
        self.ctl = os.path.join(self.dir, "ctl")
        self.start_server([d.spec for d in members])
        st = self.status()
        self.size = self.limit = st["size"]
        self.model = bytearray(g["msize"] * len(self.devs))
        row = g["chunk"] * max(1, st["data_disks"])
        self.units = Units(len(self.model), self.threads, min(2 * row, 2 * MiB) + 2 * BS)
        self.run.event("setup", "raid%d %s chunk %d, %d members + %d spares of %d MiB, "
                       "%s, %d clients, member-timeout %d, size %d" % (
                           g["level"], g["layout"], g["chunk"], g["nmem"],
                           len(self.devs) - g["nmem"], g["msize"] // MiB, g["cons"],
                           self.threads, self.member_timeout, self.size))
        self.prefill(r[10])
        for d in self.devs:
            if d.slow_rate:
                d.set_rate(d.slow_rate)                     # bits/s

    def choose(self, r):
        """The array's parameters from the draws r and the options."""
        a = self.run.args
        level = a.level if a.level is not None else [4, 5, 5, 6, 6, 0, 1][int(r[0] * 7)]
        if level == 1:
            nmem = 2
        elif level == 0:
            nmem = a.members or 2 + int(r[1] * 3)
        else:
            lo = 4 if level == 6 else 3
            nmem = a.members or lo + int(r[1] * (7 - lo))
        g = {"level": level, "nmem": nmem, "chunk": a.chunk or 4 * KiB << int(r[2] * 7),
             "cons": a.consistency or ["journal", "journal", "bitmap", "resync"][int(r[3] * 4)],
             "nspares": 2 + int(r[4] * 2)}
        msize = a.member_size * MiB if a.member_size else \
            [16, 24, 32, 48, 64][int(r[5] * 5)] * MiB
        while msize * (nmem + g["nspares"]) > 320 * MiB and msize > 16 * MiB:
            msize //= 2
        layouts = {5: RAID5_LAYOUTS, 6: RAID6_LAYOUTS[:6]}.get(level)
        g.update(msize=msize, doff=8 * MiB if msize >= 24 * MiB else 6 * MiB,
                 layout=layouts[int(r[6] * len(layouts))] if layouts else None,
                 nbd_frac=a.nbd_fraction if a.nbd_fraction is not None else 0.3 + 0.6 * r[7])
        self.level, self.chunk, self.cons = level, g["chunk"], g["cons"]
        # raid0 always takes over to parity; raid1 in half the epochs,
        # and serves as mirrors in the others.
        self.takeover = level == 0 or (level == 1 and r[11] < 0.5)
        return g

    def make_devices(self, g):
        """Members and spares: files, or NBD exports (some slow: latency
        from the delay filter, or bandwidth from the rate filter)."""
        a = self.run.args
        rr = random.Random("%d:%d:devices" % (a.seed, self.n))
        self.devs = []
        for i in range(g["nmem"] + g["nspares"]):
            is_nbd = rr.random() < g["nbd_frac"]
            d = Device(self.dir, "d%d" % i, g["msize"], is_nbd)
            slow = a.slow if a.slow is not None else (0.5 if rr.random() < 0.3 else 0)
            is_slow = is_nbd and rr.random() < slow * 2
            kind = {"delay": 0.0, "rate": 1.0}.get(a.slow_kind, 0.5)
            delay = int(rr.choice([1, 2, 5, 10, 20])) if is_slow and rr.random() >= kind else 0
            if not d.start(delay):
                raise RuntimeError("member server %s did not start: %s" % (
                    d.name, d.srv.log_tail(10)))
            # bandwidth limits start after create and prefill (see setup)
            d.slow_rate = rr.choice([8, 16, 32]) * MiB if is_slow and not delay else 0
            self.devs.append(d)
        # The tester's own model of the members: every device by the full
        # spec it was created with (and, for files, the canonical path the
        # engine may report).  Specs sent to the engine always come from
        # here, never from a status reply (see dev_of).
        self.by_spec = {d.spec: d for d in self.devs}
        for d in self.devs:
            if not d.nbd:
                self.by_spec.setdefault(os.path.realpath(d.path), d)

    def dev_of(self, spec):
        """Our device that a spec shown in a status reply names, or None.
        The engine shows an open member's spec as given, but a member whose
        device it does not hold (missing, or faulty and not opened at the
        start) by the hint kept in the superblock: the last 44 bytes of its
        last spec after "..." when the spec is 48 bytes or longer
        (sb_set_spec_hint; an NBD URI of ours always is).  That hint is no
        spec: naming it to nbdkit or to a request fails."""
        if not spec:
            return None
        d = self.by_spec.get(spec)
        if d is None and spec.startswith("..."):
            tail = spec[3:]
            hits = {x for k, x in self.by_spec.items() if k.endswith(tail)}
            d = hits.pop() if len(hits) == 1 else None
        return d

    def own_specs(self, st):
        """Rewrite each member's spec in a status reply to the full spec of
        the device of ours it names (the shown text kept as shown_spec when it
        differs), so that every later use (requests, restarts, lookups) names
        the device as we created it.  A spec that is none of ours is left."""
        for m in st.get("members", []):
            d = self.dev_of(m.get("spec"))
            if d is not None and m["spec"] != d.spec:
                m["shown_spec"] = m["spec"]
                m["spec"] = d.spec

    def create(self, g, members):
        a = self.run.args
        argv = [a.nbdraid, "create", "--level=%d" % g["level"], "--chunk=%d" % g["chunk"],
                "--consistency=" + g["cons"], "--data-offset=%d" % g["doff"]]
        if g["layout"]:
            argv.append("--layout=" + g["layout"])
        argv += [d.spec for d in members]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        self.run.event("setup", "epoch %d: %s -> %d %s" % (
            self.n, " ".join(argv[1:6] + ["(%d members: %s)" % (len(members), " ".join(
                ("nbd:%s%s" % (d.name, "/%dms" % d.delay_ms if d.delay_ms else "")
                 if d.nbd else d.name) for d in members))]),
            p.returncode, (p.stdout + p.stderr).strip().splitlines()[-1:]))
        if p.returncode != 0:
            self.run.violate("nbdraid create failed: %s" % (p.stdout + p.stderr))

    def start_server(self, specs, expect_ok=True):
        a = self.run.args
        extra = list(specs) + ["control=" + self.ctl]
        if a.speed_max:
            extra.append("speed-max=%d" % a.speed_max)
        if self.run.has_member_timeout:
            extra.append("member-timeout=%d" % self.member_timeout)
        self.srv.argv_tail = (["-v", "-D", "raid.verbose=1"] if a.server_verbose else []) + [a.plugin]
        ok = self.srv.start(extra)
        if not ok and "connect: Connection refused" in self.srv.log_tail(3):
            time.sleep(0.3)             # a member server that died by itself
            restart_crashed_members(self)
            ok = self.srv.start(extra)
        if ok:
            self.stopping = False
            with self.fault_lock:
                # Every member given connects afresh: one whose server is up
                # is in_sync or rejoins (stale: the status says so); one
                # whose server is down is a pending spec (kill_and_restart
                # tracks it again).
                self.severed.clear()
                self.wrote_off.clear()
                for d in list(self.away):
                    if d.srv.alive():
                        del self.away[d]
        if not ok and self.run.has_member_timeout and \
           "unknown parameter 'member-timeout'" in self.srv.log_tail(3):
            self.run.has_member_timeout = False
            self.run.note("the plugin does not take member-timeout= "
                          "(nbdkit-raid-plugin(1), PARAMETERS); serving without it")
            return self.start_server(specs, expect_ok)
        self.uri = "nbd+unix:///?socket=" + self.srv.sock
        if not ok and expect_ok:
            self.run.violate("the array server did not start with members %s; log:\n%s" % (
                specs, self.srv.log_tail(30)))
        return ok

    def prefill(self, x):
        """Seeded content over part of the export, flushed: reshapes then
        move real data."""
        frac = 0.2 + 0.6 * x
        end = int(self.size * frac) // (1 * MiB) * MiB
        rng = random.Random("%d:%d:prefill" % (self.run.args.seed, self.n))
        with Conn(self.uri) as h:
            for off in range(0, end, 4 * MiB):
                n = min(4 * MiB, end - off)
                data = rng.randbytes(n)
                h.pwrite(data, off)
                self.model[off:off + n] = data
            h.flush()
        self.run.event("setup", "prefilled [0, %d)" % end)

    def teardown(self):
        self.clients_done = True
        self.gate.resume()
        for c in self.clients:
            c.join(self.run.args.reply_bound)
        if self.srv.alive():
            clean_stop(self)
        self.kill_all()

    def kill_all(self):
        self.clients_done = True
        for s in [getattr(self, "srv", None)] + [d.srv for d in getattr(self, "devs", [])]:
            if s is not None and s.alive():
                s.kill9()

    def writer_id(self, t):
        return (self.n * 16 + t) & 0xFFFF

    # -- status ----------------------------------------------------------
    def status(self, who="main", ctl=None):
        c = ctl or Control(self, who)
        try:
            return c.call("status", log=False)
        finally:
            if ctl is None:
                c.close()

    def saw_status(self, st, where):
        """Every status reply: the self-consistency rules of
        consistency_problems."""
        for rule, text in consistency_problems(st):
            self.run.violate("status (%s) is not self-consistent: %s\nstatus: %s" % (
                where, text, json.dumps(st)), rule=rule)
        if self.hole and not self.hole_open and lost_roles(st):
            open_hole(self, "a member lost")
        with self.fault_lock:
            for d, e in self.away.items():
                m = member_of(self, st, d, e.role)
                if e.checked and m is not None and m["role"] == e.role and \
                   m["state"] != "in_sync":
                    e.noticed = True        # the engine has met its lost connection
        with self.status_lock:
            prev = self.last_status
            if prev and prev.get("reshape") and not st["reshape"]:
                self.run.changes.append((self.run.now(), "reshape to %s ended (seen at t=%.3f)"
                                         % (geom_str(prev["reshape"]["to"]), self.run.now())))
            self.last_status = st
            if st["size"] > self.limit and not self.fencing():
                self.limit = st["size"]
        self.watch_progress(st)

    def fencing(self):
        return self.limit_lock.locked()

    def watch_progress(self, st):
        """A running action that is not throttled must move within
        --stall-bound seconds: a step that fails freezes the action with an
        error or fails the array, it is never left running with nothing
        moving (nbdkit-raid-control(7), STATUS FIELDS: reshape, progress)."""
        act = st["sync_action"]
        if act in ("idle", "frozen") or self.killing or self.stopping:
            self.progress_seen = None
            return
        rs, pg = st.get("reshape"), st.get("progress")
        val = (rs["position"] if act == "reshape" and rs else
               pg["done"] if pg else None, st["events"] if act == "reshape" else 0)
        key = (act, geom_str(rs["to"]) if rs else "")
        now = time.monotonic()
        smax = st.get("speed_max") or 0
        throttled = 0 < smax < 1 * MiB
        if self.progress_seen is None or self.progress_seen[0] != key or \
           self.progress_seen[1] != val[0] or throttled:
            self.progress_seen = (key, val[0], now)
            return
        bound = self.run.args.stall_bound + (8 * MiB / smax if smax else 0)
        if now - self.progress_seen[2] > bound:
            self.run.violate("%s is running but made no progress for %.0f s (stuck at %s); "
                             "status: %s" % (act, now - self.progress_seen[2], val[0],
                                             brief_status(st)), rule="stall")

    def server_down(self):
        return self.killing or self.stopping or not self.srv.alive() and self.doomed

    def check_server_alive(self, grace=0):
        """A server that exits on its own is a violation; with grace, wait
        that long for a server that is dying (a connection just failed)."""
        deadline = time.monotonic() + grace
        while grace and self.srv.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.srv.p is not None and self.srv.p.poll() is not None and \
           not (self.killing or self.stopping):
            rc = self.srv.p.returncode
            self.died = True            # other threads' errors are its consequences
            tail = self.srv.log_tail(25)
            self.run.violate("the array server died by itself (%s); log tail:\n%s\n%s" % (
                "signal %d" % -rc if rc < 0 else "exit %d" % rc, tail, self.try_restart()),
                rule="server-died")
        if self.died:
            raise Stopped()

    def try_restart(self):
        """After the server died: does the array still assemble?"""
        self.stopping = True
        ok = self.srv.start(self.srv.last_extra)
        tail = self.srv.log_tail(6)
        self.srv.kill9()
        return "restarting it with the same members: %s%s" % (
            "it assembles" if ok else "REFUSED; log:\n", "" if ok else tail)

    def reshape_note(self):
        st = self.last_status
        return " (status: %s)" % brief_status(st) if st else ""

    def read_mismatch(self, who, why, off, got, want):
        if self.hole_open:
            bad = [i for b in range(-(-len(want) // BS))
                   if got[b * BS:(b + 1) * BS] != want[b * BS:(b + 1) * BS]
                   for i in range(b * BS, min(len(want), (b + 1) * BS)) if got[i] != want[i]]
            if all(in_hole(self, off + i) for i in bad):
                for i in bad:               # the write hole: what the array holds now
                    self.model[off + i] = got[i]
                self.run.event(who, "%s: %d bytes in write-hole rows of [%d,+%d) differ from "
                               "the model: accepted" % (why, len(bad), off, len(want)))
                return
        k = off + next(i for i in range(len(want)) if got[i] != want[i])
        last = [c.touched[k // BS] for c in self.clients if k // BS in c.touched]
        since = [txt for t, txt in self.run.changes if last and t >= last[0][0] - 0.5]
        self.run.violate("%s: %s of [%d, +%d) differs from the model: %s; that block was "
                         "last changed by %s, acknowledged%s; state changes since: %s" % (
                             who, why, off, len(want), describe_diff(off, got, want),
                             last[0][1] if last else "the prefill (or never written)",
                             self.reshape_note(), "; ".join(since[-12:]) or "none"),
                         rule="data")

    # -- redundancy accounting for faults ------------------------------------
    def can_lose(self, st, dev=None):
        """True when one more role may go down: the roles already down, the
        roles of injected devices, and dev's role stay within tolerance."""
        tol = tolerance(st["level"], st["raid_devices"])
        rs = st.get("reshape")
        if rs:
            tol = min(tol, tolerance(rs["to"]["level"], rs["to"]["raid_devices"]))
        role_of = {m["spec"]: m["role"] for m in st["members"] if m["role"] is not None}
        down = set(lost_roles(st))
        down |= {role_of[d.spec] for d in self.injected | set(self.away) if d.spec in role_of}
        if dev is not None and dev.spec in role_of:
            down.add(role_of[dev.spec])
        elif dev is not None:
            return True
        return len(down) <= tol and not (st["level"] == 0 or (rs and rs["to"]["level"] == 0))


# ---------------------------------------------------------------------------
# Epoch life: clients, monitor, management steps, kills, quiet points, doom.

def run_epoch(ep, deadline):
    a = ep.run.args
    ep.gate = Gate(ep)
    ep.setup()
    ep.claimed = set()
    ep.claim_lock = threading.Lock()
    ep.inflight_ops = collections.Counter()
    ep.server_lock = threading.RLock()
    ep.clients = [Client(ep, t) for t in range(ep.threads)]
    for c in ep.clients:
        c.start()
    threading.Thread(target=monitor, args=(ep,), name="monitor", daemon=True).start()
    threading.Thread(target=away_watch, args=(ep,), name="awaywatch", daemon=True).start()
    mg = Manager(ep)
    r = [ep.rng.random() for _ in range(4)]
    end = min(deadline, time.monotonic() + (a.epoch or 30 + 60 * r[0]))
    doom_at_end = r[1] < a.doom and ep.level != 0
    if ep.takeover:
        mg.takeover()
    while time.monotonic() < end:
        phase_end = min(end, time.monotonic() + (a.phase or 4 + 6 * mg.rng.random()))
        while time.monotonic() < phase_end:
            ep.run.check_stop()
            mg.step()
        quiet_point(ep)
    if doom_at_end:
        doom(ep, vanish=r[2] < 0.5)


def check_internal(ep, seen):
    """An "internal:" line in the array server's log is an invariant the
    engine found broken (a refused state transition, a superblock record
    that breaks a validation rule, which a restart would skip): a
    violation.  seen: [bytes of the log already read]."""
    try:
        with open(ep.srv.log, "rb") as f:
            f.seek(seen[0])
            new = f.read()
    except OSError:
        return
    seen[0] += len(new)
    for line in new.decode(errors="replace").splitlines():
        if "internal:" in line:
            ep.run.violate("the array server logged an internal error: " + line.strip(),
                           rule="internal")


def monitor(ep):
    """Status every second on its own connection: self-consistency and
    progress (saw_status), reply bound, that the server is alive and logs
    no internal error."""
    c = Control(ep, "monitor")
    seen = [0]
    try:
        while not ep.run.stop.is_set() and not ep.clients_done:
            time.sleep(1)
            check_internal(ep, seen)
            if ep.killing or ep.stopping:
                c.close()
                continue
            ep.check_server_alive()
            restart_crashed_members(ep)
            try:
                c.call("status", log=False)
            except ServerGone:
                pass
    except (Violation, Stopped):
        pass
    except Exception:
        try:
            ep.run.violate("tester bug in monitor: " + traceback.format_exc())
        except Violation:
            pass
    finally:
        c.close()


# Bounds for what the engine does with an away member by itself (seconds):
# back (no longer missing) this long after its server is up (reconnect
# backoff is at most 5 s, then the superblock read and the management
# lock); written off this long after member-timeout; a recovery onto a
# usable spare begun this long after a role was written off while the
# array idles degraded.
BACK_BOUND = 15
WRITE_OFF_SLACK = 15
RECOVER_BOUND = 15


def away_watch(ep):
    """Status four times a second on its own connection while a member is
    away (or a written-off role waits for a spare): check_away."""
    c = Control(ep, "away")
    try:
        while not ep.run.stop.is_set() and not ep.clients_done:
            time.sleep(0.25)
            if not ep.away and not ep.wrote_off:
                continue
            gen = ep.gen
            if ep.killing or ep.stopping or ep.doomed:
                c.close()
                continue
            ts = time.monotonic()
            try:
                st = c.call("status", log=False)
            except ServerGone:
                continue
            if ep.killing or ep.stopping or ep.doomed or ep.gen != gen:
                continue
            with ep.fault_lock:
                check_away(ep, st, ts)
    except (Violation, Stopped):
        pass
    except Exception:
        try:
            ep.run.violate("tester bug in the away watcher: " + traceback.format_exc())
        except Violation:
            pass
    finally:
        c.close()


def check_away(ep, st, ts):
    """The documented fate of away members (nbdkit-raid-plugin(1), Members
    that come and go), judged on status st requested at ts (fault_lock
    held): missing while away; back (stale, rebuilding, then in_sync) by
    itself within BACK_BOUND of its server being up again; written off
    (faulty) not before member-timeout after it went away, and within
    WRITE_OFF_SLACK after it (never, when absent since the start); no spare
    in its role while it is away within the grace; a role written off is
    recovered onto a usable spare."""
    tmo = ep.member_timeout
    for d, e in list(ep.away.items()):
        if e.t_down > ts:
            continue                    # died after this status was asked for
        back = e.t_back is not None and e.t_back <= ts
        m = member_of(ep, st, d, e.role)
        if m is None or m["role"] != e.role:
            del ep.away[d]
            ep.run.event("away", "%s no longer holds role %d" % (d.name, e.role))
            continue
        s = m["state"]
        if s != "in_sync":
            e.noticed = True
        if s == "in_sync":
            if back and e.noticed:
                del ep.away[d]
                ep.run.event("away", "%s is in_sync again, %.1f s after its server is back" % (
                    d.name, ts - e.t_back))
            continue
        what = "%s (role %d%s, server killed %.1f s before)" % (
            d.name, e.role, ", absent since the start" if e.at_start else "", ts - e.t_down)
        if s == "faulty":
            del ep.away[d]
            ep.run.event("away", "%s is faulty (written off)" % what)
            if not e.checked or e.managed:
                continue
            if e.at_start:
                ep.run.violate("member %s was written off (faulty); a member absent at the "
                               "start is never written off (nbdkit-raid-plugin(1), Members "
                               "that come and go); status: %s" % (what, brief_status(st)),
                               rule="away")
            if ts < e.t_down + tmo - 0.2:
                ep.run.violate("member %s was written off (faulty) before member-timeout "
                               "(%d s) had passed since it went away; status: %s" % (
                                   what, tmo, brief_status(st)), rule="away")
            ep.wrote_off[e.role] = [ts, d, None]
            continue
        if s != "missing" or not e.checked or e.managed:
            continue                    # stale, rebuilding: back, being resynced
        if e.t_missing is None:
            e.t_missing = ts
        if back and ts > e.t_back + BACK_BOUND:
            ep.run.violate("member %s is still missing %.1f s after its server is back (it "
                           "is reconnected every 0.1 s backing off to 5 s, and taken back "
                           "when its record names this array and member); status: %s" % (
                               what, ts - e.t_back, brief_status(st)), rule="away")
        if not e.at_start and ts > e.t_missing + tmo + WRITE_OFF_SLACK:
            ep.run.violate("member %s has been missing for more than member-timeout (%d s) "
                           "+ %d s and is not written off; status: %s" % (
                               what, tmo, WRITE_OFF_SLACK, brief_status(st)), rule="away")
        if ts < e.t_down + tmo - 0.2:
            for x in st["members"]:
                if x is not m and x["role"] == e.role and x["state"] == "rebuilding":
                    ep.run.violate("a spare (%s) takes role %d while its member %s is away "
                                   "within member-timeout (%d s): until then no spare takes "
                                   "the role of a missing member; status: %s" % (
                                       x["spec"], e.role, what, tmo, brief_status(st)),
                                   rule="away")
    lost = lost_roles(st)
    for role, w in list(ep.wrote_off.items()):
        if role not in lost or any(x["role"] == role and x["state"] == "rebuilding"
                                   for x in st["members"]):
            del ep.wrote_off[role]
            continue
        spares = [ep.dev_of(x["spec"]) for x in st["members"] if x["state"] == "spare"]
        usable = [d for d in spares if d is not None and d not in ep.severed | ep.injected
                  and not d.killed and d not in ep.claimed]
        if st["sync_action"] != "idle" or st["reshape"] or st["health"] != "degraded" \
           or not usable:
            w[2] = None
        elif w[2] is None:
            w[2] = ts
        elif ts - w[2] > RECOVER_BOUND:
            ep.run.violate("role %d was written off (%s away longer than member-timeout) "
                           "and a spare is there (%s), the array idle and degraded for %.0f "
                           "s, but no recovery runs (a spare takes the role of a member "
                           "written off); status: %s" % (
                               role, w[1].name, " ".join(d.name for d in usable), ts - w[2],
                               brief_status(st)), rule="away")


class Manager:
    """The seeded schedule of management and fault steps.  A step is a
    batch of 1-3 ops sent at once from separate control connections."""

    def __init__(self, ep):
        self.ep = ep
        self.rng = random.Random("%d:%d:mgmt" % (ep.run.args.seed, ep.n))
        self.weights = ep.run.args.op_weights
        self.ctls = [Control(ep, "m%d" % i) for i in range(ep.run.args.mgmt_threads)]
        self.nstep = 0

    def draw(self):
        return [self.rng.random() for _ in range(8)]

    def step(self):
        self.nstep += 1
        r = self.draw()
        op = weighted(self.weights, r[0])
        if op == "twin":
            twin = "reshape_add" if r[2] < 0.6 else weighted(mgmt_only(self.weights), r[3])
            batch = [(twin, self.draw()), (twin, self.draw())]
        else:
            batch = [(op, r)]
            more = min((r[1] < 0.3) + (r[1] < 0.1), self.ep.run.args.batch - 1)
            for _ in range(more):
                r2 = self.draw()
                batch.append((weighted(self.weights, r2[0]), r2))
            batch = [(o if o != "twin" else "status", x) for o, x in batch]
        self.run_batch(batch)
        time.sleep(self.ep.run.args.step_pause * r[6])
        if any(o in STATEFUL for o, _ in batch) and r[7] < self.ep.run.args.kill_after:
            self.run_batch([("kill", self.draw())])
        if self.ep.srv.alive():
            self.ep.status("step")

    def run_batch(self, batch):
        ep = self.ep
        ep.run.event("sched", "step %d: %s" % (self.nstep, " + ".join(o for o, _ in batch)))
        errors = []
        barrier = threading.Barrier(len(batch))

        def work(i, op, r):
            try:
                barrier.wait(10)
                ep.inflight_ops[op] += 1
                try:
                    OPS[op](ep, self.ctls[i % len(self.ctls)], r)
                finally:
                    ep.inflight_ops[op] -= 1
            except ServerGone:
                pass
            except (Violation, Stopped, threading.BrokenBarrierError):
                pass
            except Exception:
                errors.append(traceback.format_exc())
        ts = [threading.Thread(target=work, args=(i, o, r), daemon=True)
              for i, (o, r) in enumerate(batch)]
        for t in ts:
            t.start()
        for t in ts:
            while t.is_alive():
                t.join(0.5)
                ep.run.check_stop()
        if errors:
            ep.run.violate("tester bug in a management op: " + errors[0])
        ep.run.check_stop()

    def takeover(self):
        """Level 0 or 1: the first step is the takeover reshape to 4/5."""
        ep = self.ep
        r = self.draw()
        c = self.ctls[0]
        if r[1] < 0.6:
            c.call("set", speed_max=[2, 4, 8][int(r[2] * 3)] * MiB)
        if ep.level == 0:
            dev = free_device(ep, r[3], wipe=True)
            try:
                c.call("reshape", level=4 if r[4] < 0.3 else 5, add=[dev.spec])
            finally:
                release(ep, dev)        # once out of the array again it is free
        else:
            c.call("reshape", level=5)
        c.call("start")
        if r[5] < 0.7:
            self.run_batch([("kill", self.draw())])


STATEFUL = {"fail", "remove", "add", "replace", "resize", "reshape", "reshape_add",
            "start", "freeze", "abort", "check", "repair"}


def mgmt_only(weights):
    return {k: v for k, v in weights.items() if k in STATEFUL | {"status", "wait", "set"}} \
        or {"status": 1}


# -- device bookkeeping ------------------------------------------------------

def listed_devs(ep, st):
    """Our devices that the status lists (in any state).  Resolved through
    ep.dev_of: a spec shown for a member the engine does not hold open may
    be an abbreviated hint, which is no spec."""
    return {d for d in (ep.dev_of(m["spec"]) for m in st["members"]) if d is not None}


def free_device(ep, x, wipe=False, st=None):
    """A device of ours that the array does not list, claimed for the
    caller (released by release()); None when there is none."""
    st = st or ep.last_status
    listed = listed_devs(ep, st)
    with ep.claim_lock:
        free = [d for d in ep.devs if d not in listed and d not in ep.claimed
                and d is not ep.left_out and (not d.nbd or d.srv.alive())]
        if not free:
            return None
        d = free[int(x * len(free))]
        ep.claimed.add(d)
    if wipe:
        d.wipe()
    return d


def release(ep, d):
    with ep.claim_lock:
        ep.claimed.discard(d)


def pick_member(st, x, pred=lambda m: True):
    ms = [m for m in st["members"] if pred(m)]
    return ms[int(x * len(ms))] if ms else None


def member_arg(m, x):
    """A member named by role or by spec (both forms nbdkit-raid-control(7)
    accepts, Requests).  A missing member is named by its role when it has
    one: the engine
    resolves a spec only to a member whose device it holds open
    (state_find_member), and nbdkit-raid-control(7) shows a missing member
    with no spec at all; naming it by spec is an expected ENODEV."""
    if m["role"] is not None and (x < 0.5 or not m["spec"] or m["state"] == "missing"):
        return m["role"]
    return m["spec"]


# -- management ops (ep, control, draws) ----------------------------------------

def op_status(ep, c, r):
    c.call("status")


def op_wait(ep, c, r):
    t = round(r[1] * 3, 2)
    c.call("wait", timeout=t, bound=ep.run.args.reply_bound + t)


def op_fail(ep, c, r):
    with ep.fault_lock:
        st = c.call("status", log=False)
        m = pick_member(st, r[1], lambda m: m["role"] is not None)
        if m is None:
            return
        if m["state"] == "in_sync" and not ep.can_lose(st, ep.by_spec.get(m["spec"])) \
           or st["level"] == 0:
            ep.run.event("sched", "fail of role %s skipped: beyond redundancy" % m["role"])
            return
        mark_managed(ep, m)
        c.call("fail", member=member_arg(m, r[2]))


def mark_managed(ep, m):
    """A fail or remove of status entry m: if it is an away member, its
    fate is ours from now on (fail writes a missing member off at once)."""
    with ep.fault_lock:
        for d, e in ep.away.items():
            if m["role"] == e.role or ep.dev_of(m["spec"]) is d:
                e.managed = True




def op_remove(ep, c, r):
    st = c.call("status", log=False)
    pred = (lambda m: m["state"] != "in_sync") if r[2] < 0.8 else (lambda m: True)
    m = pick_member(st, r[1], pred)
    if m is not None and m["role"] is not None and m["state"] != "in_sync" and \
       "remove-role" in ep.run.dodge:
        return
    if m is not None and (m["role"] is not None or m["spec"]):
        mark_managed(ep, m)
        c.call("remove", member=member_arg(m, r[3]))
    elif m is not None:
        ep.run.note("a %s member with neither role nor spec is listed (after a restart): "
                    "no request can name it, so it can never be removed" % m["state"])


def op_add(ep, c, r):
    st = c.call("status", log=False)
    missing = [m for m in st["members"] if m["state"] == "missing"]
    if missing and r[2] < 0.5:
        # A rejoin by add: accepted for a member absent since the start,
        # refused (EEXIST) for one whose device the engine holds (its
        # connection lost: the engine reconnects it itself).  Not for a
        # device whose server is down (add cannot reach it).
        m = missing[int(r[3] * len(missing))]
        d = ep.dev_of(m["spec"]) or ep.left_out
        if d is not None and not d.killed:
            c.call("add", member=d.spec)
            return
    d = free_device(ep, r[1], wipe=r[4] < 0.8, st=st)
    if d is None:
        return
    try:
        c.call("add", member=d.spec)
    finally:
        release(ep, d)


def op_replace(ep, c, r):
    st = c.call("status", log=False)
    m = pick_member(st, r[1], lambda m: m["role"] is not None and m["state"] == "in_sync")
    if m is None:
        return
    spare = pick_member(st, r[2], lambda m: m["state"] == "spare")
    if spare and r[3] < 0.5:
        c.call("replace", member=member_arg(m, r[4]), **{"with": spare["spec"]})
    else:
        c.call("replace", member=member_arg(m, r[4]))


def op_check(ep, c, r):
    c.call("check")


def op_repair(ep, c, r):
    c.call("repair")


def op_freeze(ep, c, r):
    c.call("freeze")


def op_start(ep, c, r):
    c.call("start")


def op_abort(ep, c, r):
    c.call("abort")


def op_set(ep, c, r):
    smax = [0, 0, 1 * MiB, 2 * MiB, 8 * MiB, 32 * MiB][int(r[1] * 6)]
    smin = [0, 1 * MiB, 16 * MiB][int(r[2] * 3)]
    if smax:
        smin = min(smin, smax)
    args = {"speed_max": smax} if r[3] < 0.5 else {"speed_max": smax, "speed_min": smin}
    if r[4] < 0.3:
        args = {k: "%dK" % (v // KiB) for k, v in args.items()}     # SIZE strings
    c.call("set", **args)


def op_resize(ep, c, r):
    st = c.call("status", log=False)
    row = st["chunk"] * max(1, st["data_disks"])
    if r[1] < 0.55:
        size = "max" if r[2] < 0.5 else st["size"] + (1 + int(r[3] * 4)) * row
        rep = c.call("resize", size=size)
        if size == "max" and rep.get("error") == "EINVAL":
            ep.run.note("resize {\"size\": \"max\"} refused: %s "
                        "(nbdkit-raid-control(7) allows \"max\")" % rep["message"])
        return
    new = st["size"] - (1 + int(r[3] * 4)) * row
    if new > 0:
        shrink(ep, c, new)


def shrink(ep, c, new):
    """A shrinking resize: clients first stop using bytes at or beyond new
    (the fence), since bytes beyond the new end are lost
    (nbdkit-raid-control(7), resize)."""
    with ep.limit_lock:
        fence(ep, new)
        try:
            rep = c.call("resize", size=new, force=True)
            if rep.get("error") == "EINVAL" and "force" in rep["message"]:
                ep.run.note("resize refuses the force argument of nbdkit-raid-control(7): %s"
                            % rep["message"])
                rep = c.call("resize", size=new)
        finally:
            st = ep.status("shrink")
            if st["size"] < len(ep.model):
                ep.model[st["size"]:] = bytes(len(ep.model) - st["size"])
                forget_beyond(ep, st["size"])
            ep.limit = st["size"]
    return rep["ok"]


def forget_beyond(ep, size):
    """Bytes at or beyond size are lost (a shrink): the versions a client
    keeps of a block since it was last durable hold zeros there too, as
    the model does, so that a later grow, which reads as zeros, meets
    them after a kill -9 as well."""
    for cl in ep.clients:
        for b, vers in list(cl.hist.items()):   # (clients run below size)
            keep = size - b * BS
            if keep < BS:
                keep = max(0, keep)
                cl.hist[b] = [v[:keep] + bytes(BS - keep) for v in vers]


def fence(ep, new):
    ep.limit = min(ep.limit, new)
    busy = [(cl, cl.seq) for cl in ep.clients if cl.busy]
    deadline = time.monotonic() + ep.run.args.reply_bound * 2
    for cl, seq in busy:
        while cl.busy and cl.seq == seq and time.monotonic() < deadline:
            ep.run.check_stop()
            time.sleep(0.01)
        if cl.busy and cl.seq == seq and not ep.killing:
            ep.run.violate("client %s request %s did not complete within %.0f s" % (
                cl.who, cl.current, ep.run.args.reply_bound * 2), rule="client-hang")


def op_reshape(ep, c, r):
    st = c.call("status", log=False)
    kind = ["devices_up", "devices_down", "chunk", "layout", "level", "level"][int(r[1] * 6)]
    args, dev = reshape_args(ep, c, st, kind, r)
    if args is None:
        return
    try:
        rep = c.call("reshape", **args)
    finally:
        if dev:
            release(ep, dev)
    if rep["ok"] and r[6] < 0.6:
        c.call("start")         # prepare and start back to back, as --start does


def op_reshape_add(ep, c, r):
    """A reshape that adds a member (sent twice at once by 'twin')."""
    st = c.call("status", log=False)
    args, dev = reshape_args(ep, c, st, "devices_up", r)
    if args is None:
        return
    try:
        c.call("reshape", **args)
    finally:
        if dev:
            release(ep, dev)


def reshape_args(ep, c, st, kind, r):
    """(request arguments, claimed device) of one kind of reshape."""
    lvl, rd, chunk = st["level"], st["raid_devices"], st["chunk"]
    if kind == "devices_up":
        if rd >= 8:
            return None, None
        d = free_device(ep, r[2], wipe=True, st=st) if r[3] < 0.85 else None
        args = {"raid_devices": rd + 1} if r[4] < 0.5 or not d else {}
        if d:
            args["add"] = [d.spec]
        return args, d
    if kind == "devices_down":
        minrd = {4: 3, 5: 3, 6: 4}.get(lvl, 99)
        if rd <= minrd or lvl not in NPARITY:
            return None, None
        ndd = rd - 1 - NPARITY[lvl]
        new = st["size"] // st["data_disks"] * ndd // (chunk * ndd) * (chunk * ndd)
        if new < st["size"] and (new <= 0 or not shrink(ep, c, new)):
            return None, None
        return {"raid_devices": rd - 1}, None
    if kind == "chunk":
        new = 4 * KiB << int(r[2] * 7)
        return ({"chunk": new if r[3] < 0.7 else "%dK" % (new // KiB)}, None) \
            if new != chunk else (None, None)
    if kind == "layout":
        names = {5: RAID5_LAYOUTS, 6: RAID6_LAYOUTS}.get(lvl)
        return ({"layout": names[int(r[2] * len(names))]}, None) if names else (None, None)
    return level_args(ep, st, r)


def level_args(ep, st, r):
    lvl = st["level"]
    if lvl == 4:
        return {"level": 5}, None
    if lvl == 5 and r[2] < 0.5:
        d = free_device(ep, r[3], wipe=True, st=st)
        if d is None:
            return None, None
        args = {"level": 6, "add": [d.spec]}
        if r[4] < 0.3:
            args["layout"] = RAID6_LAYOUTS[int(r[5] * 4)]
        return args, d
    if lvl == 5:
        return ({"level": 4}, None) if r[4] < 0.5 else ({"level": 5, "layout": "parity-last"},
                                                        None)
    if lvl == 6:
        with ep.fault_lock:         # 6 -> 5 lowers the tolerance
            if ep.injected or ep.away:
                return None, None
        return {"level": 5}, None
    return None, None


# -- fault ops ---------------------------------------------------------------

def injectable(ep, st, x, need_role=True):
    """An NBD device listed by the array whose loss stays within
    redundancy; None if none."""
    cands = [ep.by_spec[m["spec"]] for m in st["members"]
             if m["spec"] in ep.by_spec and ep.by_spec[m["spec"]].nbd
             and (m["role"] is not None or not need_role)
             and ep.by_spec[m["spec"]] not in ep.injected | set(ep.away) | ep.severed
             and not ep.by_spec[m["spec"]].killed]
    cands = [d for d in cands if ep.can_lose(st, d)]
    return cands[int(x * len(cands))] if cands else None


def op_error(ep, c, r, permanent=False):
    with ep.fault_lock:
        st = c.call("status", log=False)
        d = injectable(ep, st, r[1], need_role=r[2] < 0.85)
        if d is None:
            return
        open(d.errfile, "w").close()
        ep.injected.add(d)
        ep.run.event("fault", "%s: I/O errors on %s (%s)" % (
            "permanent" if permanent else "transient", d.name, d.spec))
    if not permanent:
        later(ep, 0.05 + 2 * r[3], clear_error, ep, d)


def op_error_permanent(ep, c, r):
    op_error(ep, c, r, permanent=True)


def clear_error(ep, d):
    with ep.fault_lock:
        if os.path.exists(d.errfile):
            os.unlink(d.errfile)
            ep.run.event("fault", "errors on %s end" % d.name)
    # A request that failed just before the error file went away may be
    # recorded (the member faulty) a moment later: count the device as
    # injected until then.
    later(ep, 1.0, uninject, ep, d)


def uninject(ep, d):
    with ep.fault_lock:
        if not os.path.exists(d.errfile) and (d.srv is None or d.srv.alive()):
            ep.injected.discard(d)


def op_vanish(ep, c, r):
    with ep.server_lock:
        if ep.clients_done or ep.killing:
            return
        with ep.fault_lock:
            st = c.call("status", log=False)
            d = injectable(ep, st, r[1], need_role=r[2] < 0.85)
            if d is None:
                return
            kill_member(ep, d, member_of(ep, st, d))
        prod(ep, d)
    if r[3] < 0.8:
        later(ep, 0.2 + 5 * r[4], revive, ep, d,
              None if r[5] < 0.7 else [0, 1, 5, 20][int(r[6] * 4)])


class Away:
    """A member whose server died while it held a role.  t_down: when it
    died (tester clock, before the engine can have noticed: the engine's
    own away time is later); at_start: down when the array server started
    (a pending spec: never written off, its grace counted from the start);
    checked: it was in_sync (or given at a start), so the documented rules
    say exactly what becomes of it; managed: a request of ours (fail,
    remove) may have decided its fate instead."""

    def __init__(self, t_down, role, checked, at_start=False):
        self.t_down, self.role, self.checked, self.at_start = t_down, role, checked, at_start
        self.t_back = None          # its server is up again
        self.t_missing = None       # first status that showed it missing
        self.noticed = at_start     # a status showed it not in_sync since t_down
        self.managed = False


def kill_member(ep, d, m):
    """kill -9 of d's server (fault_lock held); m: its status entry."""
    d.srv.kill9()
    d.killed = True
    if m is not None and m["role"] is not None:
        ep.away[d] = Away(time.monotonic(), m["role"], m["state"] == "in_sync")
    else:
        ep.severed.add(d)
    ep.run.event("fault", "member server %s killed (%s)" % (
        d.name, "role %d, %s" % (m["role"], m["state"]) if m and m["role"] is not None
        else "no role"))


def member_of(ep, st, d, role=None):
    """d's entry in status st (the one holding role, else one with a role,
    else any), or None."""
    ms = [m for m in st["members"] if ep.dev_of(m["spec"]) is d]
    # A spec can be listed twice: a closed faulty record and the member
    # added again.  Without a role asked for, the entry holding one wins.
    ms.sort(key=lambda m: (role is None or m["role"] != role, m["role"] is None))
    return ms[0] if ms else None


def prod(ep, d):
    """After d's server died: one flush of the array (sent to every member
    in use) makes the engine meet the dead connection, so that it cannot
    stay unnoticed; then the status must show d's member not in_sync
    (missing: nbdkit-raid-plugin(1), Members that come and go)."""
    if ep.killing or ep.stopping or ep.doomed or not ep.srv.alive():
        return
    err = bounded_io(ep, "flush", rule="client-error")
    if err is not None:
        ep.check_server_alive(grace=10)
        ep.run.violate("a flush of the array failed (%s) after the server of member %s was "
                       "killed, within redundancy" % (err, d.name), rule="client-error")
    st = ep.status("away")
    e = ep.away.get(d)
    m = member_of(ep, st, d, e and e.role)
    if e and e.checked and m is not None and m["role"] == e.role and \
       m["state"] == "in_sync" and not d.srv.alive():
        ep.run.violate("the server of member %s (role %d) was killed and a flush of the "
                       "array has completed, yet the status says it is in_sync (an NBD "
                       "member whose connection is lost is missing, nbdkit-raid-plugin(1), "
                       "Members that come and go): %s" % (d.name, e.role, brief_status(st)),
                       rule="away")


def revive(ep, d, delay=None):
    with ep.fault_lock:
        if d.srv.alive():
            return
        if not d.start(delay):
            ep.run.violate("tester: member server %s did not restart: %s" % (
                d.name, d.srv.log_tail(5)))
        e = ep.away.get(d)
        if e is not None and e.t_back is None:
            e.t_back = time.monotonic()
        ep.run.event("fault", "member server %s back%s" % (
            d.name, " (delay %d ms)" % d.delay_ms if d.delay_ms else ""))


SLOW_SAFE = 128 * MiB    # bit/s: no member timeout at this rate (see op_slow)


def op_slow(ep, c, r):
    """Bandwidth of an NBD member (rate filter, at run time): slow writes
    stay in flight across management requests."""
    ds = [d for d in ep.devs if d.nbd]
    if not ds:
        return
    d = ds[int(r[1] * len(ds))]
    bits = [8 * MiB, 32 * MiB, 128 * MiB, 100 << 30][int(r[2] * 4)]
    if ep.member_timeout < 30:
        bits = max(bits, SLOW_SAFE)     # else a timeout makes it go away (see setup)
    counted = False
    with ep.fault_lock:
        if bits < SLOW_SAFE:
            # The array may have queued more at this member than it can
            # serve within member-timeout at the new rate (at 1-4 MB/s a
            # reshape's or a rebuild's window of a few tens of MiB takes
            # longer than 30 s): then the member goes away by itself.
            # Slow it that much only when losing it stays within
            # redundancy, and count it as injected (as an error file
            # would be) until heal_all.
            st = c.call("status", log=False)
            if d in ep.injected | set(ep.away) | ep.severed or not ep.can_lose(st, d):
                bits = SLOW_SAFE
            else:
                ep.injected.add(d)
                counted = True
        d.set_rate(bits)
    ep.run.event("fault", "%s bandwidth %s bit/s%s" % (
        d.name, bits, " (may time out: counted as injected)" if counted else ""))


def op_heal(ep, c, r):
    heal_all(ep)


def restart_crashed_members(ep):
    """A member nbdkit that died without being killed by us (nbdkit
    1.32.5's file server can hit an assertion in raw_send_socket when the
    array server dies under it): not the product's fault; restart it.  To
    the array it is a member that went away and came back: tracked as such
    while the array server runs, and the engine made to notice."""
    prods = []
    with ep.fault_lock:
        for d in ep.devs:
            if d.nbd and d.srv.p is not None and not d.srv.alive() and not d.killed:
                ep.run.note("member server %s (nbdkit %s) died by itself (exit %s): "
                            "restarted; see its log" % (d.name, d.srv.argv_tail[-1],
                                                        d.srv.p.returncode))
                ep.run.event("fault", "member server %s died by itself; restarted" % d.name)
                if ep.srv is not None and ep.srv.alive() and not ep.killing and \
                   ep.last_status is not None:
                    m = member_of(ep, ep.last_status, d)
                    if m is not None and m["role"] is not None:
                        ep.away.setdefault(d, Away(time.monotonic(), m["role"], False))
                        prods.append(d)
                    else:
                        ep.severed.add(d)
                d.start()
                if d in ep.away and ep.away[d].t_back is None:
                    ep.away[d].t_back = time.monotonic()
    for d in prods:
        with ep.server_lock:
            prod(ep, d)


def heal_all(ep, keep_down=()):
    """Error files gone, member servers up (but those in keep_down), speeds
    back to their configured values."""
    with ep.fault_lock:
        for d in ep.devs:
            if os.path.exists(d.errfile):
                os.unlink(d.errfile)
            if d.nbd and not d.srv.alive() and d not in keep_down:
                if not d.start():
                    ep.run.violate("tester: member server %s did not restart" % d.name)
                e = ep.away.get(d)
                if e is not None and e.t_back is None:
                    e.t_back = time.monotonic()
            if d.nbd:
                d.set_rate(d.slow_rate or 100 << 30)     # back to its configured speed
        ep.injected.clear()
    ep.run.event("fault", "all member faults healed%s" % (
        " but the servers of %s" % " ".join(d.name for d in keep_down) if keep_down else ""))


def later(ep, delay, fn, *args):
    def body():
        try:
            if not ep.run.stop.wait(delay) and not ep.clients_done:
                fn(*args)
        except (Violation, Stopped):
            pass
    t = threading.Timer(0, body)
    t.daemon = True
    t.start()
    ep.timers.append(t)


def op_kill(ep, c, r, leave_out=False):
    time.sleep(1.5 * r[1])
    kill_and_restart(ep, leave_out and r[2] < 0.9, r[3], r[4] < 0.6, r[5])


def op_kill_missing(ep, c, r):
    op_kill(ep, c, r, leave_out=True)


OPS = {name[3:]: fn for name, fn in list(globals().items()) if name.startswith("op_")}


# -- kill -9 of the array server ----------------------------------------------

def kill_and_restart(ep, leave_out, x, hold=False, y=0.0):
    with ep.server_lock:
        if ep.clients_done:
            return
        before = None
        try:
            before = ep.status("kill")
        except ServerGone:
            pass
        if before and "kill-rebuild" in ep.run.dodge and (
                before["sync_action"] == "recover" or
                any(m["state"] == "rebuilding" and m["role"] is not None
                    for m in before["members"])):
            ep.run.event("kill", "kill -9 skipped: a role is being rebuilt (--dodge kill-rebuild)")
            return
        busy = dict(ep.inflight_ops)
        with ep.gate.cond:
            ep.gate.paused = True
        ep.killing = True
        ep.run.event("kill", "kill -9 of the array server%s" % (
            " (during %s)" % brief_status(before) if before else ""))
        ep.srv.kill9()
        ep.gen += 1
        ep.gate.pause("kill -9")
        for cl, (off, n, _) in ep.gate.at_kill:
            ep.run.event("kill", "%s had [%d,+%d) in flight" % (cl.who, off, n))
        # Members whose server is down may stay down across the restart
        # (hold): the array starts without them, degraded, when the level
        # tolerates that, and they rejoin when their server is back.
        down = [d for d in ep.away if not d.srv.alive()] if hold else []
        specs, held = restart_members(ep, leave_out, x, down)
        heal_all(ep, keep_down=[d for d, _ in held])
        t_launch = time.monotonic()
        exempt = restart_after_kill(ep, specs, before)
        with ep.fault_lock:
            for d, role in held:
                ep.away[d] = Away(t_launch, role, True, at_start=True)
        for i, (d, _) in enumerate(held):
            # back within the grace, or after it (a spare may have taken the
            # role: then it is dropped, not added as a spare)
            later(ep, [0.3, 1.5, ep.member_timeout + 1][int(y * 3 + i) % 3], revive, ep, d)
        after = ep.status("restart")
        verify_after_kill(ep, ep.left_out is not None or after["health"] != "optimal", exempt)
        check_resumed(ep, before, after, busy)
        ep.gate.at_kill.clear()
        for cl in ep.clients:
            cl.hist.clear()
        ep.killing = False
        ep.gate.resume()


def restart_after_kill(ep, specs, before):
    """Start again; a dirty degraded array without a write-hole log is
    refused (nbdkit-raid-plugin(1), Crash consistency) and then started
    with force=true, accepting the write hole.  Without a write-hole log
    (bitmap, resync) the stripe rows of writes in flight at the kill (not
    durable: unanswered, or acknowledged but not flushed) may
    hold parity that does not match
    their data until the resync owed has run: a member lost before then
    rebuilds wrong bytes anywhere in those rows (the documented risk of
    these policies, nbdkit-raid-plugin(1) Crash consistency).  Those rows
    are kept in ep.hole until the next quiet point and exempt from the
    data checks once the array has lost a member (at once when the start
    had to be forced).  Returns the exempt byte ranges."""
    time.sleep(0.3)                 # let member servers notice the reset
    restart_crashed_members(ep)
    if ep.cons != "journal":
        widths = set()
        for g in [before] + ([before["reshape"]["to"]] if before and before["reshape"] else []):
            if g and g["level"] in NPARITY:
                widths.add(g["chunk"] * (g["raid_devices"] - NPARITY[g["level"]]))
        widths = widths or {ep.chunk * 16}
        # in flight at the kill: the requests unanswered, and the blocks
        # written since they were last durable (acknowledged, not flushed:
        # the array may have held them gathered or written them in part)
        spans = [(off, n) for _, (off, n, _) in ep.gate.at_kill]
        spans += [(b * BS, BS) for cl in ep.clients for b in cl.hist]
        for off, n in spans:
            for w in widths:
                ep.hole.append((off // w * w, -(-(off + n) // w) * w))
    if ep.start_server(specs, expect_ok=ep.cons == "journal"):
        return list(ep.hole) if ep.hole_open else []
    if "force=true" not in ep.srv.log_tail(5):
        ep.run.violate("the array does not start after kill -9 with members %s; log:\n%s"
                       % (specs, ep.srv.log_tail(30)))
    ep.run.event("kill", "dirty and degraded without journal: restart with force=true")
    ep.start_server(specs + ["force=true"])
    open_hole(ep, "a forced start")
    return list(ep.hole)


def open_hole(ep, why):
    if ep.hole and not ep.hole_open:
        ep.hole_open = True
        ep.run.event("hole", "%s after a dirty start without a write-hole log: the stripe rows "
                     "of the writes then in flight are exempt until the next quiet point "
                     "(%d ranges)" % (why, len(ep.hole)))


def in_hole(ep, pos):
    return ep.hole_open and any(lo <= pos < hi for lo, hi in ep.hole)


def examine(ep, devs):
    """{device: its examine object} for devices that hold a superblock."""
    if not devs:
        return {}
    p = subprocess.run([ep.run.args.nbdraid, "examine", "--json"] + [d.path for d in devs],
                       capture_output=True, text=True, timeout=60)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        ep.run.violate("nbdraid examine --json printed no JSON: %s %s" % (p.stdout[:500],
                                                                          p.stderr[:500]))
    by_path = {d.path: d for d in devs}
    return {by_path[m["spec"]]: m for m in doc.get("members", [])
            if m.get("spec") in by_path and m.get("superblock") == "valid"}


def restart_members(ep, leave_out, x, down=()):
    """The devices to name at restart: those the newest superblock record
    (highest events among our devices) lists; maybe one in_sync member left
    out (within redundancy, journal policy only).  down: devices whose
    server is down and may stay down at the start (named all the same: an
    NBD spec unreachable at the start is kept pending).  Returns the specs
    and the [(device, role)] kept down (within redundancy, no reshape)."""
    ex = examine(ep, [d for d in ep.devs if d is not ep.left_out] +
                 ([ep.left_out] if ep.left_out else []))
    uuid = ep.last_status["uuid"]
    mine = {d: e for d, e in ex.items() if e.get("array_uuid") == uuid}
    newest = newest_record(list(mine.values()))
    table = {m["uuid"]: m for m in newest["members"]}
    keep = [d for d, e in mine.items() if e.get("member_uuid") in table]
    ep.left_out = None
    # A role is up at the start only when a device we name and that answers
    # holds its in_sync entry with a current superblock (at most one event
    # behind: older is stale).  Roles with no entry (removed), a faulty,
    # missing or rebuilding entry, or a stale device are down already (a
    # missing or stale one rejoins once the array runs, a faulty one is not
    # taken back: nbdkit-raid-plugin(1), Assembly); what we keep down or
    # leave out must stay within what is left.
    in_sync = [d for d in keep if table[mine[d]["member_uuid"]].get("state") == "in_sync"
               and table[mine[d]["member_uuid"]].get("role") is not None
               and mine[d].get("events", 0) + 1 >= newest["events"]]
    role = {d: table[mine[d]["member_uuid"]].get("role") for d in keep}
    tol = tolerance(newest["level"], newest["raid_devices"]) \
        if newest["level"] in (4, 5, 6) and not newest.get("reshape") else -1
    held = []
    for d in down:
        entry = table.get(mine[d]["member_uuid"]) if d in mine else None
        if d not in keep or entry is None or entry.get("role") is None or \
           entry.get("state") not in ("in_sync", "missing", "rebuilding"):
            continue
        up = {role[k] for k in in_sync if k is not d and k not in dict(held)}
        if sum(1 for r in range(newest["raid_devices"]) if r not in up) <= tol:
            held.append((d, role[d]))
    in_sync = [d for d in in_sync if d not in dict(held)]
    if leave_out and ep.cons == "journal" and tol >= 0:
        up = {role[d] for d in in_sync}
        ndown = sum(1 for r in range(newest["raid_devices"]) if r not in up)
        if in_sync and ndown + 1 <= tol:
            ep.left_out = in_sync[int(x * len(in_sync))]
            keep.remove(ep.left_out)
            ep.run.event("kill", "restart without %s" % ep.left_out.name)
    if held:
        ep.run.event("kill", "restart with the servers of %s down" % " ".join(
            "%s (role %d)" % (d.name, r) for d, r in held))
    return [d.spec for d in keep], held


def block_candidates(ep):
    """Per block with more than one allowed content: the list of them."""
    cands = {}
    for cl in ep.clients:
        for b, vers in cl.hist.items():
            cands[b] = list(vers)
    inflight = {}
    for cl, (off, n, data) in ep.gate.at_kill:
        for b in blocks_of(off, n):
            cur = bytes(ep.model[b * BS:(b + 1) * BS])
            lo, hi = max(off, b * BS), min(off + n, (b + 1) * BS)
            new = cur[:lo - b * BS] + data[lo - off:hi - off] + cur[hi - b * BS:]
            cands.setdefault(b, [cur]).append(new)
            inflight[b] = (lo - b * BS, hi - b * BS, off, n)
    return cands, inflight


def verify_after_kill(ep, torn_ok, exempt=()):
    """Every block: its last durable version or a later one (NBD contract);
    with a member missing, the bytes of a write in flight may be torn."""
    with Conn(ep.uri) as h:
        size = min(h.get_size(), len(ep.model), ep.limit)
        img = pread_all(h, 0, size)
    if img == ep.model[:size]:
        return
    cands, inflight = block_candidates(ep)
    for b in range(size // BS):
        got = img[b * BS:(b + 1) * BS]
        cur = bytes(ep.model[b * BS:(b + 1) * BS])
        if got == cur:
            continue
        allowed = cands.get(b, [cur])
        if got in allowed or any(lo <= b * BS < hi for lo, hi in exempt):
            ep.model[b * BS:(b + 1) * BS] = got
            continue
        if torn_ok and b in inflight:
            lo, hi = inflight[b][:2]
            if any(got[:lo] == v[:lo] and got[hi:] == v[hi:] for v in allowed):
                ep.model[b * BS:(b + 1) * BS] = got
                continue
        ep.run.violate("after kill -9 and restart, block %d [%d, +4096) holds none of its "
                       "%d allowed versions (last durable first): %s%s" % (
                           b, b * BS, len(allowed), explain_block(got, allowed),
                           " (a write of [%d,+%d) was in flight)" % inflight[b][2:]
                           if b in inflight else ""), rule="durability")


def explain_block(got, allowed):
    if not any(got):
        what = "got zeros"
    elif got[:8] == b"E2EKILL1":
        from e2e_kill import decode_header
        what = "got a block of another write %s" % decode_header(got)
    else:
        what = "got unrecognised bytes %s..." % got[:12].hex()
    diffs = ["v%d: %d bytes differ" % (i, sum(1 for x, y in zip(got, v) if x != y))
             for i, v in enumerate(allowed)]
    return what + "; " + ", ".join(diffs)


def check_resumed(ep, before, after, busy):
    """A frozen reshape stays frozen; a running one resumes (or it had
    finished) (nbdkit-raid-plugin(1), reshape-autostart and Live reshape)."""
    if not before or not before.get("reshape") or \
       any(busy.get(o) for o in ("start", "freeze", "abort", "reshape", "reshape_add")):
        return
    b, a = before["reshape"], after.get("reshape")
    if b["state"] == "frozen":
        if not a or a["state"] != "frozen" or a["to"] != b["to"]:
            ep.run.violate("a frozen reshape to %s did not stay frozen over kill -9: now %s" % (
                geom_str(b["to"]), brief_status(after)), rule="resume")
        return
    done = a is None and after["level"] == b["to"]["level"] and \
        after["raid_devices"] == b["to"]["raid_devices"] and after["chunk"] == b["to"]["chunk"]
    if a and a["state"] == "frozen" and reshape_start_refusal(after):
        return              # the documented start rules keep it frozen
    if not done and not (a and a["state"] == "running") and ep.left_out is None:
        ep.run.violate("a running reshape to %s did not resume after kill -9: now %s" % (
            geom_str(b["to"]), brief_status(after)), rule="resume")


def reshape_start_refusal(st):
    """Why the documented rules refuse to start (or resume at a restart)
    the reshape of status st, or None (nbdkit-raid-plugin(1), Live
    reshape: a member the reshape adds that is missing or faulty before any
    data moved; and start needs the members of both layouts within their
    redundancy: more missing or faulty than either tolerates refuses it)."""
    rs = st["reshape"]
    if not rs:
        return None
    if st["health"] == "failed":
        return "the array has failed"
    rd0, rd1 = st["raid_devices"], rs["to"]["raid_devices"]
    if len(down_roles(st)) > tolerance(st["level"], rd0) or \
       len(down_roles(st, rd1)) > tolerance(rs["to"]["level"], rd1):
        return "members it needs are missing or faulty"
    if rs["position"] == 0 and any(r >= rd0 for r in down_roles(st, rd1)):
        return "a member it adds is missing or faulty and no data has moved"
    return None


# -- quiet points --------------------------------------------------------------

def quiet_point(ep):
    """Clients paused, faults healed, the array settled: CPU, check,
    contents, clean stop, md's bytes on the members, restart."""
    with ep.server_lock:
        ep.gate.pause("quiet point", disconnect=True)
        heal_all(ep)
        c = Control(ep, "quiet")
        st = c.call("status")
        if st["sync_action"] in ("idle", "frozen"):
            cpu_idle(ep, "no client I/O, sync_action %s" % st["sync_action"])
        c.call("set", speed_max=0)
        st = settle(ep, c)
        if ep.left_out is not None and ep.left_out not in listed_devs(ep, st):
            ep.left_out.wipe()          # its role was rebuilt elsewhere: a free device
            ep.left_out = None
        refusals(ep, c, st)
        if st["health"] == "optimal" and st["level"] != 0:
            scrub(ep, c)              # parity, or raid1's mirrors
        compare_export(ep, "quiet point")
        ep.hole, ep.hole_open = [], False       # settled, resynced and checked
        cpu_idle(ep, "quiet point, array idle")
        c.close()
        clean_stop(ep)
        t = time.monotonic()
        check_members(ep, st)
        ep.run.event("quiet", "member images hold md's bytes (%.1f s)" % (time.monotonic() - t))
        # The devices the array lists, named by the full specs we created
        # them with (a status shows a member it does not hold open by an
        # abbreviated hint, "...TAIL", that nbdkit cannot open).
        ep.start_server(sorted(d.spec for d in listed_devs(ep, st)))
        ep.gen += 1
        ep.status("restart")
        ep.last_quiet = ep.run.now()
        ep.gate.resume()


def settle(ep, c):
    """Bring the array to idle, optimal, no reshape; bounded."""
    deadline = time.monotonic() + ep.run.args.settle_bound
    last = None
    while True:
        ep.run.check_stop()
        st = c.call("status", log=False)
        if st["health"] == "optimal" and st["sync_action"] == "idle" and not st["reshape"]:
            return st
        key = (st["events"], st.get("progress") and st["progress"]["done"],
               st["reshape"] and st["reshape"]["position"])
        if key != last:
            last, since = key, time.monotonic()
        if time.monotonic() > deadline or time.monotonic() - since > ep.run.args.stall_bound * 2:
            ep.run.violate("the array did not settle to idle and optimal at a quiet point "
                           "(faults healed, nothing throttled): %s" % json.dumps(st),
                           rule="settle")
        settle_once(ep, c, st)
        t = time.monotonic()
        c.call("wait", timeout=3, log=False, bound=ep.run.args.reply_bound + 3)
        time.sleep(max(0, 0.5 - (time.monotonic() - t)))


def settle_once(ep, c, st):
    rs = st["reshape"]
    if rs and rs["state"] == "frozen":
        if rs["position"] == 0 and (ep.rng.random() < 0.3 or reshape_start_refusal(st)):
            c.call("abort")     # also what the man page says to do when start is refused
        else:
            c.call("start")
    elif st["sync_action"] == "frozen":
        c.call("start")
    left = member_of(ep, st, ep.left_out) if ep.left_out is not None else None
    if ep.left_out is not None and (left is None or left["state"] == "missing"):
        # The member left out at a restart (its entry missing: listed by
        # the spec it was last opened with, which names a file in full, or
        # gone when a spare has taken its role after the grace): handed to
        # add it rejoins, or joins as a new spare when its entry is gone
        # (nbdkit-raid-plugin(1), Assembly).  Refused only when its entry is
        # no longer absent (faulty: failed on request), then it is reused
        # below.
        rep = c.call("add", member=ep.left_out.spec)
        if not rep["ok"]:
            now = c.call("status", log=False)
            m = member_of(ep, now, ep.left_out)
            if m is not None and m["state"] == "missing":
                ep.run.violate("add of %s, a member left out at the last start and absent "
                               "since, was refused (%s %s); a member that comes back rejoins "
                               "when handed to add (nbdkit-raid-plugin(1), Assembly); "
                               "status: %s" % (ep.left_out.name, rep["error"], rep["message"],
                                               brief_status(now)), rule="rejoin")
            ep.left_out.wipe()
            ep.left_out = None
    spare = any(m["state"] == "spare" and ep.dev_of(m["spec"]) is not None and
                not ep.dev_of(m["spec"]).killed and ep.dev_of(m["spec"]) not in ep.severed
                for m in st["members"])
    for m in st["members"]:
        if m["spec"] is None and m["role"] is None:
            continue
        if m["state"] == "faulty" and m["role"] is not None and (
                spare or "remove-role" in ep.run.dodge):
            continue            # a spare takes its role by itself, which detaches it
        if m["state"] == "faulty":
            # Detach it and reuse its device.  The engine resolves a spec
            # only to a member whose device it holds open
            # (state_find_member), and a faulty member is not opened at a
            # start ("not an active member of this array: not used"): after
            # a restart its spec gets ENODEV, which proves the engine does
            # not hold the device, so it is free to wipe and add as a new
            # spare, as an administrator would.  The entry itself can then
            # only be named by its role; one without a role cannot be named
            # at all and stays listed (reported).  A device listed by a
            # second entry (added again since) is not named by spec: the
            # spec would name that entry.
            d = ep.dev_of(m["spec"])
            shared = d is not None and sum(ep.dev_of(x["spec"]) is d for x in st["members"]) > 1
            by_spec = None
            if m["spec"] and not shared:
                by_spec = c.call("remove", member=m["spec"])
            if m["role"] is not None and (by_spec is None or not by_spec["ok"] and
                                          by_spec["error"] == "ENODEV"):
                c.call("remove", member=m["role"])
            if d is not None and by_spec is not None and (
                    by_spec["ok"] or by_spec["error"] == "ENODEV"):
                d.wipe()
                c.call("add", member=d.spec)
    if len(lost_roles(st)) and not any(m["state"] == "spare" for m in st["members"]) \
       and st["sync_action"] == "idle":
        d = free_device(ep, 0.0, wipe=True, st=st) or extra_device(ep)
        c.call("add", member=d.spec)
        release(ep, d)


def extra_device(ep):
    """A new blank file device, claimed (released by release()): what an
    administrator brings when a role is lost and every device is in use
    (a reshape grew the array onto the device that would have been its
    spare)."""
    d = Device(ep.dir, "d%d" % len(ep.devs), max(x.size for x in ep.devs), False)
    with ep.claim_lock:
        ep.devs.append(d)
        ep.by_spec[d.spec] = d
        ep.by_spec.setdefault(os.path.realpath(d.path), d)
        ep.claimed.add(d)
    ep.run.event("quiet", "every device is in use and a role is lost: new device %s" % d.name)
    return d


def refusals(ep, c, st):
    """A refused request changes no state, not even the event count
    (nbdkit-raid-control(7), Replies).  On the settled array (no client
    I/O, nothing running), send requests the documented rules refuse; each
    must be refused, and the status afterwards must equal the status
    before."""
    r = random.Random("%d:%d:refusals:%d" % (ep.run.args.seed, ep.n, ep.nquiet))
    ep.nquiet += 1
    ins = [m for m in st["members"] if m["state"] == "in_sync" and m["spec"]]
    reqs = [("start", {}), ("freeze", {}), ("abort", {}),
            ("resize", {"size": 0}), ("resize", {"size": 1 << 60}),
            ("reshape", {"chunk": 3 * KiB}), ("reshape", {"layout": "no-such-layout"}),
            ("set", {"speed_min": 2 * MiB, "speed_max": 1 * MiB}),
            ("replace", {"member": 0, "with": os.path.join(ep.dir, "no-such-member")}),
            ("add", {"member": os.path.join(ep.dir, "no-such-member")}),
            ("fail", {"member": 31}), ("remove", {"member": 31})]
    if ins:
        m = ins[int(r.random() * len(ins))]
        reqs += [("remove", {"member": member_arg(m, r.random())}),
                 ("add", {"member": m["spec"]})]
    r.shuffle(reqs)
    before = c.call("status", log=False)
    for op, args in reqs[:6]:
        rep = c.call(op, **args)
        after = c.call("status", log=False)
        if rep["ok"]:
            ep.run.violate("%s %s was accepted on a settled %s array (the documented rules "
                           "refuse it); status now: %s" % (op, json.dumps(args), st["health"],
                                                           brief_status(after)),
                           rule="refusal")
        strip = ("id", "progress")
        if {k: v for k, v in before.items() if k not in strip} != \
           {k: v for k, v in after.items() if k not in strip}:
            diff = sorted(k for k in set(before) | set(after) if k not in strip and
                          before.get(k) != after.get(k))
            ep.run.violate("the refused request %s %s (%s %s) changed the status "
                           "(nbdkit-raid-control(7): "
                           "a refused request changes no state, not even the event count): "
                           "%s; before: %s; after: %s" % (
                               op, json.dumps(args), rep.get("error"), rep.get("message"),
                               ", ".join(diff), json.dumps({k: before.get(k) for k in diff}),
                               json.dumps({k: after.get(k) for k in diff})), rule="refusal")
        before = after


def scrub(ep, c):
    rep = c.call("check")
    if not rep["ok"]:
        ep.run.violate("check refused on an idle optimal array: %s" % json.dumps(rep),
                       rule="check")
    deadline = time.monotonic() + ep.run.args.settle_bound
    while True:
        st = c.call("wait", timeout=5, bound=ep.run.args.reply_bound + 5)
        if st["sync_action"] == "idle":
            break
        if time.monotonic() > deadline:
            ep.run.violate("check did not finish: %s" % brief_status(st), rule="settle")
    if st["mismatch_count"] != 0:
        ep.run.violate("check found %d mismatches on an optimal array at a quiet "
                       "point: %s; state changes since the last quiet point: %s" % (
                           st["mismatch_count"], brief_status(st), changes_since_quiet(ep)),
                       rule="mismatch")


def changes_since_quiet(ep):
    ch = [txt for t, txt in ep.run.changes if t >= ep.last_quiet]
    return "; ".join(ch[-25:]) or "none"


def compare_export(ep, why):
    with Conn(ep.uri) as h:
        n = min(h.get_size(), len(ep.model))
        got = pread_all(h, 0, n)
    if got != ep.model[:n]:
        ep.read_mismatch("main", "%s: full read" % why, 0, got, bytes(ep.model[:n]))
        ep.model[:n] = got          # --relax data: go on from what the array holds


def cpu_idle(ep, why):
    """When nothing runs the server must not spin: every wait in it sleeps
    until something wakes it, so an idle server uses next to no CPU.  A
    window in which the array's state changed (a member that came back
    rejoined and was resynced, a job began: its record's event count moved
    or an action runs) did work, not spin: it is measured again, at most
    three times; an array still changing then is not judged here (settle
    and its stall bound judge whether the work moves)."""
    hz = os.sysconf("SC_CLK_TCK")
    for attempt in range(3):
        st1 = ep.status()
        t1 = ep.srv.cpu_ticks()
        per1 = thread_ticks(ep.srv.pid)
        time.sleep(1.5)
        used = (ep.srv.cpu_ticks() - t1) / hz / 1.5
        if used <= ep.run.args.cpu_max:
            return
        per2 = thread_ticks(ep.srv.pid)
        st2 = ep.status()
        worked = st2["events"] != st1["events"] or \
            st2["sync_action"] not in ("idle", "frozen")
        if not worked:
            break
        ep.run.event("cpu", "%.0f%% of a CPU while the array changed (events %d -> %d, "
                     "%s): measured again" % (used * 100, st1["events"], st2["events"],
                                              st2["sync_action"]))
    else:
        return
    busy = sorted(((per2[k] - per1.get(k, 0), k) for k in per2), reverse=True)[:4]
    ep.run.violate("server uses %.0f%% of a CPU while idle (%s); busiest threads "
                   "(ticks, tid/name): %s; status: %s" % (
                       used * 100, why, busy, brief_status(st2)), rule="cpu")


def thread_ticks(pid):
    out = {}
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
            name = s[s.index("(") + 1:s.rindex(")")]
            fs = s.rsplit(")", 1)[1].split()
            out["%s/%s" % (tid, name)] = int(fs[11]) + int(fs[12])
    except OSError:
        pass
    return out


def clean_stop(ep):
    ep.stopping = True
    if not ep.srv.stop(ep.run.args.reply_bound):
        ep.run.violate("the array server did not exit within %.0f s of SIGTERM; log:\n%s" % (
            ep.run.args.reply_bound, ep.srv.log_tail(20)), rule="stop")


def check_members(ep, st):
    """The member images hold md's bytes (raidcheck.py, an independent
    placement and parity model) and the data is the model's; raid1: every
    mirror's data area holds the model's bytes."""
    if st["level"] == 1:
        check_mirrors(ep, st)
    if st["level"] not in (4, 5, 6):
        return
    roles = sorted((m["role"], m) for m in st["members"] if m["role"] is not None)
    devs = [ep.by_spec[m["spec"]] for _, m in roles]
    ex = raidcheck.parse_examine(subprocess.run(
        [ep.run.args.nbdraid, "examine", "--json"] + [d.path for d in devs],
        capture_output=True, text=True, timeout=60).stdout)
    g = raidcheck.Geometry(st["level"], raidcheck.parse_layout(st["layout"]), st["chunk"],
                           st["raid_devices"])
    offs = [m["data_offset"] for _, m in roles]
    for k, want in (("level", st["level"]), ("chunk", st["chunk"]),
                    ("raid_disks", st["raid_devices"]), ("layout", g.layout)):
        if ex.get(k) != want:
            ep.run.violate("superblocks say %s=%s, status said %s" % (k, ex.get(k), want),
                           rule="md-layout")
    for r, off in enumerate(offs):
        if ex["member_offsets"].get(r, off) != off:
            ep.run.violate("role %d: superblock data_offset %s, status %d" % (
                r, ex["member_offsets"].get(r), off), rule="md-layout")
    mem = raidcheck.Members([d.path for d in devs], offs)
    try:
        check_rows(ep, g, mem, st["size"])
    finally:
        mem.close()


def check_mirrors(ep, st):
    """raid1: the array's bytes lie at each member's data offset, whole, on
    every mirror in its role (md's raid1 placement)."""
    n = min(st["size"], len(ep.model))
    for m in st["members"]:
        if m["role"] is None or m["spec"] not in ep.by_spec:
            continue
        with open(ep.by_spec[m["spec"]].path, "rb") as f:
            f.seek(m["data_offset"])
            data = f.read(n)
        if data != ep.model[:n]:
            ep.run.violate("member images: role %d's mirror is not the model's data: %s; "
                           "state changes since the last quiet point: %s" % (
                               m["role"], describe_diff(0, data, bytes(ep.model[:n])),
                               changes_since_quiet(ep)), rule="md-layout")


def check_rows(ep, g, mem, size):
    rows = (size + g.width - 1) // g.width
    for row in range(rows):
        res = raidcheck.process_row(g, mem, row, set())
        if res.bad:
            what, role, k = res.bad[0]
            ep.run.violate("member images: row %d (array bytes [%d, +%d)): %s on role %d "
                           "differs from md's at byte +%d (%s); state changes since the last "
                           "quiet point: %s" % (row, row * g.width, g.width, what, role, k,
                                                g.describe(), changes_since_quiet(ep)),
                           rule="md-layout")
        lo = row * g.width
        data = b"".join(res.data)[:max(0, min(size, len(ep.model)) - lo)]
        if data != ep.model[lo:lo + len(data)]:
            ep.run.violate("member images: the data of row %d in md's placement is not the "
                           "model's: %s (%s)" % (row, describe_diff(
                               lo, data, bytes(ep.model[lo:lo + len(data)])), g.describe()),
                           rule="md-layout")


# -- beyond redundancy ---------------------------------------------------------

def doom(ep, vanish=False):
    """More members fail than the level tolerates (they fail every request,
    or with vanish their servers are killed: away members are not usable
    either): failed, EIO, control answers, no spinning."""
    with ep.server_lock:
        c = Control(ep, "doom")
        st = c.call("status")
        tol = tolerance(st["level"], st["raid_devices"])
        victims = [ep.by_spec[m["spec"]] for m in st["members"]
                   if m["role"] is not None and m["spec"] in ep.by_spec
                   and ep.by_spec[m["spec"]].nbd][:tol + 1]
        if len(victims) < tol + 1 or st["reshape"]:
            return
        ep.doomed = True
        ep.run.event("doom", "%s %s (tolerance %d)" % (
            "servers killed:" if vanish else "I/O errors on",
            " ".join(d.name for d in victims), tol))
        for d in victims:
            if vanish:
                with ep.fault_lock:
                    kill_member(ep, d, None)
            else:
                open(d.errfile, "w").close()
        deadline = time.monotonic() + ep.run.args.reply_bound
        while True:
            bounded_io(ep, "write")
            st = c.call("status")
            if st["health"] == "failed":
                break
            if time.monotonic() > deadline:
                ep.run.violate("%d members are lost but health is %s after %.0f s" % (
                    tol + 1, st["health"], ep.run.args.reply_bound), rule="doom")
        for kind in ("read", "write"):
            if bounded_io(ep, kind) is None:
                ep.run.violate("a %s on the failed array succeeded (must be EIO)" % kind,
                               rule="doom")
        ep.gate.pause("doom", disconnect=True)
        cpu_idle(ep, "failed array, no client I/O")
        c.call("status")
        c.close()
        clean_stop(ep)


def bounded_io(ep, kind, rule="doom"):
    """One request on a fresh connection, in a thread: it must complete
    (with an error or not) within the reply bound.  Returns the error
    (on a failed array, rule doom: only EIO)."""
    out = {}

    def body():
        try:
            with Conn(ep.uri) as h:
                n = min(h.get_size(), 1 * MiB)
                if kind == "read":
                    h.pread(n, 0)
                elif kind == "flush":
                    h.flush()
                else:
                    h.pwrite(bytes(n), 0)
                    h.flush()
            out["err"] = None
        except nbd.Error as e:
            out["err"] = e
    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(ep.run.args.reply_bound)
    if t.is_alive():
        ep.run.violate("a %s on the %s array did not complete within %.0f s" % (
            kind, "failed" if rule == "doom" else "", ep.run.args.reply_bound), rule=rule)
    err = out.get("err")
    if err is not None and nbd_errno(err) != 5 and rule == "doom":
        ep.run.violate("a %s on the failed array failed with %s, not EIO" % (kind, err),
                       rule="doom")
    return err


def main_loop(run):
    a = run.args
    base = a.keep_dir or tempfile.mkdtemp(prefix="stress.")
    run.tmp = base
    deadline = run.t0 + a.budget
    n = 0
    ep = None
    rc = 0
    try:
        while time.monotonic() < deadline and not run.stop.is_set():
            d = os.path.join(base, "epoch%d" % n)
            os.makedirs(d, exist_ok=True)
            ep = Epoch(run, n, d)
            run.epoch = ep
            with run.lock:
                if run.log is not None:
                    run.log.close()
                run.log = open(os.path.join(d, "events.log"), "w", buffering=1)
            run_epoch(ep, deadline)
            ep.teardown()
            if not a.keep:
                rmtree(d)
            n += 1
    except (Violation, Stopped):
        rc = 1
    except Exception:
        run.violation = run.violation or "tester error: " + traceback.format_exc()
        rc = 1
    if run.violation:
        rc = 1
        report(run, ep)
    else:
        print("stress: seed %d: %d epoch(s), %.0f s, no violation" % (a.seed, n, run.now()),
              flush=True)
    if ep is not None:
        ep.kill_all()
    if rc == 0 and not a.keep:
        rmtree(base)
    return rc


def rmtree(d):
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def report(run, ep):
    a = run.args
    print("\nstress: VIOLATION (seed %d, epoch %s, t=%.1f s):\n%s" % (
        a.seed, getattr(ep, "n", "?"), run.now(), run.violation), flush=True)
    if a.verbose and run.where:
        print("stress: found at:\n" + run.where)
    print("stress: replay: %s" % replay_command(a))
    evs = sorted(list(run.events) + list(run.io_events))
    print("stress: last %d schedule events and %d client requests:" % (
        len(run.events), len(run.io_events)))
    for _, line in evs:
        print("    " + line)
    if ep is not None and getattr(ep, "model", None) is not None:
        try:
            with open(os.path.join(ep.dir, "model.bin"), "wb") as f:
                f.write(ep.model)
            print("stress: the model of the export: %s; every event: %s" % (
                os.path.join(ep.dir, "model.bin"), os.path.join(ep.dir, "events.log")))
        except OSError:
            pass
    if ep is not None and getattr(ep, "srv", None):
        print("stress: array server log tail (%s):" % ep.srv.log)
        for line in ep.srv.log_tail(a.log_lines).splitlines():
            print("    " + line)
    print("stress: temp dir kept: %s" % run.tmp, flush=True)


def replay_command(a):
    argv = [sys.argv[0], "--seed", str(a.seed), "--budget", str(a.budget),
            "--plugin", a.plugin, "--nbdraid", a.nbdraid]
    if os.environ.get("SANITIZERS") == "yes":
        argv.insert(0, "SANITIZERS=yes")
    for opt in ("level", "members", "chunk", "consistency", "ops", "io", "threads", "slow",
                "member_size", "nbd_fraction", "member_timeout", "relax", "dodge", "phase", "epoch", "doom", "slow_kind",
                "hot", "batch", "speed_max",
                "kill_after"):
        v = getattr(a, opt)
        if v is not None:
            argv += ["--" + opt.replace("_", "-"), str(v)]
    return " ".join(argv)


def parse_args(argv):
    ap = argparse.ArgumentParser(description="nbdkit-raid stress tester (see the theory "
                                 "comment at the top of this file).")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--budget", type=float, default=60, help="seconds (default 60)")
    ap.add_argument("--level", type=int, choices=[0, 1, 4, 5, 6])
    ap.add_argument("--members", type=int, help="members at create (spares come on top)")
    ap.add_argument("--chunk", type=lambda s: raidcheck.parse_size(s))
    ap.add_argument("--consistency", choices=["journal", "bitmap", "resync"])
    ap.add_argument("--member-size", type=int, help="MiB per member")
    ap.add_argument("--nbd-fraction", type=float, help="share of NBD members (0..1)")
    ap.add_argument("--member-timeout", type=int, help="plugin parameter member-timeout "
                    "(default: 2, 5, 10 or 30 by the seed; 30 with slow members)")
    ap.add_argument("--slow", type=float, help="share of slow NBD members (0..1)")
    ap.add_argument("--slow-kind", choices=["delay", "rate", "mix"], default="mix",
                    help="slow members by latency (delay filter), bandwidth (rate "
                    "filter) or both (default)")
    ap.add_argument("--speed-max", type=lambda s: raidcheck.parse_size(s),
                    help="plugin parameter speed-max at every start: background work "
                    "stays slow across kills (until a 'set' op or a quiet point)")
    ap.add_argument("--hot", type=lambda s: raidcheck.parse_size(s),
                    help="client I/O only below this offset (SIZE): same-row collisions")
    ap.add_argument("--threads", type=int, help="client threads (default 3-5)")
    ap.add_argument("--mgmt-threads", type=int, default=3)
    ap.add_argument("--ops", help="NAME[=WEIGHT],... restrict the management/fault mix to "
                    "these (default: every op); +NAME=W adjusts one weight of the default "
                    "mix instead (names: %s; twin sends two reshapes that add a member, or "
                    "two of one random op, at once)" % " ".join(DEFAULT_OPS))
    ap.add_argument("--io", help="NAME[=WEIGHT],... the client request mix, as --ops "
                    "(names: %s)" % " ".join(CLIENT_OPS))
    ap.add_argument("--phase", type=float, help="seconds between quiet points (default 4-10)")
    ap.add_argument("--epoch", type=float, help="seconds per array (default 30-90)")
    ap.add_argument("--doom", type=float, default=0.3,
                    help="chance that an epoch ends beyond redundancy (default 0.3)")
    ap.add_argument("--kill-after", type=float, default=0.08,
                    help="chance of kill -9 right after a state-changing step")
    ap.add_argument("--batch", type=int, default=3,
                    help="most management ops sent at once in one step (default 3)")
    ap.add_argument("--step-pause", type=float, default=0.2,
                    help="longest pause between management steps (s)")
    ap.add_argument("--reply-bound", type=float, default=30)
    ap.add_argument("--settle-bound", type=float, default=240)
    ap.add_argument("--stall-bound", type=float, default=30)
    ap.add_argument("--cpu-max", type=float, default=0.10,
                    help="idle server CPU share allowed (default 0.10)")
    ap.add_argument("--relax", help="RULE,... log these violations instead of stopping "
                    "(to get past an already-reported defect; 'all' for every rule that "
                    "can be)")
    ap.add_argument("--dodge", help="KNOWN,... keep the schedule away from engine defects "
                    "already reported, to look for others (never the default): remove-role "
                    "(never remove a member that still holds a role; a spare's recovery "
                    "detaches it: removing one leaves the role's data offset unset, see "
                    "begin_recovery and vet_new_member), kill-rebuild (no kill -9 while a "
                    "role is being rebuilt: journal replay skips the rebuilding member)")
    ap.add_argument("--history", type=int, default=100)
    ap.add_argument("--log-lines", type=int, default=40)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    ap.add_argument("--keep-dir", help=argparse.SUPPRESS)
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--server-verbose", action="store_true", help="nbdkit -v for the array")
    ap.add_argument("--plugin", default=os.environ.get("PLUGIN") or os.path.join(
        HERE, "..", "build", ".libs", "nbdkit-raid-plugin.so"))
    ap.add_argument("--nbdraid", default=os.environ.get("NBDRAID") or os.path.join(
        HERE, "..", "build", "nbdraid", "nbdraid"))
    a = ap.parse_args(argv)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1 << 31)
    a.plugin = os.path.abspath(a.plugin)
    a.nbdraid = os.path.abspath(a.nbdraid)
    a.op_weights = op_weights(a.ops, DEFAULT_OPS)
    a.io_weights = op_weights(a.io, CLIENT_OPS)
    return a


def op_weights(spec, default):
    w = dict(default)
    if not spec:
        return w
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not all(s.startswith("+") for s in items):
        w = {}
    for s in items:
        name, _, val = s.lstrip("+").partition("=")
        if name not in default:
            raise SystemExit("stress: unknown op %r (ops: %s)" % (name, " ".join(default)))
        w[name] = float(val) if val else default[name]
    return w


def main(argv):
    a = parse_args(argv)
    print("stress: seed %d" % a.seed, flush=True)
    os.environ["PATH"] = "/usr/bin:" + os.environ.get("PATH", "")
    run = Run(a)
    return main_loop(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
