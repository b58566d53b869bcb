#!/usr/bin/env bash
# nbdkit-raid: NBD members that come and go.
#
# A RAID5 of four NBD members, each its own `nbdkit file` server on a UNIX
# socket (as a member on another host would be); member 3's server runs
# nbdkit's log filter, so the test sees every byte written to it.
#
# (a) member 3's server is killed while a writer runs and restarted 1-2 s
#     later: member 3 is missing (not faulty) with a map of missed regions
#     while away, reconnects by itself, and rejoins by a delta: the data
#     bytes resynced onto it are at most those of its marked regions, far
#     fewer than its data area; every byte reads back as written.
# (b) ten flaps in a row, each with writes while away.
# (c) the array server is stopped and started again while member 3 is
#     away: it starts degraded (member 3 unreachable, kept as a pending
#     member), and when member 3's server is back it rejoins by a delta.
# (d) member 3's socket answers with another array's member: refused, it
#     stays missing; the right server back: it rejoins.
# (e) a flap during a reshape (chunk 64K -> 128K, throttled): the reshape
#     goes on degraded and member 3 is rebuilt afterwards.
# (f) a flap during member 3's own resync (throttled): it rejoins again,
#     by the same map (the rows its first delta had not reached are in
#     it), not by a rebuild in full from its delta's cursor.
# (g) an outage longer than member-timeout: member 3 is written off
#     (faulty) and a spare takes its role.
# (h) a degraded RAID5 of three (one member failed): an outage of a member
#     it still needs fails the array, but only for the outage: back, the
#     member missed no write (none was taken) and is in sync again at once,
#     the array degraded; with the array server killed (-9) while the
#     member is away and started again once it is back, the start says
#     force=true takes it back, and does with it.
# (i) a member whose spec is longer than the superblock keeps (status lists
#     "..." and its tail) and that is absent at a start: `nbdraid remove`
#     finds it by the spec status lists, and by its full spec.
# (j) a spare's server restarts: the spare is not written off; another
#     array's member answering at its address is never used (a member
#     failed meanwhile stays unrecovered); the spare back, it recovers that
#     role.  A replace whose target's server restarts stops; the target is
#     a spare again.
# (k) a spare added while a member is away holds the whole map of what that
#     member missed (written whole when it comes into use), not only the
#     bits marked after it came.
# (l) a member whose export moved (killed, served again at another
#     socket) rejoins its role when `add --force` is given the new address
#     (without force: refused, saying the old server must be stopped); its
#     image at a second address while it is in use is refused.
# (l2) a moved export smaller than the members' data area is refused.
# (l3) a member moves while the server at its old address is stalled (it
#     stopped answering, so it may still apply writes it had received):
#     `add` at the new address is refused, saying so (as every move
#     without force); with that server stopped, `add --force` takes it.
# (l4) the same add, when no record can be written (the other members
#     fail every write): an error, the array failed, the server still
#     answers (the member joined is the array's, not closed under it).
# (m) the member a prepared reshape adds drops (and comes back) before
#     the start: the start is refused with how to go on; aborted, the
#     member is a spare again (down while it is away) and the reshape,
#     prepared again with it, runs.
# (n) two members of a RAID5 go away one after the other (the second
#     fails the array); the first, which missed writes, is back first:
#     the second, back later, missed nothing and makes the array whole
#     again at once, then the first rejoins by its delta.
# (n2) the same, but the second member's map marks a write it took that
#     was not flushed yet: the array stays failed; a restart refuses
#     without force=true and says what it would do; with it, the member
#     that left last is taken back as it is (logged; the first one's map
#     marks as many regions, but it missed a flushed write), and the first
#     rejoins by its delta.
# (n3) the member that left last was being rebuilt (a new member of a
#     role): force=true does not take it as it is (its rows past the
#     rebuild's cursor were never written); the start is refused.
# (o) a member whose map was ended (a resize grew the array while it was
#     away) is rebuilt in full when back; held stale by a prepared
#     reshape, it goes away again, and the abort starts its rebuild, whose
#     record never reaches it: it gets no new map (the record it holds is
#     from before it first left), so back after a restart it is rebuilt in
#     full again, not resynced by a map that misses the first outage.
# (p) the array server is killed (-9) in the middle of a member's delta
#     resync: started again, the delta goes on from its cursor, following
#     the map (the member is sent at most twice the data bytes its marked
#     regions hold: the rows past its last recorded cursor are done
#     again), not as a rebuild of the rest in full.
# (p2) a member that left in the middle of its own rebuild (onto a new
#     member) rejoins by a delta that also rebuilds every row from its
#     cursor on; killed in the middle of that delta and started again, the
#     array still rebuilds all of those rows (they are marked in its map
#     before the delta begins).
# (q) a RAID6 whose new member is being rebuilt (throttled) loses another
#     member for a while and is stopped; started again with that member
#     back, the rebuild goes on from its own cursor first and the member
#     back rejoins after it (the rejoin's job began first and took over the
#     one rebuild cursor: the rebuild then went on from where the rejoin
#     had ended, and the rows between were never rebuilt).
# (r) a member absent at a start keeps a map; its role is recovered onto a
#     spare (member-timeout), and it is back later as a spare: its map
#     ended when it lost its role, so the full recovery of another role
#     onto it, cut short by a kill -9 (and, in a second round, by its own
#     outage), goes on in full, not by that old map.
# After each part every byte reads back as written; at the end the
# array's scrub finds no parity mismatch.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-flap "$@"
requires nbdinfo

MSIZE=64M
OFF=$((8 << 20))                 # data offset (room for a reshape)
FLAP="$PYTHON $testsdir/e2e_flap.py"
mu () { uri_of "$tmp/member$1.sock"; }
log_n=0

start_member () # I [FILE]: serve FILE (default f$I) as member I; member 3 logged
{
  local i="$1" f="${2:-$tmp/f$1}"
  if [ "$i" = 3 ]; then
    log_n=$((log_n + 1))
    m3log="$tmp/m3.$log_n.log"
    start_nbdkit "member$i" --filter=log file "$f" logfile="$m3log"
  else
    start_nbdkit "member$i" file "$f"
  fi
}

kill_member () { kill -9 "${pid_of[member$1]}"; wait "${pid_of[member$1]}" 2>/dev/null || true; }

mfield () { $FLAP member "$ctl" "$1" "$2"; }

# wait_member ROLE STATE SECONDS: until the member with ROLE is in STATE.
wait_member ()
{
  local role="$1" want="$2" i
  for ((i = 0; i < $3 * 10; i++)); do
    [ "$(mfield "$role" state)" = "$want" ] && { ok; return 0; }
    sleep 0.1
  done
  fail "member $role did not become $want in $3 s (it is $(mfield "$role" state))"
  return 1
}

start_array () # NAME [PARAMS...]
{
  local name="$1"; shift
  start_raid "$name" "$(mu 0)" "$(mu 1)" "$(mu 2)" "$(mu 3)" control="$ctl" "$@"
  raid_uri="$uri"
}

verify () { expect_run "$1: every byte reads back as written" $FLAP verify "$raid_uri" "$model"; }

# delta_check NAME REGIONS BYTES: member 3's resync wrote data bytes only
# in its marked regions.
delta_check ()
{
  local n
  n="$($FLAP datawrites "$m3log" "$OFF")"
  if [ "$n" -gt 0 ] && [ "$n" -le $(($2 * $3)) ] && [ "$n" -le $(((60 << 20) / 4)) ]; then ok
  else fail "$1: member 3 was sent $n data bytes (marked: $2 regions of $3 bytes)"; fi
}

# away_then_back NAME SEED: member 3 away while 1 MiB is written, back;
# leaves regions/rbytes for delta_check.
away_then_back ()
{
  local name="$1" seed="$2"
  kill_member 3
  expect_run "$name: write while member 3 is away" \
    $FLAP write "$raid_uri" "$model" $(((seed % 40) << 20)) $((1 << 20)) "$seed"
  expect_eq "$name: member 3 is missing, not faulty" missing "$(mfield 3 state)"
  regions="$(mfield 3 missed_regions)"
  rbytes="$(mfield 3 missed_region_bytes)"
  [[ "$regions" =~ ^[1-9][0-9]*$ ]] && ok || fail "$name: missed regions '$regions'"
  start_member 3
  wait_member 3 in_sync 60
}

for i in 0 1 2 3; do truncate -s "$MSIZE" "$tmp/f$i"; start_member "$i"; done
create_array --level=5 --chunk=64K --data-offset="$OFF" "$(mu 0)" "$(mu 1)" "$(mu 2)" "$(mu 3)"
ctl="$tmp/ctl"
start_array raid1 member-timeout=30
size="$(nbdinfo --size "$raid_uri")"
model="$tmp/model.img"
truncate -s "$size" "$model"
expect_run "fill" $FLAP write "$raid_uri" "$model" 0 "$size" 1

# ---- (a) a writer runs across the outage -------------------------------------
$FLAP write "$raid_uri" "$model" $((8 << 20)) $((4 << 20)) 2 3 > "$tmp/w.out" 2>&1 &
writer=$!
sleep 1
kill_member 3
if wait "$writer"; then ok; else
  fail "(a) the writer failed during the outage"; sed 's/^/    /' "$tmp/w.out"; fi
expect_eq "(a) member 3 missing" missing "$(mfield 3 state)"
[[ "$(mfield 3 away_seconds)" =~ ^[0-9]+$ ]] && ok || fail "(a) away_seconds"
regions="$(mfield 3 missed_regions)"; rbytes="$(mfield 3 missed_region_bytes)"
[[ "$regions" =~ ^[1-9][0-9]*$ ]] && ok || fail "(a) missed regions '$regions'"
expect_eq "(a) degraded meanwhile" degraded "$(status_get "$ctl" health)"
start_member 3
wait_member 3 in_sync 60
delta_check "(a)" "$regions" "$rbytes"
expect_eq "(a) optimal again" optimal "$(status_get "$ctl" health)"
verify "(a)"

# ---- (b) ten flaps -------------------------------------------------------------
for ((k = 0; k < 10; k++)); do away_then_back "(b) flap $k" $((10 + k)); done
verify "(b)"

# ---- (c) the array server restarted while member 3 is away ------------------
kill_member 3
expect_run "(c) write while away" $FLAP write "$raid_uri" "$model" $((30 << 20)) $((1 << 20)) 30
regions="$(mfield 3 missed_regions)"; rbytes="$(mfield 3 missed_region_bytes)"
stop_nbdkit raid1
start_array raid2 member-timeout=30 ||
  { fail "(c) the array did not start without member 3"; finish; }
expect_eq "(c) member 3 missing after the restart" missing "$(mfield 3 state)"
expect_eq "(c) its map survived the restart" "$regions" "$(mfield 3 missed_regions)"
verify "(c) degraded"
start_member 3
wait_member 3 in_sync 60
delta_check "(c)" "$regions" "$rbytes"
verify "(c)"

# ---- (d) someone else's data at member 3's address ----------------------------
mkdir -p "$tmp/other"
for i in 0 1 2; do truncate -s "$MSIZE" "$tmp/other/x$i"; done
create_array --level=5 --data-offset="$OFF" "$tmp/other/x0" "$tmp/other/x1" "$tmp/other/x2"
kill_member 3
expect_run "(d) write while away" $FLAP write "$raid_uri" "$model" $((40 << 20)) $((1 << 20)) 40
start_member 3 "$tmp/other/x0"
sleep 3
expect_eq "(d) another array's member is refused" missing "$(mfield 3 state)"
grep -q "holds array .*, not this one: refused" "$tmp/raid2.log" && ok ||
  fail "(d) the log says why it was refused"
kill_member 3
start_member 3
wait_member 3 in_sync 60
verify "(d)"

# ---- (e) a flap during a reshape ------------------------------------------------
"$NBDRAID" -C "$ctl" set speed-min=0 speed-max=4M >/dev/null
expect_run "(e) reshape to chunk 128K" "$NBDRAID" -C "$ctl" reshape --chunk=128K --start
sleep 1
kill_member 3
expect_run "(e) write during the reshape, member 3 away" \
  $FLAP write "$raid_uri" "$model" $((20 << 20)) $((1 << 20)) 50
expect_eq "(e) the reshape goes on" reshape "$(status_get "$ctl" sync_action)"
start_member 3
"$NBDRAID" -C "$ctl" set speed-max=0 >/dev/null
expect_run "(e) the reshape ends" "$NBDRAID" -C "$ctl" wait --timeout=120
wait_member 3 in_sync 60
expect_eq "(e) chunk 128K" 131072 "$(status_get "$ctl" chunk)"
verify "(e)"

# ---- (f) a flap during member 3's own resync --------------------------------------
kill_member 3
expect_run "(f) write while away" $FLAP write "$raid_uri" "$model" 0 $((8 << 20)) 60
"$NBDRAID" -C "$ctl" set speed-min=0 speed-max=256K >/dev/null
start_member 3
wait_member 3 stale 30                  # rejoining: stale until in sync
sleep 3                                 # its delta is under way
expect_eq "(f) its delta runs" recover "$(status_get "$ctl" sync_action)"
kill_member 3
expect_run "(f) write while away again" $FLAP write "$raid_uri" "$model" $((2 << 20)) $((1 << 20)) 61
regions="$(mfield 3 missed_regions)"; rbytes="$(mfield 3 missed_region_bytes)"
"$NBDRAID" -C "$ctl" set speed-max=0 >/dev/null
start_member 3
wait_member 3 in_sync 60
delta_check "(f) back again: by the same map" "$regions" "$rbytes"
verify "(f)"
stop_nbdkit raid2

# ---- (g) an outage longer than the member timeout: a spare takes over --------
truncate -s "$MSIZE" "$tmp/f4"
start_member 4
start_array raid3 member-timeout=2
expect_run "(g) add a spare" "$NBDRAID" -C "$ctl" add "$(mu 4)"
kill_member 3
expect_run "(g) write while away" $FLAP write "$raid_uri" "$model" $((10 << 20)) $((1 << 20)) 70
wait_status "$ctl" spec:member3.sock faulty 15
expect_eq "(g) written off after the timeout" faulty "$(status_get "$ctl" spec:member3.sock)"
expect_run "(g) the spare recovers role 3" "$NBDRAID" -C "$ctl" wait --timeout=120
expect_eq "(g) optimal" optimal "$(status_get "$ctl" health)"
"$NBDRAID" -C "$ctl" status --json > "$tmp/g.json"
expect_eq "(g) member 3 written off, the spare in its role" "faulty 3 in_sync" "$($PYTHON -c "
import json, sys
d = json.load(open(sys.argv[1]))
old = [m['state'] for m in d['members'] if (m['spec'] or '').endswith('member3.sock')]
new = [m for m in d['members'] if (m['spec'] or '').endswith('member4.sock')][0]
print(old[0] if old else 'gone', new['role'], new['state'])" "$tmp/g.json")"
verify "(g)"
expect_run "(g) scrub" "$NBDRAID" -C "$ctl" check
expect_run "(g) scrub ends" "$NBDRAID" -C "$ctl" wait --timeout=120
expect_eq "(g) no parity mismatch" 0 "$(status_get "$ctl" mismatch_count)"
# The written-off member's server is back: remove, then add it again (its
# old connection is dead: add connects anew) and it is a spare.
start_member 3
expect_run "(g) remove the written-off member" "$NBDRAID" -C "$ctl" remove "$(mu 3)"
expect_run "(g) add it again once its server is back" "$NBDRAID" -C "$ctl" add "$(mu 3)"
expect_eq "(g) it is a spare" spare "$(status_get "$ctl" spec:member3.sock)"
stop_nbdkit raid3

# ---- (h) a degraded array loses a member it needs for a moment ----------------
for i in 5 6 7; do truncate -s 32M "$tmp/f$i"; start_member "$i"; done
create_array --level=5 --chunk=64K "$(mu 5)" "$(mu 6)" "$(mu 7)"
ctl="$tmp/ctl4"
start_raid raid4 "$(mu 5)" "$(mu 6)" "$(mu 7)" control="$ctl" member-timeout=30
raid_uri="$uri"
model="$tmp/model4.img"
truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
expect_run "(h) fill" $FLAP write "$raid_uri" "$model" 0 "$(stat -c %s "$model")" 80
expect_run "(h) fail member 5" "$NBDRAID" -C "$ctl" fail "$(mu 5)"
# h_outage NAME: member 6 away; a read finds it gone (the array fails).
h_outage ()
{
  kill_member 6
  $FLAP verify "$raid_uri" "$model" >/dev/null 2>&1 || true
  wait_member 1 missing 30
  expect_eq "$1: failed while member 6 is away" failed "$(status_get "$ctl" health)"
}
h_outage "(h)"
start_member 6
wait_member 1 in_sync 30
expect_eq "(h) degraded again" degraded "$(status_get "$ctl" health)"
verify "(h)"
h_outage "(h) restart"
sleep 1                                  # its map of missed regions recorded
kill -9 "${pid_of[raid4]}"; wait "${pid_of[raid4]}" 2>/dev/null || true
start_member 6
if start_raid raid5 "$(mu 5)" "$(mu 6)" "$(mu 7)" control="$ctl" member-timeout=30 2>/dev/null; then
  fail "(h) restart: started without force=true"; stop_nbdkit raid5
elif grep -q "marks nothing: force=true takes it back" "$tmp/raid5.log"; then ok
else fail "(h) restart: the refusal does not say force=true takes member 6 back"; fi
start_raid raid5f "$(mu 5)" "$(mu 6)" "$(mu 7)" control="$ctl" member-timeout=30 force=true ||
  { fail "(h) the array did not start with member 6 back and force=true"; finish; }
raid_uri="$uri"
expect_eq "(h) restart: member 6 in sync" in_sync "$(mfield 1 state)"
expect_eq "(h) restart: degraded" degraded "$(status_get "$ctl" health)"
verify "(h) restart"
stop_nbdkit raid5f

# ---- (i) a long spec -------------------------------------------------------------
long="$tmp/a-directory-name-long-enough-for-the-spec-to-be-cut"
mkdir -p "$long"
i_member () { start_nbdkit "$1" file "$tmp/f$2"; mv "$tmp/$1.sock" "$long/$1.sock"; }
for i in 5 6 7; do truncate -s 32M "$tmp/f$i"; done
i_member lm5 5; i_member lm6 6; i_member lm7 7
lu () { uri_of "$long/lm$1.sock"; }
create_array --level=5 --chunk=64K --force "$(lu 5)" "$(lu 6)" "$(lu 7)"
for way in listed full; do
  kill -9 "${pid_of[lm6]}"; wait "${pid_of[lm6]}" 2>/dev/null || true
  start_raid "raid-$way" "$(lu 5)" "$(lu 6)" "$(lu 7)" control="$ctl" ||
    { fail "(i) start without member 6"; break; }
  listed="$(mfield 1 spec)"
  case "$listed" in ...*) ok ;; *) fail "(i) status lists '$listed', not a cut spec" ;; esac
  if [ "$way" = listed ]; then spec="$listed"; else spec="$(lu 6)"; fi
  expect_run "(i) remove the absent member by its $way spec" "$NBDRAID" -C "$ctl" remove "$spec"
  i_member lm6 6
  expect_run "(i) add it back ($way)" "$NBDRAID" -C "$ctl" add "$(lu 6)"
  expect_run "(i) rebuilt ($way)" "$NBDRAID" -C "$ctl" wait --timeout=60
  expect_eq "(i) optimal ($way)" optimal "$(status_get "$ctl" health)"
  stop_nbdkit "raid-$way"
done

# ---- (j) spares come and go ------------------------------------------------------
for i in 5 6 7 8; do truncate -s 32M "$tmp/j$i"; start_member "$i" "$tmp/j$i"; done
create_array --level=5 --chunk=64K "$(mu 5)" "$(mu 6)" "$(mu 7)"
start_raid raid6 "$(mu 5)" "$(mu 6)" "$(mu 7)" control="$ctl" member-timeout=30
raid_uri="$uri"
truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
expect_run "(j) fill" $FLAP write "$raid_uri" "$model" 0 "$(stat -c %s "$model")" 90
expect_run "(j) add a spare" "$NBDRAID" -C "$ctl" add "$(mu 8)"
kill_member 8
expect_run "(j) write while the spare is away" $FLAP write "$raid_uri" "$model" 0 $((4 << 20)) 91
expect_eq "(j) the spare is not written off" spare "$(status_get "$ctl" spec:member8.sock)"
expect_eq "(j) status shows the spare down" true "$(status_get "$ctl" specfield:down:member8.sock)"
"$NBDRAID" -C "$ctl" status > "$tmp/j.status"
grep -q 'member8.sock.*(down: its connection is lost' "$tmp/j.status" && ok ||
  { fail "(j) nbdraid status shows the spare down"; cat "$tmp/j.status" >&2; }
# another array's member answers at the spare's address: never used
mkdir -p "$tmp/jo"
for i in 0 1 2; do truncate -s 32M "$tmp/jo/x$i"; done
create_array --level=5 --chunk=64K "$tmp/jo/x0" "$tmp/jo/x1" "$tmp/jo/x2"
sum="$(md5sum < "$tmp/jo/x0")"
start_member 8 "$tmp/jo/x0"
sleep 2
expect_run "(j) fail member 6" "$NBDRAID" -C "$ctl" fail "$(mu 6)"
sleep 2
expect_eq "(j) a foreign device at the spare's address is not used" degraded \
  "$(status_get "$ctl" health)"
expect_eq "(j) the foreign device is unchanged" "$sum" "$(md5sum < "$tmp/jo/x0")"
kill_member 8
start_member 8 "$tmp/j8"
wait_status "$ctl" health optimal 60
expect_eq "(j) the spare, back, recovers role 1" optimal "$(status_get "$ctl" health)"
expect_eq "(j) it is not down" false "$(status_get "$ctl" specfield:down:member8.sock)"
verify "(j)"
expect_run "(j) remove member 6" "$NBDRAID" -C "$ctl" remove "$(mu 6)"
kill_member 6
truncate -s 32M "$tmp/j6b"
start_member 6 "$tmp/j6b"
expect_run "(j) a new spare" "$NBDRAID" -C "$ctl" add "$(mu 6)"
"$NBDRAID" -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
expect_run "(j) replace member 5 onto it" "$NBDRAID" -C "$ctl" replace "$(mu 5)" --with="$(mu 6)"
kill_member 6
expect_run "(j) write while the target is away" $FLAP write "$raid_uri" "$model" $((4 << 20)) $((1 << 20)) 92
start_member 6 "$tmp/j6b"
"$NBDRAID" -C "$ctl" set speed-max=0 >/dev/null
expect_run "(j) the replace has stopped" "$NBDRAID" -C "$ctl" wait --timeout=60
expect_eq "(j) the target is a spare again" spare "$(status_get "$ctl" spec:member6.sock)"
expect_eq "(j) member 5 keeps its role" in_sync "$(status_get "$ctl" spec:member5.sock)"
verify "(j) after the replace stopped"

# ---- (k) a member that comes into use gets the maps whole ----------------------
kill_member 7
expect_run "(k) write while member 7 is away" $FLAP write "$raid_uri" "$model" $((8 << 20)) $((2 << 20)) 93
regions="$(mfield 2 missed_regions)"
[[ "$regions" =~ ^[1-9][0-9]*$ ]] && ok || fail "(k) missed regions '$regions'"
truncate -s 32M "$tmp/k9"
expect_run "(k) add a spare (a file)" "$NBDRAID" -C "$ctl" add "$tmp/k9"
for ((i = 0; i < 50; i++)); do
  got="$("$NBDRAID" examine "$tmp/k9" | sed -n 's/.*Missed Regions : member .*: \([0-9]*\) of .*/\1/p')"
  [ "$got" = "$regions" ] && break
  sleep 0.1
done
expect_eq "(k) the new spare holds the whole map" "$regions" "$got"
start_member 7 "$tmp/j7"
wait_member 2 in_sync 60
verify "(k)"

# ---- (l) a member whose export moved to another address ------------------------
truncate -s 32M "$tmp/l10"
start_member 10 "$tmp/j5"        # member 5's image at a second address, in use
expect_fail "(l) a member in use, at another address, is refused" \
  "$NBDRAID" -C "$ctl" add "$(mu 10)"
kill_member 10
kill_member 7
expect_run "(l) write while member 7 is away" $FLAP write "$raid_uri" "$model" $((12 << 20)) $((1 << 20)) 94
expect_eq "(l) member 7 missing" missing "$(mfield 2 state)"
start_member 9 "$tmp/j7"         # the same image, served at a new socket
if out="$("$NBDRAID" -C "$ctl" add "$(mu 9)" 2>&1)"; then
  fail "(l) a member that moved was taken without force"
elif [[ "$out" == *"which moved"*"with force"* ]]; then ok
else fail "(l) the refusal says why and what to do: $out"; fi
expect_run "(l) add --force at its new address" "$NBDRAID" -C "$ctl" add --force "$(mu 9)"
wait_member 2 in_sync 60
expect_eq "(l) role 2 is listed under its new spec" in_sync "$(status_get "$ctl" spec:member9.sock)"
expect_eq "(l) the old address is no longer listed" absent "$(status_get "$ctl" spec:member7.sock)"
expect_fail "(l) added again: already a member" "$NBDRAID" -C "$ctl" add "$(mu 9)"
start_member 7 "$tmp/j8"         # something answers at the old address: not used
sleep 2
expect_eq "(l) optimal" optimal "$(status_get "$ctl" health)"
verify "(l)"
kill_member 7
# (l2) the moved export is smaller than the members (a truncated copy): refused,
# as a reconnect at the old address refuses a smaller export
kill_member 9
expect_run "(l2) write while role 2 is away" $FLAP write "$raid_uri" "$model" $((14 << 20)) $((1 << 20)) 95
cp "$tmp/j7" "$tmp/l2small"; truncate -s 16M "$tmp/l2small"   # the members: 32M
start_member 11 "$tmp/l2small"
expect_fail "(l2) a moved member too small for its data area is refused" \
  "$NBDRAID" -C "$ctl" add --force "$(mu 11)"
expect_eq "(l2) role 2 still missing" missing "$(mfield 2 state)"
kill_member 11
$FLAP write "$raid_uri" "$model" $((14 << 20)) $((1 << 20)) 96 >/dev/null 2>&1 || true
start_member 9 "$tmp/j7"
"$NBDRAID" -C "$ctl" add "$(mu 9)" >/dev/null 2>&1 || true   # only if (l2) took member 11
wait_member 2 in_sync 60
verify "(l2)"

# ---- (l3) a member that moved while the server at its old address is stalled ------
for i in 15 16 17; do truncate -s 32M "$tmp/f$i"; start_member "$i"; done
create_array --level=5 --chunk=64K "$(mu 15)" "$(mu 16)" "$(mu 17)"
ctl8="$tmp/ctl8"
start_raid raid8 "$(mu 15)" "$(mu 16)" "$(mu 17)" control="$ctl8" member-timeout=2
uri8="$uri"
model8="$tmp/model8.img"
truncate -s "$(nbdinfo --size "$uri8")" "$model8"
expect_run "(l3) fill" $FLAP write "$uri8" "$model8" 0 "$(stat -c %s "$model8")" 110
kill -STOP "${pid_of[member17]}"         # stalled: it stops answering, it is not gone
expect_run "(l3) write while member 17 is stalled" $FLAP write "$uri8" "$model8" $((1 << 20)) $((1 << 20)) 111
expect_eq "(l3) member 17 missing" missing "$(status_get "$ctl8" member:2)"
start_member 18 "$tmp/f17"                # its storage, at another address
if out="$("$NBDRAID" -C "$ctl8" add "$(mu 18)" 2>&1)"; then
  fail "(l3) taken while the server at its old address may still write to it"
elif [[ "$out" == *"which moved"*"force"* ]]; then ok
else fail "(l3) the refusal says why and what to do: $out"; fi
expect_eq "(l3) role 2 still missing" missing "$(status_get "$ctl8" member:2)"
kill -9 "${pid_of[member17]}"; wait "${pid_of[member17]}" 2>/dev/null || true
expect_run "(l3) with the old server stopped, add --force takes it" \
  "$NBDRAID" -C "$ctl8" add --force "$(mu 18)"
wait_status "$ctl8" health optimal 60
expect_eq "(l3) optimal" optimal "$(status_get "$ctl8" health)"
expect_run "(l3) every byte reads back as written" $FLAP verify "$uri8" "$model8"
stop_nbdkit raid8

# ---- (l4) add of a moved member whose record cannot be written ---------------------
for i in 19 20; do
  truncate -s 32M "$tmp/f$i"
  start_nbdkit "member$i" --filter=error file "$tmp/f$i" error-pwrite=EIO \
    error-pwrite-rate=1 error-pwrite-file="$tmp/trig$i"
done
truncate -s 32M "$tmp/f21"; start_member 21
create_array --level=5 --chunk=64K "$(mu 19)" "$(mu 20)" "$(mu 21)"
ctl9="$tmp/ctl9"
start_raid raid9 "$(mu 19)" "$(mu 20)" "$(mu 21)" control="$ctl9" member-timeout=60
uri9="$uri"
truncate -s "$(nbdinfo --size "$uri9")" "$tmp/model9.img"
kill_member 21
expect_run "(l4) write while member 21 is away" $FLAP write "$uri9" "$tmp/model9.img" 0 $((1 << 20)) 120
start_member 22 "$tmp/f21"
touch "$tmp/trig19" "$tmp/trig20"        # no record can be written now
expect_fail "(l4) add fails: its record cannot be written" \
  "$NBDRAID" -C "$ctl9" add --force "$(mu 22)"
expect_eq "(l4) the server still answers: failed" failed "$(status_get "$ctl9" health)"
expect_eq "(l4) the member taken is listed" 2 "$(status_get "$ctl9" specfield:role:member22.sock)"
rm -f "$tmp/trig19" "$tmp/trig20"
expect_eq "(l4) still answering" failed "$(status_get "$ctl9" health)"
stop_nbdkit raid9

# ---- (m) a member a prepared reshape adds drops before the start -------------------
# wait_spec TAIL FIELD VALUE SECONDS: until the member whose spec ends with
# TAIL has FIELD = VALUE.
wait_spec ()
{
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    [ "$(status_get "$ctl" "specfield:$2:$1")" = "$3" ] && { ok; return 0; }
    sleep 0.1
  done
  fail "$1: $2 did not become $3 in $4 s (it is $(status_get "$ctl" "specfield:$2:$1"))"
}
truncate -s 32M "$tmp/m10" "$tmp/m11"
start_member 10 "$tmp/m10"
expect_run "(m) prepare a reshape adding member 10" "$NBDRAID" -C "$ctl" reshape --add="$(mu 10)"
kill_member 10
expect_run "(m) add a spare (its record reaches every member)" "$NBDRAID" -C "$ctl" add "$tmp/m11"
expect_eq "(m) member 10 is missing" missing "$(status_get "$ctl" spec:member10.sock)"
start_member 10 "$tmp/m10"
wait_spec member10.sock state stale 30
if out="$("$NBDRAID" -C "$ctl" start 2>&1)"; then
  fail "(m) start succeeded while the member it adds was not in sync"
elif [[ "$out" == *"abort the reshape and prepare it again"* ]]; then ok
else fail "(m) the refused start says how to go on: $out"; fi
expect_run "(m) abort it" "$NBDRAID" -C "$ctl" abort
expect_eq "(m) member 10 is a spare again" spare "$(status_get "$ctl" spec:member10.sock)"
expect_eq "(m) and not down" false "$(status_get "$ctl" specfield:down:member10.sock)"
expect_run "(m) prepare it again" "$NBDRAID" -C "$ctl" reshape --add="$(mu 10)"
kill_member 10
expect_run "(m) remove the other spare (a record again)" "$NBDRAID" -C "$ctl" remove "$tmp/m11"
expect_eq "(m) member 10 is missing again" missing "$(status_get "$ctl" spec:member10.sock)"
expect_run "(m) abort while it is away" "$NBDRAID" -C "$ctl" abort
expect_eq "(m) a spare" spare "$(status_get "$ctl" spec:member10.sock)"
expect_eq "(m) that is down" true "$(status_get "$ctl" specfield:down:member10.sock)"
start_member 10 "$tmp/m10"
wait_spec member10.sock down false 30
expect_run "(m) prepare it a third time, run it" \
  "$NBDRAID" -C "$ctl" reshape --add="$(mu 10)" --start --wait
expect_eq "(m) four members" 4 "$(status_get "$ctl" raid_devices)"
expect_eq "(m) member 10 in sync" in_sync "$(status_get "$ctl" spec:member10.sock)"
expect_eq "(m) optimal" optimal "$(status_get "$ctl" health)"
truncate -s "$(nbdinfo --size "$raid_uri")" "$model"    # the grow reads as zeros
verify "(m)"
stop_nbdkit raid6

# ---- (n) an outage fails the array; the member that missed writes is back first --
for i in 11 12 13 14; do truncate -s 32M "$tmp/f$i"; start_member "$i"; done
create_array --level=5 --chunk=64K "$(mu 11)" "$(mu 12)" "$(mu 13)" "$(mu 14)"
ctl="$tmp/ctl7"
start_raid raid7 "$(mu 11)" "$(mu 12)" "$(mu 13)" "$(mu 14)" control="$ctl" member-timeout=30
raid_uri="$uri"
model="$tmp/model7.img"
truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
expect_run "(n) fill" $FLAP write "$raid_uri" "$model" 0 "$(stat -c %s "$model")" 100
kill_member 12
expect_run "(n) write while member 12 is away" $FLAP write "$raid_uri" "$model" $((4 << 20)) $((1 << 20)) 101
kill_member 13
$FLAP verify "$raid_uri" "$model" >/dev/null 2>&1 || true   # a read finds it gone
wait_member 2 missing 30
expect_eq "(n) failed" failed "$(status_get "$ctl" health)"
start_member 12
wait_member 1 stale 30
start_member 13                          # it missed nothing: back as it is
wait_member 2 in_sync 30
wait_member 1 in_sync 60                 # then member 12's delta runs
expect_eq "(n) optimal" optimal "$(status_get "$ctl" health)"
verify "(n)"
stop_nbdkit raid7

# ---- (n2) the same, but the second member also missed a write -----------------
start_raid raid7b "$(mu 11)" "$(mu 12)" "$(mu 13)" "$(mu 14)" control="$ctl" member-timeout=30
raid_uri="$uri"
kill_member 12
# flushed, in one region of member 12's map: its map and member 13's below
# mark as many regions, and only member 13, which left last, holds this
expect_run "(n2) write while member 12 is away" $FLAP write "$raid_uri" "$model" 0 $((128 << 10)) 103
# a write acknowledged, not flushed: the map of a member that leaves now marks it
head -c 4096 /dev/urandom > "$tmp/n2.blk"
dd if="$tmp/n2.blk" of="$model" bs=4096 seek=1 conv=notrunc status=none
$PYTHON -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[2], 'rb').read(), 4096)     # the same region
h.shutdown()" "$raid_uri" "$tmp/n2.blk"
kill_member 13
$FLAP verify "$raid_uri" "$model" >/dev/null 2>&1 || true
wait_member 2 missing 30
start_member 12
start_member 13
wait_member 2 stale 30
sleep 2
expect_eq "(n2) still failed: member 13 missed a write" failed "$(status_get "$ctl" health)"
kill -9 "${pid_of[raid7b]}"; wait "${pid_of[raid7b]}" 2>/dev/null || true
if start_raid raid7c "$(mu 11)" "$(mu 12)" "$(mu 13)" "$(mu 14)" control="$ctl" 2>/dev/null; then
  fail "(n2) started without force=true"; stop_nbdkit raid7c
elif grep -q "may have missed: force=true takes it back as it is" "$tmp/raid7c.log"; then ok
else fail "(n2) the refusal does not say what force=true would do"; fi
start_raid raid7f "$(mu 11)" "$(mu 12)" "$(mu 13)" "$(mu 14)" control="$ctl" force=true ||
  { fail "(n2) the array did not start with force=true"; finish; }
raid_uri="$uri"
grep -q "member13.sock (role 2): taken back as it is with force=true (it left last)" "$tmp/raid7f.log" && ok ||
  fail "(n2) the log names the regions member 13 may have missed"
wait_member 1 in_sync 60                 # member 12's delta runs
expect_eq "(n2) optimal" optimal "$(status_get "$ctl" health)"
verify "(n2)"
stop_nbdkit raid7f

# ---- (n3) the member that left last was being rebuilt: never forced -----------
for i in 23 24 25; do truncate -s 32M "$tmp/f$i"; start_member "$i"; done
create_array --level=5 --chunk=64K "$(mu 23)" "$(mu 24)" "$(mu 25)"
ctl="$tmp/ctl10"
start_raid raid10 "$(mu 23)" "$(mu 24)" "$(mu 25)" control="$ctl" member-timeout=60
raid_uri="$uri"
model="$tmp/model10.img"
truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
expect_run "(n3) fill" $FLAP write "$raid_uri" "$model" 0 "$(stat -c %s "$model")" 130
"$NBDRAID" -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
expect_run "(n3) fail member 23" "$NBDRAID" -C "$ctl" fail "$(mu 23)"
expect_run "(n3) remove it" "$NBDRAID" -C "$ctl" remove "$(mu 23)"
truncate -s 32M "$tmp/f26"; start_member 26
expect_run "(n3) a new member rebuilds role 0 (throttled)" "$NBDRAID" -C "$ctl" add "$(mu 26)"
sleep 2
kill_member 26                           # it leaves in the middle of its rebuild
sleep 1
kill_member 24                           # the array fails
$FLAP verify "$raid_uri" "$model" >/dev/null 2>&1 || true
wait_member 1 missing 30
stop_nbdkit raid10
start_member 26
if start_raid raid10f "$(mu 25)" "$(mu 26)" control="$ctl" force=true 2>/dev/null; then
  fail "(n3) a member never rebuilt past its cursor was taken as it is"; stop_nbdkit raid10f
else ok; fi

# ---- (o) away again before the record of its full rebuild reached it ----------
for i in 30 31 32 33; do truncate -s 32M "$tmp/f$i"; start_member "$i"; done
create_array --level=5 --chunk=64K --data-offset="$OFF" "$(mu 30)" "$(mu 31)" "$(mu 32)"
ctl="$tmp/ctl11"
start_raid raid11 "$(mu 30)" "$(mu 31)" "$(mu 32)" control="$ctl" member-timeout=60
raid_uri="$uri"
expect_run "(o) shrink (to grow later)" "$NBDRAID" -C "$ctl" resize --force 20M
model="$tmp/model11.img"
truncate -s 20M "$model"
expect_run "(o) fill" $FLAP write "$raid_uri" "$model" 0 $((20 << 20)) 140
kill_member 31
expect_run "(o) write while member 31 is away" $FLAP write "$raid_uri" "$model" 0 $((4 << 20)) 141
expect_run "(o) grow: its map ends" "$NBDRAID" -C "$ctl" resize max
truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
expect_run "(o) write past the old end" $FLAP write "$raid_uri" "$model" $((24 << 20)) $((4 << 20)) 142
expect_run "(o) prepare a reshape to raid6" "$NBDRAID" -C "$ctl" reshape --level=6 --add="$(mu 33)"
kill -9 "${pid_of[raid11]}"; wait "${pid_of[raid11]}" 2>/dev/null || true
start_member 31
start_raid raid11b "$(mu 30)" "$(mu 31)" "$(mu 32)" "$(mu 33)" control="$ctl" member-timeout=60
raid_uri="$uri"
expect_eq "(o) member 31 back, stale while the reshape is prepared" stale "$(mfield 1 state)"
kill_member 31
expect_run "(o) write while it is away again" $FLAP write "$raid_uri" "$model" $((8 << 20)) $((1 << 20)) 143
expect_run "(o) abort: its rebuild starts, its record fails" "$NBDRAID" -C "$ctl" abort
wait_member 1 missing 30
kill -9 "${pid_of[raid11b]}"; wait "${pid_of[raid11b]}" 2>/dev/null || true
start_raid raid11c "$(mu 30)" "$(mu 31)" "$(mu 32)" "$(mu 33)" control="$ctl" member-timeout=60
raid_uri="$uri"
start_member 31
wait_member 1 in_sync 60
verify "(o)"
expect_run "(o) scrub" "$NBDRAID" -C "$ctl" check
expect_run "(o) scrub ends" "$NBDRAID" -C "$ctl" wait --timeout=120
expect_eq "(o) no parity mismatch" 0 "$(status_get "$ctl" mismatch_count)"
stop_nbdkit raid11c

# scrub_clean NAME: the array's check finds no parity mismatch.
scrub_clean ()
{
  expect_run "$1 scrub" "$NBDRAID" -C "$ctl" check
  expect_run "$1 scrub ends" "$NBDRAID" -C "$ctl" wait --timeout=120
  expect_eq "$1 no parity mismatch" 0 "$(status_get "$ctl" mismatch_count)"
}

# new_array PART NAME N TIMEOUT SEED CREATE-OPTION... -- MEMBER-NUMBER...:
# create an array of the members, serve it as NAME (control socket ctlN,
# member-timeout TIMEOUT) and fill it; sets ctl, raid_uri and model.
new_array ()
{
  local part="$1" name="$2" n="$3" timeout="$4" seed="$5" i
  local -a opts=() ms=()
  shift 5
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  for i in "$@"; do ms+=("$(mu "$i")"); done
  create_array "${opts[@]}" "${ms[@]}"
  ctl="$tmp/ctl$n"
  start_raid "$name" "${ms[@]}" control="$ctl" member-timeout="$timeout"
  raid_uri="$uri"
  model="$tmp/model$n.img"
  truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
  expect_run "$part fill" $FLAP write "$raid_uri" "$model" 0 "$(stat -c %s "$model")" "$seed"
}

# rebuild_onto PART OLD NEW: member OLD failed and removed, member NEW
# rebuilds its role, throttled to 2 MiB/s.
rebuild_onto ()
{
  "$NBDRAID" -C "$ctl" set speed-min=0 speed-max=2M >/dev/null
  expect_run "$1 fail member $2" "$NBDRAID" -C "$ctl" fail "$(mu "$2")"
  expect_run "$1 remove it" "$NBDRAID" -C "$ctl" remove "$(mu "$2")"
  expect_run "$1 member $3 rebuilds its role (throttled)" "$NBDRAID" -C "$ctl" add "$(mu "$3")"
}

# kill_mid_delta PART OLD NEW MEMBER-NUMBER...: with a delta under way,
# the array server OLD is killed (-9) and the members served again as NEW.
kill_mid_delta ()
{
  local part="$1" old="$2" new="$3" i
  local -a ms=()
  shift 3
  for i in "$@"; do ms+=("$(mu "$i")"); done
  expect_eq "$part its delta runs" recover "$(status_get "$ctl" sync_action)"
  kill -9 "${pid_of[$old]}"; wait "${pid_of[$old]}" 2>/dev/null || true
  start_raid "$new" "${ms[@]}" control="$ctl" member-timeout=60
  raid_uri="$uri"
}

# ---- (p) the array server killed in the middle of a delta ----------------------
for i in 40 41 42 43; do truncate -s "$MSIZE" "$tmp/f$i"; done
for i in 40 41 42; do start_member "$i"; done
start_nbdkit member43 --filter=log file "$tmp/f43" logfile="$tmp/m43.a.log"
new_array "(p)" raid12 12 60 150 --level=5 --chunk=64K --data-offset="$OFF" -- 40 41 42 43
kill_member 43
expect_run "(p) write while member 43 is away" $FLAP write "$raid_uri" "$model" 0 $((2 << 20)) 151
expect_run "(p) and elsewhere" $FLAP write "$raid_uri" "$model" $((100 << 20)) $((2 << 20)) 152
regions="$(mfield 3 missed_regions)"; rbytes="$(mfield 3 missed_region_bytes)"
[[ "$regions" =~ ^[1-9][0-9]*$ ]] && ok || fail "(p) missed regions '$regions'"
"$NBDRAID" -C "$ctl" set speed-min=0 speed-max=200K >/dev/null
start_nbdkit member43 --filter=log file "$tmp/f43" logfile="$tmp/m43.b.log"
sleep 2
kill_mid_delta "(p)" raid12 raid12b 40 41 42 43
wait_member 3 in_sync 60
n="$($FLAP datawrites "$tmp/m43.b.log" "$OFF")"
# the rows between its last recorded cursor and the kill are resynced twice
if [ "$n" -gt 0 ] && [ "$n" -le $((2 * regions * rbytes)) ]; then ok
else fail "(p) member 43 was sent $n data bytes across the restart (marked: $regions regions of $rbytes bytes)"; fi
verify "(p)"
scrub_clean "(p)"
stop_nbdkit raid12b

# ---- (p2) a delta that also rebuilds from a cursor, cut short by a kill ----------
for i in 50 51 52 53 54; do truncate -s "$MSIZE" "$tmp/f$i"; start_member "$i"; done
new_array "(p2)" raid13 13 60 160 --level=5 --chunk=64K --data-offset="$OFF" -- 50 51 52 53
rebuild_onto "(p2)" 53 54
sleep 3
kill_member 54                           # it leaves in the middle of its rebuild
expect_run "(p2) write while it is away" $FLAP write "$raid_uri" "$model" $((50 << 20)) $((1 << 20)) 161
"$NBDRAID" -C "$ctl" set speed-max=300K >/dev/null
start_member 54
sleep 3
kill_mid_delta "(p2)" raid13 raid13b 50 51 52 54
wait_member 3 in_sync 120
verify "(p2)"
scrub_clean "(p2)"
stop_nbdkit raid13b

# ---- (q) a rebuild under way and a rejoin at the same start ---------------------
for i in 60 61 62 63 64 65; do truncate -s 24M "$tmp/f$i"; start_member "$i"; done
new_array "(q)" raid14 14 600 170 --level=6 --chunk=64K --data-offset=4M -- 60 61 62 63 64
rebuild_onto "(q)" 61 65
sleep 3
kill_member 63
expect_run "(q) write while member 63 is away" $FLAP write "$raid_uri" "$model" $((2 << 20)) $((1 << 20)) 171
expect_run "(q) and near the end" $FLAP write "$raid_uri" "$model" $((50 << 20)) $((1 << 20)) 172
stop_nbdkit raid14
start_member 63
start_raid raid14b "$(mu 60)" "$(mu 65)" "$(mu 62)" "$(mu 63)" "$(mu 64)" control="$ctl" member-timeout=600
raid_uri="$uri"
wait_member 1 in_sync 60
wait_member 3 in_sync 60
verify "(q)"
scrub_clean "(q)"
stop_nbdkit raid14b

# ---- (r) a spare that once had a map takes a role -------------------------------
for round in restart flap; do
  for i in 70 71 72 73 74; do rm -f "$tmp/f$i"; truncate -s "$MSIZE" "$tmp/f$i"; done
  for i in 70 71 72 73 74; do start_member "$i"; done
  create_array --level=5 --chunk=64K --data-offset="$OFF" "$(mu 70)" "$(mu 71)" "$(mu 72)" "$(mu 73)"
  ctl="$tmp/ctl15$round"
  start_raid "raid15$round" "$(mu 70)" "$(mu 71)" "$(mu 72)" "$(mu 73)" control="$ctl"
  raid_uri="$uri"
  model="$tmp/model15.img"; rm -f "$model"
  truncate -s "$(nbdinfo --size "$raid_uri")" "$model"
  expect_run "(r $round) fill" $FLAP write "$raid_uri" "$model" 0 "$(stat -c %s "$model")" 180
  stop_nbdkit "raid15$round"
  kill_member 73
  start_raid "raid15${round}b" "$(mu 70)" "$(mu 71)" "$(mu 72)" control="$ctl" member-timeout=2
  raid_uri="$uri"
  expect_run "(r $round) write while member 73 is absent" $FLAP write "$raid_uri" "$model" $((20 << 20)) $((1 << 20)) 181
  expect_run "(r $round) a spare" "$NBDRAID" -C "$ctl" add "$(mu 74)"
  wait_spec member74.sock state in_sync 60
  stop_nbdkit "raid15${round}b"
  start_member 73
  start_raid "raid15${round}c" "$(mu 70)" "$(mu 71)" "$(mu 72)" "$(mu 73)" "$(mu 74)" control="$ctl" \
    member-timeout=60
  raid_uri="$uri"
  expect_eq "(r $round) member 73 is a spare" spare "$(status_get "$ctl" spec:member73.sock)"
  "$NBDRAID" -C "$ctl" set speed-min=0 speed-max=2M >/dev/null
  expect_run "(r $round) fail member 71" "$NBDRAID" -C "$ctl" fail "$(mu 71)"
  expect_run "(r $round) remove it: role 1 is recovered onto member 73" "$NBDRAID" -C "$ctl" remove "$(mu 71)"
  sleep 3
  if [ "$round" = restart ]; then
    kill -9 "${pid_of[raid15${round}c]}"; wait "${pid_of[raid15${round}c]}" 2>/dev/null || true
    start_raid "raid15${round}d" "$(mu 70)" "$(mu 72)" "$(mu 73)" "$(mu 74)" control="$ctl"
    raid_uri="$uri"
  else
    kill_member 73
    expect_run "(r $round) write while member 73 is away" $FLAP write "$raid_uri" "$model" $((2 << 20)) $((1 << 20)) 182
    start_member 73
    "$NBDRAID" -C "$ctl" set speed-max=0 >/dev/null
  fi
  wait_spec member73.sock state in_sync 120
  verify "(r $round)"
  scrub_clean "(r $round)"
  for n in "raid15${round}c" "raid15${round}d"; do
    [ -n "${pid_of[$n]:-}" ] && kill -0 "${pid_of[$n]}" 2>/dev/null && stop_nbdkit "$n"
  done
  for i in 70 71 72 73 74; do kill_member "$i"; done
done
finish
