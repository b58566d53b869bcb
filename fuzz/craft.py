#!/usr/bin/python3
# nbdkit-raid: write the hand-crafted fuzz inputs (python3 fuzz/craft.py).
#
# Each input reproduces one finding of "Member images from an attacker"
# (or seeds a target's corpus) in the input format its target documents at
# the top of fuzz/fuzz-*.c.  Before the validation rules they crashed,
# hung or wrote outside the data area; make check replays them all (under
# ASan/UBSan in the sanitizer build) so none can come back.
#
#   crashes/journal/negative-role          a log block with role -1: slot[-1],
#                                           data_offset[-1], 1u << -1
#   crashes/journal/len-past-payload       a block of 60000 bytes in a record
#                                           whose payload is 512, at the end of
#                                           the area: replay read past the buffer
#   crashes/journal/target-intent-2^60     an intent of the reshape target with
#                                           2^60 rows: a size that wraps to 0
#   crashes/journal/target-intent-2^24     2^24 rows: minutes of resync
#   crashes/journal/offset-in-ring         a block aimed at another member's
#                                           superblock slot 7
#   crashes/assemble/bitmap-cons-size-2^61 newer records with cons_size 2^61 on
#                                           a bitmap array: cons_size * 8 == 0
#   crashes/assemble/degraded-dirty-bitmap a bitmap array refused (dirty and
#                                           degraded): the failed assembly must
#                                           free its bitmap
import os
import struct
import sys

top = os.path.dirname(os.path.abspath(__file__))


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def write(path, data):
    path = os.path.join(top, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ---- fuzz-journal inputs ----
RAID5, RESHAPE = 0, 1
WIPE, FORCE = 1, 2
F_REL, F_PLEN, F_SEQ, F_HLEN = 1, 2, 4, 8


def jrecord(member, pos, layout, blocks=(), ranges=(), flags=0, plen=None,
            payload=b""):
    out = struct.pack("<BHBBBB", member, pos, layout, len(blocks), len(ranges),
                      flags)
    if flags & F_PLEN:
        out += struct.pack("<I", plen)
    for role, length, off in blocks:
        out += struct.pack("<IHQ", role & 0xFFFFFFFF, length, off)
    for row, rows in ranges:
        out += struct.pack("<QQ", row, rows)
    return out + payload


def journal(scenario, opts, *records):
    return bytes([scenario, opts]) + b"".join(records)


CONS_SECTORS = (4 * 1024 * 1024 - 256 * 1024) // 512

write("crashes/journal/negative-role", journal(RAID5, WIPE, jrecord(
    0, 0, 0, blocks=[(-1, 512, 0)], flags=F_REL, payload=b"A" * 512)))
write("crashes/journal/len-past-payload", journal(RAID5, WIPE, jrecord(
    0, CONS_SECTORS - 2, 0, blocks=[(1, 60000, 0)], flags=F_REL | F_PLEN,
    plen=512, payload=b"B" * 512)))
write("crashes/journal/target-intent-2^60", journal(RESHAPE, WIPE, jrecord(
    0, 0, 1, ranges=[(0, 1 << 60)])))
write("crashes/journal/target-intent-2^24", journal(RESHAPE, WIPE, jrecord(
    0, 0, 1, ranges=[(0, 1 << 24)])))
write("crashes/journal/offset-in-ring", journal(RAID5, WIPE, jrecord(
    0, 0, 0, blocks=[(1, 4096, 7 * 4096)], payload=b"Z" * 4096)))

# corpus: records that replay (a partial block, an intent, both layouts)
write("corpus/journal/valid-block", journal(RAID5, WIPE, jrecord(
    1, 0, 0, blocks=[(2, 512, 4096)], flags=F_REL, payload=b"C" * 512)))
write("corpus/journal/valid-intent", journal(RAID5, WIPE, jrecord(
    2, 8, 0, ranges=[(3, 2)])))
write("corpus/journal/reshape-both", journal(RESHAPE, 0,
    jrecord(0, 100, 1, blocks=[(4, 1024, 0)], ranges=[(1, 1)], flags=F_REL,
            payload=b"D" * 1024),
    jrecord(3, 200, 0, blocks=[(0, 100, 8192)], ranges=[(20, 3)], flags=F_REL,
            payload=b"E" * 100)))
write("corpus/journal/crash-as-left", journal(RAID5, 0))
write("corpus/journal/reshape-as-left", journal(RESHAPE, 0))

# ---- fuzz-assemble inputs ----
SC_RAID5_JOURNAL, SC_RAID6_RESHAPE, SC_RAID5_BITMAP, SC_RAID4_RESYNC = range(4)


def patch(member, off, data, newer=None):
    """op 0 (patch the newest record) or op 1 (a newer one, events + newer + 1)."""
    if newer is None:
        return struct.pack("<BBHB", 0, member, off, len(data) - 1) + data
    return struct.pack("<BBBHB", 1, member, newer, off, len(data) - 1) + data


def assemble(scenario, opts, drop, *ops):
    return bytes([scenario, opts, drop]) + b"".join(ops)


write("crashes/assemble/bitmap-cons-size-2^61", assemble(
    SC_RAID5_BITMAP, 0, 0,
    *[patch(m, 160, struct.pack("<Q", 1 << 61), newer=0) for m in range(4)]))
write("crashes/assemble/degraded-dirty-bitmap", assemble(SC_RAID5_BITMAP, 2, 1))
for sc in range(4):
    write("corpus/assemble/as-left-%d" % sc, assemble(sc, 0, 0))
    write("corpus/assemble/degraded-%d" % sc, assemble(sc, 2, 1))
    write("corpus/assemble/force-degraded-%d" % sc, assemble(sc, 3, 2))
write("corpus/assemble/newer-geometry", assemble(
    SC_RAID5_JOURNAL, 0, 0, patch(0, 124, struct.pack("<I", 5), newer=3)))

# ---- fuzz-sb inputs: slots of a valid record ----
def sb_slot(events, **kw):
    f = dict(level=5, layout=2, chunk=65536, raid_disks=3,
             component=(1 << 30) - (16 << 20), member_size=1 << 30)
    f.update(kw)
    s = bytearray(4096)
    s[0:8] = b"NBDRAID\x01"
    struct.pack_into("<II", s, 12, 1, 2560)
    struct.pack_into("<Q", s, 24, events)
    s[64:80] = b"\x42" * 16
    s[80:96] = b"\x10" * 16
    struct.pack_into("<IIII", s, 112, f["level"], f["layout"], f["chunk"],
                     f["raid_disks"])
    struct.pack_into("<QQQQQ", s, 128, f["component"], f["component"] * 2,
                     f["member_size"], 256 << 10, (4 << 20) - (256 << 10))
    struct.pack_into("<II", s, 168, 1, 0)
    struct.pack_into("<Q", s, 176, (1 << 64) - 1)
    struct.pack_into("<IIII", s, 200, f["level"], f["layout"], f["chunk"],
                     f["raid_disks"])
    struct.pack_into("<I", s, 224, 3)
    for i in range(3):
        e = 512 + 64 * i
        s[e:e + 16] = bytes([0x10 + i]) * 16
        struct.pack_into("<iIQQ", s, e + 16, i, 1, 16 << 20, 16 << 20)
    struct.pack_into("<I", s, 8, crc32c(bytes(s)))
    return bytes(s)


def sb_reshape(slot):
    """A prepared forward reshape of sb_slot's array to 4 members."""
    s = bytearray(slot)
    struct.pack_into("<II", s, 184, 1, 0)            # frozen, forward
    struct.pack_into("<I", s, 212, 4)                # new_raid_devices
    struct.pack_into("<Q", s, 216, ((1 << 30) - (12 << 20)) // 65536 * 65536 * 3)
    struct.pack_into("<I", s, 224, 4)
    for i in range(4):
        e = 512 + 64 * i
        s[e:e + 16] = bytes([0x10 + i]) * 16
        struct.pack_into("<iIQQ", s, e + 16, i, 1, (12 if i == 3 else 16) << 20, 12 << 20)
    s[8:12] = b"\0\0\0\0"
    struct.pack_into("<I", s, 8, crc32c(bytes(s)))
    return bytes(s)


write("corpus/sb/valid-record", b"\x00" + sb_slot(7))
write("corpus/sb/reshape-record", b"\x00" + sb_reshape(sb_slot(8)))
write("corpus/sb/raid6-bitmap", b"\x00" + sb_slot(9, level=6, layout=18, raid_disks=3))
write("corpus/sb/ring-of-three", b"\x00" + sb_slot(7) + sb_slot(8) + sb_slot(9))
write("corpus/sb/resealed-garbage", b"\x03" + bytes(range(256)) * 16)

# ---- fuzz-control inputs ----
lines = [
    b'{"op":"status","id":1}',
    b'{"op":"reshape","level":6,"add":["nbd://h/x"],"chunk":"64K","id":"a"}',
    b'{"op":"fail","member":2}',
    b'{"op":"add","member":"/tmp/m4"}',
    b'{"op":"replace","member":"1","with":null}',
    b'{"op":"resize","size":"max"}',
    b'{"op":"set","speed_min":"10M","speed_max":0}',
    b'{"op":"wait","timeout":1.5}',
    b'{"op":"fail","member\\u0000x":1}',
    b'{"op\\u0000x":"fail","member":1}',
    b'{"op":"fail\\u0000zzz","member":1}',
    b'{"op":"status","id":{"k\\u0000":1}}',
    b'{"op":"status"\x00}',
    b'not json',
    b'[1,2]',
]
for i, l in enumerate(lines):
    write("corpus/control/line-%02d" % i, l + b"\n")
write("corpus/control/many-lines", b"\n".join(lines) + b"\n")
