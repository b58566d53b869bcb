#!/usr/bin/env python3
# nbdkit-raid: helpers of test-e2e-flap.sh (members that come and go).
#
#   write URI MODEL OFFSET LENGTH SEED [SECONDS]
#       write random 64 KiB blocks over [OFFSET, OFFSET+LENGTH) of the export
#       (once, or round and round for SECONDS), each acknowledged write also
#       written to MODEL, the expected image; prints the bytes written
#   verify URI MODEL
#       the export reads back exactly MODEL
#   datawrites LOG OFF0
#       bytes written at or beyond member offset OFF0, from nbdkit's log
#       filter
#   stalewrites LOG NLINES
#       writes logged after line NLINES of LOG that came on a connection
#       already open within its first NLINES lines (one the array gave up)
#   member URI-OR-SOCKET ROLE FIELD
#       a field of the member with ROLE in the control socket's status
import os
import random
import re
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import control_request  # noqa: E402

BLOCK = 64 << 10


def write(uri, model, off, length, seed, seconds=None):
    rnd = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    total = 0
    end = time.monotonic() + seconds if seconds else None
    with open(model, "r+b") as m:
        while True:
            pos = off
            while pos < off + length:
                n = min(BLOCK, off + length - pos)
                buf = rnd.randbytes(n)
                h.pwrite(buf, pos)
                m.seek(pos)
                m.write(buf)
                total += n
                pos += n
                if end and time.monotonic() >= end:
                    break
            if not end or time.monotonic() >= end:
                break
    h.flush()
    h.shutdown()
    print(total)


def verify(uri, model):
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    with open(model, "rb") as m:
        for pos in range(0, size, 1 << 20):
            n = min(1 << 20, size - pos)
            got = h.pread(n, pos)
            m.seek(pos)
            want = m.read(n)
            if got != want:
                i = next(k for k in range(n) if got[k] != want[k])
                print("differs at byte %d" % (pos + i), file=sys.stderr)
                return 1
    h.shutdown()
    return 0


def datawrites(log, off0):
    total = 0
    for line in open(log):
        m = re.search(r'Write id=\d+ offset=(0x[0-9a-f]+|\d+) count=(0x[0-9a-f]+|\d+)', line)
        if m and int(m.group(1), 0) >= off0:
            total += int(m.group(2), 0)
    print(total)


def stalewrites(log, nlines):
    old, n = set(), 0
    for i, line in enumerate(open(log)):
        m = re.search(r'connection=(\d+) (Connect|Write id=\d+ offset=)', line)
        if not m:
            continue
        if i < nlines:
            old.add(m.group(1))
        elif m.group(2) != "Connect" and m.group(1) in old:
            n += 1
    print(n)


def member(ctl, role, field):
    d = control_request(ctl, {"op": "status", "id": 1})
    ms = [x for x in d.get("members", []) if x.get("role") == int(role)]
    v = ms[0].get(field) if ms else "absent"
    print("" if v is None else v)


def main(argv):
    if argv[0] == "write":
        write(argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5]),
              float(argv[6]) if len(argv) > 6 else None)
        return 0
    if argv[0] == "verify":
        return verify(argv[1], argv[2])
    if argv[0] == "datawrites":
        datawrites(argv[1], int(argv[2]))
        return 0
    if argv[0] == "stalewrites":
        stalewrites(argv[1], int(argv[2]))
        return 0
    if argv[0] == "member":
        member(argv[1], argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
