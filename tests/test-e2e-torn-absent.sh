#!/usr/bin/env bash
# nbdkit-raid: a write torn by a crash, and a restart without one of the
# data members of a row it wrote whole.
#
# A RAID5 of four NBD members, left-symmetric (row 4: data on members 0,
# 1, 2, parity on 3; row 5: data on 3, 0, 1, parity on 2).  Member 0
# answers writes 1.5 s late.  A write is under way when the array server
# is killed (-9): members 1, 2 and 3 hold their new blocks, member 0 its
# old one, so the parity of the row written whole matches neither version
# of its data.  The array is started again without member 1: the journal
# cannot make that row's parity match its data without member 1's block
# (an intent record names the row, not its contents).  Member 1's block,
# which holds its new bytes, must survive its return: it was rebuilt from
# the row's parity and read back as neither its old nor its new bytes.
# Afterwards every block reads back old or new, and a scrub finds the
# parity consistent: the start owes a resync of the rows it could not
# make consistent (status resync_owed), which runs once the array is
# optimal again.
#   (a) the write is row 4, whole;
#   (b) the write is the last 8 KiB of row 4 (a partial row, logged with
#       its contents) and row 5 whole, after an acknowledged and flushed
#       4 KiB write to row 7 (the same region of a map of missed regions,
#       rows 4-7): the replay rewrites those partial rows, and marking
#       them for member 1, which holds none of their blocks, marked the
#       whole region, row 5 included.
#   (c) the write is 4 KiB of member 1's block of row 4, and member 3, the
#       row's parity member, answers writes 1.5 s late: its log holds the
#       write's only record (a partial row's record goes to its parity
#       member alone), member 1 its new block, member 3 the old parity
#       when the server is killed.  The start without member 3 finds no
#       record to replay; member 3 comes back holding the only record and
#       parity that matches neither version of the row.  Its rejoin reads
#       its own log and recomputes the parity of the rows a record there
#       names onto it: a check then finds no mismatch (taken back as it
#       is, losing member 1 afterwards would rebuild its block as neither
#       version).
#   (d) as (b) without its first write, the start without member 3: the
#       parity of row 4 (the partial row) is on member 3, so its record
#       is on member 3's log alone, and member 3 holds data of row 5 (the
#       whole row, torn: a resync is owed from it).  Back, member 3's log
#       names row 4, whose region (rows 4-7) holds row 5: marking it
#       would have its delta rebuild member 3's block of row 5 from the
#       torn parity; row 4's parity is recomputed onto it instead.
#   (e) as (c), then the array stopped cleanly, member 0 away and member 3
#       back: only force=true starts it, taking member 3 back as it is
#       (its map marks nothing).  Its own log is read first: the resync
#       is owed from row 4, and runs once member 0 is back (it missed
#       nothing): the check finds no mismatch.  (With member 0 gone for
#       good its block of row 4 could only be rebuilt from member 3's
#       parity: a forced start's risk.)
set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-torn-absent "$@"

CH=65536
W=$((3 * CH))

# stage SLOW: four members (member SLOW answers writes 1.5 s late) and a
# RAID5 over them, served as $n/raid (the caller's n, d, ctl, all).
stage ()
{
  local i
  mkdir -p "$d"
  for i in 0 1 2 3; do
    truncate -s 64M "$d/f$i"
    if [ "$i" = "$1" ]; then
      start_nbdkit "$n/m$i" --filter=delay file "$d/f$i" delay-write=1500ms delay-zero=1500ms
    else start_nbdkit "$n/m$i" file "$d/f$i"; fi
  done
  create_array --level=5 --chunk=64K --layout=left-symmetric --data-offset=8M $all
  start_raid "$n/raid" $all control="$ctl" member-timeout=60
}

# finale RAID CTL OFF: every block of $n reads back old or new (the new
# bytes at OFF), a scrub finds no mismatch; RAID and the members stop.
finale ()
{
  local i
  expect_run "$n: every block reads back old or new" $PYTHON "$testsdir/e2e_common.py" \
    old-or-new "$(uri_of "$d/$1.sock")" "$d/old.bin" "$d/new.bin" "$3"
  expect_run "$n: scrub" "$NBDRAID" -C "$2" check
  expect_run "$n: scrub ends" "$NBDRAID" -C "$2" wait --timeout=120
  expect_eq "$n: scrub mismatches" 0 "$(status_get "$2" mismatch_count)"
  stop_nbdkit "$n/$1"
  for i in 0 1 2 3; do stop_nbdkit "$n/m$i"; done
}

# torn NAME R HEAD M1IDX [PRE_OFF [AWAY]]: the case; the write covers the
# last HEAD bytes of row R - 1 and row R whole; member 1 holds data block
# M1IDX of row R; PRE_OFF: a 4 KiB write there first, flushed; AWAY: the
# member the second start is without (1).
torn ()
{
  local n="$1" R="$2" head="$3" m1idx="$4" pre="${5:-}" x="${6:-1}" i
  local d="$tmp/$n" ctl="$tmp/$n/ctl" ctl2="$tmp/$n/ctl2"
  mu () { uri_of "$d/m$1.sock"; }
  local all="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
  stage 0

  expect_run "$n: fill" $PYTHON - "$(uri_of "$d/raid.sock")" "$d" "$pre" <<'PY'
import nbd, sys, random
h = nbd.NBD(); h.connect_uri(sys.argv[1])
old = bytearray(random.Random(1).randbytes(16 << 20))
h.pwrite(bytes(old), 0); h.flush()
if sys.argv[3]:
    off = int(sys.argv[3]); pre = random.Random(3).randbytes(4096)
    h.pwrite(pre, off); h.flush(); old[off:off + 4096] = pre
h.shutdown()
open(sys.argv[2] + "/old.bin", "wb").write(bytes(old))
PY
  # Kill the server once members 1, 2 and 3 hold their new blocks of row
  # R (member 0 takes its write 1.5 s later).
  expect_run "$n: torn write" $PYTHON - "$(uri_of "$d/raid.sock")" "$d" \
    "${pid_of[$n/raid]}" "$R" "$head" "$m1idx" <<'PY'
import nbd, sys, time, random, threading, os, signal
uri, D, rpid, R, head, m1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
CH, W = 65536, 3 * 65536
new = random.Random(7).randbytes(head + W)
open(D + "/new.bin", "wb").write(new)
def blk(i):
    with open("%s/f%d" % (D, i), "rb") as f:
        f.seek((8 << 20) + R * CH); return f.read(CH)
base = {i: blk(i) for i in (0, 1, 2, 3)}
def client():
    h = nbd.NBD(); h.connect_uri(uri)
    try: h.pwrite(new, R * W - head)
    except nbd.Error: pass
threading.Thread(target=client, daemon=True).start()
t1 = time.time()
while time.time() - t1 < 10:
    if all(blk(i) != base[i] for i in (1, 2, 3)):
        time.sleep(0.05)
        os.kill(rpid, signal.SIGKILL)
        if blk(0) != base[0]: sys.exit("member 0 took its write before the kill")
        if blk(1) != new[head + m1 * CH:head + (m1 + 1) * CH]: sys.exit("member 1 does not hold its new block")
        sys.exit(0)
    time.sleep(0.003)
sys.exit("members 1, 2 and 3 never took the write")
PY
  wait "${pid_of[$n/raid]}" 2>/dev/null || true
  kill -9 "${pid_of[$n/m0]}"; wait "${pid_of[$n/m0]}" 2>/dev/null || true
  start_nbdkit "$n/m0" file "$d/f0"           # its delayed write is lost
  kill -9 "${pid_of[$n/m$x]}"; wait "${pid_of[$n/m$x]}" 2>/dev/null || true
  rm -f "$d/m$x.sock"

  start_raid "$n/raid2" $all control="$ctl2" member-timeout=60
  expect_eq "$n: started without member $x" degraded "$(status_get "$ctl2" health)"
  expect_eq "$n: member $x missing" missing "$(status_get "$ctl2" member:$x)"
  local owed; owed="$(status_get "$ctl2" resync_owed)"
  if [[ "$owed" =~ ^[0-9]+$ ]] && [ "$owed" -le $((R * W)) ]; then ok; else
    fail "$n: status owes no resync from row $R or before (resync_owed: '$owed')"
  fi
  start_nbdkit "$n/m$x" file "$d/f$x"         # back: it rejoins
  wait_status "$ctl2" member:$x in_sync 60    # the watcher reconnects it
  expect_eq "$n: member $x rejoined" in_sync "$(status_get "$ctl2" member:$x)"
  expect_run "$n: the owed resync ends" "$NBDRAID" -C "$ctl2" wait --timeout=120
  expect_eq "$n: optimal again" optimal "$(status_get "$ctl2" health)"
  expect_eq "$n: no resync owed any more" "" "$(status_get "$ctl2" resync_owed)"
  finale raid2 "$ctl2" $((R * W - head))
}

# torn_parity NAME: case (c).
torn_parity ()
{
  local n="$1" forced="${2:-}" R=4 i
  local d="$tmp/$n" ctl="$tmp/$n/ctl" ctl2="$tmp/$n/ctl2"
  mu () { uri_of "$d/m$1.sock"; }
  local all="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
  stage 3

  expect_run "$n: fill" $PYTHON - "$(uri_of "$d/raid.sock")" "$d" <<'PY'
import nbd, sys, random
h = nbd.NBD(); h.connect_uri(sys.argv[1])
old = random.Random(1).randbytes(2 << 20)
h.pwrite(old, 0); h.flush(); h.shutdown()
open(sys.argv[2] + "/old.bin", "wb").write(old)
PY
  # A clean stop: the fill's records are checkpointed, so the start below
  # owes no resync of its rows (which would hide the case).
  stop_nbdkit "$n/raid"
  start_raid "$n/raid1" $all control="$ctl" member-timeout=60
  # Member 1 takes its new block 1.5 s after the write began (the record
  # on member 3 first), member 3 its parity 1.5 s later still: kill the
  # server in between.
  expect_run "$n: torn write" $PYTHON - "$(uri_of "$d/raid1.sock")" "$d" \
    "${pid_of[$n/raid1]}" "$R" <<'PY'
import nbd, sys, time, random, threading, os, signal
uri, D, rpid, R = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CH, W, OFF = 65536, 3 * 65536, 8192
new = random.Random(7).randbytes(4096)
open(D + "/new.bin", "wb").write(new)
def blk(i):
    with open("%s/f%d" % (D, i), "rb") as f:
        f.seek((8 << 20) + R * CH); return f.read(CH)
p0 = blk(3)
def client():
    h = nbd.NBD(); h.connect_uri(uri)
    try: h.pwrite(new, R * W + CH + OFF)
    except nbd.Error: pass
threading.Thread(target=client, daemon=True).start()
t1 = time.time()
while time.time() - t1 < 10:
    if blk(1)[OFF:OFF + 4096] == new:
        time.sleep(0.05)
        os.kill(rpid, signal.SIGKILL)
        if blk(3) != p0: sys.exit("member 3 took its parity write before the kill")
        sys.exit(0)
    time.sleep(0.003)
sys.exit("member 1 never took the write")
PY
  wait "${pid_of[$n/raid1]}" 2>/dev/null || true
  kill -9 "${pid_of[$n/m3]}"; wait "${pid_of[$n/m3]}" 2>/dev/null || true
  rm -f "$d/m3.sock"                        # its delayed write is lost

  start_raid "$n/raid2" $all control="$ctl2" member-timeout=60
  expect_eq "$n: started without member 3" degraded "$(status_get "$ctl2" health)"
  expect_eq "$n: member 3 missing" missing "$(status_get "$ctl2" member:3)"
  expect_eq "$n: no resync owed" "" "$(status_get "$ctl2" resync_owed)"
  unreplayed () {
    "$NBDRAID" examine --json "$d/f0" | $PYTHON -c '
import json, sys
print(" ".join(str(m["log_unreplayed"])
               for m in json.load(sys.stdin)["members"][0]["missed"]))'
  }
  expect_eq "$n: its map says its own log was not replayed" True "$(unreplayed)"
  if [ -n "$forced" ]; then
    forced_back "$n" "$d" "$R"
    return
  fi
  start_nbdkit "$n/m3" --filter=log file "$d/f3" logfile="$d/m3.log"   # back
  wait_status "$ctl2" member:3 in_sync 60
  expect_eq "$n: member 3 rejoined" in_sync "$(status_get "$ctl2" member:3)"
  expect_run "$n: its rejoin ends" "$NBDRAID" -C "$ctl2" wait --timeout=120
  # Its parity of the row rewritten: some data-area bytes, far from the
  # 56 MiB a full rebuild writes.
  local sent; sent="$($PYTHON "$testsdir/e2e_flap.py" datawrites "$d/m3.log" $((8 << 20)))"
  if [ "$sent" -gt 0 ] && [ "$sent" -le $((4 << 20)) ]; then ok; else
    fail "$n: member 3 was sent $sent data bytes (a delta writes its parity of row $R)"
  fi
  expect_eq "$n: optimal again" optimal "$(status_get "$ctl2" health)"
  expect_eq "$n: its map ended" "" "$(unreplayed)"
  finale raid2 "$ctl2" $((R * 3 * CH + CH + 8192))
}

# forced_back NAME DIR R: case (e), after (c)'s start without member 3.
forced_back ()
{
  local n="$1" d="$2" R="$3" ctl3="$2/ctl3" i
  local all="$(mu 0) $(mu 1) $(mu 2) $(mu 3)"
  stop_nbdkit "$n/raid2"
  stop_nbdkit "$n/m0"; rm -f "$d/m0.sock"     # member 0 away: 2 of 4 left
  start_nbdkit "$n/m3" file "$d/f3"
  if start_raid "$n/raid3" $all control="$ctl3" member-timeout=60 2>/dev/null; then
    fail "$n: started without force=true"; stop_nbdkit "$n/raid3"
  else ok; fi
  start_raid "$n/raid4" $all control="$ctl3" member-timeout=60 force=true ||
    { fail "$n: the forced start failed"; return; }
  expect_eq "$n: member 3 taken back" in_sync "$(status_get "$ctl3" member:3)"
  grep -q "names rows from $R on whose parity it holds: they are resynced once the array is optimal" \
    "$tmp/$n/raid4.log" && ok || fail "$n: the log does not say row $R is resynced"
  local owed; owed="$(status_get "$ctl3" resync_owed)"
  if [[ "$owed" =~ ^[0-9]+$ ]] && [ "$owed" -le $((R * 3 * CH)) ]; then ok; else
    fail "$n: no resync owed from row $R (resync_owed: '$owed')"
  fi
  start_nbdkit "$n/m0" file "$d/f0"           # back: rejoins, then the resync
  wait_status "$ctl3" member:0 in_sync 60
  expect_run "$n: the owed resync ends" "$NBDRAID" -C "$ctl3" wait --timeout=120
  expect_eq "$n: optimal again" optimal "$(status_get "$ctl3" health)"
  expect_eq "$n: no resync owed any more" "" "$(status_get "$ctl3" resync_owed)"
  finale raid4 "$ctl3" $((R * 3 * CH + CH + 8192))
}

torn "(a)" 4 0 1
torn "(b)" 5 8192 2 $((7 * W + CH + 8192))
torn_parity "(c)"
torn "(d)" 5 8192 2 "" 3
torn_parity "(e)" forced
finish
