#!/usr/bin/env python3
# nbdkit-raid: helpers of test-e2e-torn.sh (a write torn by a kill in a
# row with a block on no member).
#
#   tear URI DIR PID OP SKIP
#       write (OP "write": random bytes, kept in DIR/new.bin) or zero (OP
#       "zero") data row 1 of the test's RAID6 (4 data blocks of 64 KiB at
#       array offset 256 KiB), leaving out its first SKIP bytes, and kill
#       the array server (PID) with SIGKILL once the row's P and its data
#       blocks 2 and 3 are on their member files (DIR/fI) while data
#       block 0's member (slow) has not written yet
#   judge URI DIR OP SKIP
#       every 4 KiB block of the row reads back as its old (the fill) or
#       its new contents; prints how many hold neither
import os
import random
import signal
import sys
import threading
import time

import nbd

CH = 65536
ROW = 4 * CH                 # array bytes of a row (4 data blocks)
MOFF = (8 << 20) + CH        # row 1 on every member (data offset 8M)
# right-asymmetric raid6 of 6, row 1: P role 1, Q role 2, data roles 0 3 4 5
P_ROLE, D_ROLES = 1, (0, 3, 4, 5)


def old_row():
    return random.Random(1).randbytes(2 * ROW)[ROW:2 * ROW]


def new_row(d, op):
    if op == "zero":
        return bytes(ROW)
    p = os.path.join(d, "new.bin")
    if not os.path.exists(p):
        open(p, "wb").write(random.Random(7).randbytes(ROW))
    return open(p, "rb").read()


def block(d, role):
    with open(os.path.join(d, "f%d" % role), "rb") as f:
        f.seek(MOFF)
        return f.read(CH)


def tear(uri, d, pid, op, skip):
    new = new_row(d, op)

    def client():
        h = nbd.NBD()
        h.connect_uri(uri)
        try:
            if op == "zero":
                h.zero(ROW - skip, ROW + skip)
            else:
                h.pwrite(new[skip:], ROW + skip)
        except nbd.Error:
            pass

    threading.Thread(target=client, daemon=True).start()
    t0 = time.time()
    p0 = block(d, P_ROLE)
    while time.time() - t0 < 30:
        p, d4, d5 = block(d, P_ROLE), block(d, 4), block(d, 5)
        if (p[skip:] != p0[skip:] and d4[skip:] == new[2 * CH + skip:3 * CH]
                and d5[skip:] == new[3 * CH + skip:]):
            os.kill(pid, signal.SIGKILL)
            print("killed with P and data blocks 2, 3 written, block 0 %s"
                  % ("written" if block(d, 0)[skip:] == new[skip:CH] else "not written"))
            return 0
        time.sleep(0.005)
    print("the in-place writes did not come")
    return 1


def judge(uri, d, op, skip):
    old, new = old_row(), bytearray(new_row(d, op))
    new[:skip] = old[:skip]
    h = nbd.NBD()
    h.connect_uri(uri)
    got = h.pread(ROW, ROW)
    h.shutdown()
    bad = 0
    for i in range(0, ROW, 4096):
        g = got[i:i + 4096]
        if g != old[i:i + 4096] and g != new[i:i + 4096]:
            bad += 1
    print(bad)
    return 0


def main(argv):
    if argv[0] == "tear" and len(argv) == 6:
        return tear(argv[1], argv[2], int(argv[3]), argv[4], int(argv[5]))
    if argv[0] == "judge" and len(argv) == 5:
        return judge(argv[1], argv[2], argv[3], int(argv[4]))
    print("usage: e2e_torn.py tear URI DIR PID OP SKIP | judge URI DIR OP SKIP",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
