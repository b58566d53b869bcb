# shellcheck shell=bash disable=SC2034
# nbdkit-raid bench: helpers shared by the bench/*.sh scripts (source it
# after setting BENCH_NAME and BENCH_DIR).
#
#   bench_tmp PREFIX  a fresh directory $tmp under $BENCH_DIR; at exit every
#                     server in pids[] is stopped and $tmp removed
#   serve NAME ARGS   nbdkit ARGS in the background on $tmp/NAME.sock (log in
#                     $tmp/NAME.log); sets $uri and $srv_pid
#   serve_rated NAME IMG MBPS
#                     serve IMG with nbdkit file behind the rate filter,
#                     MBPS MB/s each way (rate counts bits: MBPS*8 Mbit/s),
#                     burst allowance 0.1 s so that the rate is steady
#   stop PID          SIGTERM, then SIGKILL after 5 s, and reap
#   stop_all          stop every server in pids[] and empty it (all are sent
#                     SIGTERM first: nbdkit does not exit while a client,
#                     such as a raid server on top of it, stays connected)
#   fio_run URI RW BS QD [TIME_BASED]
#                     fio's nbd engine on the first $FIO_SIZE bytes of URI,
#                     RUNTIME s after RAMP (default 1 s) of ramp, or one pass
#                     when TIME_BASED is "no"; prints "BW_BYTES IOPS".  A
#                     timed run's rate is the bytes completed from 250 ms
#                     after the ramp to the end of RUNTIME, from fio's
#                     status dumps (every 250 ms: cumulative bytes and the
#                     run time since the ramp, taken together): an
#                     interval of the steady state.
#                     fio's own figure counts whole the requests in flight
#                     when the ramp ends, partly served during it, and
#                     runs past RUNTIME to drain the last ones: with
#                     requests that take long, e.g. 1M at QD32 on one
#                     member at 20 MiB/s, 1.6 s each, that overstated the
#                     rate by 4% (RESULTS.md run 25)
#   ctl_field SOCKET EXPR
#                     a Python expression over the status JSON (as d) of the
#                     server whose control socket is SOCKET ($NBDRAID)
#   now, since T0     wall clock (s), and seconds since T0 (2 decimals)

pids=()

stop ()
{
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local i
  for i in "${!pids[@]}"; do [ "${pids[$i]}" != "$1" ] || unset 'pids[i]'; done
}

bench_cleanup ()
{
  stop_all
  rm -rf "$tmp"
}

stop_all ()
{
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do stop "$p"; done
  pids=()
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

# The rate filter limits reads and writes separately; after idling it lets
# a connection burst for `burstiness` seconds' worth of bytes (2 s by
# default), cut to 0.1 s here so that figures are the steady rate.
serve_rated ()
{
  serve "$1" --filter=rate file "$2" rate="$(($3 * 8))M" burstiness=0.1
}

fio_run ()
{
  local uri="$1" rw="$2" bs="$3" qd="$4" out="$tmp/fio.json"
  local -a tb=(--time_based --runtime="$RUNTIME" --ramp_time="${RAMP:-1}"
               --status-interval=250ms)
  local timed="$RUNTIME"
  [ "${5:-yes}" = yes ] || { tb=(); timed=; }
  fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" \
      --iodepth="$qd" --size="$FIO_SIZE" --randrepeat=1 --norandommap \
      "${tb[@]}" --output-format=json --output="$out" >/dev/null 2>"$tmp/fio.err" || {
    echo "$BENCH_NAME: fio $rw bs=$bs qd=$qd on $uri failed:" >&2
    cat "$tmp/fio.err" "$out" >&2 2>/dev/null
    exit 1
  }
  "${PY:-/usr/bin/python3}" - "$out" "$rw" "$timed" <<'EOF'
import json, sys
# The output holds one JSON object per status dump, then the final one
# (and fio's error messages, if any, between them: skipped).
text, dec, jobs, i = open(sys.argv[1]).read(), json.JSONDecoder(), [], 0
while True:
    i = text.find("{", i)
    if i < 0:
        break
    try:
        o, i = dec.raw_decode(text, i)
    except ValueError:
        i += 1
        continue
    if isinstance(o, dict) and o.get("jobs"):
        jobs.append(o["jobs"][0])
key = "write" if "write" in sys.argv[2] else "read"
d = jobs[-1][key]
bw = d["bw_bytes"]
if sys.argv[3] and bw:
    # A dump every 250 ms or more: the bytes completed and the run time
    # (ms), both counted from the end of the ramp and read together.
    # The dumps of the ramp count from the job's start: a step under 200
    # ms (dumps are 250 ms apart or more) or back means the counters were
    # reset there, and only the dumps after it count (those past RUNTIME,
    # of the drain, count for nothing).  The rate: the
    # bytes between the first dump 250 ms or more into the run and the
    # last one by the end of RUNTIME (not the drain), over the time
    # between them.
    end = float(sys.argv[3]) * 1000
    pts = []
    for j in jobs[:-1]:
        t, b = j[key]["runtime"], j[key]["io_bytes"]
        if t > end:
            continue
        if pts and t < pts[-1][0] + 200:
            pts = []
        pts.append((t, b))
    w = [p for p in pts if p[0] >= 250]
    if len(w) < 3 or w[-1][0] - w[0][0] < 500:
        sys.exit("fio_run: %d status dumps in the timed part: RUNTIME too short" % len(w))
    bw = (w[-1][1] - w[0][1]) * 1000 / (w[-1][0] - w[0][0])
print(int(bw), round(d["iops"] * bw / d["bw_bytes"]) if d["bw_bytes"] else 0)
EOF
}

ctl_field ()
{
  "$NBDRAID" -C "$1" status --json |
    "${PY:-/usr/bin/python3}" -c "import json,sys; d=json.load(sys.stdin); print($2)"
}

now () { date +%s.%N; }
since () { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
