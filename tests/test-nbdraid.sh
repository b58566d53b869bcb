#!/usr/bin/env bash
# nbdkit-raid: `nbdraid` for scripts (nbdraid(8): CONTROL, JSON OUTPUT, EXIT
# STATUS), driven as a script drives it.
#
# (a) without a server: --version is configure.ac's version; --help works on
#     every subcommand (exit 0, that subcommand's usage on stdout, nothing on
#     stderr); a mistyped subcommand gets a suggestion (exit 2); -C naming a
#     missing socket gives an error naming it, ECONNREFUSED for a socket file
#     nobody listens on, ENOTSOCK for a file or directory that is not a
#     socket; `status --test` exits 4 when no status can be read.
# (b) --json: every result and every error is exactly one JSON object on
#     stdout and nothing goes to stderr: usage errors ("USAGE", exit 2),
#     connection failures (errno names), refusals by the protocol before
#     connecting and by the server (their codes), results; each bad input
#     changes nothing (event count and status identical).
# (c) options before or after the subcommand: -C, --control, --json, a
#     subcommand's option before the subcommand, NBDRAID_CONTROL.
# (d) status --test: 0 optimal, 1 degraded, 1 while a replace rebuilds a
#     member (health still optimal), 2 failed (two members behind the error
#     filter), 4 no status.
# (e) wait: 0 idle, 3 a frozen check, 3 a prepared reshape never started
#     (also `reshape --wait` without --start), 3 for a running reshape
#     frozen while `wait` and `reshape --start --wait` wait for it, 4
#     timeout (with --json: the last status with ok false and ETIMEDOUT).
# (f) the bash completion script completes the subcommands, and for each
#     subcommand every option its --help lists; option values; it works
#     with and without the bash-completion package.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-nbdraid "$@"
requires nbdinfo

nr () { "$NBDRAID" "$@"; }
# run_nr CODE WHAT ARGS...: nbdraid ARGS exits CODE; stdout in $tmp/out,
# stderr in $tmp/err.
run_nr ()
{
  local code="$1" what="$2" rc; shift 2
  set +e
  "$NBDRAID" "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
  set -e
  if [ "$rc" -eq "$code" ]; then ok; else
    fail "$what: 'nbdraid $*' exited $rc, expected $code"
    sed 's/^/    out: /' "$tmp/out" >&2
    sed 's/^/    err: /' "$tmp/err" >&2
  fi
}
# json1 FIELD...: stdout ($tmp/out) is exactly one JSON object and stderr
# is empty; prints the fields asked for, space-separated.
json1 ()
{
  $PYTHON - "$tmp/out" "$tmp/err" "$@" <<'EOF'
import json, sys
out, err, fields = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3:]
try:
    d = json.loads(out)
except ValueError as e:
    print("NOT-ONE-JSON-OBJECT(%s)" % e); sys.exit(0)
if not isinstance(d, dict):
    print("NOT-AN-OBJECT"); sys.exit(0)
if err:
    print("STDERR(%s)" % err.strip()); sys.exit(0)
print(" ".join(str(d.get(f)) for f in fields))
EOF
}
# expect_json WHAT CODE EXPECTED FIELDS... ARGS: after --, nbdraid ARGS
# exits CODE and prints one object whose FIELDS read EXPECTED.
expect_json ()
{
  local what="$1" code="$2" want="$3"; shift 3
  local -a fields=()
  while [ "$1" != -- ]; do fields+=("$1"); shift; done
  shift
  run_nr "$code" "$what" "$@"
  expect_eq "$what: JSON" "$want" "$(json1 "${fields[@]}")"
}
# events SOCKET: the event count and a digest of the whole status (minus
# the progress rate, which moves)
state_of ()
{
  $PYTHON -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"{\"op\":\"status\",\"id\":1}\n")
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
d = json.loads(buf); d.pop("id", None)
for k in ("progress",):
    d.pop(k, None)
print(json.dumps(d, sort_keys=True))' "$1"
}

# ---- (a) without a server ----------------------------------------------------
want_version="$(sed -n 's/^AC_INIT(\[nbdkit-raid\], \[\([^]]*\)\]).*/\1/p' "$abs_srcdir/configure.ac")"
run_nr 0 "(a) --version" --version
expect_eq "(a) --version" "nbdraid (nbdkit-raid) $want_version" "$(cat "$tmp/out")"
expect_json "(a) --json --version" 0 "True $want_version" ok version -- --version --json

run_nr 0 "(a) --help" --help
subs="$(sed -n 's/^  nbdraid \(\[-C SOCKET\] \)\{0,1\}\([a-z]*\).*/\2/p' "$tmp/out" | sort -u)"
expect_eq "(a) --help lists every subcommand" \
  "abort add check create examine fail freeze remove repair replace reshape resize set start status wait" \
  "$(echo $subs)"
for s in $subs; do
  run_nr 0 "(a) $s --help" "$s" --help
  if grep -q -E "^  nbdraid (\[-C SOCKET\] )?$s( |\$)" "$tmp/out" &&
     [ "$(grep -c '^  nbdraid ' "$tmp/out")" -eq 1 ] && [ ! -s "$tmp/err" ]; then ok; else
    fail "(a) $s --help does not print its own usage:"; sed 's/^/    /' "$tmp/out" >&2; fi
done
run_nr 0 "(a) reshape --help" reshape --help
if grep -q -- '--raid-devices=N' "$tmp/out" && grep -q -- '--start' "$tmp/out"; then ok; else
  fail "(a) reshape --help lacks its options"; fi
run_nr 0 "(a) --help before the subcommand" --help wait
grep -q -- '--timeout=SECONDS' "$tmp/out" && ok || fail "(a) --help wait: $(cat "$tmp/out")"

run_nr 2 "(a) staus" -C "$tmp/none" staus
expect_eq "(a) suggestion" "nbdraid: unknown subcommand 'staus'; did you mean 'status'?" \
  "$(head -n 1 "$tmp/err")"
run_nr 2 "(a) reshpae" reshpae --level=6
grep -q "did you mean 'reshape'" "$tmp/err" && ok || fail "(a) reshpae: $(cat "$tmp/err")"
run_nr 2 "(a) chekc" chekc
grep -q "did you mean 'check'" "$tmp/err" && ok || fail "(a) chekc: $(cat "$tmp/err")"
run_nr 2 "(a) xyzzy" xyzzy
if grep -q "unknown subcommand 'xyzzy'" "$tmp/err" && ! grep -q "did you mean" "$tmp/err"; then ok
else fail "(a) xyzzy: $(cat "$tmp/err")"; fi

run_nr 1 "(a) status -C missing" status -C "$tmp/missing.ctl"
if grep -q "^nbdraid: control socket $tmp/missing.ctl: connect: No such file or directory" "$tmp/err" &&
   ! grep -q "needs -C" "$tmp/err"; then ok; else fail "(a) missing socket: $(cat "$tmp/err")"; fi
run_nr 2 "(a) status without a socket" status
grep -q "status: needs -C SOCKET (or NBDRAID_CONTROL)" "$tmp/err" && ok ||
  fail "(a) no socket: $(cat "$tmp/err")"
run_nr 4 "(a) status --test, no server" status --test -C "$tmp/missing.ctl"
# a socket file nobody listens on
$PYTHON -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$tmp/stale.ctl"
expect_json "(a) stale socket" 1 "False ECONNREFUSED" ok error -- -C "$tmp/stale.ctl" status --json
expect_json "(a) missing socket" 1 "False ENOENT" ok error -- status --json -C "$tmp/missing.ctl"
# a member file or a directory given as the control socket
: > "$tmp/not-a-socket"
expect_json "(a) -C a file" 1 "False ENOTSOCK" ok error -- -C "$tmp/not-a-socket" status --json
run_nr 1 "(a) -C a directory" -C "$tmp" status
grep -q "^nbdraid: control socket $tmp: not a socket but a directory" "$tmp/err" && ok ||
  fail "(a) -C a directory: $(cat "$tmp/err")"
run_nr 4 "(a) status --test --json, no server" --json status --test -C "$tmp/missing.ctl"
expect_eq "(a) status --test --json, no server" "False ENOENT" "$(json1 ok error)"

# ---- a server ---------------------------------------------------------------
d="$tmp/a"
mkdir -p "$d"
create_array --level=5 --size=64M "$d/m0" "$d/m1" "$d/m2"
truncate -s 64M "$d/s0" "$d/s1" "$d/new"
ctl="$d/ctl"
start_raid main "$d/m0" "$d/m1" "$d/m2" control="$ctl" || { fail "start"; finish; }
run_nr 0 "add a spare" -C "$ctl" add "$d/s0"

# ---- (b) --json: one object for every result and every error -----------------
before="$(state_of "$ctl")"
for args in "status --bogus" "status --count" "wait --timeout=-1" "resize" "resize 12Q" \
            "set foo=1" "fail" "fail 1 --with=/x" "reshape" "reshape --level=x" "check now" \
            "status --watch --test" "--json" "frobnicate" "-x status" "replace 0 --with=1"; do
  # shellcheck disable=SC2086
  expect_json "(b) usage: $args" 2 "False USAGE" ok error -- -C "$ctl" --json $args
done
expect_json "(b) server refusal" 1 "False ENODEV" ok error -- -C "$ctl" --json fail 9
out="$("$NBDRAID" -C "$ctl" replace 0 --with=1 2>&1)" || true
[[ "$out" == *"--with=1: a spare has no role number; name it by its path or NBD URI"* ]] && ok ||
  fail "(b) replace --with=1: '$out'"
expect_json "(b) server refusal" 1 "False EBUSY" ok error -- -C "$ctl" --json remove 0
expect_json "(b) server refusal" 1 "False EINVAL" ok error -- -C "$ctl" start --json
expect_json "(b) protocol refusal before connecting" 1 "False EINVAL" ok error -- \
  -C "$ctl" --json reshape --chunk=96K
create_array --level=5 --data-offset=4M --size=20M "$d/x0" "$d/x1" "$d/x2"
expect_json "(b) create refusal" 1 "False EEXIST" ok error -- create --json --level=5 "$d/x0" "$d/x1" "$d/x2"
expect_json "(b) create usage" 2 "False USAGE" ok error -- create --json "$d/x0"
expect_json "(b) examine" 0 "True" ok -- examine --json "$d/m0" "$d/m1" "$d/m2"
expect_eq "(b) examine: members" 3 "$($PYTHON -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["members"]))' "$tmp/out")"
expect_json "(b) examine of a non-member" 1 "False ENODATA" ok error -- examine --json "$d/new"
expect_eq "(b) no bad input changed anything" "$before" "$(state_of "$ctl")"
expect_json "(b) status" 0 "True optimal" ok health -- -C "$ctl" status --json
expect_json "(b) set" 0 "True" ok -- -C "$ctl" set --json speed-max=0
expect_json "(b) check" 0 "True" ok -- --json -C "$ctl" check
expect_json "(b) wait" 0 "True idle" ok sync_action -- -C "$ctl" wait --json --timeout=60

# ---- (c) options before or after the subcommand ------------------------------
expect_json "(c) -C S status" 0 "True optimal" ok health -- -C "$ctl" status --json
expect_json "(c) status -C S" 0 "True optimal" ok health -- status -C "$ctl" --json
expect_json "(c) status --json -C S" 0 "True optimal" ok health -- status --json -C "$ctl"
expect_json "(c) --json status -C S" 0 "True optimal" ok health -- --json status -C "$ctl"
expect_json "(c) --control=S" 0 "True optimal" ok health -- --control="$ctl" status --json
expect_json "(c) --control S" 0 "True idle" ok sync_action -- --control "$ctl" --json wait --timeout=5
expect_json "(c) wait's option first" 0 "True idle" ok sync_action -- --timeout 5 -C "$ctl" wait --json
NBDRAID_CONTROL="$ctl" run_nr 0 "(c) NBDRAID_CONTROL" status --json
expect_eq "(c) NBDRAID_CONTROL" "True optimal" "$(json1 ok health)"
run_nr 0 "(c) text status -C after" status -C "$ctl"
grep -q -E '^ +Health : optimal$' "$tmp/out" && ok || fail "(c) text status: $(cat "$tmp/out")"
run_nr 2 "(c) -C with create" create -C "$ctl" --level=5 "$d/m0" "$d/m1" "$d/m2"

# ---- (d) status --test ---------------------------------------------------------
run_nr 0 "(d) optimal" -C "$ctl" status --test
grep -q -E '^ +Health : optimal$' "$tmp/out" && ok || fail "(d) --test prints the status"
expect_json "(d) optimal --json" 0 "True optimal" ok health -- -C "$ctl" status --test --json
# a replace: health stays optimal, the target rebuilds
nr -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
run_nr 0 "(d) replace" -C "$ctl" replace 0 --with="$d/s0"
expect_json "(d) rebuilding" 1 "optimal" health -- -C "$ctl" status --test --json
nr -C "$ctl" set speed-min=16M speed-max=0 >/dev/null
run_nr 0 "(d) replace ends" -C "$ctl" wait --timeout=120
# the replaced member left the array by itself: nothing to remove
run_nr 1 "(d) the replaced member is no longer listed" -C "$ctl" remove "$d/m0"
run_nr 0 "(d) optimal after the replace" -C "$ctl" status --test
# degraded
run_nr 0 "(d) fail a member" -C "$ctl" fail 1
expect_json "(d) degraded" 1 "True degraded" ok health -- -C "$ctl" status --test --json
run_nr 1 "(d) degraded, text" -C "$ctl" status --test
grep -q -E '^ +Health : degraded$' "$tmp/out" && ok || fail "(d) degraded text: $(cat "$tmp/out")"
run_nr 0 "(d) remove it" -C "$ctl" remove 1
run_nr 0 "(d) add a spare" -C "$ctl" add "$d/s1"
run_nr 0 "(d) recovery ends" -C "$ctl" wait --timeout=120
run_nr 0 "(d) optimal again" -C "$ctl" status --test
# failed: a raid5 whose two NBD members start failing every request
f="$tmp/f"
mkdir -p "$f"
truncate -s 64M "$f/b0" "$f/b1" "$f/b2"
rm -f "$f/t1" "$f/t2"
start_nbdkit fm1 --filter=error file "$f/b1" error-rate=100% error-file="$f/t1" || fail "member server"
fs1="$sock"
start_nbdkit fm2 --filter=error file "$f/b2" error-rate=100% error-file="$f/t2" || fail "member server"
fs2="$sock"
create_array --level=5 --data-offset=4M "$f/b0" "$(uri_of "$fs1")" "$(uri_of "$fs2")"
start_raid failing "$f/b0" "$(uri_of "$fs1")" "$(uri_of "$fs2")" control="$f/ctl" || fail "start"
run_nr 0 "(d) the second array is optimal" -C "$f/ctl" status --test
touch "$f/t1" "$f/t2"
qemu-io -f raw -c 'read 0 1M' "$uri" >/dev/null 2>&1 || true
for ((i = 0; i < 100; i++)); do
  [ "$(status_get "$f/ctl" health)" = failed ] && break
  qemu-io -f raw -c 'read 0 1M' "$uri" >/dev/null 2>&1 || true
  sleep 0.1
done
expect_json "(d) failed" 2 "True failed" ok health -- -C "$f/ctl" status --test --json
run_nr 2 "(d) failed, text" -C "$f/ctl" status --test
stop_nbdkit failing
stop_nbdkit fm1
stop_nbdkit fm2

# ---- (e) wait ------------------------------------------------------------------
run_nr 0 "(e) idle" -C "$ctl" wait --timeout=10
nr -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
run_nr 0 "(e) check" -C "$ctl" check
run_nr 4 "(e) timeout" -C "$ctl" wait --timeout=1
grep -q "^nbdraid: timed out after 1 s: check still running" "$tmp/err" && ok ||
  fail "(e) timeout message: $(cat "$tmp/err")"
expect_json "(e) timeout --json" 4 "False ETIMEDOUT check" ok error sync_action -- \
  -C "$ctl" wait --timeout=0.5 --json
run_nr 0 "(e) freeze" -C "$ctl" freeze
run_nr 3 "(e) frozen" -C "$ctl" wait --timeout=10
grep -q "check is frozen" "$tmp/err" && ok || fail "(e) frozen note: $(cat "$tmp/err")"
expect_json "(e) frozen --json" 3 "True frozen" ok sync_action -- -C "$ctl" --json wait
run_nr 0 "(e) abort the check" -C "$ctl" abort
nr -C "$ctl" set speed-min=16M speed-max=0 >/dev/null
run_nr 0 "(e) prepare a reshape" -C "$ctl" reshape --add="$d/new"
run_nr 3 "(e) a prepared reshape counts as frozen" -C "$ctl" wait --timeout=10
expect_json "(e) prepared --json" 3 "True" ok -- -C "$ctl" wait --json
$PYTHON -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d["reshape"]["state"] != "frozen")' \
  "$tmp/out" && ok || fail "(e) prepared reshape state: $(cat "$tmp/out")"
run_nr 0 "(e) abort the reshape" -C "$ctl" abort
expect_eq "(e) no reshape after abort" idle "$(status_get "$ctl" sync_action)"
run_nr 3 "(e) reshape --wait without --start" -C "$ctl" reshape --add="$d/new" --wait
grep -q "^reshape prepared (frozen" "$tmp/out" && ok || fail "(e) plan text: $(cat "$tmp/out")"
run_nr 0 "(e) abort it" -C "$ctl" abort
# a running reshape frozen while a client waits for it: the waiter (plain
# wait, and reshape --start --wait) returns 3, not 0; started again, 0
nr -C "$ctl" set speed-min=0 speed-max=1M >/dev/null
set +e
"$NBDRAID" -C "$ctl" reshape --chunk=32K --start --wait >"$tmp/rw.out" 2>"$tmp/rw.err" &
rw=$!
sleep 1
"$NBDRAID" -C "$ctl" wait --timeout=60 >"$tmp/w.out" 2>"$tmp/w.err" &
w=$!
set -e
sleep 1
expect_eq "(e) the reshape runs" reshape "$(status_get "$ctl" sync_action)"
run_nr 0 "(e) freeze the running reshape" -C "$ctl" freeze
set +e; wait "$w"; wrc=$?; wait "$rw"; rwrc=$?; set -e
expect_eq "(e) wait on a reshape frozen while it waited" 3 "$wrc"
expect_eq "(e) reshape --start --wait, frozen meanwhile" 3 "$rwrc"
grep -q "reshape is frozen" "$tmp/w.err" && ok || fail "(e) frozen note: $(cat "$tmp/w.err")"
expect_eq "(e) still frozen, not ended" frozen "$(status_get "$ctl" sync_action)"
nr -C "$ctl" set speed-min=16M speed-max=0 >/dev/null
run_nr 0 "(e) start it again" -C "$ctl" start
run_nr 0 "(e) wait until it ends" -C "$ctl" wait --timeout=120
expect_eq "(e) the chunk changed" 32768 "$(status_get "$ctl" chunk)"
expect_json "(e) reshape --start --wait --json" 0 "True True" ok started -- \
  -C "$ctl" reshape --chunk=128K --start --wait --json
$PYTHON -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d["ok"] and d["started"] and d["status"]["sync_action"] == "idle" and d["reshape"]["to"]["chunk"] == 131072))' \
  "$tmp/out" && ok || fail "(e) reshape --json result: $(cat "$tmp/out")"
expect_eq "(e) the chunk changed" 131072 "$(status_get "$ctl" chunk)"
stop_nbdkit main

# ---- (f) bash completion -------------------------------------------------------
completion="$abs_srcdir/nbdraid/nbdraid.bash"
# complete [bash-completion|plain] WORDS...: what _nbdraid offers for the
# last word
complete_words ()
{
  local how="$1"; shift
  bash -c '
    how=$1; shift
    if [ "$how" = bash-completion ]; then
      source /usr/share/bash-completion/bash_completion 2>/dev/null || exit 77
    fi
    source "$COMPLETION"
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    COMP_LINE= prev=
    for w in "$@"; do           # as bash has it: no blank around "="
      if [ "$w" = = ] || [ "$prev" = = ]; then COMP_LINE+=$w
      else COMP_LINE+=${COMP_LINE:+ }$w; fi
      prev=$w
    done
    COMP_POINT=${#COMP_LINE}
    _nbdraid nbdraid "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' _ "$how" "$@"
}
export COMPLETION="$completion"
for how in bash-completion plain; do
  if [ "$how" = bash-completion ] && [ ! -r /usr/share/bash-completion/bash_completion ]; then
    echo "$test_name: note: bash-completion is not installed; plain bash only" >&2
    continue
  fi
  expect_eq "(f) $how: subcommands" "start status " "$(complete_words $how nbdraid st)"
  expect_eq "(f) $how: after -C S" "reshape resize " "$(complete_words $how nbdraid -C /x res)"
  expect_eq "(f) $how: --level values" "0 1 4 5 6 " "$(complete_words $how nbdraid create --level '')"
  expect_eq "(f) $how: --consistency values" "bitmap " \
    "$(complete_words $how nbdraid create --consistency b)"
  expect_eq "(f) $how: common options" "--json " "$(complete_words $how nbdraid status --js)"
  if [ "$how" = bash-completion ]; then     # bash splits --layout=left at '='
    expect_eq "(f) --layout=VALUE" "left-asymmetric left-asymmetric-6 left-symmetric left-symmetric-6 " \
      "$(complete_words $how nbdraid create --level=5 --layout = left)"
  fi
  for s in $subs; do
    opts="$(nr "$s" --help | sed -n 's/^  \(-[a-zA-Z], \)\{0,1\}\(--[a-z-]*=\{0,1\}\).*/\2/p' | sort -u)"
    got="$(complete_words $how nbdraid "$s" --)"
    for o in $opts; do
      case " $got " in
        *" $o "*) ok ;;
        *) fail "(f) $how: 'nbdraid $s --' does not offer $o (offers: $got)" ;;
      esac
    done
  done
done
finish
