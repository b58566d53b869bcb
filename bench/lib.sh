# shellcheck shell=bash disable=SC2034
# nbdkit-raid bench: helpers shared by bench/run.sh, bench/net.sh and
# bench/policy.sh (source it after setting BENCH_NAME and BENCH_DIR).
#
#   bench_tmp PREFIX  a fresh directory $tmp under $BENCH_DIR; at exit every
#                     server in pids[] is stopped and $tmp removed
#   serve NAME ARGS   nbdkit ARGS in the background on $tmp/NAME.sock (log in
#                     $tmp/NAME.log); sets $uri and $srv_pid
#   stop PID          SIGTERM, then SIGKILL after 5 s, and reap

pids=()

stop ()
{
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

bench_cleanup ()
{
  local p
  for p in "${pids[@]}"; do stop "$p"; done
  rm -rf "$tmp"
}

bench_tmp ()
{
  tmp="$(mktemp -d "$BENCH_DIR/$1.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

serve ()
{
  local name="$1" i; shift
  local sock="$tmp/$name.sock" pidf="$tmp/$name.pid"
  rm -f "$sock" "$pidf"
  nbdkit -f -U "$sock" -P "$pidf" --log=stderr "$@" 2>>"$tmp/$name.log" &
  srv_pid=$!
  pids+=("$srv_pid")
  for ((i = 0; i < 300; i++)); do
    [ -s "$pidf" ] && [ -S "$sock" ] && { uri="nbd+unix:///?socket=$sock"; return 0; }
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$BENCH_NAME: nbdkit $name did not start:" >&2
  cat "$tmp/$name.log" >&2
  exit 1
}
