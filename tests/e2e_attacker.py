#!/usr/bin/python3
# nbdkit-raid: crafting member images as an attacker would, for
# test-e2e-attacker.sh.  The formats are those documented at the top of
# raidcore/sb.c (superblock records) and raidcore/journal.c (write-hole log
# records); both CRC32Cs are computed here, as anyone can.
#
#   e2e_attacker.py record FILE... -- FIELD=VALUE...
#       append to each member a newer record (events + 1) of its newest one
#       with the fields changed (names below; flags=dirty sets the dirty
#       bit), CRC-valid
#   e2e_attacker.py jrec FILE POS LAYOUT [block ROLE LEN OFF]... [intent ROW ROWS]...
#       [plen N] [rel]
#       write a log record at byte POS of FILE's consistency area naming
#       the array, epoch and first sequence number of FILE's newest record;
#       `rel` makes each block's OFF relative to its role's data offset
#   e2e_attacker.py snapshot DIR FILE...
#   e2e_attacker.py compare DIR [--cons-may-change] FILE...
#       the bytes of each member outside its data areas: every ring slot
#       unchanged or now a valid record of the same array with a higher
#       event count; the consistency area (unless it may change), head and
#       tail room byte for byte.  Prints "checks: PASSED FAILED".

import json
import os
import struct
import sys

SLOT = 4096
SLOTS = 64
RING = SLOT * SLOTS

FIELDS = {   # name: (offset, struct format)
    "events": (24, "<Q"), "level": (112, "<I"), "layout": (116, "<I"),
    "chunk": (120, "<I"), "raid_disks": (124, "<I"),
    "component_size": (128, "<Q"), "array_size": (136, "<Q"),
    "member_size": (144, "<Q"), "cons_offset": (152, "<Q"),
    "cons_size": (160, "<Q"), "consistency": (168, "<I"), "flags": (172, "<I"),
    "resync_offset": (176, "<Q"), "reshape_state": (184, "<I"),
    "reshape_position": (192, "<Q"), "new_raid_devices": (212, "<I"),
    "new_array_size": (216, "<Q"), "nmembers": (224, "<I"),
    "journal_epoch": (248, "<Q"), "journal_seq": (256, "<Q"),
}

_table = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _table.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def get(slot, name):
    off, fmt = FIELDS[name]
    return struct.unpack_from(fmt, slot, off)[0]


def slot_valid(slot):
    if slot[0:8] != b"NBDRAID\x01":
        return False
    s = bytearray(slot)
    s[8:12] = b"\0\0\0\0"
    return crc32c(bytes(s)) == struct.unpack_from("<I", slot, 8)[0]


def reseal(slot):
    slot[8:12] = b"\0\0\0\0"
    struct.pack_into("<I", slot, 8, crc32c(bytes(slot)))


def read_ring(path):
    with open(path, "rb") as f:
        return f.read(RING)


def newest(path):
    """(slot index, bytearray) of the valid record with the highest events."""
    ring = read_ring(path)
    best = None
    for s in range(SLOTS):
        slot = ring[s * SLOT:(s + 1) * SLOT]
        if slot_valid(slot) and (best is None or get(slot, "events") > get(best[1], "events")):
            best = (s, bytearray(slot))
    if best is None:
        raise SystemExit("%s: no valid record" % path)
    return best


def entries(slot):
    """Used member table entries: (uuid, role, state, data_offset, new_data_offset)."""
    out = []
    for i in range(get(slot, "nmembers")):
        e = 512 + 64 * i
        role, state, doff, ndoff = struct.unpack_from("<iIQQ", slot, e + 16)
        if state != 0:
            out.append((bytes(slot[e:e + 16]), role, state, doff, ndoff))
    return out


def own_entry(slot):
    for e in entries(slot):
        if e[0] == bytes(slot[80:96]):
            return e
    return None


def cmd_record(files, assigns):
    for path in files:
        s, slot = newest(path)
        ev = get(slot, "events") + 1
        struct.pack_into("<Q", slot, 24, ev)
        for a in assigns:
            name, value = a.split("=", 1)
            if name == "flags" and value == "dirty":
                struct.pack_into("<I", slot, 172, get(slot, "flags") | 1)
                continue
            off, fmt = FIELDS[name]
            struct.pack_into(fmt, slot, off, int(value, 0))
        reseal(slot)
        with open(path, "r+b") as f:
            f.seek((ev % SLOTS) * SLOT)
            f.write(slot)


def cmd_jrec(path, pos, layout, args):
    s, slot = newest(path)
    blocks, intents, plen, rel = [], [], None, False
    i = 0
    while i < len(args):
        if args[i] == "block":
            blocks.append((int(args[i + 1], 0), int(args[i + 2], 0), int(args[i + 3], 0)))
            i += 4
        elif args[i] == "intent":
            intents.append((int(args[i + 1], 0), int(args[i + 2], 0)))
            i += 3
        elif args[i] == "plen":
            plen = int(args[i + 1], 0)
            i += 2
        elif args[i] == "rel":
            rel = True
            i += 1
        else:
            raise SystemExit("jrec: what is %r?" % args[i])
    base = {}
    for uuid, role, state, doff, ndoff in entries(slot):
        base.setdefault(role, ndoff if layout == 1 else doff)
    hlen = (80 + 16 * (len(blocks) + len(intents)) + 511) // 512 * 512
    hdr = bytearray(hlen)
    payload = b"".join(bytes([0x40 + k % 26]) * length for k, (r, length, o) in enumerate(blocks))
    if plen is None:
        plen = len(payload)
    payload = payload[:plen].ljust(plen, b"\0")
    hdr[0:8] = b"NRJREC01"
    hdr[16:32] = slot[64:80]
    struct.pack_into("<QQIIIII", hdr, 32, get(slot, "journal_epoch"),
                     get(slot, "journal_seq"), len(blocks), len(intents), hlen, plen,
                     layout)
    e = 80
    for role, length, off in blocks:
        if rel:
            off += base.get(role, base.get(0, 0))
        struct.pack_into("<iIQ", hdr, e, role, length, off)
        e += 16
    for row, rows in intents:
        struct.pack_into("<QQ", hdr, e, row, rows)
        e += 16
    struct.pack_into("<I", hdr, 12, crc32c(payload))
    struct.pack_into("<I", hdr, 8, crc32c(bytes(hdr)))
    rec = bytes(hdr) + payload.ljust((plen + 511) // 512 * 512, b"\0")
    with open(path, "r+b") as f:
        f.seek(get(slot, "cons_offset") + pos)
        f.write(rec)


def regions(path):
    """Member byte ranges outside every data area, by kind."""
    s, slot = newest(path)
    size = os.path.getsize(path)
    cons = (get(slot, "cons_offset"), get(slot, "cons_offset") + get(slot, "cons_size"))
    areas = []
    comp = get(slot, "component_size")
    for uuid, role, state, doff, ndoff in entries(slot):
        areas.append((doff, doff + comp))
        if get(slot, "reshape_state"):
            areas.append((ndoff, size))     # the target: up to the end
    lo = min(a[0] for a in areas)
    hi = max(a[1] for a in areas)
    return {"cons": cons, "head": (cons[1], lo), "tail": (min(hi, size), size)}


def cmd_snapshot(out, files):
    os.makedirs(out, exist_ok=True)
    meta = {}
    for k, path in enumerate(files):
        r = regions(path)
        with open(path, "rb") as f:
            for kind, (lo, hi) in r.items():
                f.seek(lo)
                with open(os.path.join(out, "%d.%s" % (k, kind)), "wb") as g:
                    g.write(f.read(max(0, hi - lo)))
        with open(os.path.join(out, "%d.ring" % k), "wb") as g:
            g.write(read_ring(path))
        s, slot = newest(path)
        meta[path] = {"k": k, "regions": {kind: lo for kind, (lo, hi) in r.items()},
                      "events": get(slot, "events"), "uuid": bytes(slot[64:80]).hex()}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f)


def cmd_compare(snapdir, files, cons_may_change):
    with open(os.path.join(snapdir, "meta.json")) as f:
        meta = json.load(f)
    passed = failed = 0

    def check(cond, what):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print("FAIL: %s" % what, flush=True)

    def saved(k, kind):
        with open(os.path.join(snapdir, "%d.%s" % (k, kind)), "rb") as g:
            return g.read()

    for path in files:
        before = meta[path]
        k = before["k"]
        old, new = saved(k, "ring"), read_ring(path)
        for s in range(SLOTS):
            a, b = old[s * SLOT:(s + 1) * SLOT], new[s * SLOT:(s + 1) * SLOT]
            if a == b:
                continue
            check(slot_valid(b) and b[64:80].hex() == before["uuid"] and
                  get(b, "events") > before["events"],
                  "%s: ring slot %d was overwritten with something that is not a "
                  "newer record of this array" % (path, s))
        with open(path, "rb") as f:
            for kind, lo in before["regions"].items():
                if kind == "cons" and cons_may_change:
                    continue
                want = saved(k, kind)
                f.seek(lo)
                got = f.read(len(want))
                diff = -1
                if got != want:
                    diff = next((i for i in range(min(len(got), len(want)))
                                 if got[i] != want[i]), min(len(got), len(want)))
                check(diff < 0, "%s: %s bytes changed, first at member offset %d"
                      % (path, kind, lo + diff))
    print("checks: %d %d" % (passed, failed))
    sys.exit(1 if failed else 0)


def main(argv):
    cmd = argv[1]
    if cmd == "record":
        k = argv.index("--")
        cmd_record(argv[2:k], argv[k + 1:])
    elif cmd == "jrec":
        cmd_jrec(argv[2], int(argv[3], 0), int(argv[4], 0), argv[5:])
    elif cmd == "snapshot":
        cmd_snapshot(argv[2], argv[3:])
    elif cmd == "compare":
        may = "--cons-may-change" in argv
        files = [a for a in argv[3:] if a != "--cons-may-change"]
        cmd_compare(argv[2], files, may)
    else:
        raise SystemExit("unknown command %s" % cmd)


if __name__ == "__main__":
    main(sys.argv)
