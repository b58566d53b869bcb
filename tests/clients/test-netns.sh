#!/usr/bin/env bash
# nbdkit-raid: members on other hosts.
#
# Test hosts are network namespaces made here, each joined to the root
# namespace by its own veth pair in a /24 of 10.213.0.0/16 that this test
# assigns (the root side .1, the host .2); no namespace has a route beyond
# its own /24, and every address a packet is sent to is one assigned here.
# Each host runs `nbdkit -i ADDR -p 10809 memory 128M`.  Hosts 0-4 exist
# from the start; host 5 (the replacement) and host 6 (the new member of
# the grow) are made when they are needed.  A RAID6 of 5 members is created
# from the nbd://ADDR:10809 URIs of hosts 0-4 and served on the host's UNIX
# socket, with a control socket.
#
# (a) Data: the whole export is written with fixed-seed data and read back.
# (b) A member host dies mid-write: host 2's nbdkit gets SIGKILL with 16
#     writes in flight; every write still succeeds, the raid server keeps
#     serving, a full read through a new connection matches, status says
#     degraded with role 2 missing (away: within member-timeout), and
#     `nbdraid examine` of a surviving member (over NBD) records role 2
#     missing while the array is served.
# (c) Rebuild onto a replacement host: host 5 is made (new namespace, veth
#     and address), serves a fresh export, and `nbdraid -C CTL add
#     nbd://HOST5:10809` makes it the spare that the degraded array recovers
#     onto once host 2 is written off (`nbdraid fail`: faulty); after
#     `nbdraid -C CTL wait` status says optimal with host 5's
#     export in role 2, in sync; every byte written before and during the
#     failure reads back; a scrub (`check`) finds no parity mismatch; the
#     member superblocks, examined over NBD after the server stops, agree;
#     a restart on the five members in another order serves the same data.
# (d) Grow onto a new host while a writer runs: host 6 is made, and
#     `nbdraid -C CTL reshape --add=nbd://HOST6:10809 --start` runs while
#     netns_io.py keeps 8 writes in flight at unaligned offsets (it sees
#     the reshape running at several positions between its writes); after
#     `nbdraid -C CTL wait`: raid_devices 6, health optimal, all six in
#     sync, the export larger, every byte as written and the new space
#     zero.
# (e) Latency: fresh members (file plugin) behind nbdkit's delay filter
#     (rdelay=wdelay=DELAY), one request at a time.  A 4 KiB read, and a
#     4 KiB read of a chunk on a dead member (reconstructed from the row: 3
#     member reads), take about one member's latency (< 2 x DELAY), not the
#     sum over members; so does a full-stripe write (5 member writes) with
#     --consistency=resync; with the default journal policy a full-stripe
#     write may take one more round for the log (< 3 x DELAY), never one
#     round per member.  The measured figures are printed.
# (f) Members that come and go: a RAID5 of file-backed member servers on
#     hosts 0-4 (member-timeout=10), member 3's server behind nbdkit's log
#     filter so the test sees every byte written to it.  While a writer
#     runs: (f1) host 3's nbdkit is killed and restarted 2 s later; (f2)
#     host 3 is a black hole for 13 s (a blackhole route to it: every
#     packet is dropped silently, so its requests time out after
#     member-timeout and its reconnects time out, while TCP keeps what it
#     could not deliver and retransmits it until the route is back).  Each
#     time member 3 is missing (not faulty) while away, comes back by
#     itself, and rejoins by a delta resync.  In (f2) the connection the
#     array gave up is gone with its unsent requests before the route is
#     back (ss lists no connection to host 3 holding unsent bytes), and no
#     write of it reaches the member afterwards: a connection that were
#     merely shut down would retransmit its writes then, and they could
#     land, stale, after the resync rewrote the same bytes.  The data bytes
#     written to member 3 after it came back are at most its marked
#     regions, far below its data area; every byte reads back as written,
#     and a scrub finds no parity mismatch.
#
# Proves: NBD URIs are members like files; the array spans machines, keeps
# serving when one of them dies, records the failure on the others, rebuilds
# onto a replacement machine and grows onto a new one while it serves, and
# issues member requests in parallel.

set -euo pipefail
source "$(dirname "$0")/lib.sh"
clients_init test-netns "$@"
requires ip
requires nbdinfo
requires nbdcopy
[ "$(id -u)" -eq 0 ] || skip_loudly "needs root for network namespaces"

NHOSTS=7          # /24s reserved: 0-4 the members, 5 the replacement, 6 the grow
NMEMBERS=5
REPLACEMENT=5
NEWHOST=6
MPORT=10809
DELAY_MS=50
CHUNKB=65536

# ---- the test hosts ---------------------------------------------------------
# One /24 per host: 10.213.$((base + i)).0/24.  The base is chosen so that no
# address or route of this machine is in any of those /24s already.
pick_base ()
{
  local b i used
  used="$(ip -4 -o addr show; ip -4 route show table all)"
  local try
  for ((try = 0, b = ($$ % 40) * 6; try < 40; try++, b = (b + 6) % 240)); do
    for ((i = 0; i < NHOSTS; i++)); do
      if grep -q "10\.213\.$((b + i))\." <<<"$used"; then continue 2; fi
    done
    echo "$b"
    return 0
  done
  return 1
}
base="$(pick_base)" || { fail "no free /24s in 10.213.0.0/16 for the test hosts"; finish; }
tag="$$"
ns_of () { echo "nbdraid-$tag-h$1"; }
addr_of () { echo "10.213.$((base + $1)).2"; }
muri_of () { echo "nbd://$(addr_of "$1"):$MPORT"; }

make_host ()
{
  local i="$1" ns veth
  ns="$(ns_of "$i")"
  veth="nr${tag}h$i"
  ip netns add "$ns"
  at_exit_late ip netns del "$ns"
  ip link add "$veth" type veth peer name "${veth}p"
  at_exit_late ip link del "$veth"
  ip link set "${veth}p" netns "$ns"
  ip -n "$ns" link set "${veth}p" name eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$(addr_of "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip addr add "10.213.$((base + i)).1/24" dev "$veth"
  ip link set "$veth" up
}

# start_member I NAME ARGS...: nbdkit in host I's namespace on ADDR:10809.
start_member ()
{
  local i="$1" name="$2" k pid; shift 2
  rm -f "$tmp/$name.pid"
  ip netns exec "$(ns_of "$i")" \
    nbdkit -f -i "$(addr_of "$i")" -p "$MPORT" -P "$tmp/$name.pid" --log=stderr "$@" \
    >>"$tmp/$name.log" 2>&1 </dev/null &
  pid=$!
  nbdkit_pids+=("$pid")
  pid_of[$name]=$pid
  for ((k = 0; k < 300; k++)); do
    [ -s "$tmp/$name.pid" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$test_name: member $name did not start; log:" >&2
  sed 's/^/    /' "$tmp/$name.log" >&2
  return 1
}

# kill_member NAME: the host dies: SIGKILL, no goodbye to its clients.
kill_member ()
{
  local pid="${pid_of[$1]:-}"
  [ -n "$pid" ] || return 0
  if our_running_child "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  pid_of[$1]=
}

# new_member_host I: make host I and serve a fresh 128M export on it.
new_member_host ()
{
  make_host "$1" || { fail "network namespace for host $1"; return 1; }
  start_member "$1" "mem$1" memory 128M || { fail "member server on host $1"; return 1; }
  expect_eq "host $1 serves 128M" $((128 << 20)) "$(nbdinfo --size "$(muri_of "$1")" 2>&1)"
}

t0="$(now)"
for ((i = 0; i < NMEMBERS; i++)); do
  new_member_host "$i" || finish
done
echo "$test_name: $NMEMBERS hosts at 10.213.$base.2 .. 10.213.$((base + NMEMBERS - 1)).2 up in $(elapsed "$t0") s"

members=()
for ((i = 0; i < NMEMBERS; i++)); do members+=("$(muri_of "$i")"); done

# ---- (a) data over the network -----------------------------------------------
create_array --level=6 "${members[@]}" || { fail "nbdraid create over NBD"; finish; }
ok
ctl="$tmp/raid1.ctl"
start_raid raid1 "${members[@]}" control="$ctl" member-timeout=120 ||
  { fail "serve the array"; finish; }
ok
echo "$test_name: RAID6 of $NMEMBERS NBD members: $(($(nbd_size "$uri") >> 20)) MiB"
t0="$(now)"
run_py "(a) fill" "$clients_dir/netns_io.py" fill "$uri" 9 "$tmp/model.img"
echo "$test_name: (a) fill and read back $(elapsed "$t0") s"

# ---- (b) a member host dies mid-write ------------------------------------------
victim=2
t0="$(now)"
echo "$test_name: (b) host $victim's nbdkit dies mid-write (bash reports the job as Killed)"
run_py "(b) write-kill" "$clients_dir/netns_io.py" write-kill "$uri" 10 "$tmp/model.img" \
  40 "${pid_of[mem$victim]}"
kill_member mem$victim     # reaps it (or kills it if the workload did not)
echo "$test_name: (b) write with a member killed, read back $(elapsed "$t0") s"
expect_run "(b) the raid server still answers" nbdinfo "$uri"
expect_eq "(b) status: health" degraded "$(status_get "$ctl" health)"
expect_eq "(b) status: role $victim" missing "$(status_get "$ctl" "member:$victim")"
examine "$tmp/ex-live.json" "$(muri_of 0)" || fail "(b) examine a survivor while served"
expect_eq "(b) examine survivor 0 while served: role $victim" missing \
  "$(member_state "$tmp/ex-live.json" "$victim")"

# sj FILE EXPR: a Python expression over a saved `nbdraid status --json`
# reply d.
sj () { $PYTHON -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# in_sync_roles FILE: the roles whose members are in sync, in order.
in_sync_roles () { sj "$1" '" ".join(str(r) for r in sorted(m["role"] for m in d["members"] if m["state"] == "in_sync" and m["role"] is not None))'; }
# role_of FILE SPEC: "ROLE STATE" of the member SPEC.
role_of () { sj "$1" '" ".join("%s %s" % (m["role"], m["state"]) for m in d["members"] if m["spec"] == "'"$2"'")'; }

# raidcheck_members WHAT EXAMINE-JSON URI...: copy the member exports (in
# role order) to files and let tests/raidcheck.py, md's placement re-derived
# independently of the plugin, check P and Q of every row.
raidcheck_members ()
{
  local what="$1" ex="$2" i=0 u; shift 2
  local -a files=()
  for u in "$@"; do
    files+=("$tmp/rc$i.img")
    expect_run "$what: copy member $i out" nbdcopy "$u" "$tmp/rc$i.img"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086  # RAIDCHECK is a command line
  expect_run "$what: md parity of every row (raidcheck)" \
    $RAIDCHECK --from-examine "$ex" verify "${files[@]}"
  rm -f "${files[@]}"
}

# ---- (c) rebuild onto a replacement host --------------------------------------
t0="$(now)"
new_member_host "$REPLACEMENT" || finish
repl="$(muri_of "$REPLACEMENT")"
# Host 2 is away, not failed: an operator who knows it is gone writes it
# off at once instead of waiting for member-timeout.
expect_run "(c) nbdraid fail the dead host's member" "$NBDRAID" -C "$ctl" fail "$(muri_of "$victim")"
expect_eq "(c) status: role $victim written off" faulty "$(status_get "$ctl" "member:$victim")"
expect_run "(c) nbdraid add $repl" "$NBDRAID" -C "$ctl" add "$repl"
expect_run "(c) nbdraid wait (recovery)" timeout 300 "$NBDRAID" -C "$ctl" wait
echo "$test_name: (c) rebuild onto host $REPLACEMENT: $(elapsed "$t0") s"
"$NBDRAID" -C "$ctl" status --json >"$tmp/st-c.json"
expect_eq "(c) status: health" optimal "$(sj "$tmp/st-c.json" 'd["health"]')"
expect_eq "(c) status: sync_action" idle "$(sj "$tmp/st-c.json" 'd["sync_action"]')"
expect_eq "(c) status: the replacement" "$victim in_sync" "$(role_of "$tmp/st-c.json" "$repl")"
expect_eq "(c) status: roles in sync" "0 1 2 3 4" "$(in_sync_roles "$tmp/st-c.json")"
run_py "(c) verify after the rebuild" "$clients_dir/netns_io.py" verify "$uri" "$tmp/model.img"
# A scrub reads every row, the rebuilt member's blocks included.
expect_run "(c) nbdraid check" "$NBDRAID" -C "$ctl" check
expect_run "(c) nbdraid wait (check)" timeout 300 "$NBDRAID" -C "$ctl" wait
expect_eq "(c) scrub: mismatch_count" 0 "$(status_get "$ctl" mismatch_count)"
stop_nbdkit raid1
members=("$(muri_of 0)" "$(muri_of 1)" "$repl" "$(muri_of 3)" "$(muri_of 4)")
examine "$tmp/ex.json" "${members[@]}" || fail "(c) examine the members"
for ((i = 0; i < NMEMBERS; i++)); do
  expect_eq "(c) examine: role $i" in_sync "$(member_state "$tmp/ex.json" "$i")"
done
raidcheck_members "(c) after the rebuild" "$tmp/ex.json" "${members[@]}"
ctl="$tmp/raid2.ctl"
start_raid raid2 "${members[4]}" "${members[2]}" "${members[0]}" "${members[3]}" "${members[1]}" \
  control="$ctl" || { fail "(c) restart on the members, the replacement included"; finish; }
ok
run_py "(c) verify after restart" "$clients_dir/netns_io.py" verify "$uri" "$tmp/model.img"

# ---- (d) grow onto a new host while a writer runs --------------------------------
new_member_host "$NEWHOST" || finish
grow="$(muri_of "$NEWHOST")"
t0="$(now)"
rm -f "$tmp/writing"
$PYTHON "$clients_dir/netns_io.py" reshape-write "$uri" 11 "$tmp/model.img" "$ctl" \
  "$tmp/writing" >"$tmp/reshape-write.out" 2>&1 &
writer=$!
bg_pids+=("$writer")
for ((i = 0; i < 600; i++)); do
  [ -e "$tmp/writing" ] || ! kill -0 "$writer" 2>/dev/null && break
  sleep 0.1
done
if [ -e "$tmp/writing" ]; then ok; else fail "(d) the writer did not start"; fi
if "$NBDRAID" -C "$ctl" reshape --add="$grow" --start >"$tmp/reshape.out" 2>&1; then ok; else
  fail "(d) nbdraid reshape --add=$grow --start: $(cat "$tmp/reshape.out")"
  kill_pid_quick "$writer"
fi
expect_run "(d) nbdraid wait (reshape)" timeout 300 "$NBDRAID" -C "$ctl" wait
for ((i = 0; i < 600; i++)); do kill -0 "$writer" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$writer" 2>/dev/null; then
  fail "(d) the writer still runs 60 s after the reshape ended"
  kill_pid_quick "$writer"
fi
rc=0; wait "$writer" || rc=$?
py_checks "(d) write during the reshape" "$tmp/reshape-write.out" "$rc"
echo "$test_name: (d) grow onto host $NEWHOST under writes: $(elapsed "$t0") s"
"$NBDRAID" -C "$ctl" status --json >"$tmp/st-d.json"
expect_eq "(d) status: raid_devices" 6 "$(sj "$tmp/st-d.json" 'd["raid_devices"]')"
expect_eq "(d) status: reshape" None "$(sj "$tmp/st-d.json" 'd["reshape"]')"
expect_eq "(d) status: health" optimal "$(sj "$tmp/st-d.json" 'd["health"]')"
expect_eq "(d) status: roles in sync" "0 1 2 3 4 5" "$(in_sync_roles "$tmp/st-d.json")"
expect_eq "(d) status: the new member" "5 in_sync" "$(role_of "$tmp/st-d.json" "$grow")"
expect_eq "(d) status: size" "$(stat -c %s "$tmp/model.img")" "$(sj "$tmp/st-d.json" 'd["size"]')"
run_py "(d) verify after the grow" "$clients_dir/netns_io.py" verify "$uri" "$tmp/model.img"
stop_nbdkit raid2
members+=("$grow")
examine "$tmp/ex-d.json" "${members[@]}" || fail "(d) examine the six members"
expect_eq "(d) examine: raid_devices" 6 "$(exfield "$tmp/ex-d.json" raid_disks)"
for ((i = 0; i < NMEMBERS + 1; i++)); do
  expect_eq "(d) examine: role $i" in_sync "$(member_state "$tmp/ex-d.json" "$i")"
done
raidcheck_members "(d) after the grow" "$tmp/ex-d.json" "${members[@]}"
for i in "$REPLACEMENT" "$NEWHOST"; do kill_member "mem$i"; done
members=()
for ((i = 0; i < NMEMBERS; i++)); do members+=("$(muri_of "$i")"); done

# ---- (e) latency: members behind the delay filter -------------------------------
# Member servers (file plugin) on hosts 0-4 that answer each request after
# DELAY_MS.
# Two arrays on them in turn: --consistency=resync first (a full-stripe
# write is data and parity only: one round of parallel member writes), then
# the default policy (journal), optimal and with one member host dead.
export NETNS_FIGURES="$tmp/figures"
: >"$NETNS_FIGURES"
# file_members [delayed]: member servers on the files $tmp/hostI.img,
# behind the delay filter when asked.
file_members ()
{
  local i
  local -a f=() p=()
  if [ "${1:-}" = delayed ]; then
    f=(--filter=delay)
    p=(rdelay="${DELAY_MS}ms" wdelay="${DELAY_MS}ms")
  fi
  for ((i = 0; i < NMEMBERS; i++)); do
    kill_member "mem$i"
    kill_member "dmem$i"
    start_member "$i" "dmem$i" "${f[@]}" file "$tmp/host$i.img" "${p[@]}" \
      || { fail "(e) member $i"; return 1; }
  done
}

# latency_array NAME CONSISTENCY WRITE_ROUNDS: a new array on fresh member
# files (created while the members answer at once: nbdraid create is not
# what is timed), then the members behind the delay filter, served, timed
# (full-stripe writes may take WRITE_ROUNDS rounds of parallel member
# writes); leaves $uri served.
latency_array ()
{
  local name="$1" cons="$2" t0 i
  write_rounds="$3"
  for ((i = 0; i < NMEMBERS; i++)); do
    rm -f "$tmp/host$i.img"
    truncate -s 128M "$tmp/host$i.img"
  done
  file_members || return 1
  create_array --level=6 --consistency="$cons" "${members[@]}" \
    || { fail "(e) nbdraid create --consistency=$cons"; return 1; }
  ok
  file_members delayed || return 1
  ok
  t0="$(now)"
  # member-timeout=0: the dead member of the degraded case is faulty at
  # once, so what is timed is degraded service, not a member away (whose
  # map of missed regions costs one more round at the first write to each
  # region).
  start_raid "$name" "${members[@]}" member-timeout=0 || { fail "(e) serve $cons"; return 1; }
  ok
  echo "$test_name: (e) $cons: assembly over members with ${DELAY_MS} ms latency: $(elapsed "$t0") s"
  echo "consistency=$cons, all members:" >>"$NETNS_FIGURES"
  run_py "(e) latency, $cons" "$clients_dir/netns_io.py" latency "$uri" \
    "$CHUNKB" "$NMEMBERS" -1 "$DELAY_MS" 12 "$write_rounds"
}

if latency_array raid3 resync 1; then stop_nbdkit raid3; fi
# The journal (write-hole) policy may log before it writes in place: two
# rounds for a full-stripe write, each round parallel.
if latency_array raid4 journal 2; then
  kill_member "dmem$victim"
  # The first request that needs the dead member marks it faulty; not timed.
  $PYTHON "$clients_dir/netns_io.py" poke "$uri" >/dev/null 2>&1 || true
  echo "consistency=journal, member host $victim dead:" >>"$NETNS_FIGURES"
  run_py "(e) latency, journal, member $victim dead" "$clients_dir/netns_io.py" latency \
    "$uri" "$CHUNKB" "$NMEMBERS" "$victim" "$DELAY_MS" 12 2
  stop_nbdkit raid4
fi
echo "$test_name: (e) measured (one request at a time; member delay ${DELAY_MS} ms):"
sed 's/^/    /' "$NETNS_FIGURES"

# ---- (f) members that come and go -------------------------------------------------
for ((i = 0; i < NMEMBERS; i++)); do kill_member "mem$i"; kill_member "dmem$i"; done
FLAP="$PYTHON $abs_srcdir/tests/e2e_flap.py"
flap=3
FOFF=$((8 << 20))                 # data offset of (f)'s array
nflog=0
# fmember I: host I serves $tmp/host$I.img; member $flap through the log
# filter, a new log ($flog) each time.
fmember ()
{
  if [ "$1" = "$flap" ]; then
    nflog=$((nflog + 1))
    flog="$tmp/flap.$nflog.log"
    start_member "$1" "fmem$1" --filter=log file "$tmp/host$1.img" logfile="$flog"
  else
    start_member "$1" "fmem$1" file "$tmp/host$1.img"
  fi
}
mfield () { $FLAP member "$ctl" "$1" "$2"; }
# wait_member ROLE STATE SECONDS
wait_member ()
{
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    [ "$(mfield "$1" state)" = "$2" ] && { ok; return 0; }
    sleep 0.1
  done
  fail "(f) member $1 did not become $2 in $3 s (it is $(mfield "$1" state))"
}
# delta_check NAME LOG REGIONS BYTES: the data bytes written to member
# $flap in LOG (after it came back) are some, at most its marked regions,
# and far fewer than its data area.
delta_check ()
{
  local n
  n="$($FLAP datawrites "$2" "$FOFF")"
  echo "$test_name: $1: member $flap was sent $n data bytes after it came back ($3 regions of $4 bytes marked)"
  if [ "$n" -gt 0 ] && [ "$n" -le $(($3 * $4)) ] && [ "$n" -le $((((128 << 20) - FOFF) / 4)) ]
  then ok; else fail "$1: member $flap was sent $n data bytes (marked: $3 regions of $4 bytes)"; fi
}

for ((i = 0; i < NMEMBERS; i++)); do
  rm -f "$tmp/host$i.img"; truncate -s 128M "$tmp/host$i.img"
  fmember "$i" || { fail "(f) member $i"; clients_finish; }
done
create_array --level=5 --data-offset="$FOFF" "${members[@]}" || fail "(f) nbdraid create"
ctl="$tmp/raid5.ctl"
start_raid raid5 "${members[@]}" control="$ctl" member-timeout=10 ||
  { fail "(f) serve"; clients_finish; }
fmodel="$tmp/fmodel.img"
truncate -s "$(nbd_size "$uri")" "$fmodel"

# (f1) the member server is killed while a writer runs, and restarted
t0="$(now)"
$FLAP write "$uri" "$fmodel" $((16 << 20)) $((8 << 20)) 21 3 >"$tmp/fw1.out" 2>&1 &
writer=$!
sleep 1
kill_member "fmem$flap"
if wait "$writer"; then ok; else fail "(f1) the writer failed"; sed 's/^/    /' "$tmp/fw1.out"; fi
expect_eq "(f1) member $flap missing, not faulty" missing "$(mfield "$flap" state)"
expect_eq "(f1) degraded meanwhile" degraded "$(status_get "$ctl" health)"
regions="$(mfield "$flap" missed_regions)"; rbytes="$(mfield "$flap" missed_region_bytes)"
[[ "$regions" =~ ^[1-9][0-9]*$ ]] && ok || fail "(f1) missed regions '$regions'"
sleep 1
fmember "$flap" || fail "(f1) restart member $flap"
wait_member "$flap" in_sync 60
echo "$test_name: (f1) outage of host $flap's server and its rejoin: $(elapsed "$t0") s"
delta_check "(f1)" "$flog" "$regions" "$rbytes"
expect_eq "(f1) optimal again" optimal "$(status_get "$ctl" health)"
expect_run "(f1) every byte reads back as written" $FLAP verify "$uri" "$fmodel"

# (f2) host 3 is a black hole for 13 s
t0="$(now)"
$FLAP write "$uri" "$fmodel" $((40 << 20)) $((8 << 20)) 22 3 >"$tmp/fw2.out" 2>&1 &
writer=$!
sleep 1
hole="$(addr_of "$flap")/32"
at_exit ip route del blackhole "$hole"
ip route add blackhole "$hole"
tdown="$(now)"
if wait "$writer"; then ok; else fail "(f2) the writer failed"; sed 's/^/    /' "$tmp/fw2.out"; fi
expect_eq "(f2) member $flap missing, not faulty" missing "$(mfield "$flap" state)"
regions="$(mfield "$flap" missed_regions)"; rbytes="$(mfield "$flap" missed_region_bytes)"
[[ "$regions" =~ ^[1-9][0-9]*$ ]] && ok || fail "(f2) missed regions '$regions'"
while awk -v e="$(elapsed "$tdown")" 'BEGIN { exit !(e < 13) }'; do sleep 0.2; done
nlines="$(wc -l <"$flog")"
# Every connection to host $flap that the array gave up must be gone with
# its unsent requests (reset), not left retransmitting them: those would
# reach the member, stale, once the route is back.
unsent="$(ss -Htna dst "$(addr_of "$flap")" | awk '$1 != "SYN-SENT" && $3 > 0' | wc -l)"
expect_eq "(f2) no connection to host $flap holds unsent requests before the route is back" 0 "$unsent"
ip route del blackhole "$hole"
wait_member "$flap" in_sync 60
echo "$test_name: (f2) 13 s black hole of host $flap and its rejoin: $(elapsed "$t0") s"
tail -n +"$((nlines + 1))" "$flog" >"$tmp/flap-after.log"
delta_check "(f2)" "$tmp/flap-after.log" "$regions" "$rbytes"
expect_run "(f2) every byte reads back as written" $FLAP verify "$uri" "$fmodel"
expect_run "(f) scrub" "$NBDRAID" -C "$ctl" check
expect_run "(f) scrub ends" timeout 300 "$NBDRAID" -C "$ctl" wait
expect_eq "(f) scrub: mismatch_count" 0 "$(status_get "$ctl" mismatch_count)"
expect_eq "(f2) no write of a connection cut in the black hole reaches member $flap after it" \
  0 "$($FLAP stalewrites "$flog" "$nlines")"
stop_nbdkit raid5

for ((i = 0; i < NHOSTS; i++)); do kill_member "mem$i"; kill_member "dmem$i"; kill_member "fmem$i"; done
clients_finish
