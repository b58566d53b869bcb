#!/usr/bin/env bash
# nbdkit-raid: member images from an attacker.  The rule: bad input never
# crashes the server or corrupts data (nbdkit-raid-plugin(1), Members from
# untrusted sources).
#
# A member may be someone else's NBD export or an image file someone handed
# over, and its records carry a CRC anyone can compute.  For each finding of
# the issue, members carrying such a record (CRC-valid, crafted by
# e2e_attacker.py) are served by the real plugin, and the server either
# refuses with a message naming the member and the field, or serves the
# data that was written; it never dies by a signal or a sanitizer report,
# starts or refuses within START_BOUND seconds, and never writes outside
# the data areas (every member byte outside them is compared before and
# after: ring slots may only gain newer records of the array).
#
#   (a) a log block with role -1                   -> skipped, data served
#   (b) a log block longer than its record's payload
#   (c) a log block aimed at another member's superblock slot
#   (d) intents of the reshape target with 2^60 and 2^24 rows
#   (e) a consistency area of 2^61 bytes on a bitmap array
#   (f) a member smaller than the array's record says -> refused, named
#   (g) `add` of the array's own export, directly, through a proxy,
#       through a proxy that replaces the export description, and as a file
#       through FUSE (nbdfuse, when /dev/fuse is usable): refused at once,
#       nothing written, the array keeps serving
#   (h) a FIFO given to examine and to add: refused at once
#   (i) a well-formed crafted log record is replayed (the rules refuse
#       what is wrong, not what is unusual)

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-attacker "$@"
requires qemu-io
requires nbdinfo

ATT="$testsdir/e2e_attacker.py"
START_BOUND=10                   # seconds to serve or refuse
CONS_SIZE=$(( (4 << 20) - (256 << 10) - (256 << 10) ))   # after the ring, before the missed maps

# new_array NAME LEVEL N [CREATE-OPTIONS...]: fresh members in $tmp/NAME
# (12 MiB, data at 5 MiB), written with a pattern; sets d, members[].
new_array ()
{
  local name="$1" level="$2" n="$3" i; shift 3
  d="$tmp/$name"
  mkdir -p "$d"
  members=()
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done
  create_array --level="$level" --chunk=64K --size=12M --data-offset=5M "$@" \
    "${members[@]}" || return 1
  start_raid "$name-fill" "${members[@]}" || return 1
  qemu_io "$name: write the pattern" -c 'write -P 0x5a 0 1M' -c 'write -P 0x3c 1M 256K' \
    -c flush "$uri"
  stop_nbdkit "$name-fill"
}

# The pattern new_array wrote reads back.
expect_pattern ()
{
  qemu_io "$1: the data written is served" -c 'read -P 0x5a 0 1M' \
    -c 'read -P 0x3c 1M 256K' "$uri"
}

# attack_start NAME MEMBER-ARGS...: start the plugin like start_raid, and
# judge how it ended: $outcome is ready or refused (exit status in $rc);
# a signal, a sanitizer report or more than START_BOUND s is a failure.
attack_start ()
{
  local name="$1" t0 t1 i pid; shift
  local -a san_env
  sock="$tmp/$name.sock"; pidfile="$tmp/$name.pid"; uri="$(uri_of "$sock")"
  rm -f "$sock" "$pidfile"
  sanitizer_prefix
  t0=$(date +%s%N)
  "${san_env[@]}" nbdkit -f -U "$sock" -P "$pidfile" --log=stderr "$PLUGIN" "$@" \
    >"$tmp/$name.log" 2>&1 </dev/null &
  pid=$!
  nbdkit_pids+=("$pid")
  pid_of[$name]=$pid
  outcome=timeout rc=
  for ((i = 0; i < START_BOUND * 20 + 20; i++)); do
    if [ -s "$pidfile" ] && [ -S "$sock" ]; then outcome=ready; break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      set +e; wait "$pid"; rc=$?; set -e
      outcome=refused
      pid_of[$name]=
      break
    fi
    sleep 0.05
  done
  t1=$(date +%s%N)
  if [ $(( (t1 - t0) / 1000000 )) -le $((START_BOUND * 1000)) ]; then ok; else
    fail "$name: $outcome after $(( (t1 - t0) / 1000000 )) ms (bound ${START_BOUND} s)"
  fi
  if [ "$outcome" = refused ] && [ "$rc" -ge 128 ]; then
    fail "$name: nbdkit died by signal $((rc - 128)); log:"
    sed 's/^/    /' "$tmp/$name.log" >&2
  fi
  if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|Segmentation' \
       "$tmp/$name.log"; then
    fail "$name: crash or sanitizer report in its log:"
    head -n 40 "$tmp/$name.log" | sed 's/^/    /' >&2
  fi
}

# expect_log NAME WHAT REGEX
expect_log ()
{
  if grep -q -E "$3" "$tmp/$1.log"; then ok; else
    fail "$1: $2: the log does not match /$3/:"
    tail -n 15 "$tmp/$1.log" | sed 's/^/    /' >&2
  fi
}

# journal_case NAME WHAT JREC-ARGS... : a raid5 journal array marked dirty,
# one crafted log record on m0, served: the record is skipped (logged with
# the reason matching $why), the data is served, nothing outside the data
# areas changes.
journal_case ()
{
  local name="$1" what="$2"; shift 2
  new_array "$name" 5 3 || { fail "($name) create"; return 0; }
  $PYTHON "$ATT" record "${members[@]}" -- flags=dirty
  $PYTHON "$ATT" jrec "${members[0]}" "$@"
  $PYTHON "$ATT" snapshot "$d/snap" "${members[@]}"
  "$NBDRAID" examine "${members[0]}" >"$d/examine.txt" 2>&1 || true
  if grep -q -E "First Invalid : offset [0-9]+: ${why#rejected.\*}" "$d/examine.txt"; then
    ok
  else
    fail "($name) examine does not report the invalid log record:"
    grep -E "Write-hole|Invalid" "$d/examine.txt" | sed 's/^/    /' >&2
  fi
  attack_start "$name" "${members[@]}"
  expect_eq "($name) $what: served" ready "$outcome"
  if [ "$outcome" = ready ]; then
    expect_log "$name" "$what: the record is refused" "$why"
    expect_pattern "($name) $what"
    stop_nbdkit "$name"
  fi
  run_py "($name) outside the data areas" "$ATT" compare "$d/snap" "${members[@]}"
}

# ---- (a) (b) (c) the write-hole log -----------------------------------------
why='rejected.*block 0: role -1 outside 0\.\.2 of layout 0'
journal_case a "negative role" 0 0 block -1 512 0 rel
why='rejected.*block 0: length 60000 beyond the payload \(512 bytes'
journal_case b "block past the payload" $((CONS_SIZE - 1024)) 0 block 1 60000 0 plen 512 rel
why='rejected.*block 0: 4096 bytes at offset 163840 outside the data area of role 1'
journal_case c "block into another member's ring" 0 0 block 1 4096 163840   # slot 40

# ---- (d) intents of the reshape target --------------------------------------
part_d ()
{
  local ctl="$tmp/d.ctl"
  new_array d 5 3 || { fail "(d) create"; return 0; }
  truncate -s 12M "$d/m3"
  start_raid_ctl d-prep "$ctl" "${members[@]}" || { fail "(d) start"; return 0; }
  expect_run "(d) reshape prepared" "$NBDRAID" -C "$ctl" reshape --add="$d/m3"
  stop_nbdkit d-prep
  members+=("$d/m3")
  $PYTHON "$ATT" record "${members[@]}" -- flags=dirty
  $PYTHON "$ATT" jrec "${members[0]}" 0 1 intent 0 $((1 << 60))
  $PYTHON "$ATT" jrec "${members[1]}" 512 1 intent 0 $((1 << 24))
  $PYTHON "$ATT" snapshot "$d/snap" "${members[@]}"
  attack_start d "${members[@]}" reshape-autostart=false
  expect_eq "(d) target intents: served" ready "$outcome"
  if [ "$outcome" = ready ]; then
    expect_log d "2^60 rows refused" "rejected.*intent 0: rows \[0, \+1152921504606846976\) outside the [0-9]+ rows of layout 1"
    expect_log d "2^24 rows refused" "rejected.*intent 0: rows \[0, \+16777216\) outside"
    expect_pattern "(d) target intents"
    stop_nbdkit d
  fi
  run_py "(d) outside the data areas" "$ATT" compare "$d/snap" "${members[@]}"
}
part_d

# ---- (e) a bitmap array whose newest records say cons_size 2^61 -------------
part_e ()
{
  new_array e 5 3 --consistency=bitmap || { fail "(e) create"; return 0; }
  $PYTHON "$ATT" snapshot "$d/snap" "${members[@]}"     # the areas as they are
  $PYTHON "$ATT" record "${members[@]}" -- cons_size=$((1 << 61)) flags=dirty
  "$NBDRAID" examine "${members[0]}" >"$d/examine.txt" 2>&1 || true
  if grep -q -E 'First Rejected.*consistency area at [0-9]+ of 2305843009213693952 bytes' \
       "$d/examine.txt"; then ok; else
    fail "(e) examine does not name the rejected field:"
    sed 's/^/    /' "$d/examine.txt" >&2
  fi
  attack_start e "${members[@]}"
  expect_eq "(e) the crafted records are skipped, the array served" ready "$outcome"
  if [ "$outcome" = ready ]; then
    expect_pattern "(e) cons_size 2^61"
    stop_nbdkit e
  fi
  run_py "(e) outside the data areas" "$ATT" compare "$d/snap" --cons-may-change \
    "${members[@]}"
}
part_e

# ---- (f) a member smaller than the record says -------------------------------
part_f ()
{
  new_array f 5 3 || { fail "(f) create"; return 0; }
  truncate -s 8M "${members[2]}"
  attack_start f "${members[@]}"
  expect_eq "(f) refused" refused "$outcome"
  expect_log f "names the member and the field" \
    "$d/m2: member is smaller than the array's record says: .*data_offset 5242880 of component_size"
}
part_f

# ---- (g) add of the array's own export --------------------------------------
g_unmount () { umount "$tmp/g/fuse" 2>/dev/null || true; }

part_g ()
{
  local ctl="$tmp/g.ctl" self out t0 t1 i
  new_array g 5 3 || { fail "(g) create"; return 0; }
  start_raid_ctl g "$ctl" "${members[@]}" || { fail "(g) start"; return 0; }
  self="$uri"
  start_nbdkit g-proxy nbd socket="$tmp/g.sock" || { fail "(g) proxy"; return 0; }
  local proxy="$uri"
  start_nbdkit g-proxy2 --filter=exportname nbd socket="$tmp/g.sock" \
    exportdesc=fixed:not-telling || { fail "(g) proxy2"; return 0; }
  local proxy2="$uri"
  local -a cases=("$self|is an export of this array itself"
                  "$proxy|is an export of this array itself"
                  "$proxy2|serves this array's own bytes")
  local c spec want
  for c in "${cases[@]}"; do
    spec="${c%%|*}" want="${c#*|}"
    t0=$(date +%s%N)
    set +e; out="$(timeout 60 "$NBDRAID" -C "$ctl" add "$spec" 2>&1)"; rc=$?; set -e
    t1=$(date +%s%N)
    expect_eq "(g) add $spec: refused" 1 "$rc"
    if grep -q -F "$want" <<<"$out"; then ok; else
      fail "(g) add $spec: the refusal does not say '$want': $out"
    fi
    if [ $(( (t1 - t0) / 1000000 )) -lt 5000 ]; then ok; else
      fail "(g) add $spec took $(( (t1 - t0) / 1000000 )) ms"
    fi
  done
  # A file that is the array through FUSE (nbdfuse): no description at
  # all, and the kernel's page cache in between (warmed first).
  if command -v nbdfuse >/dev/null && [ -w /dev/fuse ]; then
    mkdir -p "$d/fuse"
    nbdfuse "$d/fuse/disk" "$self" &
    cleanup_fns+=(g_unmount)
    for ((i = 0; i < 100; i++)); do [ -s "$d/fuse/disk" ] && break; sleep 0.05; done
    cat "$d/fuse/disk" >/dev/null
    set +e; out="$(timeout 60 "$NBDRAID" -C "$ctl" add "$d/fuse/disk" 2>&1)"; rc=$?; set -e
    expect_eq "(g) add of the array through FUSE: refused" 1 "$rc"
    if grep -q -F "serves this array's own bytes" <<<"$out"; then ok; else
      fail "(g) add through FUSE: $out"
    fi
    g_unmount
  fi
  uri="$self"
  expect_pattern "(g) after the refused adds"
  expect_status "(g) no member was added" "$ctl" members "$(status_get "$ctl" members)"
  qemu_io "(g) the array still takes writes" -c 'write -P 0x77 2M 64K' -c flush \
    -c 'read -P 0x77 2M 64K' "$self"
  stop_nbdkit g-proxy2
  stop_nbdkit g-proxy
  stop_nbdkit g
}
part_g

# ---- (h) FIFOs ----------------------------------------------------------------
part_h ()
{
  local ctl="$tmp/h.ctl" out
  new_array h 5 3 || { fail "(h) create"; return 0; }
  mkfifo "$d/fifo"
  set +e; out="$(timeout 10 "$NBDRAID" examine "$d/fifo" 2>&1)"; rc=$?; set -e
  expect_eq "(h) examine of a FIFO returns an error at once" 1 "$rc"
  if grep -q "not a regular file or block device" <<<"$out"; then ok; else
    fail "(h) examine of a FIFO: $out"
  fi
  start_raid_ctl h "$ctl" "${members[@]}" || { fail "(h) start"; return 0; }
  set +e; out="$(timeout 10 "$NBDRAID" -C "$ctl" add "$d/fifo" 2>&1)"; rc=$?; set -e
  expect_eq "(h) add of a FIFO is refused at once" 1 "$rc"
  if grep -q "not a regular file or block device" <<<"$out"; then ok; else
    fail "(h) add of a FIFO: $out"
  fi
  expect_pattern "(h) after the refused add"
  stop_nbdkit h
}
part_h

# ---- (i) a well-formed crafted record is replayed ---------------------------
part_i ()
{
  new_array i 5 3 || { fail "(i) create"; return 0; }
  $PYTHON "$ATT" record "${members[@]}" -- flags=dirty
  $PYTHON "$ATT" jrec "${members[1]}" 0 0 block 0 512 0 rel     # array bytes 0..511
  $PYTHON "$ATT" snapshot "$d/snap" "${members[@]}"
  attack_start i "${members[@]}"
  expect_eq "(i) served" ready "$outcome"
  if [ "$outcome" = ready ]; then
    expect_log i "replayed" "replayed 1 journal records"
    qemu_io "(i) the record's block is in place" -c 'read -P 0x40 0 512' \
      -c 'read -P 0x5a 512 1023K' "$uri"
    stop_nbdkit i
  fi
  run_py "(i) outside the data areas" "$ATT" compare "$d/snap" "${members[@]}"
}
part_i

finish
