#!/usr/bin/env bash
# nbdkit-raid: hot spares, as a user meets them.
#
# (a) a FILE member fails with an I/O error (a file on a FUSE mount made by
#     nbdfuse over an export behind nbdkit's error filter): the configured
#     spare takes its role at once (seconds, far below member-timeout's
#     30 s, which applies only to NBD members whose connection is lost),
#     the array is optimal again, the data reads back, the member files
#     hold md's bytes and parity.
# (b) the same with an NBD member that answers every request with EIO (an
#     error, not a lost connection): faulty and replaced by the spare at
#     once.
# (c) raid6, two spares configured, two members failed one after the other
#     while the first recovery runs: both roles are rebuilt, one after the
#     other, onto the two spares.
# (d) a spare added while another action runs (a throttled recovery) is
#     listed as a spare, queued, and takes the next failed role when that
#     action ends.
#     Likewise a spare added during a (throttled) reshape of a degraded
#     raid6 waits for the reshape and then takes the failed role.
# (e) `remove` of a spare then `add` of the same file works (and a second
#     `add` of a spare already in the array is refused, changing nothing).
# (f) after a `replace`: no ghost row (no member with no role that is
#     missing), members listed by role with spares last, the replaced
#     member gone; a restart logs no "role -1" and no missing member.  A
#     replace cut short by kill -9 begins again by itself at the restart
#     and ends the same way.
# (g) a faulty member that a restart does not open is listed with its
#     last spec; `remove` by that spec takes it out (it is not "not a
#     member"), and `add` of the same file then rebuilds its role: each
#     file is listed once.
# (h) a member the array let go of (failed and removed, or replaced) is
#     taken by a reshape that adds it (`reshape --add`), as `add` takes it;
#     an active member named there is refused, changing nothing.
# (i) a former member that now holds a foreign signature (the user reused
#     it) is refused by `reshape --add` and `add` without --force.
# (j) bitmap policy: a spare added to the first table slot while writes
#     run, then kill -9 and a torn row: the resync at the restart visits
#     the regions the role members mark, so a check finds no mismatch.
# Throughout: status lists members by role, spares and detached members
# last.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-spares "$@"
requires nbdcopy
requires nbdinfo
requires mkswap

MSIZE=32M

# members CTL: "role:state:basename" of every status row, in order.
members ()
{
  $PYTHON - "$1" <<'EOF'
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"op":"status","id":1}\n')
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
d = json.loads(buf)
print(" ".join("%s:%s:%s" % ("-" if m["role"] is None else m["role"], m["state"],
                             os.path.basename(m["spec"] or "?").split("socket=")[-1])
               for m in d["members"]))
EOF
}

# check_order WHAT CTL: rows with a role come first, by role; no row without
# a role is missing (a ghost).
check_order ()
{
  local what="$1" rows last=-1 seen_norole=no r role state bad=""
  rows="$(members "$2")"
  for r in $rows; do
    IFS=: read -r role state _ <<<"$r"
    if [ "$role" = - ]; then
      seen_norole=yes
      [ "$state" != missing ] || bad="a ghost row (no role, missing): $r"
    else
      [ "$seen_norole" = no ] || bad="role $role listed after a member without a role"
      [ "$role" -gt "$last" ] || bad="role $role listed after role $last"
      last="$role"
    fi
  done
  if [ -z "$bad" ]; then ok; else fail "$what: $bad: $rows"; fi
}

# role_spec CTL ROLE: basename of the member in ROLE (in_sync or not).
role_spec ()
{
  local r role
  for r in $(members "$1"); do
    IFS=: read -r role _ spec <<<"$r"
    if [ "$role" = "$2" ]; then echo "$spec"; return; fi
  done
  echo none
}

# write_random URI FILE SEED: fill the export, keep the image in FILE.
write_random ()
{
  $PYTHON "$testsdir/e2e_basic.py" random "$2" "$(nbd_size "$1")" "$3"
  nbdcopy "$2" "$1"
}

read_back () # WHAT DIR EXPECTED
{
  rm -f "$2/back.img"
  expect_run "$1: read back" nbdcopy "$uri" "$2/back.img"
  expect_run "$1: the data" cmp "$2/back.img" "$3"
}

# until_role WHAT CTL ROLE SPEC SECONDS: poll until SPEC holds ROLE; records
# how long it took in $took_ms.
until_role ()
{
  local what="$1" ctl="$2" role="$3" spec="$4" secs="$5" t0 i
  t0=$(date +%s%N)
  for ((i = 0; i < secs * 20; i++)); do
    [ "$(role_spec "$ctl" "$role")" = "$spec" ] && break
    sleep 0.05
  done
  took_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  expect_eq "$what: $spec holds role $role within $secs s" "$spec" "$(role_spec "$ctl" "$role")"
}

# ---- (a) a file member fails with EIO: the spare at once -------------------------
fuse_pid=
fuse_dir=
fuse_cleanup ()
{
  if [ -n "$fuse_dir" ] && mountpoint -q "$fuse_dir"; then umount "$fuse_dir" 2>/dev/null ||
    umount -l "$fuse_dir" 2>/dev/null || true; fi
  [ -z "$fuse_pid" ] || kill "$fuse_pid" 2>/dev/null || true
}
cleanup_fns+=(fuse_cleanup)

part_a ()
{
  local d="$tmp/a" i
  mkdir -p "$d/mnt"
  if [ ! -e /dev/fuse ] || ! command -v nbdfuse >/dev/null || ! command -v mountpoint >/dev/null; then
    echo "$test_name: note: no FUSE (nbdfuse, /dev/fuse): (a) skipped, (b) covers EIO" >&2
    return 0
  fi
  truncate -s "$MSIZE" "$d/b2" "$d/s0"
  rm -f "$d/trigger"
  start_nbdkit fa-err --filter=error file "$d/b2" error-rate=100% error-file="$d/trigger" ||
    { fail "(a) member server"; return 0; }
  nbdfuse "$d/mnt" "$uri" >"$tmp/nbdfuse.log" 2>&1 &
  fuse_pid=$! fuse_dir="$d/mnt"
  for ((i = 0; i < 100; i++)); do [ -e "$d/mnt/nbd" ] && break; sleep 0.05; done
  if [ ! -e "$d/mnt/nbd" ]; then
    echo "$test_name: note: nbdfuse did not mount: (a) skipped" >&2
    sed 's/^/    /' "$tmp/nbdfuse.log" >&2
    return 0
  fi
  create_array --level=5 --chunk=64K --data-offset=4M --spare="$d/s0" \
    "$d/m0" "$d/m1" "$d/mnt/nbd" --size="$MSIZE" || { fail "(a) create"; return 0; }
  examine "$d/ex.json" "$d/m0" "$d/m1" "$d/mnt/nbd"
  start_raid_ctl a "$d/ctl" "$d/m0" "$d/m1" "$d/mnt/nbd" "$d/s0" ||
    { fail "(a) start"; return 0; }
  expect_eq "(a) the spare is listed last" "0:in_sync:m0 1:in_sync:m1 2:in_sync:nbd -:spare:s0" \
    "$(members "$d/ctl")"
  write_random "$uri" "$d/expected.img" 51 || fail "(a) write"
  touch "$d/trigger"                     # the file member now fails every I/O
  $PYTHON "$testsdir/e2e_basic.py" random "$d/more.img" $((1 << 20)) 52
  dd if="$d/more.img" of="$d/expected.img" conv=notrunc status=none
  expect_run "(a) a write while the member fails" nbdcopy "$d/more.img" "$uri"
  until_role "(a) the spare takes role 2" "$d/ctl" 2 s0 5
  [ "$took_ms" -lt 5000 ] && ok || fail "(a) the spare took $took_ms ms"
  expect_status "(a) the file member is faulty" "$d/ctl" spec:/mnt/nbd faulty
  expect_run "(a) recovery ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_status "(a) optimal" "$d/ctl" health optimal
  expect_status "(a) role 2 in sync" "$d/ctl" member:2 in_sync
  check_order "(a) order after the takeover" "$d/ctl"
  read_back "(a)" "$d" "$d/expected.img"
  expect_run "(a) remove the faulty member" "$NBDRAID" -C "$d/ctl" remove "$d/mnt/nbd"
  expect_eq "(a) members" "0:in_sync:m0 1:in_sync:m1 2:in_sync:s0" "$(members "$d/ctl")"
  stop_nbdkit a
  expect_run "(a) member files hold md's bytes and parity" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "$d/m0" "$d/m1" "$d/s0"
  fuse_cleanup
  fuse_pid= fuse_dir=
  stop_nbdkit fa-err
}

# ---- (b) an NBD member answers EIO: the spare at once ------------------------------
part_b ()
{
  local d="$tmp/b" msock
  mkdir -p "$d"
  truncate -s "$MSIZE" "$d/b2" "$d/s0"
  rm -f "$d/trigger"
  start_nbdkit fb-err --filter=error file "$d/b2" error-rate=100% error-file="$d/trigger" \
    error=EIO || { fail "(b) member server"; return 0; }
  msock="$uri"
  create_array --level=5 --chunk=64K --data-offset=4M --size="$MSIZE" \
    "$d/m0" "$d/m1" "$msock" || { fail "(b) create"; return 0; }
  start_raid_ctl b "$d/ctl" "$d/m0" "$d/m1" "$msock" || { fail "(b) start"; return 0; }
  expect_run "(b) add a spare" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  write_random "$uri" "$d/expected.img" 53 || fail "(b) write"
  touch "$d/trigger"
  expect_run "(b) a read while the member fails" nbdcopy "$uri" "$d/back.img"
  expect_run "(b) a write while the member fails" nbdcopy "$d/expected.img" "$uri"
  until_role "(b) the spare takes role 2" "$d/ctl" 2 s0 5
  expect_status "(b) the NBD member is faulty" "$d/ctl" spec:fb-err.sock faulty
  expect_run "(b) recovery ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_status "(b) optimal" "$d/ctl" health optimal
  read_back "(b)" "$d" "$d/expected.img"
  check_order "(b) order" "$d/ctl"
  stop_nbdkit b
  stop_nbdkit fb-err
}

# ---- (c) raid6: two spares for two failed roles ----------------------------------
part_c ()
{
  local d="$tmp/c" rows
  mkdir -p "$d"
  create_array --level=6 --chunk=64K --data-offset=4M --size="$MSIZE" \
    --spare="$d/s0" --spare="$d/s1" "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/m4" ||
    { fail "(c) create"; return 0; }
  examine "$d/ex.json" "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/m4"
  start_raid_ctl c "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/m4" "$d/s0" "$d/s1" ||
    { fail "(c) start"; return 0; }
  write_random "$uri" "$d/expected.img" 54 || fail "(c) write"
  "$NBDRAID" -C "$d/ctl" set speed-min=0 speed-max=2M >/dev/null
  expect_run "(c) fail role 1" "$NBDRAID" -C "$d/ctl" fail 1
  until_role "(c) a spare takes role 1" "$d/ctl" 1 s0 5
  expect_eq "(c) recovering role 1" recover "$(status_get "$d/ctl" sync_action)"
  expect_run "(c) fail role 3 while role 1 recovers" "$NBDRAID" -C "$d/ctl" fail 3
  expect_status "(c) the second spare waits" "$d/ctl" spec:/s1 spare
  "$NBDRAID" -C "$d/ctl" set speed-min=16M speed-max=0 >/dev/null
  expect_run "(c) both recoveries end" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  # wait returns when idle; the second recovery follows the first at once
  expect_run "(c) and the second" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_status "(c) optimal" "$d/ctl" health optimal
  rows="$(members "$d/ctl")"
  case "$rows" in
    "0:in_sync:m0 1:in_sync:s0 2:in_sync:m2 3:in_sync:s1 4:in_sync:m4 -:faulty:m"[13]" -:faulty:m"[13] |\
    "0:in_sync:m0 1:in_sync:s0 2:in_sync:m2 3:in_sync:s1 4:in_sync:m4"*) ok ;;
    *) fail "(c) both roles rebuilt onto the spares: $rows" ;;
  esac
  check_order "(c) order" "$d/ctl"
  read_back "(c)" "$d" "$d/expected.img"
  stop_nbdkit c
  expect_run "(c) member files hold md's bytes and parity" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "$d/m0" "$d/s0" "$d/m2" "$d/s1" "$d/m4"
}

# ---- (d) a spare added during another action is queued -----------------------------
part_d ()
{
  local d="$tmp/d"
  mkdir -p "$d"
  create_array --level=6 --chunk=64K --data-offset=4M --size="$MSIZE" \
    "$d/m0" "$d/m1" "$d/m2" "$d/m3" || { fail "(d) create"; return 0; }
  truncate -s "$MSIZE" "$d/s0" "$d/s1"
  start_raid_ctl dd "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" || { fail "(d) start"; return 0; }
  write_random "$uri" "$d/expected.img" 55 || fail "(d) write"
  expect_run "(d) fail role 0" "$NBDRAID" -C "$d/ctl" fail 0
  expect_run "(d) fail role 2" "$NBDRAID" -C "$d/ctl" fail 2
  expect_status "(d) degraded" "$d/ctl" health degraded
  "$NBDRAID" -C "$d/ctl" set speed-min=0 speed-max=2M >/dev/null
  expect_run "(d) add a spare: recovery of role 0" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  until_role "(d) the first spare takes role 0" "$d/ctl" 0 s0 5
  expect_eq "(d) recovering" recover "$(status_get "$d/ctl" sync_action)"
  expect_run "(d) add a spare during the recovery" "$NBDRAID" -C "$d/ctl" add "$d/s1"
  expect_status "(d) it is queued as a spare" "$d/ctl" spec:/s1 spare
  expect_eq "(d) role 2 still waits" "m2" "$(role_spec "$d/ctl" 2)"
  check_order "(d) order during the recovery" "$d/ctl"
  "$NBDRAID" -C "$d/ctl" set speed-min=16M speed-max=0 >/dev/null
  expect_run "(d) the first recovery ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(d) the queued one ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_status "(d) optimal" "$d/ctl" health optimal
  expect_eq "(d) the queued spare holds role 2" s1 "$(role_spec "$d/ctl" 2)"
  expect_status "(d) in sync" "$d/ctl" member:2 in_sync
  read_back "(d)" "$d" "$d/expected.img"
  stop_nbdkit dd
}

# (d2) during a reshape of a degraded array
part_d2 ()
{
  local d="$tmp/d2"
  mkdir -p "$d"
  create_array --level=6 --chunk=64K --data-offset=8M --size="$MSIZE" \
    "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/m4" || { fail "(d2) create"; return 0; }
  truncate -s "$MSIZE" "$d/s0"
  start_raid_ctl d2 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/m4" ||
    { fail "(d2) start"; return 0; }
  write_random "$uri" "$d/expected.img" 57 || fail "(d2) write"
  expect_run "(d2) fail role 3" "$NBDRAID" -C "$d/ctl" fail 3
  "$NBDRAID" -C "$d/ctl" set speed-min=0 speed-max=2M >/dev/null
  expect_run "(d2) a reshape (chunk 128K) of the degraded array" \
    "$NBDRAID" -C "$d/ctl" reshape --chunk=128K --start
  expect_eq "(d2) reshaping" reshape "$(status_get "$d/ctl" sync_action)"
  expect_run "(d2) add a spare during the reshape" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  expect_status "(d2) it is queued as a spare" "$d/ctl" spec:/s0 spare
  expect_eq "(d2) still reshaping" reshape "$(status_get "$d/ctl" sync_action)"
  "$NBDRAID" -C "$d/ctl" set speed-min=16M speed-max=0 >/dev/null
  expect_run "(d2) the reshape ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(d2) the recovery ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_eq "(d2) the chunk changed" 131072 "$(status_get "$d/ctl" chunk)"
  expect_eq "(d2) the queued spare holds role 3" s0 "$(role_spec "$d/ctl" 3)"
  expect_status "(d2) optimal" "$d/ctl" health optimal
  check_order "(d2) order" "$d/ctl"
  read_back "(d2)" "$d" "$d/expected.img"
  stop_nbdkit d2
}

# ---- (e) remove a spare, add it back -----------------------------------------------
part_e ()
{
  local d="$tmp/e" ev
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --data-offset=4M --size="$MSIZE" \
    "$d/m0" "$d/m1" "$d/m2" || { fail "(e) create"; return 0; }
  truncate -s "$MSIZE" "$d/s0"
  start_raid_ctl e "$d/ctl" "$d/m0" "$d/m1" "$d/m2" || { fail "(e) start"; return 0; }
  expect_run "(e) add a spare" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  ev="$(status_get "$d/ctl" events)"
  expect_fail "(e) add it twice" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  expect_eq "(e) the refused add changed nothing" "$ev" "$(status_get "$d/ctl" events)"
  expect_run "(e) remove the spare" "$NBDRAID" -C "$d/ctl" remove "$d/s0"
  expect_status "(e) gone" "$d/ctl" spec:/s0 absent
  expect_run "(e) add it back" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  expect_status "(e) a spare again" "$d/ctl" spec:/s0 spare
  expect_run "(e) remove it again" "$NBDRAID" -C "$d/ctl" remove "$d/s0"
  expect_run "(e) and add it again" "$NBDRAID" -C "$d/ctl" add "$d/s0"
  expect_eq "(e) members" "0:in_sync:m0 1:in_sync:m1 2:in_sync:m2 -:spare:s0" "$(members "$d/ctl")"
  # it still does its job
  expect_run "(e) fail role 1" "$NBDRAID" -C "$d/ctl" fail 1
  expect_run "(e) recovery" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_eq "(e) the re-added spare holds role 1" s0 "$(role_spec "$d/ctl" 1)"
  expect_status "(e) optimal" "$d/ctl" health optimal
  stop_nbdkit e
}

# ---- (f) replace: no ghost rows ------------------------------------------------------
part_f ()
{
  local d="$tmp/f"
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --data-offset=4M --size="$MSIZE" \
    --spare="$d/s0" --spare="$d/s1" "$d/m0" "$d/m1" "$d/m2" "$d/m3" ||
    { fail "(f) create"; return 0; }
  start_raid_ctl f1 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/s0" "$d/s1" ||
    { fail "(f) start"; return 0; }
  write_random "$uri" "$d/expected.img" 56 || fail "(f) write"
  expect_run "(f) replace role 2 with s1" "$NBDRAID" -C "$d/ctl" replace 2 --with="$d/s1"
  expect_run "(f) the replace ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_eq "(f) members after the replace" \
    "0:in_sync:m0 1:in_sync:m1 2:in_sync:s1 3:in_sync:m3 -:spare:s0" "$(members "$d/ctl")"
  check_order "(f) order" "$d/ctl"
  expect_run "(f) replace role 0 (any spare)" "$NBDRAID" -C "$d/ctl" replace 0
  expect_run "(f) the second replace ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_eq "(f) members after two replaces" \
    "0:in_sync:s0 1:in_sync:m1 2:in_sync:s1 3:in_sync:m3" "$(members "$d/ctl")"
  expect_fail "(f) the replaced member cannot be removed (it left)" \
    "$NBDRAID" -C "$d/ctl" remove "$d/m2"
  stop_nbdkit f1
  start_raid_ctl f2 "$d/ctl" "$d/s0" "$d/m1" "$d/s1" "$d/m3" || { fail "(f) restart"; return 0; }
  if grep -q -E 'role -1|is missing' "$tmp/f2.log"; then
    fail "(f) the restart logs a missing member:"; grep -E 'role -1|is missing' "$tmp/f2.log" >&2
  else ok; fi
  expect_eq "(f) members after the restart" \
    "0:in_sync:s0 1:in_sync:m1 2:in_sync:s1 3:in_sync:m3" "$(members "$d/ctl")"
  expect_status "(f) optimal" "$d/ctl" health optimal
  read_back "(f)" "$d" "$d/expected.img"
  # A replace cut short by kill -9 begins again at the restart by itself
  # (from the start), and ends with the replaced member gone.
  truncate -s "$(stat -c %s "$d/m1")" "$d/s2"
  expect_run "(f) add s2" "$NBDRAID" -C "$d/ctl" add "$d/s2"
  expect_run "(f) slow the copy" "$NBDRAID" -C "$d/ctl" set speed-max=1M
  expect_run "(f) replace role 1 with s2" "$NBDRAID" -C "$d/ctl" replace 1 --with="$d/s2"
  expect_status "(f) the replace runs" "$d/ctl" sync_action recover
  kill -KILL "${pid_of[f2]}"
  wait "${pid_of[f2]}" 2>/dev/null || true
  pid_of[f2]=
  expect_eq "(f) examine: s2's entry records the replace of role 1" 1 \
    "$("$NBDRAID" examine --json "$d/s0" | $PYTHON -c '
import json, sys
t = json.load(sys.stdin)["members"][0]["members"]
print(next(e["replaces"] for e in t if (e["spec_hint"] or "").endswith("/s2")))')"
  start_raid_ctl f3 "$d/ctl" "$d/s0" "$d/m1" "$d/s1" "$d/m3" "$d/s2" speed-max=1M ||
    { fail "(f) start after kill -9"; return 0; }
  expect_status "(f) after kill -9 the replace runs again" "$d/ctl" sync_action recover
  expect_eq "(f) after kill -9: s2 is the target, m1 keeps role 1" \
    "0:in_sync:s0 1:in_sync:m1 1:rebuilding:s2 2:in_sync:s1 3:in_sync:m3" "$(members "$d/ctl")"
  expect_run "(f) unthrottle" "$NBDRAID" -C "$d/ctl" set speed-max=0
  expect_run "(f) the resumed replace ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_eq "(f) members after the resumed replace" \
    "0:in_sync:s0 1:in_sync:s2 2:in_sync:s1 3:in_sync:m3" "$(members "$d/ctl")"
  read_back "(f) after the resumed replace" "$d" "$d/expected.img"
  stop_nbdkit f3
}

# ---- (g) a faulty member closed at a restart: remove by its listed spec -------------
part_g ()
{
  local d="$tmp/g"
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --data-offset=4M --size="$MSIZE" \
    "$d/m0" "$d/m1" "$d/m2" "$d/m3" || { fail "(g) create"; return 0; }
  start_raid_ctl g1 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" || { fail "(g) start"; return 0; }
  write_random "$uri" "$d/expected.img" 7
  expect_run "(g) fail role 3" "$NBDRAID" -C "$d/ctl" fail 3
  stop_nbdkit g1
  start_raid_ctl g2 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" || { fail "(g) restart"; return 0; }
  expect_eq "(g) members after the restart" \
    "0:in_sync:m0 1:in_sync:m1 2:in_sync:m2 3:faulty:m3" "$(members "$d/ctl")"
  expect_run "(g) remove the faulty member by its listed spec" \
    "$NBDRAID" -C "$d/ctl" remove "$d/m3"
  expect_status "(g) gone" "$d/ctl" spec:/m3 absent
  expect_run "(g) add it again" "$NBDRAID" -C "$d/ctl" add "$d/m3"
  expect_run "(g) its recovery" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_eq "(g) members" "0:in_sync:m0 1:in_sync:m1 2:in_sync:m2 3:in_sync:m3" \
    "$(members "$d/ctl")"
  read_back "(g)" "$d" "$d/expected.img"
  stop_nbdkit g2
}

# ---- (h) a reshape takes members the array let go of ---------------------------------
part_h ()
{
  local d="$tmp/h" ev
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --data-offset=8M --size="$MSIZE" \
    --spare="$d/s0" "$d/m0" "$d/m1" "$d/m2" || { fail "(h) create"; return 0; }
  truncate -s "$MSIZE" "$d/s1"
  start_raid_ctl h "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/s0" || { fail "(h) start"; return 0; }
  write_random "$uri" "$d/expected.img" 81 || fail "(h) write"
  expect_run "(h) fail role 2" "$NBDRAID" -C "$d/ctl" fail 2
  expect_run "(h) recovery onto the spare" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(h) remove the failed member" "$NBDRAID" -C "$d/ctl" remove "$d/m2"
  ev="$(status_get "$d/ctl" events)"
  expect_fail "(h) a reshape cannot add an active member" \
    "$NBDRAID" -C "$d/ctl" reshape --add="$d/s0"
  expect_eq "(h) the refused reshape changed nothing" "$ev" "$(status_get "$d/ctl" events)"
  expect_run "(h) a reshape adds the removed member" \
    "$NBDRAID" -C "$d/ctl" reshape --add="$d/m2" --start --wait
  expect_eq "(h) members after it" "0:in_sync:m0 1:in_sync:m1 2:in_sync:s0 3:in_sync:m2" \
    "$(members "$d/ctl")"
  truncate -s "$(nbd_size "$uri")" "$d/expected.img"      # the grow reads as zeros
  read_back "(h) after the first reshape" "$d" "$d/expected.img"
  expect_run "(h) add a spare" "$NBDRAID" -C "$d/ctl" add "$d/s1"
  expect_run "(h) replace role 0 with it" "$NBDRAID" -C "$d/ctl" replace 0 --with="$d/s1"
  expect_run "(h) the replace ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(h) a reshape adds the replaced member" \
    "$NBDRAID" -C "$d/ctl" reshape --add="$d/m0" --start --wait
  expect_eq "(h) members after the second" \
    "0:in_sync:s1 1:in_sync:m1 2:in_sync:s0 3:in_sync:m2 4:in_sync:m0" "$(members "$d/ctl")"
  expect_status "(h) optimal" "$d/ctl" health optimal
  truncate -s "$(nbd_size "$uri")" "$d/expected.img"
  read_back "(h) after the second reshape" "$d" "$d/expected.img"
  stop_nbdkit h
}

# ---- (i) a former member the user reused is not overwritten without force ------
part_i ()
{
  local d="$tmp/i"
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --data-offset=8M --size="$MSIZE" \
    --spare="$d/s0" "$d/m0" "$d/m1" "$d/m2" || { fail "(i) create"; return 0; }
  start_raid_ctl i "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/s0" || { fail "(i) start"; return 0; }
  expect_run "(i) fail role 2" "$NBDRAID" -C "$d/ctl" fail 2
  expect_run "(i) recovery onto the spare" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(i) remove the failed member" "$NBDRAID" -C "$d/ctl" remove "$d/m2"
  mkswap "$d/m2" >/dev/null 2>&1           # the user reuses it (its ring's tail survives)
  expect_fail "(i) reshape --add refuses the swap signature without force" \
    "$NBDRAID" -C "$d/ctl" reshape --add="$d/m2"
  "$NBDRAID" -C "$d/ctl" abort >/dev/null 2>&1 || true
  expect_fail "(i) add refuses it too" "$NBDRAID" -C "$d/ctl" add "$d/m2"
  wipefs "$d/m2" 2>/dev/null | grep -q swap && ok || fail "(i) the swap signature survived"
  stop_nbdkit i
}

# ---- (j) the bitmap of a spare added while writes run ------------------------------
# With the bitmap policy, a spare added to the first table slot (freed by
# a remove) holds none of the bits set before it came: the resync after a
# kill -9 must still visit the regions the role members mark.  A torn row
# is made by hand while the server is down (bytes of one data block
# changed, its parity not): the resync makes the row consistent again, so
# a check finds no mismatch.  (The start read the bits of the first member
# in use only, the new spare's: no resync, one mismatch.)
part_j ()
{
  local d="$tmp/j" off pid
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --data-offset=4M --size="$MSIZE" --consistency=bitmap \
    --spare="$d/s4" "$d/m0" "$d/m1" "$d/m2" "$d/m3" || { fail "(j) create"; return 0; }
  truncate -s "$(stat -c %s "$d/m0")" "$d/n0"
  start_raid_ctl j1 "$d/ctl" "$d/m0" "$d/m1" "$d/m2" "$d/m3" "$d/s4" ||
    { fail "(j) start"; return 0; }
  expect_run "(j) fail m0" "$NBDRAID" -C "$d/ctl" fail "$d/m0"
  expect_run "(j) its recovery onto s4 ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(j) remove m0: the first slot is free" "$NBDRAID" -C "$d/ctl" remove "$d/m0"
  # Writes to row 0 keep its region's bit set (the cleaner skips a region
  # being written) until the kill.
  $PYTHON - "$uri" <<'EOF2' &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
end = time.time() + 30
while time.time() < end:
    try:
        h.pwrite(b"w" * 65536, 0)
        h.flush()
    except nbd.Error:
        break
EOF2
  pid=$!
  sleep 1
  expect_run "(j) add n0 while the writes run" "$NBDRAID" -C "$d/ctl" add "$d/n0"
  expect_eq "(j) n0 is a spare" "-:spare:n0" "$(members "$d/ctl" | tr ' ' '\n' | grep ':n0$')"
  sleep 1
  kill -KILL "${pid_of[j1]}"
  wait "${pid_of[j1]}" 2>/dev/null || true
  pid_of[j1]=
  wait "$pid" 2>/dev/null || true
  expect_eq "(j) n0 holds the first table slot" n0 "$("$NBDRAID" examine --json "$d/m1" |
    $PYTHON -c 'import json, os, sys
print(os.path.basename(json.load(sys.stdin)["members"][0]["members"][0]["spec_hint"]))')"
  off="$("$NBDRAID" examine --json "$d/m1" | $PYTHON -c '
import json, sys
print(json.load(sys.stdin)["members"][0]["data_offset"])')"
  printf 'TORNTORNTORN' | dd of="$d/m1" bs=1 seek=$((off + 100)) conv=notrunc status=none
  start_raid_ctl j2 "$d/ctl" "$d/m1" "$d/m2" "$d/m3" "$d/s4" "$d/n0" ||
    { fail "(j) restart"; return 0; }
  expect_run "(j) the resync ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_run "(j) check" "$NBDRAID" -C "$d/ctl" check
  expect_run "(j) the check ends" "$NBDRAID" -C "$d/ctl" wait --timeout=120
  expect_status "(j) no mismatch: the resync visited row 0" "$d/ctl" mismatch_count 0
  stop_nbdkit j2
}

part_a
part_b
part_c
part_d
part_d2
part_e
part_f
part_g
part_h
part_i
part_j
finish
