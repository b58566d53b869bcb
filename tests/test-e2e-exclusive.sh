#!/usr/bin/env bash
# nbdkit-raid: a member in use belongs to one server.
#
# (a) file members: a second server on the members of a running one is
#     refused at start, naming the member; `nbdraid create --force` on them
#     is refused too (--force does not override "in use") and writes
#     nothing.
# (b) NBD members (they cannot be locked): the superblock records the
#     serving host and process; a second server on the same exports is
#     refused, naming the pid; after the first is killed (-9) the record is
#     stale and a new server starts.
# (c) a record naming another host (a server started under another host
#     name, then killed) is refused unless force=true, which then starts.
# (d) a read-only server (nbdkit -r) holds its file members shared: a
#     read-write server and `create --force` are refused, a second
#     read-only server starts.
# (e) `create --force` over the NBD exports of a running server, or over
#     the file behind one of them, is refused naming the server (the owner
#     record) and writes nothing.
# (f) a server killed (-9) but not yet reaped (a zombie, its parent has
#     not waited) holds nothing: a new server on its NBD exports starts.
# (g) mistakes on the server's command line: a member named twice (the
#     same path, a hard link) says so; a bad parameter value is named.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-exclusive "$@"
requires nbdinfo
requires unshare

# started NAME: the server NAME answered nbdinfo (it is serving).
served () { nbdinfo --size "$uri" >/dev/null 2>&1; }

# refused WHAT NAME PATTERN ARGS...: a server NAME with ARGS does not start
# and its log matches PATTERN.
refused ()
{
  local what="$1" name="$2" pattern="$3"; shift 3
  if start_raid "$name" "$@" 2>/dev/null; then
    fail "$what: a second server started"
    stop_nbdkit "$name"
    return 0
  fi
  if grep -q -E "$pattern" "$tmp/$name.log"; then ok; else
    fail "$what: no message matching '$pattern':"; sed 's/^/    /' "$tmp/$name.log" >&2; fi
}

# ---- (a) files ----------------------------------------------------------------
part_a ()
{
  local d="$tmp/a" sum pid
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(a) create"; return 0; }
  start_raid a1 "$d/m0" "$d/m1" "$d/m2" || { fail "(a) start"; return 0; }
  served && ok || fail "(a) the first server serves"
  pid="$(cat "$tmp/a1.pid")"
  refused "(a) second server on the same files" a2 \
    "m[0-2]: in use .*held by pid $pid on host $(hostname)" "$d/m0" "$d/m1" "$d/m2"
  sum="$(cat "$d/m0" "$d/m1" "$d/m2" | md5sum)"
  if "$NBDRAID" create --force --level=5 "$d/m0" "$d/m1" "$d/m2" 2>"$tmp/a-create.err"; then
    fail "(a) create --force over members in use succeeded"
  elif grep -q "in use .*held by pid $pid" "$tmp/a-create.err"; then ok; else
    fail "(a) create --force refusal does not name the holder:"; sed 's/^/    /' "$tmp/a-create.err" >&2; fi
  expect_eq "(a) the refused create wrote nothing" "$sum" "$(cat "$d/m0" "$d/m1" "$d/m2" | md5sum)"
  stop_nbdkit a1
  start_raid a3 "$d/m0" "$d/m1" "$d/m2" || fail "(a) start after the first server stopped"
  stop_nbdkit a3
}

# ---- (b) NBD members ----------------------------------------------------------
nbd_members () # DIR -> urls[]
{
  local d="$1" i
  urls=()
  for i in 0 1 2; do
    start_nbdkit "${d##*/}x$i" file "$d/m$i" || return 1
    urls+=("$(uri_of "$tmp/${d##*/}x$i.sock")")
  done
}

part_b ()
{
  local d="$tmp/b" pid
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(b) create"; return 0; }
  nbd_members "$d" || { fail "(b) member servers"; return 0; }
  start_raid b1 "${urls[@]}" || { fail "(b) start"; return 0; }
  served && ok || fail "(b) the first server serves"
  pid="$(cat "$tmp/b1.pid")"
  refused "(b) second server on the same exports" b2 "in use by another server.*pid $pid" \
    "${urls[@]}"
  # (e) create --force over the exports, and over the file behind one
  local sum
  sum="$(cat "$d/m0" "$d/m1" "$d/m2" | md5sum)"
  if "$NBDRAID" create --force --level=5 "${urls[@]}" 2>"$tmp/e-create.err"; then
    fail "(e) create --force over the exports of a running server succeeded"
  elif grep -q "in use by another server.*pid $pid" "$tmp/e-create.err"; then ok; else
    fail "(e) create --force refusal does not name the server:"; sed 's/^/    /' "$tmp/e-create.err" >&2; fi
  if "$NBDRAID" create --force --level=5 "$d/m0" "$tmp/e-x1" "$tmp/e-x2" --size=24M \
       2>"$tmp/e-create2.err"; then
    fail "(e) create --force over the file behind an export of a running server succeeded"
  elif grep -q "m0 is in use by another server.*pid $pid" "$tmp/e-create2.err"; then ok; else
    fail "(e) create --force on the file: no holder named:"; sed 's/^/    /' "$tmp/e-create2.err" >&2; fi
  expect_eq "(e) the refused creates wrote nothing" "$sum" "$(cat "$d/m0" "$d/m1" "$d/m2" | md5sum)"
  [ ! -e "$tmp/e-x1" ] && ok || fail "(e) the refused create made a new member file"
  kill -9 "$pid"
  wait "${pid_of[b1]}" 2>/dev/null || true
  start_raid b3 "${urls[@]}" || { fail "(b) start after kill -9 (a stale record)"; return 0; }
  served && ok || fail "(b) serves after the stale record"
  stop_nbdkit b3
}

# ---- (c) another host ----------------------------------------------------------
part_c ()
{
  local d="$tmp/c" csock="$tmp/c1.sock" pid i
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(c) create"; return 0; }
  nbd_members "$d" || { fail "(c) member servers"; return 0; }
  rm -f "$csock" "$tmp/c1.pid"
  local -a san_env
  sanitizer_prefix
  unshare -u sh -c 'hostname elsewhere.example && exec "$@"' sh \
    "${san_env[@]}" nbdkit -f -U "$csock" -P "$tmp/c1.pid" --log=stderr "$PLUGIN" "${urls[@]}" \
    >"$tmp/c1.log" 2>&1 </dev/null &
  pid=$!
  for ((i = 0; i < 600; i++)); do [ -s "$tmp/c1.pid" ] && break; sleep 0.05; done
  [ -s "$tmp/c1.pid" ] || { fail "(c) server under another host name"; sed 's/^/    /' "$tmp/c1.log" >&2; return 0; }
  # Serving means its owner record is on the members (the pidfile may come
  # first): only then does the kill leave the record this part is about.
  for ((i = 0; i < 200; i++)); do
    nbdinfo --size "$(uri_of "$csock")" >/dev/null 2>&1 && break
    sleep 0.05
  done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  refused "(c) a record of another host" c2 "open on host elsewhere.example.*force=true" \
    "${urls[@]}"
  start_raid c3 "${urls[@]}" force=true || { fail "(c) force=true starts"; return 0; }
  served && ok || fail "(c) serves with force=true"
  stop_nbdkit c3
}

# ---- (d) read-only servers ---------------------------------------------------
part_d ()
{
  local d="$tmp/d" sum
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(d) create"; return 0; }
  start_nbdkit d1 -r "$PLUGIN" "$d/m0" "$d/m1" "$d/m2" || { fail "(d) read-only start"; return 0; }
  served && ok || fail "(d) the read-only server serves"
  sum="$(cat "$d/m0" "$d/m1" "$d/m2" | md5sum)"
  refused "(d) read-write server beside a read-only one" d2 "m[0-2]: in use" \
    "$d/m0" "$d/m1" "$d/m2"
  if "$NBDRAID" create --force --level=5 "$d/m0" "$d/m1" "$d/m2" 2>"$tmp/d-create.err"; then
    fail "(d) create --force over the members of a read-only server succeeded"
  elif grep -q "m[0-2]: in use" "$tmp/d-create.err"; then ok; else
    fail "(d) create --force refusal:"; sed 's/^/    /' "$tmp/d-create.err" >&2; fi
  expect_eq "(d) nothing written to the members" "$sum" "$(cat "$d/m0" "$d/m1" "$d/m2" | md5sum)"
  start_nbdkit d3 -r "$PLUGIN" "$d/m0" "$d/m1" "$d/m2" || fail "(d) a second read-only server"
  stop_nbdkit d3
  stop_nbdkit d1
  start_raid d4 "$d/m0" "$d/m1" "$d/m2" || fail "(d) read-write after the read-only servers stopped"
  stop_nbdkit d4
}

# ---- (f) a killed server not yet reaped ----------------------------------------
part_f ()
{
  local d="$tmp/f" fsock="$tmp/f1.sock" parent pid i
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(f) create"; return 0; }
  nbd_members "$d" || { fail "(f) member servers"; return 0; }
  rm -f "$fsock" "$tmp/f1.pid"
  local -a san_env
  sanitizer_prefix
  # The server's parent execs into a sleep, which never waits for it.
  sh -c '"$@" >"$0" 2>&1 </dev/null & exec sleep 120' "$tmp/f1.log" \
    "${san_env[@]}" nbdkit -f -U "$fsock" -P "$tmp/f1.pid" --log=stderr "$PLUGIN" "${urls[@]}" &
  parent=$!
  nbdkit_pids+=("$parent")
  for ((i = 0; i < 200; i++)); do
    [ -s "$tmp/f1.pid" ] && nbdinfo --size "$(uri_of "$fsock")" >/dev/null 2>&1 && break
    sleep 0.05
  done
  pid="$(cat "$tmp/f1.pid" 2>/dev/null)"
  [ -n "$pid" ] || { fail "(f) server under a parent that does not reap"; return 0; }
  kill -9 "$pid"
  for ((i = 0; i < 200; i++)); do
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    sleep 0.05
  done
  expect_eq "(f) the killed server is a zombie" Z "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)"
  start_raid f2 "${urls[@]}" || fail "(f) a new server beside the zombie of the old one"
  stop_nbdkit f2
  kill "$parent" 2>/dev/null; wait "$parent" 2>/dev/null || true
}

# ---- (g) the server's command line ---------------------------------------------
part_g ()
{
  local d="$tmp/g"
  mkdir -p "$d"
  create_array --level=5 --chunk=64K --size=24M "$d/m0" "$d/m1" "$d/m2" ||
    { fail "(g) create"; return 0; }
  ln "$d/m2" "$d/hard-m2"
  refused "(g) a member named twice" g1 "member $d/m1 is named twice\$" \
    "$d/m0" "$d/m1" "$d/m1" "$d/m2"
  refused "(g) a member named twice through a hard link" g2 \
    "member $d/hard-m2 is named twice \(as $d/m2 and $d/hard-m2\)" \
    "$d/m0" "$d/m1" "$d/m2" "$d/hard-m2"
  refused "(g) speed-min=abc" g3 "speed-min=abc: not a valid value for speed-min" \
    "$d/m0" "$d/m1" "$d/m2" speed-min=abc
  refused "(g) member-timeout=soon" g4 "member-timeout=soon: not a valid value" \
    "$d/m0" "$d/m1" "$d/m2" member-timeout=soon
  refused "(g) control=" g5 "control: an empty path" "$d/m0" "$d/m1" "$d/m2" control=
  start_raid g6 "$d/m0" "$d/m1" "$d/m2" || fail "(g) the members, named once each, serve"
  stop_nbdkit g6
}

part_a
part_b
part_c
part_d
part_f
part_g
finish
