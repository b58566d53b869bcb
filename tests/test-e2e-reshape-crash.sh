#!/usr/bin/env bash
# nbdkit-raid: crashes and member failures during a live reshape.
#
# Every case grows a RAID5 of four ~64M members by a fifth, slowed to 4 MiB/s
# so that there is a middle, with the array filled from a random file kept
# as the model.
#   (1) kill -9 mid-reshape, restart (autostart): the reshape is running
#       again from its checkpoint (not from 0), completes, every byte
#       verifies, the new capacity reads as zeroes, raidcheck passes.
#   (2) the same restarting with reshape-autostart=false: frozen at the
#       checkpoint and staying there, reads and writes work, start
#       completes it, everything verifies.
#   (3) three kills at seeded moments of one reshape, then the same.
#   (4) members served by nbdkit's error filter: one member fails mid-
#       reshape; the reshape goes on degraded and completes; data verifies.
#   (5) two members fail mid-reshape: health failed, the control socket
#       answers quickly, NBD reads fail with EIO, the server does not spin.

# shellcheck disable=SC2154  # tmp, uri, testsdir, ... come from functions.sh
set -euo pipefail
# shellcheck source=functions.sh
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-reshape-crash "$@"
requires nbdcopy
requires nbdinfo

H="$testsdir/e2e_reshape_crash.py"
hq () { $PYTHON "$H" "$@"; }
SLOW=4194304
WIN=$((16 << 20))     # one reshape step (reshape.c WIN_MAX): the loss a kill may cause
RANDOM=8              # seeded kill moments

# raid_up NAME MEMBER-ARGS...: serve the array at $ctl with the slow throttle.
raid_up () { local n="$1"; shift; start_raid "$n" "$@" control="$ctl" speed-min=0 speed-max=$SLOW; }

# kill9 NAME: SIGKILL the server and reap it.
kill9 ()
{
  local pid="${pid_of[$1]}"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pid_of[$1]=
}

# prepare DIR NAME MEMBER...(four, then the fifth): create, serve, fill from
# a random file, start the slowed grow.  Sets ctl, oldsize, src.
prepare ()
{
  local d="$1" name="$2"; shift 2
  local -a m=("$@")
  ctl="$d/ctl"
  create_array --level=5 "${m[@]:0:4}" || return 1
  raid_up "$name" "${m[@]:0:4}" || return 1
  oldsize=$(nbd_size "$uri")
  src="$d/src"
  head -c "$oldsize" /dev/urandom >"$src"
  expect_run "$name: fill" nbdcopy "$src" "$uri"
  expect_run "$name: prepare the grow" hq q "$ctl" \
    "{\"op\":\"reshape\",\"add\":[\"${m[4]}\"]}" 'r["reshape"]["position"]'
  expect_run "$name: start" hq q "$ctl" '{"op":"start"}' 'r["ok"]'
}

# finish_reshape NAME: unthrottle, wait until idle, check the geometry.
finish_reshape ()
{
  local name="$1" st
  hq q "$ctl" '{"op":"set","speed_max":0}' 'r["ok"]' >/dev/null
  st="$(hq idle "$ctl" 60)"
  expect_eq "$name: reshape finished" idle "${st%% *}"
  expect_eq "$name: five members" 5 "$(status_get "$ctl" raid_devices)"
}

# verify NAME: every old byte equals the model, the new capacity is zeroes.
verify ()
{
  local name="$1" d="$2" newsize
  newsize=$(nbd_size "$uri")
  if [ "$newsize" -gt "$oldsize" ]; then ok; else
    fail "$name: size $newsize after growing from $oldsize"; fi
  rm -f "$d/out"
  expect_run "$name: read back" nbdcopy "$uri" "$d/out"
  expect_run "$name: old range verifies" cmp -n "$oldsize" "$src" "$d/out"
  expect_run "$name: new capacity is zero" \
    cmp -n $((newsize - oldsize)) -i "$oldsize:0" "$d/out" /dev/zero
  rm -f "$d/out"
}

# raidcheck_files NAME MEMBER...: md parity of the new layout, members in role order.
raidcheck_files ()
{
  local name="$1" d="$2"; shift 2
  local -a roles
  examine "$d/ex.json" "$@" || true
  mapfile -t roles < <($PYTHON - "$d/ex.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
m = [x for x in doc["members"] if x.get("superblock") == "valid" and x.get("role") is not None and x["role"] >= 0]
n = m[0]["raid_devices"]
by = {x["role"]: x["spec"] for x in m if x["role"] < n}
print("\n".join(by[r] for r in range(n)))
PY
  )
  # shellcheck disable=SC2086  # RAIDCHECK is a command line
  expect_run "$name: md parity of the new layout (raidcheck)" \
    $RAIDCHECK --from-examine "$d/ex.json" verify "${roles[@]}"
}

# after_restart NAME LASTPOS STATE: the reshape is STATE at a position no
# more than one step behind LASTPOS.  Sets pos.
after_restart ()
{
  local name="$1" last="$2" state="$3" got
  got="$(hq q "$ctl" '{"op":"status"}' \
    '"%s %s %s" % (r["sync_action"], (r["reshape"] or {}).get("state"), (r["reshape"] or {}).get("position", -1))')"
  read -r action rstate pos <<<"$got"
  echo "  $name: position $last before the kill, $rstate at $pos after the restart"
  expect_eq "$name: reshape state after restart" "$state" "$rstate"
  if [ "$state" = frozen ]; then
    expect_eq "$name: sync_action after restart" frozen "$action"
  else
    expect_eq "$name: sync_action after restart" reshape "$action"
  fi
  if [ "$pos" -ge $((last - WIN)) ] && { [ "$last" -eq 0 ] || [ "$pos" -gt 0 ]; }; then ok; else
    fail "$name: position $pos after restart, $last before the kill (restarted from 0?)"
  fi
}

files_case ()
{
  local name="$1" d="$tmp/$1" i last p
  mkdir "$d"
  local -a m=()
  for i in 0 1 2 3 4; do m+=("$d/m$i"); truncate -s 64M "$d/m$i"; done
  prepare "$d" "$name" "${m[@]}" || { fail "$name: setup"; return 0; }
  case "$name" in
    kill|frozen)
      read -r last _ < <(hq waitpos "$ctl" 0 30) || { fail "$name: no progress"; return 0; }
      kill9 "$name"
      if [ "$name" = kill ]; then
        raid_up "$name" "${m[@]}" || { fail "$name: restart"; return 0; }
        after_restart "$name" "$last" running
      else
        raid_up "$name" "${m[@]}" reshape-autostart=false || { fail "$name: restart"; return 0; }
        after_restart "$name" "$last" frozen
        p=$pos
        sleep 0.5
        expect_eq "$name: position stays while frozen" "$p" \
          "$(hq q "$ctl" '{"op":"status"}' 'r["reshape"]["position"]')"
        expect_run "$name: writes and reads while frozen" hq writes "$uri" "$src" 5 64
        rm -f "$d/out"
        expect_run "$name: read while frozen" nbdcopy "$uri" "$d/out"
        expect_run "$name: frozen data verifies" cmp "$src" "$d/out"
        # Held by reshape-autostart=false, the reshape is recorded frozen:
        # a later start with the default keeps it frozen, at its position.
        stop_nbdkit "$name"
        raid_up "$name" "${m[@]}" || { fail "$name: start with autostart"; return 0; }
        after_restart "$name, a later start with autostart" "$p" frozen
        expect_eq "$name: position kept across a clean restart" "$p" \
          "$(hq q "$ctl" '{"op":"status"}' 'r["reshape"]["position"]')"
        expect_run "$name: start again" hq q "$ctl" '{"op":"start"}' 'r["ok"]'
      fi
      ;;
    multikill)
      last=0
      for i in 1 2 3; do
        i2=$((RANDOM % 15 + 5)); sleep "$((i2 / 10)).$((i2 % 10))"
        last="$(hq q "$ctl" '{"op":"status"}' '(r["reshape"] or {}).get("position", 0)')"
        kill9 "$name"
        raid_up "$name" "${m[@]}" || { fail "$name: restart $i"; return 0; }
        after_restart "$name kill $i" "$last" running
      done
      ;;
  esac
  finish_reshape "$name"
  verify "$name" "$d"
  stop_nbdkit "$name"
  raidcheck_files "$name" "$d" "${m[@]}"
  rm -f "$d"/m* "$d/src"
}

# NBD members behind the error filter: errors while $d/trigI exists.
nbd_case ()
{
  local name="$1" nfail="$2" d="$tmp/$1" i
  mkdir "$d"
  local -a m=()
  for i in 0 1 2 3 4; do
    truncate -s 64M "$d/f$i"
    start_nbdkit "$name-m$i" --filter=error file "$d/f$i" \
      error=EIO error-rate=100% error-file="$d/trig$i" || { fail "$name: member $i"; return 0; }
    m+=("$uri")
  done
  prepare "$d" "$name" "${m[@]}" || { fail "$name: setup"; return 0; }
  local raidpid="${pid_of[$name]}" raiduri="$uri"
  hq waitpos "$ctl" 0 30 >/dev/null || { fail "$name: no progress"; return 0; }
  touch "$d/trig1"
  if [ "$nfail" -eq 1 ]; then
    finish_reshape "$name"
    expect_eq "$name: health" degraded "$(status_get "$ctl" health)"
    expect_eq "$name: the failed member" faulty "$(status_get "$ctl" member:1)"
    uri="$raiduri"
    verify "$name" "$d"
    stop_nbdkit "$name"
    return 0
  fi
  touch "$d/trig2"
  local t0 t1 h=""
  for ((i = 0; i < 100; i++)); do
    t0=$(date +%s%N)
    h="$(status_get "$ctl" health)"
    t1=$(date +%s%N)
    if [ $((t1 - t0)) -gt 1000000000 ]; then
      fail "$name: status took $(((t1 - t0) / 1000000)) ms"; break
    fi
    [ "$h" = failed ] && break
    # I/O notices the failures; the reshape does too
    $PYTHON "$H" readerr "$raiduri" >/dev/null 2>&1 || true
    sleep 0.1
  done
  expect_eq "$name: health after two members failed" failed "$h"
  echo "  $name: health $h after $i polls"
  expect_eq "$name: NBD read fails" EIO "$(timeout 20 $PYTHON "$H" readerr "$raiduri" 2>&1)"
  sleep 0.5
  local hz c0 c1
  hz=$(getconf CLK_TCK)
  c0=$(cpu_ticks "$raidpid")
  sleep 2
  c1=$(cpu_ticks "$raidpid")
  if [ $((c1 - c0)) -lt $((hz / 5)) ]; then ok; else
    fail "$name: the failed server used $((c1 - c0)) ticks (of $hz/s) in 2 s: spinning"
  fi
  t0=$(date +%s%N)
  h="$(status_get "$ctl" sync_action)"
  t1=$(date +%s%N)
  if [ $((t1 - t0)) -le 1000000000 ] && [ "${h#ERROR}" = "$h" ]; then ok; else
    fail "$name: status after failure: '$h' in $(((t1 - t0) / 1000000)) ms"; fi
  stop_nbdkit "$name"
}

files_case kill
files_case frozen
files_case multikill
nbd_case degraded 1
nbd_case failed 2
finish
