#!/usr/bin/env bash
# nbdkit-raid: the copies an array keeps (mirrors, parity) made to agree
# again after an unclean stop, and checked (qemu-io, nbdcopy, nbdraid).
#
# (a)-(d): a raid1 of three file members (chunk 64K: row r is read from mirror
# r mod 3, the first readable one from there on).
#
# (a) check and repair.  With the server stopped, one mirror's bytes are
#     changed by hand (as a member that silently lost writes would hold
#     them) in rows another mirror serves.  `nbdraid check` counts the
#     4 KiB columns that differ from the mirror reads use and changes
#     nothing; `repair` copies that mirror over them; afterwards a check
#     finds nothing, the three data areas are byte-identical, and every
#     byte reads as written.  A reshape of the raid1 is refused, saying
#     what a raid1 can become.
# (b) an unclean stop.  The server is killed (-9) after writes (the record
#     says dirty), and one mirror's bytes are changed by hand as a write
#     that reached it alone before the power cut would leave them: in a
#     row it serves and in a row another mirror serves.  Started again
#     (background work throttled), the array says in its log that it
#     resyncs its mirrors and shows the resync owed and running in status;
#     the whole export read then, and again after the resync (throttle
#     lifted), is the same: the resync copies each row from the mirror
#     reads of it use, so it changes nothing a client reads.  Afterwards
#     the data areas are byte-identical and nothing is owed.
# (c) raid0 has nothing to check: refused, saying so.
# (d) a raid1 created over members that hold different bytes (not
#     --assume-clean): create says the server will run an initial resync,
#     and it does: afterwards the mirrors agree.
# (e) a raid5 (resync policy) killed (-9) while its initial resync runs,
#     after a write below the resync's position whose parity write was
#     torn (changed by hand): the dirty start resyncs from the start, not
#     from the position, and a check then finds every row's parity right.
# (f) a raid5 with the bitmap policy created over members that hold data:
#     its initial sync visits every row (its bitmap marks none), and a
#     check then finds every row's parity right.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-resync "$@"
requires qemu-io
requires nbdcopy

nr () { "$NBDRAID" "$@"; }
K=1024; M=$((1024 * K))
chunk=$((64 * K)); doff=$((4 * M))
d="$tmp/a"; mkdir "$d"
ctl="$tmp/ctl.sock"
create_array --level=1 --size=16M --chunk=64K --data-offset=4M "$d"/m0 "$d"/m1 "$d"/m2

# The data area of member I, from the data offset (as much as the export).
area () { dd if="$d/m$1" bs=64K skip=$((doff / chunk)) count="$2" status=none; }
# Overwrite LEN bytes of member I at data-area offset OFF with 0xee.
scribble ()
{
  head -c "$3" /dev/zero | tr '\0' '\356' |
    dd of="$d/m$1" bs=4K seek=$(((doff + $2) / 4096)) conv=notrunc status=none
}
same_areas ()
{
  local n=$((size / chunk))
  for i in 1 2; do
    if cmp -s <(area 0 "$n") <(area "$i" "$n"); then ok
    else fail "$1: the data areas of m0 and m$i differ"; fi
  done
}

# ---- (a) check and repair ----
start_raid_ctl a "$ctl" "$d"/m0 "$d"/m1 "$d"/m2
size=$(nbd_size "$uri")
qemu_io "(a) write" -c "write -P 0x5a 0 $size" "$uri"
stop_nbdkit a
# Rows 0 and 1 are read from m0 and m1: m2 holds 2 + 1 wrong columns.
scribble 2 0 8192
scribble 2 $((chunk + 4096)) 4096
start_raid_ctl a "$ctl" "$d"/m0 "$d"/m1 "$d"/m2
expect_run "(a) check" nr -C "$ctl" check
expect_run "(a) wait" nr -C "$ctl" wait
expect_eq "(a) mismatch_count" 3 "$(status_get "$ctl" mismatch_count)"
qemu_io "(a) reads as written" -c "read -P 0x5a 0 $size" "$uri"
expect_run "(a) repair" nr -C "$ctl" repair
expect_run "(a) wait" nr -C "$ctl" wait
expect_run "(a) check again" nr -C "$ctl" check
expect_run "(a) wait" nr -C "$ctl" wait
expect_eq "(a) no mismatch after repair" 0 "$(status_get "$ctl" mismatch_count)"
qemu_io "(a) reads as written after repair" -c "read -P 0x5a 0 $size" "$uri"
head -c 32M /dev/zero > "$d/new"
out="$(nr -C "$ctl" reshape --add="$d/new" 2>&1)" && fail "(a) reshape of raid1 accepted" || ok
case "$out" in
  *"raid1 can only become a 2-member raid5"*) ok ;;
  *) fail "(a) reshape of raid1: unexpected message: $out" ;;
esac
stop_nbdkit a
same_areas "(a) after repair"

# ---- (b) an unclean stop ----
start_raid_ctl b "$ctl" "$d"/m0 "$d"/m1 "$d"/m2
qemu_io "(b) write" -c "write -P 0x6b 0 $((2 * M))" "$uri"
kill -9 "${pid_of[b]}"; wait "${pid_of[b]}" 2>/dev/null || true
pid_of[b]=
# Row 4 is read from m1, row 5 from m2: m1 took a write in both alone.
scribble 1 $((4 * chunk)) $chunk
scribble 1 $((5 * chunk + 8192)) 4096
start_raid_ctl b2 "$ctl" "$d"/m0 "$d"/m1 "$d"/m2 speed-max=64K speed-min=64K
if grep -q "not shut down cleanly: resyncing its mirrors" "$tmp/b2.log"; then ok
else fail "(b) the log does not say the mirrors are resynced"; fi
expect_eq "(b) resync running" resync "$(status_get "$ctl" sync_action)"
owed="$(status_get "$ctl" resync_owed)"
case "$owed" in
  [0-9]*) ok ;;
  *) fail "(b) status owes no resync: resync_owed '$owed'" ;;
esac
nbdcopy -- "$uri" "$tmp/before.img"
expect_run "(b) lift the throttle" nr -C "$ctl" set speed-max=0 speed-min=16M
expect_run "(b) wait" nr -C "$ctl" wait
expect_eq "(b) nothing owed" "" "$(status_get "$ctl" resync_owed)"
nbdcopy -- "$uri" "$tmp/after.img"
if cmp -s "$tmp/before.img" "$tmp/after.img"; then ok
else fail "(b) the resync changed what the export reads"; fi
# What reads give: m1's bytes in row 4 (the mirror it is read from), the
# written bytes in row 5 (read from m2).
qemu_io "(b) row 4 as m1 holds it" -c "read -P 0xee $((4 * chunk)) $chunk" "$uri"
qemu_io "(b) row 5 as written" -c "read -P 0x6b $((5 * chunk)) $chunk" "$uri"
expect_run "(b) check" nr -C "$ctl" check
expect_run "(b) wait" nr -C "$ctl" wait
expect_eq "(b) no mismatch after the resync" 0 "$(status_get "$ctl" mismatch_count)"
stop_nbdkit b2
same_areas "(b) after the resync"

# ---- (c) raid0 ----
z="$tmp/z"; mkdir "$z"
create_array --level=0 --size=20M "$z"/m0 "$z"/m1
start_raid_ctl c "$ctl" "$z"/m0 "$z"/m1
out="$(nr -C "$ctl" check 2>&1)" && fail "(c) check of raid0 accepted" || ok
case "$out" in
  *"raid0 has no redundancy to check"*) ok ;;
  *) fail "(c) check of raid0: unexpected message: $out" ;;
esac
stop_nbdkit c

# ---- (d) the initial sync of a raid1 ----
y="$tmp/y"; mkdir "$y"
for i in 0 1; do head -c $((20 * M)) /dev/urandom > "$y/m$i"; done
out="$("$NBDRAID" create --level=1 --chunk=64K --data-offset=4M "$y"/m0 "$y"/m1 2>&1)" ||
  fail "(d) create: $out"
case "$out" in
  *"initial resync"*) ok ;;
  *) fail "(d) create does not say an initial resync is owed: $out" ;;
esac
start_raid_ctl d "$ctl" "$y"/m0 "$y"/m1
size=$(nbd_size "$uri")
expect_run "(d) wait" nr -C "$ctl" wait
expect_eq "(d) nothing owed" "" "$(status_get "$ctl" resync_owed)"
stop_nbdkit d
n=$((size / chunk))
if cmp -s <(dd if="$y/m0" bs=64K skip=64 count=$n status=none) \
          <(dd if="$y/m1" bs=64K skip=64 count=$n status=none); then ok
else fail "(d) the mirrors differ after the initial sync"; fi

# ---- (e) a dirty start while a resync runs ----
x="$tmp/x"; mkdir "$x"
for i in 0 1 2; do head -c $((20 * M)) /dev/urandom > "$x/m$i"; done
create_array --level=5 --layout=left-symmetric --chunk=64K --data-offset=4M \
  --consistency=resync "$x"/m0 "$x"/m1 "$x"/m2
start_raid_ctl e "$ctl" "$x"/m0 "$x"/m1 "$x"/m2 speed-max=1M speed-min=1M
for ((i = 0; i < 300; i++)); do          # the resync's checkpoint past row 1
  owed="$(status_get "$ctl" resync_owed)"
  [[ "$owed" =~ ^[0-9]+$ ]] && [ "$owed" -ge $((4 * chunk)) ] && break
  sleep 0.1
done
[[ "$owed" =~ ^[0-9]+$ ]] && [ "$owed" -ge $((4 * chunk)) ] && ok ||
  fail "(e) the resync did not pass row 1 in 30 s (resync_owed '$owed')"
qemu_io "(e) write below the resync" -c "write -P 0x7c 0 4096" "$uri"
kill -9 "${pid_of[e]}"; wait "${pid_of[e]}" 2>/dev/null || true
pid_of[e]=
# Row 0's parity is on m2 (left-symmetric, three members): torn.
dd if=/dev/urandom of="$x/m2" bs=4K seek=$((doff / 4096)) count=1 conv=notrunc status=none
start_raid_ctl e2 "$ctl" "$x"/m0 "$x"/m1 "$x"/m2
if grep -q "not shut down cleanly: resyncing everything" "$tmp/e2.log"; then ok
else fail "(e) the log does not say everything is resynced"; fi
expect_run "(e) wait" nr -C "$ctl" wait
expect_run "(e) check" nr -C "$ctl" check
expect_run "(e) wait" nr -C "$ctl" wait
expect_eq "(e) every row's parity right" 0 "$(status_get "$ctl" mismatch_count)"
qemu_io "(e) the write reads back" -c "read -P 0x7c 0 4096" "$uri"
stop_nbdkit e2

# ---- (f) the initial sync under the bitmap policy ----
v="$tmp/v"; mkdir "$v"
for i in 0 1 2; do head -c $((20 * M)) /dev/urandom > "$v/m$i"; done
create_array --level=5 --chunk=64K --data-offset=4M --consistency=bitmap \
  "$v"/m0 "$v"/m1 "$v"/m2
start_raid_ctl f "$ctl" "$v"/m0 "$v"/m1 "$v"/m2
expect_run "(f) wait" nr -C "$ctl" wait
expect_eq "(f) nothing owed" "" "$(status_get "$ctl" resync_owed)"
expect_run "(f) check" nr -C "$ctl" check
expect_run "(f) wait" nr -C "$ctl" wait
expect_eq "(f) every row's parity right" 0 "$(status_get "$ctl" mismatch_count)"
stop_nbdkit f
finish
