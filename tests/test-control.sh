#!/usr/bin/env bash
# nbdkit-raid: the control socket and the online nbdraid subcommands, against
# a real nbdkit serving a raid5 with control=SOCKET (nbdkit-raid-control(7),
# nbdraid(8)).
#
# (a) start-up: a stale socket file is replaced; the socket is mode 0600;
#     a second server on the same control path is refused and leaves the
#     first one's socket working; a path that is not a socket is refused
#     and left alone; the socket file is gone after SIGTERM.
# (b) protocol (e2e_control.py protocol): every malformed line, wrong type,
#     impossible value, unknown op and field is refused with the right code
#     and id and changes nothing (status and event count identical); the
#     64 KiB limit exactly; a 1 MiB line closes only its connection; the
#     client cap; a peer of another uid gets EACCES and is disconnected.
# (c) the op happy paths (e2e_control.py ops), 20 concurrent clients doing
#     status while another waits, status latency while NBD I/O runs,
#     speed_max holding (idle and under client writes), and clients that
#     hang up in the middle of a wait.
# (d) nbdraid: text and --json output, exit codes 0/1/2 (and wait's 3 and
#     4), messages, relative member paths, --watch, wait --timeout, the
#     progress bar on a terminal (test-nbdraid.sh has the rest of nbdraid
#     for scripts).
# (e) SIGTERM while a client is in an unbounded wait: the server stops
#     promptly and removes its socket.
# (f) a restart on the same control path; reshape through the socket
#     (e2e_control.py reshape: the plan, refusals while prepared, abort,
#     start, wait) and through nbdraid reshape --start --wait.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-control "$@"
requires nbdinfo

CTLPY="$testsdir/e2e_control.py"
d="$tmp/a"
mkdir -p "$d"
members=("$d/m0" "$d/m1" "$d/m2" "$d/m3")
create_array --level=5 --chunk=64K --size=128M "${members[@]}"
for s in spare1 spare2 spare3 spare4 spare5; do truncate -s 128M "$d/$s"; done
truncate -s 1M "$d/small"
ctl="$d/ctl"

# python3 -c helpers
py () { $PYTHON -c "$@"; }
jfield () # FILE KEY: a top-level field of a JSON document
{
  py 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

# ---- (a) start-up ----------------------------------------------------------
# A stale socket: bound, then its owner went away without unlinking.
py 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$ctl"
if [ -S "$ctl" ]; then ok; else fail "(a) could not make a stale socket"; fi
if ! start_raid main "${members[@]}" control="$ctl"; then
  fail "(a) the server did not start over a stale socket file"
  finish
fi
ok
main_uri="$uri"
expect_eq "(a) socket mode" 600 "$(stat -c %a "$ctl")"
expect_eq "(a) status over the replaced socket" optimal "$(status_get "$ctl" health)"

# A second server with the same control path (on other members) is refused.
mkdir -p "$tmp/b"
create_array --level=5 --size=24M --data-offset=4M "$tmp/b/m0" "$tmp/b/m1" "$tmp/b/m2"
if start_raid second "$tmp/b/m0" "$tmp/b/m1" "$tmp/b/m2" control="$ctl" 2>/dev/null; then
  fail "(a) a second server started on a control socket in use"
  stop_nbdkit second
else
  ok
  if grep -q "another server is listening" "$tmp/second.log"; then ok; else
    fail "(a) refusal without the reason:"; sed 's/^/    /' "$tmp/second.log" >&2; fi
fi
expect_eq "(a) first server's socket still works" optimal "$(status_get "$ctl" health)"
if [ -S "$ctl" ]; then ok; else fail "(a) the refused server removed the socket file"; fi

# A path that is not a socket is refused and left as it was.
echo precious >"$tmp/b/notasock"
if start_raid third "$tmp/b/m0" "$tmp/b/m1" "$tmp/b/m2" control="$tmp/b/notasock" 2>/dev/null; then
  fail "(a) a server started with a regular file as its control path"
  stop_nbdkit third
else
  ok
  expect_eq "(a) regular file left alone" precious "$(cat "$tmp/b/notasock")"
fi

# ---- (b) protocol ----------------------------------------------------------
run_py "protocol" "$CTLPY" protocol "$ctl" "$d/small"

# Peer check: let everyone reach the socket, then connect as nobody.
if [ "$(id -u)" -eq 0 ]; then
  chmod 0711 "$tmp" "$d"
  chmod 0666 "$ctl"
  run_py "peer" "$CTLPY" peer "$ctl"
  chmod 0600 "$ctl"
  chmod 0700 "$tmp" "$d"
else
  echo "$test_name: note: not root: the other-uid peer check is not exercised" >&2
fi

# ---- (c) ops, concurrency, latency -----------------------------------------
run_py "ops" "$CTLPY" ops "$ctl" "$d"
run_py "concurrency" "$CTLPY" concurrency "$ctl"
run_py "latency" "$CTLPY" latency "$ctl" "$main_uri"
run_py "throttle" "$CTLPY" throttle "$ctl" "$main_uri"
run_py "hangup" "$CTLPY" hangup "$ctl"
"$NBDRAID" -C "$ctl" abort >/dev/null 2>&1 || true
"$NBDRAID" -C "$ctl" set speed-max=0 >/dev/null 2>&1 || true

# ---- (d) nbdraid -------------------------------------------------------------
nr () { "$NBDRAID" "$@"; }
# expect_exit WHAT CODE CMD...: exit status CODE; stderr kept in $tmp/err.
expect_exit ()
{
  local what="$1" code="$2" rc; shift 2
  set +e
  "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
  set -e
  if [ "$rc" -eq "$code" ]; then ok; else
    fail "$what: '$*' exited $rc, expected $code"
    sed 's/^/    /' "$tmp/err" >&2
  fi
}

expect_exit "(d) status" 0 nr -C "$ctl" status
if grep -q -E '^ +Health : optimal$' "$tmp/out" &&
   grep -q -E 'Role +State' "$tmp/out"; then ok; else
  fail "(d) status text:"; sed 's/^/    /' "$tmp/out" >&2; fi
expect_exit "(d) status --json" 0 nr -C "$ctl" status --json
cp "$tmp/out" "$tmp/st.json"
expect_eq "(d) --json health" optimal "$(jfield "$tmp/st.json" health)"
expect_eq "(d) --json ok" True "$(jfield "$tmp/st.json" ok)"
expect_exit "(d) NBDRAID_CONTROL" 0 env NBDRAID_CONTROL="$ctl" "$NBDRAID" status --json
expect_eq "(d) NBDRAID_CONTROL status" optimal "$(jfield "$tmp/out" health)"
expect_exit "(d) status --watch --count=3" 0 nr -C "$ctl" status --watch --count=3 --interval=0.1
expect_eq "(d) --watch prints one line per poll" 3 "$(grep -c 'sync_action' "$tmp/out")"
expect_exit "(d) status --watch --json" 0 nr -C "$ctl" status --watch --json --count=2 --interval=0.1
expect_eq "(d) --watch --json: one object per line" 2 \
  "$(py 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["ok"]))' "$tmp/out")"

# usage errors: 2, nothing sent
ev="$(status_get "$ctl" events)"
expect_exit "(d) no socket given" 2 env -u NBDRAID_CONTROL "$NBDRAID" status
expect_exit "(d) bad option" 2 nr -C "$ctl" status --bogus
expect_exit "(d) resize without SIZE" 2 nr -C "$ctl" resize
expect_exit "(d) resize 12Q" 2 nr -C "$ctl" resize 12Q
expect_exit "(d) set foo=1" 2 nr -C "$ctl" set foo=1
expect_exit "(d) set speed-min=fast" 2 nr -C "$ctl" set speed-min=fast
expect_exit "(d) wait --timeout=-1" 2 nr -C "$ctl" wait --timeout=-1
expect_exit "(d) fail without MEMBER" 2 nr -C "$ctl" fail
expect_exit "(d) fail --with" 2 nr -C "$ctl" fail 1 --with=/x
expect_exit "(d) reshape with nothing" 2 nr -C "$ctl" reshape
expect_exit "(d) reshape --level=x" 2 nr -C "$ctl" reshape --level=x
expect_exit "(d) check extra" 2 nr -C "$ctl" check now
# refusals: 1, "nbdraid: CODE: message"
expect_exit "(d) no server" 1 nr -C "$tmp/nonexistent.sock" status
if grep -q "^nbdraid: .*connect" "$tmp/err"; then ok; else fail "(d) no-server message: $(cat "$tmp/err")"; fi
expect_exit "(d) fail role 9" 1 nr -C "$ctl" fail 9
if grep -q "^nbdraid: ENODEV: " "$tmp/err"; then ok; else fail "(d) refusal message: $(cat "$tmp/err")"; fi
expect_exit "(d) start with nothing frozen" 1 nr -C "$ctl" start
expect_exit "(d) abort with nothing running" 1 nr -C "$ctl" abort
expect_exit "(d) remove an in_sync member" 1 nr -C "$ctl" remove 0
if grep -q "^nbdraid: EBUSY: " "$tmp/err"; then ok; else fail "(d) remove message: $(cat "$tmp/err")"; fi
expect_eq "(d) refusals and usage errors changed no event count" "$ev" "$(status_get "$ctl" events)"

# set, check + wait (plain lines), resize
expect_exit "(d) set" 0 nr -C "$ctl" set speed-min=2M speed-max=4M
expect_eq "(d) set speed_max" 4194304 "$(status_get "$ctl" speed_max)"
expect_eq "(d) set speed_min" 2097152 "$(status_get "$ctl" speed_min)"
expect_exit "(d) set speed-max=0" 0 nr -C "$ctl" set speed-max=0
expect_exit "(d) check" 0 nr -C "$ctl" check
expect_exit "(d) wait" 0 nr -C "$ctl" wait --timeout=120
if grep -q "sync_action idle" "$tmp/out"; then ok; else fail "(d) wait output: $(cat "$tmp/out")"; fi
expect_eq "(d) mismatch_count" 0 "$(status_get "$ctl" mismatch_count)"
size="$(status_get "$ctl" size)"
[[ "$size" =~ ^[0-9]+$ ]] || { fail "(d) status size: $size"; size=0; }
expect_exit "(d) resize down without --force" 1 nr -C "$ctl" resize $((size - 196608))
if grep -q "give force" "$tmp/err"; then ok; else fail "(d) shrink refusal: $(cat "$tmp/err")"; fi
expect_eq "(d) the refused shrink changed nothing" "$size" "$(status_get "$ctl" size)"
expect_exit "(d) resize" 0 nr -C "$ctl" resize --force $((size - 196608))
if grep -q "size is now .*($((size - 196608)) bytes)" "$tmp/out"; then ok; else fail "(d) resize output: $(cat "$tmp/out")"; fi
expect_eq "(d) resize took effect" $((size - 196608)) "$(status_get "$ctl" size)"
expect_eq "(d) new connections see the new size" $((size - 196608)) "$(nbd_size "$main_uri")"
expect_exit "(d) resize back" 0 nr -C "$ctl" resize "$((size / 1024))K"
expect_eq "(d) resize back took effect" "$size" "$(status_get "$ctl" size)"
expect_exit "(d) resize max" 0 nr -C "$ctl" resize max
max="$(status_get "$ctl" size)"
if [ "$max" -ge "$size" ]; then ok; else fail "(d) resize max: $max < $size"; fi
expect_exit "(d) resize back from max" 0 nr -C "$ctl" resize "$size" --force
expect_eq "(d) resize back from max took effect" "$size" "$(status_get "$ctl" size)"
ev="$(status_get "$ctl" events)"
expect_exit "(d) resize to the size it has" 0 nr -C "$ctl" resize "$size"
expect_eq "(d) a resize to the same size records nothing" "$ev" "$(status_get "$ctl" events)"

# wait --timeout on a throttled check: exit 4 "timed out"; then a progress
# bar on a terminal (script(1) gives nbdraid a pty).
nr -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
expect_exit "(d) check (throttled)" 0 nr -C "$ctl" check
expect_exit "(d) wait --timeout=1 while it runs" 4 nr -C "$ctl" wait --timeout=1
if grep -q "timed out" "$tmp/err"; then ok; else fail "(d) timeout message: $(cat "$tmp/err")"; fi
if command -v script >/dev/null; then
  script -qec "$NBDRAID -C $ctl wait --timeout=2.5" /dev/null >"$tmp/tty.out" 2>&1 || true
  if grep -q -E 'check \[#*\.*\] [0-9]+\.[0-9]% [0-9.]+ [KMG]?i?B/s ETA ' "$tmp/tty.out" &&
     grep -q $'\r' "$tmp/tty.out"; then ok; else
    fail "(d) no progress bar on a terminal:"; cat -A "$tmp/tty.out" | head -5 >&2; fi
fi
expect_exit "(d) freeze" 0 nr -C "$ctl" freeze
expect_eq "(d) frozen" frozen "$(status_get "$ctl" sync_action)"
expect_exit "(d) wait on frozen: exit 3" 3 nr -C "$ctl" wait --timeout=5
expect_exit "(d) start" 0 nr -C "$ctl" start
expect_exit "(d) abort" 0 nr -C "$ctl" abort
expect_eq "(d) idle after abort" idle "$(status_get "$ctl" sync_action)"
# A spare left by (c) takes role 1 as soon as m1 fails: slow its recovery
# down so that role 1 is still unusable when the second fail comes.
nr -C "$ctl" set speed-min=0 speed-max=1M >/dev/null

# member ops with relative paths (the server runs in /)
(
  cd "$d"
  expect_exit "(d) fail by relative path" 0 nr -C "$ctl" fail m1
) || true
expect_status "(d) m1 faulty" "$ctl" spec:/m1 faulty
expect_exit "(d) second fail: refused" 1 nr -C "$ctl" fail 2
if grep -q "^nbdraid: EBUSY: " "$tmp/err"; then ok; else fail "(d) EBUSY message: $(cat "$tmp/err")"; fi
# (A spare, if one is there, has taken role 1 already: remove m1 by name.)
expect_exit "(d) remove m1" 0 nr -C "$ctl" remove "$d/m1"
expect_status "(d) m1 removed" "$ctl" spec:/m1 absent
(
  cd "$d"
  expect_exit "(d) add by relative path" 0 nr -C "$ctl" add spare4
) || true
nr -C "$ctl" set speed-min=16M speed-max=0 >/dev/null
expect_exit "(d) wait for recovery" 0 nr -C "$ctl" wait --timeout=120
expect_status "(d) recovered" "$ctl" health optimal
expect_status "(d) role 1 rebuilt" "$ctl" member:1 in_sync
# ---- (e) SIGTERM during an unbounded wait -----------------------------------
nr -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
expect_exit "(e) check" 0 nr -C "$ctl" check
$PYTHON - "$ctl" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"op":"wait","id":1}\n')
s.settimeout(60)
try:
    s.recv(65536)
except OSError:
    pass
EOF
waiter=$!
sleep 0.5
t0=$(date +%s%N)
stop_nbdkit main
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
if [ "$ms" -lt 5000 ]; then ok; else fail "(e) nbdkit took $ms ms to stop during a wait"; fi
if [ ! -e "$ctl" ]; then ok; else fail "(e) control socket left behind after SIGTERM"; fi
wait "$waiter" || true

# ---- (f) restart on the same socket path; reshape ----------------------------
if ! start_raid main2 "${members[@]}" "$d/spare4" "$d/spare1" "$d/spare2" control="$ctl"; then
  fail "(f) restart on the same control path"
  finish
fi
ok
expect_eq "(f) status after restart" optimal "$(status_get "$ctl" health)"
run_py "reshape" "$CTLPY" reshape "$ctl" "$d/spare3" "$d/spare5"
# nbdraid reshape --start --wait, not on a terminal: plain lines, exit 0.
expect_exit "(f) nbdraid reshape --chunk=128K --start --wait" 0 \
  nr -C "$ctl" reshape --chunk=128K --start --wait
if grep -q "reshape prepared (frozen" "$tmp/out" && grep -q "reshape started" "$tmp/out" &&
   grep -q "^reshape: idle" "$tmp/out"; then ok; else
  fail "(f) reshape output:"; sed 's/^/    /' "$tmp/out" >&2; fi
expect_eq "(f) new chunk" 131072 "$(status_get "$ctl" chunk)"
expect_eq "(f) health after the chunk reshape" optimal "$(status_get "$ctl" health)"
expect_exit "(f) reshape to a chunk that is no power of two" 1 \
  nr -C "$ctl" reshape --chunk=96K
if grep -q "^nbdraid: EINVAL: " "$tmp/err"; then ok; else fail "(f) message: $(cat "$tmp/err")"; fi
stop_nbdkit main2

finish
