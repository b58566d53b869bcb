#!/usr/bin/env bash
# nbdkit-raid: `nbdraid create` and `nbdraid examine`.
#
# Proves: create writes one consistent record per member (same array uuid,
# distinct member uuids, roles in order, spares, sizes computed from the
# smallest member and said on stderr, resync needed only when a member's
# data area holds data); every refusal listed in nbdraid(8), CREATE, exits
# 1 with a clear message and leaves every pre-existing file byte-for-byte
# unchanged and creates no file; usage errors exit 2; members and spares
# holding a real foreign signature (mkfs.ext4, an sfdisk GPT or MBR, an md
# v1.0/v1.2 superblock that mdadm --examine accepts, an LVM PV from
# pvcreate) are refused by name, also behind NBD, and --force overrides
# each and erases it (wipefs then finds nothing); with --json the result
# and every error are one JSON object on stdout; examine decodes the
# record, counts corrupt slots, keeps showing the newest intact record when
# another slot is damaged, reports a member without a valid record (exit
# 1), and names an incompatible feature.
#
# Environment: NBDRAID = the nbdraid binary to test.

set -euo pipefail
if [ "${NBDKIT_RAID_CHECK:-}" = unit ]; then   # see e2e_scope_gate in functions.sh
  echo "test-create: SKIP: NBDKIT_RAID_CHECK=unit: end-to-end test not run" >&2; exit 77
fi

NBDRAID=${NBDRAID:?set NBDRAID to the nbdraid binary}
PY=/usr/bin/python3

tmp=$(mktemp -d /tmp/test-create.XXXXXX)
cleanup () {
  local p
  for p in "$tmp"/*.pid; do
    [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null || :
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
d=$tmp/d                      # members live here; out/err files do not
mkdir "$d"
cd "$d"

checks=0
pass () { checks=$((checks + 1)); }
fail () {   # report the line of the top-level command that failed
  echo "test-create.sh:${BASH_LINENO[${#BASH_LINENO[@]} - 2]}: FAIL: $*" >&2
  exit 1
}
# expect ACTUAL EXPECTED [WHAT]
expect () {
  [[ $1 == "$2" ]] || fail "${3:-value}: got '$1', expected '$2'"
  pass
}

# Python helpers: jq-like queries and raw record surgery.  The record
# fields used here (magic 0, CRC32C 8, events 24, feature_incompat 48) sit in
# bytes 0..63, which sb.c keeps fixed in every format version.
cat > "$tmp/h.py" <<'EOF'
import json, struct, sys

def query(expr):
    d = json.load(sys.stdin)
    print(eval(expr, {"d": d}))

def crc32c(data):
    tab = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        tab.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = tab[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

SLOT = 4096

def restamp(path, src, dst, events=None, incompat=None):
    with open(path, "r+b") as f:
        f.seek(src * SLOT)
        s = bytearray(f.read(SLOT))
        if events is not None:
            s[24:32] = struct.pack("<Q", events)
        if incompat is not None:
            s[48:56] = struct.pack("<Q", incompat)
        s[8:12] = b"\0\0\0\0"
        s[8:12] = struct.pack("<I", crc32c(bytes(s)))
        f.seek(dst * SLOT)
        f.write(s)

if sys.argv[1] == "q":
    query(sys.argv[2])
else:
    restamp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
            int(sys.argv[5]) if sys.argv[5] != "-" else None,
            int(sys.argv[6]) if len(sys.argv) > 6 else None)
EOF
# q FILE EXPR: evaluate EXPR with d = the JSON document in FILE
q () { "$PY" "$tmp/h.py" q "$2" < "$1"; }

# A fingerprint of every file in $d: names, types, sizes, allocation, and
# modification and change times in ns (any write, truncate or allocation
# changes them; fixtures are made a tick before they are first used, see
# below), plus the bytes of every file's superblock ring (its first 256K).
snapshot () {
  find . -printf '%p %y %s %b %l %T@ %C@\n' | LC_ALL=C sort
  find . -type f -print0 | LC_ALL=C sort -z |
    xargs -0r head -q -c $((256 * 1024)) | cksum
}

# refuse CODE REGEX NBDRAID-ARGS...: exit CODE, a "nbdraid: " message
# matching REGEX on stderr, nothing on stdout (unless the subcommand is
# examine, which still reports what it found), and $d unchanged.
refuse () {
  local code=$1 re=$2 rc=0 before after
  shift 2
  before=$(snapshot)
  "$NBDRAID" "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?
  [[ $rc -eq $code ]] ||
    fail "nbdraid $*: exit $rc, expected $code; stderr: $(cat "$tmp/err")"
  grep -Eq -- "^nbdraid[ :].*$re" "$tmp/err" ||
    fail "nbdraid $*: stderr does not match '$re': $(cat "$tmp/err")"
  [[ $1 == examine || ! -s $tmp/out ]] ||
    fail "nbdraid $*: wrote to stdout: $(cat "$tmp/out")"
  after=$(snapshot)
  [[ $before == "$after" ]] || fail "nbdraid $*: files changed"
  pass
}

# run NBDRAID-ARGS...: must exit 0; stdout in $tmp/out
run () {
  "$NBDRAID" "$@" > "$tmp/out" 2> "$tmp/err" ||
    fail "nbdraid $*: exit $?; stderr: $(cat "$tmp/err")"
  pass
}

# examine_json FILE MEMBER...: examine --json into FILE, must exit 0
examine_json () {
  local f=$1
  shift
  "$NBDRAID" examine --json "$@" > "$f" 2> "$tmp/err" ||
    fail "examine --json $*: exit $?; stderr: $(cat "$tmp/err")"
  pass
}

uuid_re='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
M=$((1024 * 1024))

# ---- RAID5 of 4 new sparse files ----
run create --level=5 --size=64M m0 m1 m2 m3
uuid=$(cat "$tmp/out")
[[ $uuid =~ $uuid_re ]] || fail "create printed '$uuid', not a uuid"
expect "$(wc -l < "$tmp/out")" 1 "create stdout lines"
for m in m0 m1 m2 m3; do
  expect "$(stat -c %s $m)" $((64 * M)) "size of $m"
  [[ $(stat -c %b $m) -lt 4096 ]] || fail "$m is not sparse"
done

examine_json "$tmp/e.json" m0 m1 m2 m3
j=$tmp/e.json
expect "$(q "$j" 'len(d["members"])')" 4 "examined members"
expect "$(q "$j" '[m["role"] for m in d["members"]]')" "[0, 1, 2, 3]" roles
expect "$(q "$j" 'sorted(set(m["array_uuid"] for m in d["members"]))')" \
       "['$uuid']" "array uuid"
expect "$(q "$j" 'len(set(m["member_uuid"] for m in d["members"]))')" 4 \
       "distinct member uuids"
expect "$(q "$j" 'set(m["superblock"] for m in d["members"])')" "{'valid'}" status
expect "$(q "$j" 'set(m["level"] for m in d["members"])')" "{5}" level
expect "$(q "$j" 'set(m["layout"] for m in d["members"])')" "{'left-symmetric'}" layout
expect "$(q "$j" 'set(m["chunk"] for m in d["members"])')" "{65536}" chunk
expect "$(q "$j" 'set(m["raid_devices"] for m in d["members"])')" "{4}" raid_devices
expect "$(q "$j" 'set(m["events"] for m in d["members"])')" "{1}" events
expect "$(q "$j" 'set(m["data_offset"] for m in d["members"])')" "{$((16 * M))}" data_offset
expect "$(q "$j" 'set(m["component_size"] for m in d["members"])')" "{$((48 * M))}" component_size
expect "$(q "$j" 'set(m["array_size"] for m in d["members"])')" "{$((144 * M))}" array_size
expect "$(q "$j" 'set(m["member_size"] for m in d["members"])')" "{$((64 * M))}" member_size
expect "$(q "$j" 'set(m["consistency"] for m in d["members"])')" "{'journal'}" consistency
expect "$(q "$j" 'set(m["state"] for m in d["members"])')" "{'clean'}" state
expect "$(q "$j" '[m["resync_offset"] for m in d["members"]]')" "[None, None, None, None]" \
       "resync_offset (new sparse files need no resync)"
expect "$(q "$j" 'set(m["reshape"] is None for m in d["members"])')" "{True}" reshape
expect "$(q "$j" '[(m["ring"]["valid"], m["ring"]["corrupt"], m["ring"]["empty"]) for m in d["members"]][0]')" \
       "(1, 0, 63)" "ring counts"
expect "$(q "$j" '[h["events"] for h in d["members"][0]["ring"]["history"]]')" "[1]" history
# every member carries the same member table: 4 in_sync roles, its own uuid
expect "$(q "$j" '[(e["role"], e["state"]) for e in d["members"][2]["members"]]')" \
       "[(0, 'in_sync'), (1, 'in_sync'), (2, 'in_sync'), (3, 'in_sync')]" "member table"
expect "$(q "$j" '[e["uuid"] for e in d["members"][0]["members"]] == [m["member_uuid"] for m in d["members"]]')" \
       True "member table uuids match the members"
expect "$(q "$j" '[[e["this"] for e in m["members"]].index(True) for m in d["members"]]')" \
       "[0, 1, 2, 3]" "each record marks its own member"

# examine, text form
"$NBDRAID" examine m2 > "$tmp/out" 2> "$tmp/err" || fail "examine m2: exit $?"
grep -Eq "Array UUID : $uuid\$" "$tmp/out" || fail "examine text: no array uuid"
grep -Eq "Role : 2 \(in_sync\)\$" "$tmp/out" || fail "examine text: no role"
grep -Eq "Layout : left-symmetric\$" "$tmp/out" || fail "examine text: no layout"
grep -Eq "Journal Ring : 64 slots: 1 valid, 0 corrupt, 63 empty\$" "$tmp/out" ||
  fail "examine text: no ring summary"
[[ ! -s $tmp/err ]] || fail "examine text wrote to stderr"
pass

# ---- fixtures for the refusals: existing files with non-zero metadata ----
mkfix () {  # mkfix NAME BYTES: the first min(BYTES, 5M) full of 0xa5
  truncate -s "$2" "$1"
  head -c $(($2 < 5 * M ? $2 : 5 * M)) /dev/zero | tr '\0' '\245' |
    dd of="$1" conv=notrunc status=none
}
for f in e0 e1 e2 e3; do mkfix $f $((17 * M)); done
mkfix small $M
ln -s e1 link-e1
ln e2 hard-e2
sleep 0.05     # let the clock tick: a write now would change every mtime

# member too small (minimum: data offset 16M + 2 chunks of 64K)
refuse 1 "small: member is too small \(1048576 bytes, needs at least $((16 * M + 128 * 1024))\)" \
  create --level=5 e0 e1 e2 small
refuse 1 "e0: member is too small \($((17 * M)) bytes, needs at least $((64 * M))\)" \
  create --level=5 --size=64M e0 e1 e2
refuse 1 "size 1048576 is too small for a member" \
  create --level=5 --size=1M n0 n1 n2
refuse 1 "e0: member is too small \($((17 * M)) bytes, needs at least $((18 * M))\)" \
  create --level=5 --data-offset=16M --chunk=1M e0 e1 e2 e3
# named twice: same spelling, another spelling, symlink, hard link, new file
refuse 1 "e0 is named twice" create --level=5 e0 e1 e0
refuse 1 "named twice \(as e0 and \./e0\)" create --level=5 e0 e1 ./e0
refuse 1 "named twice \(as e1 and $d/e1\)" create --level=5 e0 e1 "$d/e1"
refuse 1 "named twice \(as e1 and link-e1\)" create --level=5 e0 e1 link-e1
refuse 1 "named twice \(as e2 and hard-e2\)" create --level=5 e0 e2 hard-e2
refuse 1 "named twice \(as n0 and \./n0\)" create --level=5 --size=20M n0 e1 ./n0
refuse 1 "e0 is named twice" create --level=5 --spare=e0 e0 e1 e2
# already in an array
refuse 1 "m1 already belongs to array $uuid; use --force" create --level=5 e0 m1 e2
refuse 1 "m3 already belongs to array $uuid; use --force" create --level=5 --spare=m3 e0 e1 e2
# too few members for the level
refuse 1 "raid5 needs at least 2 members" create --level=5 e0
refuse 1 "raid6 needs at least 4 members" create --level=6 e0 e1 e2
refuse 1 "raid4 needs at least 3 members" create --level=4 e0 e1
refuse 1 "level 7 is not supported" create --level=7 e0 e1 e2
# chunk
refuse 1 "chunk 3000 is not a power of two between 4K and 64M" create --level=5 --chunk=3000 e0 e1 e2
refuse 1 "chunk 98304 is not a power of two" create --level=5 --chunk=96K e0 e1 e2
refuse 1 "chunk 2048 is not a power of two between 4K and 64M" create --level=5 --chunk=2K e0 e1 e2
refuse 1 "chunk 134217728 is not a power of two" create --level=5 --chunk=128M e0 e1 e2
refuse 1 "chunk 0 is not a power of two" create --level=5 --chunk=0 e0 e1 e2
# layouts
refuse 1 "layout left-symmetric-6 does not exist for raid5" \
  create --level=5 --layout=left-symmetric-6 e0 e1 e2
refuse 1 "layout left-symmetric does not exist for raid4" \
  create --level=4 --layout=left-symmetric e0 e1 e2
refuse 1 "layout left-symmetric does not exist for raid1" \
  create --level=1 --layout=left-symmetric e0 e1
refuse 1 "unknown layout 'diagonal'" create --level=5 --layout=diagonal e0 e1 e2
# data offset
refuse 1 "data offset 1048576 is below the end of the metadata area" \
  create --level=5 --data-offset=1M e0 e1 e2
refuse 1 "data offset 5000000 is not a multiple of 4K" \
  create --level=5 --data-offset=5000000 e0 e1 e2
# members that cannot be used
refuse 1 "n9: No such file or directory \(give --size to create it\)" create --level=5 e0 e1 n9
refuse 1 "nodir/n0: No such file or directory" create --level=5 --size=20M e0 e1 nodir/n0
mkdir adir
refuse 1 "adir: not a regular file or block device" create --level=5 e0 e1 adir
rmdir adir
# a refusal discovered at the last member leaves earlier new files uncreated
refuse 1 "small: member is too small" create --level=5 --size=20M n0 n1 small

# usage errors exit 2
refuse 2 "invalid size '64Q'" create --level=5 --chunk=64Q e0 e1 e2
refuse 2 "invalid size 'abc'" create --level=5 --size=abc n0 n1 n2
refuse 2 "invalid size '-1'" create --level=5 --data-offset=-1 e0 e1 e2
refuse 2 "invalid level 'five'" create --level=five e0 e1 e2
refuse 2 "expected journal, bitmap or resync" create --level=5 --consistency=ppl e0 e1 e2
refuse 2 "--level is required" create e0 e1 e2
refuse 2 "no members given" create --level=5
refuse 2 "unrecognized option" create --level=5 --bogus e0 e1 e2
refuse 2 "unknown subcommand 'frobnicate'" frobnicate
refuse 2 "no members given" examine
refuse 2 "status: needs -C SOCKET" status
refuse 2 "create works on the members directly" -C "$tmp/sock" create --level=5 e0 e1 e2
# No server at the socket: a clear error, exit 1 (the protocol itself is
# tested by test-control.sh).
refuse 1 "connect: No such file or directory" -C "$tmp/sock" status
NBDRAID_CONTROL=$tmp/sock refuse 1 "connect: No such file or directory" freeze
"$NBDRAID" --help > "$tmp/out" || fail "--help: exit $?"
grep -q "nbdraid examine \[--json\] MEMBER" "$tmp/out" || fail "--help: no usage"
"$NBDRAID" create --help > "$tmp/out" || fail "create --help: exit $?"
grep -q "nbdraid create --level=LEVEL" "$tmp/out" || fail "create --help: no usage"
rc=0; "$NBDRAID" > "$tmp/out" 2>&1 || rc=$?
expect $rc 2 "no subcommand"

# ---- --force overwrites a member of another array ----
run create --level=5 --force e0 m1 e2
uuid2=$(cat "$tmp/out")
[[ $uuid2 =~ $uuid_re && $uuid2 != "$uuid" ]] || fail "--force: uuid '$uuid2'"
examine_json "$tmp/f.json" e0 m1 e2
j=$tmp/f.json
expect "$(q "$j" 'set(m["array_uuid"] for m in d["members"])')" "{'$uuid2'}" "--force array uuid"
expect "$(q "$j" '[m["ring"]["valid"] for m in d["members"]]')" "[1, 1, 1]" \
  "--force leaves no old record behind"
expect "$(q "$j" 'd["members"][0]["component_size"]')" $((M)) "component from a 17M member"
expect "$(q "$j" '[m["member_size"] for m in d["members"]]')" \
  "[$((17 * M)), $((64 * M)), $((17 * M))]" "member sizes"
# data areas are zero (the 0xa5 fixture stops at 5M): no resync needed
expect "$(q "$j" '[m["resync_offset"] for m in d["members"]]')" "[None, None, None]" \
  "non-zero metadata but zero data areas: in sync"
# the whole metadata area [0, 4M) was zeroed but for the record; head room kept
expect "$(head -c 4096 e0 | tr -d '\0' | wc -c)" 0 "slot 0 of e0 zeroed"
expect "$(dd if=e0 bs=4096 skip=2 count=1022 status=none | tr -d '\0' | wc -c)" 0 \
  "rest of e0's metadata area zeroed"
expect "$(dd if=e0 bs=1M skip=4 count=1 status=none | tr -d '\245' | wc -c)" 0 \
  "e0's head room untouched"

# ---- initial sync decision ----
# an allocated extent of zeroes in the data area still reads as zero
dd if=/dev/zero of=e1 bs=64K seek=$((16 * 16)) count=4 conv=notrunc status=none
run create --level=5 --force e0 e1 e2
examine_json "$tmp/s.json" e0
expect "$(q "$tmp/s.json" 'd["members"][0]["resync_offset"]')" None "zero-filled extent: in sync"
# one byte of data in one member's data area: resync from 0
printf 'x' | dd of=e2 bs=1 seek=$((16 * M + 12345)) conv=notrunc status=none
run create --level=5 --force e0 e1 e2
examine_json "$tmp/s.json" e0 e1 e2
expect "$(q "$tmp/s.json" '[m["resync_offset"] for m in d["members"]]')" "[0, 0, 0]" \
  "data in a data area: resync needed"
run create --level=5 --force --assume-clean e0 e1 e2
examine_json "$tmp/s.json" e0
expect "$(q "$tmp/s.json" 'd["members"][0]["resync_offset"]')" None "--assume-clean"
run create --level=0 --force e0 e1 e2
examine_json "$tmp/s.json" e2
expect "$(q "$tmp/s.json" 'd["members"][0]["resync_offset"]')" None "raid0 never resyncs"
expect "$(q "$tmp/s.json" '(d["members"][0]["layout"], d["members"][0]["array_size"])')" \
  "('none', $((3 * M)))" "raid0 geometry"

# ---- other levels, spares, sizes and options ----
run create --level=6 --size=32M --spare=s0 r0 r1 r2 r3
examine_json "$tmp/r.json" r0 s0
j=$tmp/r.json
expect "$(q "$j" '[(m["role"], m["member_state"]) for m in d["members"]]')" \
  "[(0, 'in_sync'), (None, 'spare')]" "raid6 role and spare"
expect "$(q "$j" '[(e["role"], e["state"]) for e in d["members"][1]["members"]][4]')" \
  "(None, 'spare')" "spare in the member table"
expect "$(q "$j" '(d["members"][0]["array_size"], d["members"][0]["data_disks"], d["members"][0]["layout"])')" \
  "($((32 * M)), 2, 'left-symmetric')" "raid6 geometry"
refuse 1 "e3: member is too small \($((17 * M)) bytes, needs at least $((32 * M))\)" \
  create --level=5 --size=32M --spare=e3 x0 x1 x2
run create --level=1 --size=20M mir0 mir1
examine_json "$tmp/r.json" mir1
expect "$(q "$tmp/r.json" '(d["members"][0]["layout"], d["members"][0]["array_size"], d["members"][0]["role"])')" \
  "('none', $((4 * M)), 1)" "raid1"
run create --level=4 --size=20M p0 p1 p2
examine_json "$tmp/r.json" p2
expect "$(q "$tmp/r.json" '(d["members"][0]["layout"], d["members"][0]["array_size"])')" \
  "('parity-last', $((8 * M)))" "raid4"
# mixed sizes: the smallest member decides the component size
truncate -s 40M t0
truncate -s 64M t1 t2
run create --level=5 --chunk=1M t0 t1 t2
cp "$tmp/err" "$tmp/sizes.err"
examine_json "$tmp/r.json" t0 t1
j=$tmp/r.json
expect "$(q "$j" '[(m["component_size"], m["member_size"]) for m in d["members"]]')" \
  "[($((24 * M)), $((40 * M))), ($((24 * M)), $((64 * M)))]" "mixed sizes"
grep -Fqx "nbdraid: members differ in size: the smallest, t0 (40M), sets the size of every member; unused: t1 24M, t2 24M" \
  "$tmp/sizes.err" || fail "mixed sizes not said: $(cat "$tmp/sizes.err")"
pass
# --size on existing larger members: each contributes exactly SIZE bytes
run create --level=5 --force --size=32M --data-offset=8M --chunk=128K \
  --layout=right-asymmetric --consistency=bitmap t0 t1 t2
examine_json "$tmp/r.json" t2
j=$tmp/r.json
expect "$(q "$j" '[d["members"][0][k] for k in ("member_size", "data_offset", "component_size", "array_size", "chunk", "layout", "consistency")]')" \
  "[$((32 * M)), $((8 * M)), $((24 * M)), $((48 * M)), 131072, 'right-asymmetric', 'bitmap']" \
  "--size, --data-offset, --chunk, --layout, --consistency"
expect "$(stat -c %s t1)" $((64 * M)) "--size never truncates an existing member"
! grep -q "differ in size" "$tmp/err" || fail "--size: sizes said to differ"
pass
truncate -s 40M t3
run create --level=5 --force --spare=t3 t0 t1 t2
grep -Fqx "nbdraid: members differ in size: the smallest, t0 (40M), sets the size of every member; unused: t1 24M, t2 24M" \
  "$tmp/err" || fail "a spare as large as the smallest: $(cat "$tmp/err")"
pass

# ---- foreign signatures (libblkid): refused by name, --force erases ----
# Each fixture is a 20M file (a member needs 16M + 2 chunks) holding one
# real signature, made by the tool that makes it on disks.  A refusal leaves
# every byte of every file as it was and creates no file; --force creates
# the array and erases the signature, so blkid and wipefs find nothing.
mkdir "$d/sig"
cd "$d/sig"
wipefs=$(command -v wipefs || :)
blkid=$(command -v blkid || :)
# sig_files: full checksums of every file here, and the names
sig_files () { find . -type f -print0 | LC_ALL=C sort -z | xargs -0r cksum; ls -A; }
# refuse_sig REGEX ARGS...: create refused with REGEX, nothing changed
refuse_sig () {
  local re=$1 before
  shift
  before=$(sig_files)
  refuse 1 "$re" "$@"
  [[ $(sig_files) == "$before" ]] || fail "create $*: a member changed"
}
# no_signature FILE: blkid and wipefs find nothing on FILE
no_signature () {
  if [[ -n $blkid ]]; then
    rc=0; "$blkid" -p "$1" > "$tmp/blkid.out" 2>&1 || rc=$?
    [[ $rc -eq 2 ]] || fail "$1 still holds a signature (blkid -p): $(cat "$tmp/blkid.out")"
  fi
  if [[ -n $wipefs ]]; then
    [[ -z $("$wipefs" --noheadings "$1") ]] ||
      fail "$1 still holds a signature (wipefs): $("$wipefs" "$1")"
  fi
  pass
}
# md_super FILE VERSION: an md v1.0 (end) or v1.2 (4K) superblock, as mdadm
# writes it (mdadm --create needs the kernel's md driver, which a test
# cannot count on; mdadm --examine checks this one below)
md_super () {
  "$PY" - "$1" "$2" <<'PYEOF'
import os, struct, sys
path, version = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
sector = {"1.0": ((size >> 9) - 16) & ~7, "1.2": 8}[version]
max_dev = 4
sb = bytearray(256 + 2 * max_dev)
struct.pack_into("<IIII", sb, 0, 0xa92b4efc, 1, 0, 0)        # magic, major
sb[16:32] = os.urandom(16)                                   # set_uuid
sb[32:64] = b"nbdraid-test:0".ljust(32, b"\0")               # set_name
struct.pack_into("<QIIQII", sb, 64, 0, 1, 0, 8192, 0, 2)     # raid1, 2 devs
struct.pack_into("<QQQQ", sb, 128, 2048 if version == "1.2" else 0, 8192,
                 sector, 0)                                  # offsets
sb[168:184] = os.urandom(16)                                 # device_uuid
struct.pack_into("<QQQ", sb, 192, 0, 1, 2**64 - 1)           # events 1
struct.pack_into("<I", sb, 220, max_dev)
struct.pack_into("<HHHH", sb, 256, 0, 1, 0xffff, 0xffff)     # dev_roles
s = sum(struct.unpack_from("<%dI" % (len(sb) // 4), sb))
struct.pack_into("<I", sb, 216, ((s & 0xffffffff) + (s >> 32)) & 0xffffffff)
with open(path, "r+b") as f:
    f.seek(sector * 512)
    f.write(sb)
PYEOF
}
# lvm_label FILE: an LVM2 physical volume label.  pvcreate needs a block
# device: a loop device when we may make one, else the label pvcreate
# writes (LABELONE in sector 1 with LVM's CRC, as libblkid checks it).
lvm_label () {
  local loop
  if [[ $(id -u) -eq 0 ]] && command -v pvcreate > /dev/null &&
     loop=$(losetup -f --show "$1" 2> /dev/null); then
    LVM_SUPPRESS_FD_WARNINGS=1 pvcreate -qq -y \
      --config 'devices { use_devicesfile = 0 hints = "none" }' \
      "$loop" > /dev/null 2>&1 || :
    losetup -d "$loop"
  fi
  [[ -z $blkid ]] || "$blkid" -p -s TYPE "$1" 2> /dev/null | grep -q LVM2_member && return 0
  echo "test-create.sh: note: no pvcreate on a loop device here: LVM label made by hand"
  "$PY" - "$1" <<'PYEOF'
import os, struct, sys, zlib
def lvm_crc(data, init=0xf597a6cf):      # LVM's calc_crc: CRC-32, no final xor
    return zlib.crc32(data, init ^ 0xffffffff) ^ 0xffffffff
label = bytearray(512)
label[0:8] = b"LABELONE"
struct.pack_into("<QII", label, 8, 1, 0, 32)                 # sector, crc, offset
label[24:32] = b"LVM2 001"
label[32:64] = b"nbdraidTestPvUuid0123456789abcde"          # pv_header
struct.pack_into("<Q", label, 64, os.path.getsize(sys.argv[1]))
struct.pack_into("<I", label, 16, lvm_crc(bytes(label[20:])))
with open(sys.argv[1], "r+b") as f:
    f.seek(512)
    f.write(label)
PYEOF
}

for f in x-ext4 x-gpt x-mbr x-md10 x-md12 x-lvm z0 z1 z2; do truncate -s 20M $f; done
command -v mkfs.ext4 > /dev/null && mkfs.ext4 -q -F -L precious x-ext4 > /dev/null ||
  fail "mkfs.ext4 is needed (e2fsprogs)"
if command -v sfdisk > /dev/null; then
  printf 'label: gpt\n,8M\n' | sfdisk -q x-gpt > /dev/null
  printf 'label: dos\n,8M\n' | sfdisk -q x-mbr > /dev/null
else
  fail "sfdisk is needed (fdisk)"
fi
md_super x-md10 1.0
md_super x-md12 1.2
lvm_label x-lvm
if command -v mdadm > /dev/null; then
  for f in x-md10 x-md12; do
    mdadm --examine $f 2> /dev/null | grep -Eq 'Checksum : [0-9a-f]+ - correct' ||
      fail "mdadm --examine does not accept the superblock of $f"
  done
  pass
fi
[[ -z $wipefs ]] || [[ $("$wipefs" --noheadings x-gpt | wc -l) -eq 3 ]] ||
  fail "the GPT fixture is not what wipefs expects: $("$wipefs" x-gpt)"
sleep 0.05     # let the clock tick: a write now would change every mtime

refuse_sig "x-ext4 holds an ext4 filesystem labelled \"precious\" \(use --force to overwrite it\)\$" \
  create --level=5 z0 z1 x-ext4
refuse_sig "x-gpt holds a GPT partition table \(use --force to overwrite it\)\$" \
  create --level=5 x-gpt z1 z2
refuse_sig "x-mbr holds an MBR \(dos\) partition table \(use --force" create --level=5 z0 x-mbr z2
refuse_sig "x-md10 holds a Linux md RAID superblock labelled \"nbdraid-test:0\" \(use --force" \
  create --level=1 z0 x-md10
refuse_sig "x-md12 holds a Linux md RAID superblock .*\(use --force" create --level=1 x-md12 z1
refuse_sig "x-lvm holds an LVM physical volume \(LVM2_member\) \(use --force" \
  create --level=5 z0 z1 z2 --spare=x-lvm
# found at the last member, after new files were due: none is created
refuse_sig "x-ext4 holds an ext4" create --level=5 --size=20M n0 n1 x-ext4
# --json: the refusal is one object on stdout, nothing on stderr
before=$(sig_files)
rc=0; "$NBDRAID" create --json --level=5 z0 z1 x-gpt > "$tmp/out" 2> "$tmp/err" || rc=$?
expect $rc 1 "create --json refused"
expect "$(q "$tmp/out" '(d["ok"], d["error"], d["message"])')" \
  "(False, 'EEXIST', 'x-gpt holds a GPT partition table (use --force to overwrite it)')" \
  "create --json refusal"
[[ ! -s $tmp/err && $(sig_files) == "$before" ]] || fail "create --json: stderr or files"
pass

# --force: created, each signature erased (the GPT's backup header at the
# end too), the overwrite said on stderr
run create --level=5 --force z0 z1 x-ext4
grep -Fq 'nbdraid: x-ext4: overwriting an ext4 filesystem labelled "precious" (--force)' "$tmp/err" ||
  fail "--force over ext4: $(cat "$tmp/err")"
run create --level=1 --force x-gpt x-mbr
run create --level=1 --force x-md10 x-md12
run create --level=4 --force --json z0 z1 z2 --spare=x-lvm
expect "$(q "$tmp/out" '(d["ok"], len(d["uuid"]))')" "(True, 36)" "create --json result"
for f in x-ext4 x-gpt x-mbr x-md10 x-md12 x-lvm; do no_signature $f; done
examine_json "$tmp/sig.json" x-ext4 x-gpt x-mbr x-md10 x-md12 x-lvm
expect "$(q "$tmp/sig.json" 'set(m["superblock"] for m in d["members"])')" "{'valid'}" \
  "forced members hold a superblock"
# --assume-clean promises the data areas are in sync: a signature inside one
# (the md v1.0 superblock at the end) is kept, and said
md_super x-md10 1.0
run create --level=1 --force --assume-clean x-md10 z1
grep -q "x-md10: the linux_raid_member signature at offset .* is inside the data area and is kept (--assume-clean)" \
  "$tmp/err" || fail "--assume-clean kept signature: $(cat "$tmp/err")"
pass
cd "$d"

# ---- examine: damaged rings ----
# m0's only record (events 1) is in slot 1; re-stamp a copy as events 2 in slot 2
"$PY" "$tmp/h.py" restamp m0 1 2 2
examine_json "$tmp/x.json" m0
j=$tmp/x.json
expect "$(q "$j" '(d["members"][0]["events"], [h["events"] for h in d["members"][0]["ring"]["history"]])')" \
  "(2, [2, 1])" "two records, newest first"
# corrupt the newest slot: examine falls back to events 1 and counts it
printf 'X' | dd of=m0 bs=1 seek=$((2 * 4096 + 300)) conv=notrunc status=none
examine_json "$tmp/x.json" m0
expect "$(q "$j" '(d["members"][0]["superblock"], d["members"][0]["events"], d["members"][0]["array_uuid"])')" \
  "('valid', 1, '$uuid')" "corrupt newest slot: older record shown"
expect "$(q "$j" '[d["members"][0]["ring"][k] for k in ("valid", "corrupt", "empty")]')" \
  "[1, 1, 62]" "corrupt slot counted"
expect "$(q "$j" '"checksum" in d["members"][0]["ring"]["first_error"]')" True "corrupt slot reason"
"$NBDRAID" examine m0 > "$tmp/out" 2> "$tmp/err" || fail "examine m0: exit $?"
grep -Eq "1 valid, 1 corrupt, 62 empty" "$tmp/out" || fail "examine text: corrupt count"
pass
# corrupt the last intact record too: no superblock, exit 1
printf 'X' | dd of=m0 bs=1 seek=$((4096 + 300)) conv=notrunc status=none
refuse 1 "m0: all 2 records are corrupt" examine m0
# zeroed ring: "no superblock", exit 1, but the other member is still shown
dd if=/dev/zero of=m2 bs=4096 count=64 conv=notrunc status=none
rc=0; "$NBDRAID" examine --json m2 m3 > "$tmp/x.json" 2> "$tmp/err" || rc=$?
expect $rc 1 "examine exit with a member without superblock"
expect "$(q "$j" '[(m["superblock"], m["error"]) for m in d["members"]]')" \
  "[('none', 'no superblock'), ('valid', None)]" "zeroed ring"
# with --json the error is in the one document on stdout
expect "$(q "$j" '(d["ok"], d["error"], d["message"])')" \
  "(False, 'ENODATA', 'm2: no superblock')" "examine --json error"
[[ ! -s $tmp/err ]] || fail "examine --json wrote to stderr: $(cat "$tmp/err")"
"$NBDRAID" examine m2 m3 > "$tmp/out" 2> "$tmp/err" && fail "examine m2 m3: exit 0"
grep -q "^nbdraid: m2: no superblock" "$tmp/err" || fail "examine: no message for m2"
refuse 1 "m2: no superblock" examine m2
# an incompatible feature bit (re-stamped in place) is named
"$PY" "$tmp/h.py" restamp m3 1 1 - 4
refuse 1 "m3: incompatible feature" examine m3
refuse 1 "m3 holds a superblock this version cannot read .*; use --force" \
  create --level=5 --size=20M n0 n1 m3
refuse 1 "nothere: " examine nothere
refuse 1 "small: no superblock" examine small
# members without a valid record need no --force; an unreadable one does
run create --level=5 m2 m0
run create --level=1 --force --size=64M m3 n5
expect "$(stat -c %s n5)" $((64 * M)) "new member next to a forced one"

# ---- NBD members (nbdkit memory plugin; error filter for failing writes) ----
# start_nbdkit NAME ARGS...: serve on $tmp/NAME.sock, pid in $tmp/NAME.pid
start_nbdkit () {
  local name=$1
  shift
  rm -f "$tmp/$name.sock"
  nbdkit -U "$tmp/$name.sock" -P "$tmp/$name.pid" "$@"
  for _ in $(seq 100); do
    [[ -S $tmp/$name.sock && -s $tmp/$name.pid ]] && return 0
    sleep 0.05
  done
  fail "nbdkit $name did not start"
}
if command -v nbdkit > /dev/null; then
  start_nbdkit good memory 64M
  good="nbd+unix:///?socket=$tmp/good.sock"
  run create --level=5 --size=20M "$good" nb1 nb2
  uuid3=$(cat "$tmp/out")
  examine_json "$tmp/n.json" "$good" nb2
  expect "$(q "$tmp/n.json" '[(m["role"], m["array_uuid"], m["member_size"]) for m in d["members"]]')" \
    "[(0, '$uuid3', $((20 * M))), (2, '$uuid3', $((20 * M)))]" "NBD member"
  refuse 1 "socket=$tmp/good.sock already belongs to array $uuid3" \
    create --level=5 --size=20M nb8 nb9 "$good"
  # writes to the NBD member fail after every check passed: the files this
  # create made are removed again and the message says what happened
  start_nbdkit bad --filter=error memory 64M \
    error-pwrite=EIO error-pwrite-rate=1 error-zero=EIO error-zero-rate=1 \
    error-trim=EIO error-trim-rate=1
  bad="nbd+unix:///?socket=$tmp/bad.sock"
  rc=0
  "$NBDRAID" create --level=5 --size=20M nb8 nb9 "$bad" > "$tmp/out" 2> "$tmp/err" || rc=$?
  expect $rc 1 "create with a failing NBD member"
  grep -Fq "nbdraid: $bad: " "$tmp/err" &&
    grep -Eq "(I/O|Input/output) error.*create failed part-way" "$tmp/err" ||
    fail "failing NBD member: $(cat "$tmp/err")"
  [[ ! -e nb8 && ! -e nb9 && ! -s $tmp/out ]] || fail "failed create left files behind"
  pass
  # a GPT on an NBD export, its backup header at the export's end: found
  # through libblkid too, and erased by --force
  truncate -s 20M sig/nbd-gpt
  printf 'label: gpt\n,8M\n' | sfdisk -q sig/nbd-gpt > /dev/null
  start_nbdkit gpt file "$d/sig/nbd-gpt"
  gpt="nbd+unix:///?socket=$tmp/gpt.sock"
  before=$(cksum < sig/nbd-gpt)
  refuse 1 "socket=$tmp/gpt.sock holds a GPT partition table \(use --force" \
    create --level=5 --size=20M nb8 nb9 "$gpt"
  [[ $(cksum < sig/nbd-gpt) == "$before" && ! -e nb8 ]] || fail "refused NBD create wrote"
  run create --level=5 --size=20M --force nb8 nb9 "$gpt"
  [[ -z $wipefs || -z $("$wipefs" --noheadings sig/nbd-gpt) ]] ||
    fail "GPT left on the NBD member: $("$wipefs" sig/nbd-gpt)"
  pass
  # one storage named twice where names cannot tell: a file and the export
  # that serves it, or two spellings of one export's URI; refused, the bytes
  # as they were (the probe's marker is written back: the file's mtime
  # moves, so not `refuse`, whose snapshot compares times)
  truncate -s 20M sig/twice
  start_nbdkit twice file "$d/sig/twice"
  twice="nbd+unix:///?socket=$tmp/twice.sock"
  before=$(cksum < sig/twice)
  for args in "sig/twice $twice" "$twice nbd+unix:///?socket=$tmp/./twice.sock"; do
    rc=0
    # shellcheck disable=SC2086
    "$NBDRAID" create --level=5 --size=20M tw0 $args > "$tmp/out" 2> "$tmp/err" || rc=$?
    expect $rc 1 "create naming one storage twice ($args)"
    grep -Eq "^nbdraid: .*twice(\.sock)? and .*twice(\.sock)? are the same storage" "$tmp/err" ||
      fail "same storage: $(cat "$tmp/err")"
    [[ $(cksum < sig/twice) == "$before" && ! -e tw0 && ! -s $tmp/out ]] ||
      fail "refused create (same storage) wrote"
    pass
  done
  kill "$(cat "$tmp/twice.pid")" "$(cat "$tmp/gpt.pid")"
  kill "$(cat "$tmp/bad.pid")" "$(cat "$tmp/good.pid")"
  rm -f "$tmp"/*.pid
else
  echo "test-create.sh: nbdkit not found, NBD member checks skipped"
fi

echo "test-create.sh: $checks checks passed"
