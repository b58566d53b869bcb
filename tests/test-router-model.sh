#!/usr/bin/env bash
# nbdkit-raid: the router protocol (raidcore/router.h) and the live reshape
# around it, model-checked exhaustively by spin (tests/router.pml).
#
# Proves: the correct model passes every configuration with errors: 0 and a
# complete search (full state space, no depth truncation): safety (no
# acknowledged write lost, no stale or garbage read, no claim overlap, no
# answer changed under a request, W1's bound: a request waits out at most
# ONE claim (the turnstile), no deadlock) with windows of one and of two
# positions, with a second claimer, with a power loss anywhere; and
# liveness (every request and every claim ends, so the turnstile starves
# no claimer), with and without the second claimer.  And that spin rejects
# each defective variant for the right reason: the two old lost-write bugs
# (a route decided before the wait; no ticket while no reshape exists)
# fail a data property (the first also fails R1's assertion,
# ANSWER_STABLE, when it is on); a missing wake-up of W3 is a deadlock and
# a liveness violation, and so is one of W2 by the last request out of W1
# (a claimer starved by the turnstile); a checkpoint committed before its
# flush loses a write across a power loss; without the turnstile (the old
# router_claim) a request waits out two claims, failing W1's bound.  For
# each rejected variant the narrated trail is printed.
#
# Needs spin and gcc (scripts/deps.sh installs them): missing is a failure.

set -euo pipefail
if [ "${NBDKIT_RAID_CHECK:-}" = unit ]; then   # see e2e_scope_gate in functions.sh
  echo "test-router-model: SKIP: NBDKIT_RAID_CHECK=unit: end-to-end test not run" >&2; exit 77
fi
export LC_ALL=C

name=test-router-model
: "${abs_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
model="$abs_srcdir/tests/router.pml"

for tool in spin gcc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$name: FAIL: $tool is not installed; run scripts/deps.sh (as root)" >&2
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
fail ()
{
  failed=$((failed + 1))
  echo "FAIL: $name: $*" >&2
}

# verify LABEL MODE OPTION...: in $tmp/LABEL, generate the verifier with
# spin -a OPTION..., compile it and run it; its output is pan.out, the
# wall time in seconds wall.  MODE safety: assertions and end states
# (-DSAFETY); liveness: acceptance cycles of the LTL claim (-a), without
# fairness (-DNOFAIR).  pan's limits: depth 100000 steps (-m; the deepest
# run needs ~500), 2^22 hash slots (-w), 1 GiB of memory.  -O0: compiling
# pan.c costs more than these searches gain from optimizing it.
verify ()
{
  local label=$1 mode=$2 d="$tmp/$1" t0 t1; shift 2
  local -a cflags=(-O0 -w -DMEMLIM=1024 -DNOFAIR) pflags=(-m100000 -w22)
  mkdir "$d"
  cp "$model" "$d/router.pml"
  if [ "$mode" = safety ]; then cflags+=(-DSAFETY); else pflags+=(-a); fi
  t0=$(date +%s.%N)
  (
    cd "$d"
    spin -a "$@" router.pml >spin.log 2>&1 &&
      gcc "${cflags[@]}" -o pan pan.c >>spin.log 2>&1 &&
      ./pan "${pflags[@]}" >pan.out 2>&1
  ) || echo "spin, gcc or pan failed (see below)" >>"$d/spin.log"
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{ printf "%.1f\n", $2 - $1 }' >"$d/wall"
}

# Runs (label, mode, options), two at a time.  The correct model with two
# requests per client (OPS, OPS1) where the time allows (each request
# multiplies the state space by 3 to 10), one elsewhere; the defects with
# one (their first counterexample needs no more).  liveness-mgmt: both
# claimers wait in W2 for the request that waited out a claim, and must
# both be granted; with client 1's request too it passes as well (396326
# states, ~4 s of pan) but costs more than the time allows, and
# safety-mgmt's end-state check already covers it (every thread here runs
# a bounded loop, so a request or claim that never ends is a thread left
# blocked: an invalid end state).
runs=(
  "safety          safety   -DN=3 -DWIN=1 -DOPS=2"
  "safety-win2     safety   -DN=3 -DWIN=2 -DOPS=2 -DOPS1=1"
  "safety-mgmt     safety   -DN=3 -DWIN=1 -DOPS=1 -DMGMT"
  "safety-crash    safety   -DN=3 -DWIN=1 -DOPS=1 -DCRASH"
  "liveness        liveness -DN=3 -DWIN=1 -DOPS=1 -DLIVENESS"
  "liveness-mgmt   liveness -DN=3 -DWIN=1 -DOPS=1 -DOPS1=0 -DMGMT -DLIVENESS"
  "stale-route     safety   -DOPS=1 -DDEFECT_STALE_ROUTE -DNO_ANSWER_CHECK"
  "stale-route-r1  safety   -DOPS=1 -DDEFECT_STALE_ROUTE"
  "unregistered    safety   -DOPS=1 -DDEFECT_UNREGISTERED -DNO_ANSWER_CHECK"
  "no-drain        safety   -DOPS=1 -DDEFECT_NO_DRAIN_SIGNAL"
  "no-drain-live   liveness -DOPS=1 -DLIVENESS -DDEFECT_NO_DRAIN_SIGNAL"
  "commit-first    safety   -DOPS=1 -DCRASH -DDEFECT_COMMIT_BEFORE_FLUSH"
  "no-turnstile    safety   -DOPS=1 -DDEFECT_NO_TURNSTILE"
  "no-wake-live    liveness -DOPS=1 -DLIVENESS -DDEFECT_NO_WAITERS_WAKE"
)
declare -A opts=()
start=$(date +%s.%N)
for r in "${runs[@]}"; do
  read -r label mode o <<<"$r"
  opts[$label]=$o
  # shellcheck disable=SC2086
  verify "$label" "$mode" $o &
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
done
wait

# stat LABEL: "N states, T s" for the report.
stat ()
{
  local out="$tmp/$1/pan.out" states elapsed
  states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out")
  elapsed=$(sed -n 's/^pan: elapsed time \([0-9.e+]*\) seconds.*/\1/p' "$out")
  echo "${states:-?} states, pan ${elapsed:-?} s, $(cat "$tmp/$1/wall") s with spin -a and gcc"
}

show_log ()
{
  sed 's/^/    /' "$tmp/$1/spin.log" >&2
  tail -n 30 "$tmp/$1/pan.out" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# expect_pass LABEL: errors: 0 over the full state space.
expect_pass ()
{
  local out="$tmp/$1/pan.out"
  if [ -s "$out" ] &&
     grep -q '^Full statespace search for:' "$out" &&
     grep -q 'errors: 0$' "$out" &&
     ! grep -q -i -E 'search depth too small|search not completed|out of memory|max search depth' "$out"; then
    passed=$((passed + 1))
    echo "$name: $1 (${opts[$1]}): errors: 0, complete: $(stat "$1")"
  else
    fail "$1 (${opts[$1]}): expected errors: 0 over the full state space"
    show_log "$1"
  fi
}

# expect_reject LABEL REGEX: errors > 0, and pan's first error matches
# REGEX; prints the narrated trail.
expect_reject ()
{
  local out="$tmp/$1/pan.out" d="$tmp/$1" first
  first=$(grep -m 1 -E '^pan:1: ' "$out" 2>/dev/null || true)
  if grep -q -E 'errors: [1-9][0-9]*$' "$out" 2>/dev/null &&
     grep -q -E "$2" <<<"$first"; then
    passed=$((passed + 1))
    echo "$name: $1 (${opts[$1]}): rejected, $(stat "$1"):"
    echo "    ${first#pan:1: }"
    # shellcheck disable=SC2086
    (cd "$d" && spin -t ${opts[$1]} router.pml 2>&1) |
      grep -v -E '^[[:space:]]*$|^[[:space:]]*[a-z_]+(\[[0-9]+\])? = |^[[:space:]]*(byte|bool|int) |local vars|processes created|terminates|^spin: |^[[:space:]]*[0-9]+:[[:space:]]+proc |^#processes|timeout|^Never claim|^ltl ' |
      sed -E 's/^ +/        /' | head -n 60
  else
    fail "$1 (${opts[$1]}): expected spin to reject it with /$2/, got: ${first:-no error}"
    show_log "$1"
  fi
}

data='assertion violated .*(issued|acked)'
for label in safety safety-win2 safety-mgmt safety-crash liveness liveness-mgmt; do
  expect_pass "$label"
done
expect_reject stale-route "$data"
expect_reject stale-route-r1 'assertion violated .*answered'
expect_reject unregistered "$data"
expect_reject no-drain 'invalid end state'
expect_reject no-drain-live 'acceptance cycle'
expect_reject commit-first "$data"
expect_reject no-turnstile 'assertion violated \(w1<='
expect_reject no-wake-live 'acceptance cycle'

total=$(echo "$start $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }')
if [ "$failed" -ne 0 ]; then
  echo "$name: $failed checks FAILED, $passed passed ($total s)" >&2
  exit 1
fi
echo "$name: $passed checks passed ($total s)"
