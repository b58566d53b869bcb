#!/usr/bin/env bash
# nbdkit-raid: a running array does not take a new member that holds a
# filesystem, a partition table or a RAID/LVM signature unless force, as
# `nbdraid create` does not (nbdkit-raid-control(7), ERRORS; nbdraid(8)).
#
# (a) add: an ext4 file, a GPT-partitioned and an MBR-partitioned file are
#     refused (exit 1, EEXIST, the message names the file and what it
#     holds); the file is unchanged, and so are the event count and the
#     member table.  With --force each is taken as a spare, and its
#     signature is gone (blkid finds nothing).
# (b) reshape --add: the same refusal; a second, blank member named in the
#     same request is not written either; one spare named by two paths is
#     refused (EINVAL), not used twice.  With --force the reshape is
#     prepared; aborted, the member stays a spare.
# (c) replace --with takes only a spare of this array: a file that is not
#     one is refused (ENODEV) and unchanged.
# (d) members of this array need no force: one failed, removed and added
#     back, and one left out at a restart and added back; one named by a
#     hard link or a symlink is already a member (EEXIST); a name means the
#     member with that spec before the storage the path reaches now; a
#     removed member added back by a hard link is taken, by a new name
#     after it moved is refused (EBUSY), changing nothing.
# (e) an NBD member (an ext4 file served by nbdkit file): refused too, over
#     NBD, and unchanged.
# (f) the NBD export of another nbdkit-raid array (its description names
#     it) holds that array's data: add and create refuse it unless force,
#     naming that array, and every byte it serves is as before.  Such an
#     export made a member with force comes back without force after a
#     fail and remove (it carries this array's superblock).
# (g) a member wiped and added back is a new spare that takes its role
#     when the absent member's grace ends; `remove` by that spec then takes
#     out the absent member's entry.  A member deleted and made anew at
#     its path is added as the new file, not the deleted one still open.
# (h) a member listed by a spec cut to its tail is not taken for another
#     path with the same tail by remove.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-signatures "$@"
requires nbdinfo
requires mkfs.ext4
requires sfdisk
requires blkid
export PATH="$PATH:/usr/sbin:/sbin"

d="$tmp/d"
ctl="$tmp/ctl"
mkdir -p "$d"

# What `status --json` says: events, the number of members, or the state
# of the member with spec SPEC ("none" when there is none).
st () # events | nmembers | state SPEC
{
  "$NBDRAID" -C "$ctl" status --json | $PYTHON -c '
import json, sys
s = json.load(sys.stdin)
if sys.argv[1] == "events":
    print(s["events"])
elif sys.argv[1] == "nmembers":
    print(len(s["members"]))
else:
    print(next((m["state"] for m in s["members"] if m["spec"] == sys.argv[2]), "none"))
' "$@"
}

ext4 () { truncate -s 32M "$1"; mkfs.ext4 -q -F -L "$2" "$1"; }
gpt () { truncate -s 32M "$1"; printf 'label: gpt\n,8M\n' | sfdisk -q "$1" >/dev/null; }
mbr () { truncate -s 32M "$1"; printf 'label: dos\n,8M\n' | sfdisk -q "$1" >/dev/null; }

# refused WHAT FILE PATTERN CODE NBDRAID-ARGS...: nbdraid exits 1 with a
# message matching PATTERN (and with --json the error CODE); FILE's bytes,
# the event count and the member table are as before.
refused ()
{
  local what="$1" file="$2" pattern="$3" code="$4" sum ev nm rc out; shift 4
  sum="$(md5sum <"$file")"; ev="$(st events)"; nm="$(st nmembers)"
  set +e
  out="$("$NBDRAID" -C "$ctl" "$@" 2>&1)"; rc=$?
  set -e
  expect_eq "$what: exit status" 1 "$rc"
  if grep -q -E "$pattern" <<<"$out"; then ok; else
    fail "$what: no message matching '$pattern':"; sed 's/^/    /' <<<"$out" >&2; fi
  set +e
  out="$("$NBDRAID" -C "$ctl" --json "$@" 2>&1)"
  set -e
  if grep -q "\"error\": \"$code\"" <<<"$out"; then ok; else
    fail "$what: --json: no error $code:"; sed 's/^/    /' <<<"$out" >&2; fi
  expect_eq "$what: the file is unchanged" "$sum" "$(md5sum <"$file")"
  expect_eq "$what: the event count is unchanged" "$ev" "$(st events)"
  expect_eq "$what: the member table is unchanged" "$nm" "$(st nmembers)"
}

# taken WHAT FILE NBDRAID-ARGS...: nbdraid succeeds, FILE is a spare of the
# array and blkid finds no signature on it any more.
taken ()
{
  local what="$1" file="$2"; shift 2
  expect_run "$what" "$NBDRAID" -C "$ctl" "$@"
  expect_eq "$what: a spare" spare "$(st state "$file")"
  if blkid -p "$file" >/dev/null 2>&1; then
    fail "$what: blkid still finds a signature: $(blkid -p "$file")"; else ok; fi
}

# readd WHAT CTL ROLE SPEC [AS]: fail ROLE, remove SPEC, add it back
# (named AS, by default SPEC) without force; its recovery ends and the
# array is optimal again.
readd ()
{
  local what="$1" c="$2" role="$3" spec="$4" as="${5:-$4}"
  expect_run "$what: fail role $role" "$NBDRAID" -C "$c" fail "$role"
  expect_run "$what: remove it" "$NBDRAID" -C "$c" remove "$spec"
  expect_run "$what: add it back without force" "$NBDRAID" -C "$c" add "$as"
  expect_run "$what: its recovery ends" "$NBDRAID" -C "$c" wait --timeout=60
  expect_status "$what: optimal again" "$c" health optimal
}

create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
  { fail "create"; finish; }
start_raid_ctl r1 "$ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "start"; finish; }

# ---- (d) members of this array need no force --------------------------------
# Before any spare exists: the member added back is rebuilt onto.
readd "(d) m2" "$ctl" 2 "$d/m2"
stop_nbdkit r1
start_raid_ctl r2 "$ctl" "$d/m0" "$d/m1" || { fail "(d) start without m2"; finish; }
expect_status "(d) degraded without m2" "$ctl" health degraded
expect_run "(d) m2 back without force" "$NBDRAID" -C "$ctl" add "$d/m2"
expect_run "(d) its rejoin ends" "$NBDRAID" -C "$ctl" wait --timeout=60
expect_status "(d) optimal after the rejoin" "$ctl" health optimal
# A member named again by another path (a hard link, a symlink) is the
# same member: EEXIST, not a lock held by "another" server.
ln "$d/m0" "$d/m0.hard"
ln -s m1 "$d/m1.sym"
for alias in "$d/m0.hard" "$d/m1.sym"; do
  ev="$(st events)"
  set +e
  out="$("$NBDRAID" -C "$ctl" add "$alias" 2>&1)"; rc=$?
  set -e
  expect_eq "(d) add $alias: exit status" 1 "$rc"
  if grep -q "^nbdraid: EEXIST: $alias is already a member of this array$" <<<"$out"
  then ok; else fail "(d) add $alias: message:"; sed 's/^/    /' <<<"$out" >&2; fi
  expect_eq "(d) add $alias: the event count is unchanged" "$ev" "$(st events)"
done
rm -f "$d/m0.hard" "$d/m1.sym"
# A name is first the member with that spec, then the storage it reaches:
# with the path m2 now reaching m0's file (m2's own file moved aside, still
# open as role 2), fail m2 fails role 2, not role 0.
mv "$d/m2" "$d/m2.own"
ln "$d/m0" "$d/m2"
expect_run "(d) fail by a name that now reaches another member" "$NBDRAID" -C "$ctl" fail "$d/m2"
role_state () { "$NBDRAID" -C "$ctl" status --json | $PYTHON -c '
import json, sys
print(next(m["state"] for m in json.load(sys.stdin)["members"] if m["role"] == int(sys.argv[1])))' "$1"; }
expect_eq "(d) role 2 is the one failed" faulty "$(role_state 2)"
expect_eq "(d) role 0 is untouched" in_sync "$(role_state 0)"
rm -f "$d/m2"
mv "$d/m2.own" "$d/m2"
expect_run "(d) remove the failed m2" "$NBDRAID" -C "$ctl" remove "$d/m2"
expect_run "(d) add m2 back" "$NBDRAID" -C "$ctl" add "$d/m2"
expect_run "(d) its recovery ends again" "$NBDRAID" -C "$ctl" wait --timeout=60
expect_status "(d) optimal once more" "$ctl" health optimal
# A removed member (the server keeps it open until it stops) added back by
# a hard link is that member: taken, not "locked by another server".
ln "$d/m1" "$d/m1.hard"
readd "(d) m1 by a hard link" "$ctl" 1 "$d/m1" "$d/m1.hard"
expect_eq "(d) m1 is listed once" 3 "$(st nmembers)"
rm -f "$d/m1.hard"
# ...but not under a new name when its own no longer reaches it (moved):
# the server would list it, and look for signatures, at the old name.
expect_run "(d) fail role 1 again" "$NBDRAID" -C "$ctl" fail 1
expect_run "(d) remove m1 again" "$NBDRAID" -C "$ctl" remove "$d/m1"
mv "$d/m1" "$d/m1.moved"
ev="$(st events)"
set +e
out="$("$NBDRAID" -C "$ctl" add "$d/m1.moved" 2>&1)"; rc=$?
set -e
expect_eq "(d) add the moved m1: exit status" 1 "$rc"
if grep -q "^nbdraid: EBUSY: $d/m1.moved is member $d/m1, removed earlier: this server keeps it open until it stops, and that name no longer reaches it; restart the server, then add it$" <<<"$out"
then ok; else fail "(d) add the moved m1: message:"; sed 's/^/    /' <<<"$out" >&2; fi
expect_eq "(d) add the moved m1: the event count is unchanged" "$ev" "$(st events)"
mv "$d/m1.moved" "$d/m1"
expect_run "(d) add m1 back under its name" "$NBDRAID" -C "$ctl" add "$d/m1"
expect_run "(d) m1's recovery ends" "$NBDRAID" -C "$ctl" wait --timeout=60
expect_status "(d) optimal after m1's recovery" "$ctl" health optimal

# ---- (a) add ----------------------------------------------------------------
ext4 "$d/e1" precious
gpt "$d/g1"
mbr "$d/p1"
refused "(a) add ext4" "$d/e1" \
  "^nbdraid: EEXIST: $d/e1 holds an ext4 filesystem labelled \"precious\" \(add it with force to overwrite it\)$" \
  EEXIST add "$d/e1"
refused "(a) add GPT" "$d/g1" "$d/g1 holds a GPT partition table \(add it with force" \
  EEXIST add "$d/g1"
refused "(a) add MBR" "$d/p1" "$d/p1 holds an MBR \(dos\) partition table \(add it with force" \
  EEXIST add "$d/p1"
taken "(a) add --force ext4" "$d/e1" add --force "$d/e1"
taken "(a) add --force GPT" "$d/g1" add --force "$d/g1"
if grep -q "$d/e1: overwriting an ext4 filesystem labelled \"precious\" (force)" "$tmp/r2.log"
then ok; else fail "(a) the server log does not say what force overwrote"; fi

# ---- (c) replace --with -----------------------------------------------------
refused "(c) replace --with a file that is no spare" "$d/p1" \
  "ENODEV: $d/p1 is not a member of this array" ENODEV replace 0 --with="$d/p1"
expect_status "(c) nothing is being replaced" "$ctl" health optimal

# ---- (b) reshape --add ------------------------------------------------------
# The spares are taken out first: a reshape growing by more members than
# named would use them.
expect_run "(b) remove spare e1" "$NBDRAID" -C "$ctl" remove "$d/e1"
expect_run "(b) remove spare g1" "$NBDRAID" -C "$ctl" remove "$d/g1"
ext4 "$d/e2" precious
truncate -s 32M "$d/b2"
refused "(b) reshape --add ext4" "$d/e2" \
  "EEXIST: $d/e2 holds an ext4 filesystem labelled \"precious\" \(add it with force" \
  EEXIST reshape --add="$d/e2"
expect_status "(b) no reshape" "$ctl" sync_action idle
refused "(b) reshape --add MBR" "$d/p1" "$d/p1 holds an MBR \(dos\) partition table" \
  EEXIST reshape --add="$d/p1"
sum_b2="$(md5sum <"$d/b2")"
refused "(b) reshape --add blank and ext4" "$d/e2" "EEXIST: $d/e2 holds an ext4" \
  EEXIST reshape --add="$d/b2" --add="$d/e2"
expect_eq "(b) the blank member named with it is unchanged" "$sum_b2" "$(md5sum <"$d/b2")"
# One spare named twice, by two paths (a hard link): refused, not used twice.
truncate -s 32M "$d/s3"
expect_run "(b) add a blank spare" "$NBDRAID" -C "$ctl" add "$d/s3"
ln "$d/s3" "$d/s3.hard"
refused "(b) reshape --add one spare by two names" "$d/s3" \
  "EINVAL: $d/s3 is named twice \(as $d/s3 and $d/s3.hard\)" EINVAL \
  reshape --add="$d/s3" --add="$d/s3.hard"
expect_status "(b) still no reshape" "$ctl" sync_action idle
expect_run "(b) remove that spare" "$NBDRAID" -C "$ctl" remove "$d/s3"
rm -f "$d/s3" "$d/s3.hard"
expect_run "(b) reshape --add --force" "$NBDRAID" -C "$ctl" reshape --force --add="$d/e2"
expect_eq "(b) the added member holds a role" in_sync "$(st state "$d/e2")"
expect_run "(b) abort the prepared reshape" "$NBDRAID" -C "$ctl" abort
expect_eq "(b) aborted: the added member stays a spare" spare "$(st state "$d/e2")"
if blkid -p "$d/e2" >/dev/null 2>&1; then
  fail "(b) blkid still finds a signature on e2"; else ok; fi

# ---- (e) an NBD member ------------------------------------------------------
ext4 "$d/e4" precious
start_nbdkit x4 file "$d/e4" || { fail "(e) nbdkit file"; finish; }
u4="$(uri_of "$tmp/x4.sock")"
refused "(e) add over NBD" "$d/e4" \
  "EEXIST: nbd\+unix:///\?socket=.*/x4\.sock holds an ext4 filesystem labelled \"precious\" \(add it with force" \
  EEXIST add "$u4"
expect_eq "(e) not a member" none "$(st state "$u4")"

# ---- (f) another array's export ---------------------------------------------
create_array --level=5 --chunk=64K --size=40M "$d/o0" "$d/o1" "$d/o2" ||
  { fail "(f) create the other array"; finish; }
other="$("$NBDRAID" examine --json "$d/o0" | $PYTHON -c 'import json, sys; print(json.load(sys.stdin)["members"][0]["array_uuid"])' 2>/dev/null || true)"
start_raid o "$d/o0" "$d/o1" "$d/o2" || { fail "(f) serve the other array"; finish; }
uo="$(uri_of "$tmp/o.sock")"
head -c "$(nbdinfo --size "$uo")" /dev/urandom >"$d/o.data"
expect_run "(f) fill the other array" nbdcopy "$d/o.data" "$uo"
ev="$(st events)"; nm="$(st nmembers)"
set +e
out="$("$NBDRAID" -C "$ctl" add "$uo" 2>&1)"; rc=$?
set -e
expect_eq "(f) add: exit status" 1 "$rc"
if grep -q -E "^nbdraid: EEXIST: .*o\.sock holds the data of nbdkit-raid array ${other:-x} \(it is that array's export\) \(add it with force" <<<"$out"
then ok; else fail "(f) add: message:"; sed 's/^/    /' <<<"$out" >&2; fi
expect_eq "(f) add: the event count is unchanged" "$ev" "$(st events)"
expect_eq "(f) add: the member table is unchanged" "$nm" "$(st nmembers)"
truncate -s 32M "$d/n0" "$d/n1"
set +e
out="$("$NBDRAID" create --level=5 --size=24M "$d/n0" "$d/n1" "$uo" 2>&1)"; rc=$?
set -e
expect_eq "(f) create: exit status" 1 "$rc"
if grep -q "holds the data of nbdkit-raid array ${other:-x}" <<<"$out"; then ok; else
  fail "(f) create: message:"; sed 's/^/    /' <<<"$out" >&2; fi
rm -f "$d/o.back"
expect_run "(f) read the other array back" nbdcopy "$uo" "$d/o.back"
expect_run "(f) the other array's data is unchanged" cmp "$d/o.data" "$d/o.back"
# Nested on purpose (--force): that export, once a member here, is ours
# and needs no force to come back after a fail and remove.
nctl="$tmp/nctl"
expect_run "(f) create a nested array with --force" "$NBDRAID" create --force --level=5 \
  --size=24M "$d/n0" "$d/n1" "$uo"
start_raid_ctl nest "$nctl" "$d/n0" "$d/n1" "$uo" || { fail "(f) serve nested"; finish; }
readd "(f) nested: the export" "$nctl" 2 "$uo"
stop_nbdkit nest
stop_nbdkit o

# ---- (g) a member wiped and added back; a file made anew ------------------
# Wiped while the server is down (its superblocks zeroed), m1 is missing
# when the array is served again.  Added back, it is a new spare; when the
# absent member's grace (member-timeout, 8 s here) ends, role 1 is rebuilt
# onto it.  The entry of the absent member stays listed with the same spec
# until `remove` names it: the member in use yields to it.
# Then m2 is failed, removed, deleted and made anew at the same path: `add`
# takes the new file, not the deleted one the server still holds open, so
# after a restart role 2 is in sync, not missing.
count_spec () { "$NBDRAID" -C "$ctl" status --json | $PYTHON -c '
import json, sys
print(sum(m["spec"] == sys.argv[1] for m in json.load(sys.stdin)["members"]))' "$1"; }
expect_run "(g) remove the spare e2" "$NBDRAID" -C "$ctl" remove "$d/e2"
stop_nbdkit r2
dd if=/dev/zero of="$d/m1" bs=1M count=4 conv=notrunc status=none
start_raid_ctl g1 "$ctl" "$d/m0" "$d/m1" "$d/m2" member-timeout=8 ||
  { fail "(g) serve with m1 wiped"; finish; }
expect_status "(g) degraded: m1 is missing" "$ctl" health degraded
expect_eq "(g) m1 listed missing" missing "$(st state "$d/m1")"
expect_run "(g) add the wiped m1 back" "$NBDRAID" -C "$ctl" add "$d/m1"
# Within the grace a wait times out, saying what it waits for.
set +e
out="$("$NBDRAID" -C "$ctl" wait --timeout=1 2>&1)"; rc=$?
set -e
expect_eq "(g) wait within the grace: exit status" 4 "$rc"
if grep -q "^nbdraid: timed out after 1 s: nothing runs yet, but a recovery is due when a missing member's member-timeout ends$" <<<"$out"
then ok; else fail "(g) wait within the grace: message:"; sed 's/^/    /' <<<"$out" >&2; fi
expect_run "(g) its recovery ends" "$NBDRAID" -C "$ctl" wait --timeout=60
expect_status "(g) optimal" "$ctl" health optimal
expect_eq "(g) m1 listed twice: in use, and the absent entry" 2 "$(count_spec "$d/m1")"
expect_run "(g) remove m1 takes the absent entry" "$NBDRAID" -C "$ctl" remove "$d/m1"
expect_eq "(g) m1 listed once" 1 "$(count_spec "$d/m1")"
expect_eq "(g) m1 in sync" in_sync "$(st state "$d/m1")"
expect_status "(g) still optimal" "$ctl" health optimal
expect_run "(g) fail role 2" "$NBDRAID" -C "$ctl" fail 2
expect_run "(g) remove m2" "$NBDRAID" -C "$ctl" remove "$d/m2"
rm -f "$d/m2"
truncate -s 32M "$d/m2"
expect_run "(g) add the new m2" "$NBDRAID" -C "$ctl" add "$d/m2"
expect_run "(g) its recovery ends" "$NBDRAID" -C "$ctl" wait --timeout=60
expect_status "(g) optimal with the new m2" "$ctl" health optimal
stop_nbdkit g1
start_raid_ctl g2 "$ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "(g) serve again"; finish; }
expect_status "(g) after a restart: optimal" "$ctl" health optimal
expect_eq "(g) after a restart: three members listed" 3 "$(st nmembers)"
expect_eq "(g) after a restart: the new m2 in sync" in_sync "$(st state "$d/m2")"
stop_nbdkit g2

# ---- (h) remove and a spec kept cut to its tail ---------------------------------
# Specs longer than the 48 bytes a superblock keeps are listed as "..." and
# their tail.  An in-sync member whose path has the same tail as a missing
# member's is not a reason to remove the missing one: remove of the in-sync
# member is refused (EBUSY) and changes nothing.
long="a-rather-long-directory-name-for-the-members-of-it"
mkdir -p "$d/x0/$long" "$d/x1/$long" "$d/x2/$long"
create_array --level=5 --chunk=64K --size=24M "$d/x0/$long/m" "$d/x1/$long/m" \
  "$d/x2/$long/m" || { fail "(h) create"; finish; }
start_raid_ctl h1 "$ctl" "$d/x0/$long/m" "$d/x2/$long/m" member-timeout=300 ||
  { fail "(h) serve without x1"; finish; }
nm="$(st nmembers)"; ev="$(st events)"
set +e
out="$("$NBDRAID" -C "$ctl" remove "$d/x0/$long/m" 2>&1)"; rc=$?
set -e
expect_eq "(h) remove an in-sync member: exit status" 1 "$rc"
if grep -q "EBUSY: $d/x0/$long/m is in_sync: only faulty or spare members can be removed" <<<"$out"
then ok; else fail "(h) remove an in-sync member: message:"; sed 's/^/    /' <<<"$out" >&2; fi
expect_eq "(h) the member table is unchanged" "$nm" "$(st nmembers)"
expect_eq "(h) the event count is unchanged" "$ev" "$(st events)"
stop_nbdkit h1
finish
