#!/usr/bin/env bash
# nbdkit-raid benchmark: one command, one run, same storage.
#
# Method.  Everything lives on one tmpfs (/dev/shm unless BENCH_DIR says
# otherwise), so the members and the baseline file have the same backing
# and the comparison isolates what the RAID layer costs.  The baseline is
# `nbdkit file` serving one member-sized file; the subjects are the raid
# plugin serving RAID5 of 5 members (chunk 64K, 4 data) and RAID5 of 4
# members (3 data).  The client is always fio's nbd engine (libnbd, one
# connection, iodepth requests in flight) over a UNIX socket.  Each target
# is filled once with sequential 1 MiB writes before it is measured, so
# reads never hit holes.  The three targets are served at the same time and
# measured in turn, case by case, REPS times; the best run of each counts
# (the machine is small and shared, its speed drifts).  Each case runs
# RUNTIME seconds after 1 s of ramp:
#   seq write 1M QD32, seq read 1M QD32,
#   4K random read QD1 and QD32, 4K random write QD1 and QD32,
#   degraded seq read 1M QD32 (one member file removed before the start;
#   compared with the baseline's seq read);
#   reshape throughput of a filled RAID5 growing from 4 to 5 members with
#   no other load, and from 5 to 6 members while fio reads sequentially
#   (1M QD32), with fio's throughput during the reshape against before it;
#   the consistency policies' writes, and the floor of the 4K random write:
#   bench/floor.c, a scratch plugin that issues only the member system
#   calls of a RAID5 read-modify-write (with and without the journal's
#   record) on five files, so the array can be read against what its
#   member I/O alone allows on this machine.
# Ratios are RAID / baseline on bandwidth.  isa-l's raw parity rate on this
# CPU (bench/parity-rate.c) is printed for reference.  Last, bench/net.sh
# (about 15 s; NET=0 skips it): request latency of a RAID6 whose members
# answer after a fixed delay (members on other hosts), against one such
# member used directly.  Then bench/slow.sh (about 7 minutes; SLOW=0
# skips it): throughput of a RAID5 whose members are rate-limited, and of
# one whose members answer one request at a time after a delay, against
# one such member, with rebuild and reshape rates.
#
# Usage: bench/run.sh            (from the build directory, or set PLUGIN
#                                 and NBDRAID to the built files)
# Environment: PLUGIN, NBDRAID, BENCH_DIR (tmpfs dir), RUNTIME (default 4),
#              REPS (default 2), MEMBER_SIZE (default 512M), FIO_SIZE
#              (default 384M), RESHAPE_MEMBER_SIZE (default 1G), NET (1),
#              NET_DELAY (ms, default 10), SLOW (1), SLOW_DELAY (ms,
#              default 1).

set -euo pipefail
export PATH="/usr/bin:$PATH"
export LC_ALL=C

srcdir="$(cd "$(dirname "$0")/.." && pwd)"
: "${PLUGIN:=$PWD/.libs/nbdkit-raid-plugin.so}"
: "${NBDRAID:=$PWD/nbdraid/nbdraid}"
: "${RUNTIME:=4}"
: "${REPS:=2}"
: "${MEMBER_SIZE:=512M}"
: "${FIO_SIZE:=384M}"
: "${RESHAPE_MEMBER_SIZE:=1G}"
: "${BENCH_DIR:=/dev/shm}"
PY=/usr/bin/python3

for f in "$PLUGIN" "$NBDRAID"; do
  [ -e "$f" ] || { echo "bench: $f not found (run from the build dir or set PLUGIN/NBDRAID)" >&2; exit 1; }
done
for t in fio nbdkit gcc; do
  command -v "$t" >/dev/null || { echo "bench: $t is required" >&2; exit 1; }
done

BENCH_NAME=bench
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bench_tmp nbdraid-bench

CASES=("write 1M 32" "read 1M 32" "randread 4k 1" "randread 4k 32" "randwrite 4k 1" "randwrite 4k 32")
declare -A R

# best LABEL KEY "BW IOPS": keep the better of repeated runs.
best ()
{
  local old="${R["$1,$2"]:-0 0}"
  if [ "${3%% *}" -gt "${old%% *}" ]; then R["$1,$2"]="$3"; fi
}

echo "bench: storage $tmp ($(df --output=fstype "$tmp" | tail -1)), ${RUNTIME}s per case, best of $REPS" >&2

# isa-l parity rate
gcc -std=gnu11 -O2 -o "$tmp/parity-rate" "$srcdir/bench/parity-rate.c" -lisal
parity="$("$tmp/parity-rate" 0.5)"

# All three targets are served at once and measured in turn, case by case
# and repetition by repetition, so that drift in the machine's speed hits
# them alike.  Idle servers use no CPU.
truncate -s "$MEMBER_SIZE" "$tmp/base.img"
serve base file "$tmp/base.img"
declare -A URI=([base]="$uri")
declare -A MEMBERS
for n in 5 4; do
  m=()
  for ((i = 0; i < n; i++)); do m+=("$tmp/raid5x$n-m$i"); done
  MEMBERS[raid5x$n]="${m[*]}"
  "$NBDRAID" create --level=5 --chunk=64K --size="$MEMBER_SIZE" "${m[@]}" \
    >"$tmp/create.log" 2>&1 || { cat "$tmp/create.log" >&2; exit 1; }
  serve "raid5x$n" "$PLUGIN" "${m[@]}"
  URI[raid5x$n]="$uri"
  declare "PID_raid5x$n=$srv_pid"
done
TARGETS=(base raid5x5 raid5x4)
for t in "${TARGETS[@]}"; do
  fio_run "${URI[$t]}" write 1M 32 no >/dev/null      # fill: no reads of holes
done
for c in "${CASES[@]}"; do
  read -r rw bs qd <<<"$c"
  for ((rep = 0; rep < REPS; rep++)); do
    for t in "${TARGETS[@]}"; do
      r="$(fio_run "${URI[$t]}" "$rw" "$bs" "$qd")"
      echo "  $t: $rw bs=$bs qd=$qd: $r" >&2
      best "$t" "$c" "$r"
    done
  done
done

# Degraded: each RAID restarted with its member 1 removed; the baseline's
# sequential read is measured again alongside.
for n in 5 4; do
  pid_var="PID_raid5x$n"
  kill "${!pid_var}"; wait "${!pid_var}" 2>/dev/null || true
  read -r -a m <<<"${MEMBERS[raid5x$n]}"
  rm -f "${m[1]}"
  serve "raid5x$n-deg" "$PLUGIN" "${m[0]}" "${m[@]:2}"
  URI[raid5x$n]="$uri"
done
for ((rep = 0; rep < REPS; rep++)); do
  for t in "${TARGETS[@]}"; do
    r="$(fio_run "${URI[$t]}" read 1M 32)"
    echo "  $t: degraded read bs=1M qd=32: $r" >&2
    best "$t" degraded "$r"
  done
done

# Consistency policies (issue: the cost of each): RAID5 of 5 with journal
# (the default), bitmap and resync, measured in turn with the baseline's
# figures from above: seq write 1M QD32, 4K random write QD1 and QD32.
POLICIES=(journal bitmap resync)
POLICY_CASES=("write 1M 32" "randwrite 4k 1" "randwrite 4k 32")
for pol in "${POLICIES[@]}"; do
  m=()
  for ((i = 0; i < 5; i++)); do m+=("$tmp/pol-$pol-m$i"); done
  "$NBDRAID" create --level=5 --chunk=64K --consistency="$pol" --size="$MEMBER_SIZE" \
    "${m[@]}" >"$tmp/create.log" 2>&1 || { cat "$tmp/create.log" >&2; exit 1; }
  serve "pol-$pol" "$PLUGIN" "${m[@]}"
  URI[pol-$pol]="$uri"
  fio_run "$uri" write 1M 32 no >/dev/null
done
# The floor of the 4K random writes (bench/floor.c): a scratch plugin that
# issues only the member system calls of a RAID5 4K read-modify-write on
# five such files, with the journal's record (floor-journal) and without
# (floor-bitmap), measured in the same rounds.
gcc -std=gnu11 -O2 -shared -fPIC $(pkg-config --cflags nbdkit) \
  -o "$tmp/floor.so" "$srcdir/bench/floor.c" -lisal
for fl in journal:true bitmap:false; do
  m=()
  for ((i = 0; i < 5; i++)); do
    truncate -s "$MEMBER_SIZE" "$tmp/pol-floor-${fl%%:*}-m$i"
    m+=("member=$tmp/pol-floor-${fl%%:*}-m$i")
  done
  serve "floor-${fl%%:*}" "$tmp/floor.so" "${m[@]}" record="${fl#*:}"
  URI[pol-floor-${fl%%:*}]="$uri"
  fio_run "$uri" write 1M 32 no >/dev/null
done
for c in "${POLICY_CASES[@]}"; do
  read -r rw bs qd <<<"$c"
  floors=(); [ "$bs" != 4k ] || floors=(floor-journal floor-bitmap)
  for ((rep = 0; rep < REPS; rep++)); do
    for pol in "${POLICIES[@]}" "${floors[@]}"; do
      r="$(fio_run "${URI[pol-$pol]}" "$rw" "$bs" "$qd")"
      echo "  policy $pol: $rw bs=$bs qd=$qd: $r" >&2
      best "pol-$pol" "$c" "$r"
    done
  done
done

# Free the tmpfs space of the steady-state targets.
stop_all
rm -f "$tmp"/*.img "$tmp"/raid5x*-m* "$tmp"/pol-*

# Reshape: a filled RAID5 of 4 members grows to 5 with nothing
# else running (throughput = bytes moved / time), then to 6 while fio reads
# sequentially (1M QD32) for RUNTIME seconds: the reshape's progress during
# that window, and fio's throughput against the same job just before.
reshape_report="reshape: not measured"
m=()
for ((i = 0; i < 6; i++)); do m+=("$tmp/rs-m$i"); done
if "$NBDRAID" create --level=5 --chunk=64K --size="$RESHAPE_MEMBER_SIZE" "${m[@]:0:4}" \
     >"$tmp/create.log" 2>&1; then
  truncate -s "$RESHAPE_MEMBER_SIZE" "${m[4]}" "${m[5]}"
  serve reshape "$PLUGIN" "${m[@]:0:4}" control="$tmp/ctl"
  rs_size="$(nbdinfo --size "$uri")"
  FIO_SIZE="$rs_size" fio_run "$uri" write 1M 32 no >/dev/null
  reshape_report="$($PY - "$tmp/ctl" "$uri" "${m[4]}" "${m[5]}" "$RUNTIME" "$FIO_SIZE" <<'EOF'
import json, socket, subprocess, sys, threading, time
ctl, uri, m4, m5, runtime, fio_size = sys.argv[1:]

def req(obj, timeout=900):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(ctl)
    s.sendall((json.dumps(obj) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1 << 16)
        if not c:
            break
        buf += c
    s.close()
    r = json.loads(buf)
    if not r.get("ok"):
        raise RuntimeError("%s: %s" % (obj["op"], r.get("message", r)))
    return r

def fio_seqread():
    out = subprocess.run(
        ["fio", "--name=fg", "--ioengine=nbd", "--uri=" + uri, "--rw=read", "--bs=1M",
         "--iodepth=32", "--size=" + fio_size, "--time_based", "--runtime=" + runtime,
         "--output-format=json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])["jobs"][0]["read"]["bw_bytes"]

def reshape(member):
    plan = req({"op": "reshape", "id": 1, "add": [member]})
    total = plan["reshape"]["total"]
    req({"op": "start", "id": 2})
    return total

lines = []
try:
    # Unloaded: 4 -> 5 members.
    t0 = time.monotonic()
    total = reshape(m4)
    req({"op": "wait", "id": 3, "timeout": 600})
    dt = time.monotonic() - t0
    lines.append("reshape 4->5 members, idle:       %7.1f MB/s (%d MB in %.1f s)"
                 % (total / dt / 1e6, total >> 20, dt))
    # Loaded: 5 -> 6 members under a sequential reader.
    fg_before = fio_seqread()
    samples = []
    stop = threading.Event()
    def poll():
        while not stop.is_set():
            st = req({"op": "status", "id": 4})
            pos = (st.get("reshape") or {}).get("position")
            samples.append((time.monotonic(), pos, st["sync_action"]))
            if st["sync_action"] != "reshape":
                return
            time.sleep(0.2)
    total = reshape(m5)
    t0 = time.monotonic()
    th = threading.Thread(target=poll)
    th.start()
    fg_during = fio_seqread()
    t1 = time.monotonic()
    stop.set()
    th.join()
    during = [s for s in samples if s[1] is not None and s[0] <= t1]
    ended = [s for s in samples if s[2] != "reshape"]
    if ended and ended[0][0] <= t1:
        moved, span = total, ended[0][0] - t0
        note = "finished %.1f s into the %s s window" % (span, runtime)
    else:
        moved, span = (during[-1][1] if during else 0), (during[-1][0] - t0 if during else 1)
        note = "%.0f%% done at the end of the window" % (100.0 * moved / total)
    lines.append("reshape 5->6 members, under load: %7.1f MB/s (%s)"
                 % (moved / span / 1e6, note))
    lines.append("foreground seq read 1M QD32: %.1f MB/s during the reshape, %.1f MB/s "
                 "before it (%.2fx)" % (fg_during / 1e6, fg_before / 1e6, fg_during / fg_before))
    req({"op": "wait", "id": 5, "timeout": 600})
except Exception as e:
    lines.append("reshape: not measured: %s" % e)
print("\n".join(lines))
EOF
)"
  # The 5->6 reshape goes on after its window: stop it, or it runs (a CPU
  # and tmpfs's bandwidth) under net.sh and slow.sh.
  stop "$srv_pid"
else
  reshape_report="reshape: not measured: $(tail -n 1 "$tmp/create.log")"
fi
echo "$reshape_report" | sed 's/^/  /' >&2

# Members on other hosts: bench/net.sh (its own servers, on the same tmpfs).
net_report="not measured (NET=0)"
if [ "${NET:-1}" = 1 ]; then
  net_report="$(PLUGIN="$PLUGIN" NBDRAID="$NBDRAID" BENCH_DIR="$BENCH_DIR" \
    DELAY="${NET_DELAY:-10}" bash "$srcdir/bench/net.sh")" || net_report="not measured: bench/net.sh failed"
fi

# Slow and far members: bench/slow.sh (its own servers and sizes: this
# script's FIO_SIZE and MEMBER_SIZE are not passed on).
slow_report="not measured (SLOW=0)"
if [ "${SLOW:-1}" = 1 ]; then
  slow_report="$(env -u FIO_SIZE -u MEMBER_SIZE PLUGIN="$PLUGIN" NBDRAID="$NBDRAID" \
    BENCH_DIR="$BENCH_DIR" DELAY="${SLOW_DELAY:-1}" bash "$srcdir/bench/slow.sh")" ||
    slow_report="not measured: bench/slow.sh failed"
fi

# Table.
{
  echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) CPUs), $(uname -r)"
  echo "nbdkit $(nbdkit --version | awk '{print $2}'), fio $(fio --version), storage tmpfs"
  echo "member size $MEMBER_SIZE, fio region $FIO_SIZE, ${RUNTIME}s per case + 1s ramp, best of $REPS"
  echo "RAID5 chunk 64K, left-symmetric, consistency journal (the default); baseline: nbdkit file"
  echo
  printf '| %-22s | %12s | %12s | %6s | %12s | %6s | %8s | %-6s |\n' \
    case "file MB/s" "raid5x5 MB/s" ratio "raid5x4 MB/s" ratio target raid5x5
  printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..24})" "$(printf -- '-%.0s' {1..14})" \
    "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..14})" \
    "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..8})"
  # The targets of RAID5 of 5 against `nbdkit file` (as ratios in one run).
  declare -A target=(
    ["write 1M 32"]=0.95 ["read 1M 32"]=1.0 ["randread 4k 1"]=- ["randread 4k 32"]=0.95
    ["randwrite 4k 1"]=- ["randwrite 4k 32"]=0.6 [degraded]=0.9)
  row ()
  {
    local name="$1" key="$2" basekey="$3" b5 b4 bb
    bb="$(awk '{print $1}' <<<"${R["base,$basekey"]}")"
    [ "$key" != degraded ] || bb="$(awk '{print $1}' <<<"${R["base,degraded"]}")"
    b5="$(awk '{print $1}' <<<"${R["raid5x5,$key"]}")"
    b4="$(awk '{print $1}' <<<"${R["raid5x4,$key"]}")"
    awk -v n="$name" -v bb="$bb" -v b5="$b5" -v b4="$b4" -v t="${target[$key]}" \
      'BEGIN { r = b5 / bb; printf "| %-22s | %12.1f | %12.1f | %5.2fx | %12.1f | %5.2fx | %8s | %-6s |\n",
               n, bb/1e6, b5/1e6, r, b4/1e6, b4/bb, (t == "-" ? "-" : ">= " t "x"),
               (t == "-" ? "" : (r + 0.005 >= t ? "met" : "MISSED")) }'
  }
  row "seq write 1M QD32" "write 1M 32" "write 1M 32"
  row "seq read 1M QD32" "read 1M 32" "read 1M 32"
  row "4K randread QD1" "randread 4k 1" "randread 4k 1"
  row "4K randread QD32" "randread 4k 32" "randread 4k 32"
  row "4K randwrite QD1" "randwrite 4k 1" "randwrite 4k 1"
  row "4K randwrite QD32" "randwrite 4k 32" "randwrite 4k 32"
  row "degraded seq read QD32" degraded "read 1M 32"
  echo
  echo "4K IOPS (file / raid5x5 / raid5x4):"
  for c in "randread 4k 1" "randread 4k 32" "randwrite 4k 1" "randwrite 4k 32"; do
    printf '  %-16s %8s %8s %8s\n' "$c" "$(awk '{print $2}' <<<"${R["base,$c"]}")" \
      "$(awk '{print $2}' <<<"${R["raid5x5,$c"]}")" "$(awk '{print $2}' <<<"${R["raid5x4,$c"]}")"
  done
  echo
  echo "isa-l raw parity rate (data bytes/s, 64K buffers, one thread):"
  printf '%s\n' "$parity" | sed 's/^/  /'
  echo
  echo "Reshape (RAID5, chunk 64K, members of $RESHAPE_MEMBER_SIZE, filled):"
  printf '%s\n' "$reshape_report" | sed 's/^/  /'
  echo
  echo "Consistency policies (RAID5 of 5; MB/s, and the ratio to the file baseline;"
  echo "target: the journal (the default) costs at most 10% against bitmap on full"
  echo "stripes and 25% on 4K random writes at QD32):"
  printf '  %-18s %16s %16s %16s   %s\n' case journal bitmap resync "journal/bitmap"
  declare -A pol_target=(["write 1M 32"]=0.9 ["randwrite 4k 1"]=- ["randwrite 4k 32"]=0.75)
  for c in "${POLICY_CASES[@]}"; do
    bb="$(awk '{print $1}' <<<"${R["base,$c"]}")"
    j="$(awk '{print $1}' <<<"${R["pol-journal,$c"]}")"
    bm="$(awk '{print $1}' <<<"${R["pol-bitmap,$c"]}")"
    rs="$(awk '{print $1}' <<<"${R["pol-resync,$c"]}")"
    awk -v c="$c" -v bb="$bb" -v j="$j" -v bm="$bm" -v rs="$rs" -v t="${pol_target[$c]}" 'BEGIN {
      printf "  %-18s %8.1f (%4.2fx) %8.1f (%4.2fx) %8.1f (%4.2fx)   %4.2fx%s\n",
             c, j/1e6, j/bb, bm/1e6, bm/bb, rs/1e6, rs/bb, j/bm,
             (t == "-" ? "" : (j/bm + 0.005 >= t ? "  (>= " t "x: met)" : "  (>= " t "x: MISSED)")) }'
  done
  echo
  echo "The floor of a 4K random write (bench/floor.c: only the member system calls"
  echo "of a RAID5 read-modify-write, no locks and no journal logic; MB/s, the ratio"
  echo "to the file baseline, and the array's policy as a share of its floor):"
  for c in "randwrite 4k 1" "randwrite 4k 32"; do
    for pol in journal bitmap; do
      bb="$(awk '{print $1}' <<<"${R["base,$c"]}")"
      fl="$(awk '{print $1}' <<<"${R["pol-floor-$pol,$c"]}")"
      ar="$(awk '{print $1}' <<<"${R["pol-$pol,$c"]}")"
      awk -v c="$c" -v p="$pol" -v bb="$bb" -v fl="$fl" -v ar="$ar" -v k="$([ $pol = journal ] && echo 5 || echo 4)" 'BEGIN {
        printf "  %-16s %-8s floor (%d member calls) %8.1f (%4.2fx)   array %4.2f of it\n",
               c, p, k, fl/1e6, fl/bb, ar/fl }'
    done
  done
  echo
  echo "Members on other hosts (bench/net.sh, latency):"
  printf '%s\n' "$net_report" | sed 's/^/  /'
  echo
  echo "Slow and far members (bench/slow.sh, throughput):"
  printf '%s\n' "$slow_report" | sed 's/^/  /'
}
