#!/usr/bin/env bash
# nbdkit-raid: the member images, judged by the real Linux md driver.
#
# Theory.  An array's member area, read from its data offset, must hold
# exactly the bytes Linux md would hold for the same level, layout, chunk
# size and member order (nbdkit-raid-plugin(1), DESCRIPTION).  Our own
# checker (tests/raidcheck.py) re-derives md's rules; this test asks md
# itself.
#
# For each scenario the host creates an array with `nbdraid create` on
# sparse files, serves it with a control socket, fills the whole export
# with seeded random data and adds unaligned writes; reshape scenarios then
# run one or more live reshapes through `nbdraid -C CTL reshape ... --start
# --wait`, slowed down (speed-max) while a writer keeps writing at random
# places, followed by more unaligned writes (also into any grown tail).
# The export is copied out (nbdcopy) and its sha256 recorded, the server
# stopped, and `nbdraid examine --json` gives the final geometry: level,
# layout, chunk, raid devices, component size, and each role's member and
# data offset (which a reshape moves).  Spares a shrink left are not used.
#
# One QEMU guest (TCG, scripts/guest-image.sh, md-init.sh as its script)
# gets every scenario's role members as virtio-scsi disks (snapshot=on: the
# guest's writes, md superblocks included, never reach the files) and, for
# each array: mdadm --create --assume-clean with that geometry (md's
# component size: the rows the export uses, which after a reshape that
# moved the data offset back is less than what the members hold behind
# it); sha256 of the first export-size bytes of /dev/md0 must equal the
# host's; md's size must be those rows x data members; `check` in
# md/sync_action must find mismatch_cnt 0 (md recomputes P and Q of every
# row; raid1 compares the mirrors).  One scenario then resizes the export
# over all the rows the members hold after such a reshape: md's check
# covers those rows too.
#
# Negative control: one array's role-0 member gets a byte inverted in its
# data area, inside the guest, and is assembled again: the sha256 must
# differ and md's check must count mismatches -- the comparison can fail.
#
# A disagreement is a placement or parity bug in nbdkit-raid for that
# level/layout/reshape (investigate with tests/raidcheck.py map/verify on
# the kept members: E2E_KEEP=1).

set -euo pipefail
source "$(dirname "$0")/lib.sh"
clients_init test-md-driver "$@"
requires "$QEMU"
requires nbdcopy
requires nbdinfo
requires busybox

# Member files: the default 16M data offset (12M of it head room for
# reshapes) plus an 8M data area.
MSIZE=24M
# Reshape speed while the writer runs (bytes/s): a few seconds each.
RESHAPE_SPEED=8M

guest_image
guest_probe

# ---- host-side I/O helper (libnbd) ---------------------------------------------
cat >"$tmp/mdio.py" <<'PY'
# mdio.py fill URI SEED | scatter URI SEED COUNT [LO] | writer URI SEED STOPFILE
#       | geom EXAMINE-JSON
import json, os, random, sys, time

def connect(uri):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    return h

def fill(uri, seed):
    h = connect(uri)
    size = h.get_size()
    rng = random.Random(int(seed))
    off = 0
    while off < size:
        n = min(1 << 20, size - off)
        h.pwrite(rng.randbytes(n), off)
        off += n
    h.flush()
    h.shutdown()

def scatter(uri, seed, count, lo=0):
    h = connect(uri)
    size = h.get_size()
    lo = int(lo)
    rng = random.Random(int(seed))
    for _ in range(int(count)):
        n = rng.randint(1, 200000)
        off = rng.randrange(lo, size)
        n = min(n, size - off)
        h.pwrite(rng.randbytes(n), off)
    h.flush()
    h.shutdown()

def writer(uri, seed, stopfile):
    h = connect(uri)
    size = h.get_size()
    rng = random.Random(int(seed))
    k = 0
    while not os.path.exists(stopfile) and k < 100000:
        n = rng.choice([512, 4096, 65536, rng.randint(1, 300000)])
        off = rng.randrange(0, size)
        n = min(n, size - off)
        h.pwrite(rng.randbytes(n), off)
        k += 1
        if k % 64 == 0:
            h.flush()
    h.flush()
    h.shutdown()
    print(k)

# The md geometry of finished examine output, for md-init.sh:
#   line 1: LEVEL LAYOUT CHUNK_K N COMP_K DATA_DISKS ARRAY_SIZE
#   then N lines, role order: INDEX-OF-MEMBER-FILE DATA_OFFSET_K
def geom(path):
    doc = json.load(open(path))
    ms = doc["members"]
    bad = [m["spec"] for m in ms if m.get("superblock") != "valid"]
    if bad:
        sys.exit("no valid superblock on %s" % bad)
    newest = max(ms, key=lambda m: m["events"])
    if newest["reshape"] is not None:
        sys.exit("reshape not finished: %s" % newest["reshape"])
    if newest["resync_offset"] is not None or newest["state"] != "clean":
        sys.exit("not clean/in sync: %s %s" % (newest["state"], newest["resync_offset"]))
    n = newest["raid_devices"]
    level = newest["level"]
    layout = newest["layout"]
    if level in (0, 1) or layout in (None, "none") or level == 4:
        layout = "-"
    for k in ("chunk", "component_size", "data_offset"):
        if newest[k] % 1024:
            sys.exit("%s %d is not whole KiB" % (k, newest[k]))
    print(level, layout, newest["chunk"] // 1024, n,
          newest["component_size"] // 1024, newest["data_disks"], newest["array_size"])
    roles = {}
    for i, m in enumerate(ms):
        if m["events"] != newest["events"]:
            sys.exit("%s: events %d, newest %d" % (m["spec"], m["events"], newest["events"]))
        r = m["role"]
        if r is None or r < 0 or r >= n:
            continue            # a spare
        if m["member_state"] != "in_sync":
            sys.exit("%s: role %d is %s" % (m["spec"], r, m["member_state"]))
        me = [t for t in m["members"] if t.get("this")]
        if len(me) != 1:
            sys.exit("%s: no entry for itself in its member table" % m["spec"])
        me = me[0]
        if me["data_offset"] != me["new_data_offset"]:
            sys.exit("%s: data offset %d, new %d" % (m["spec"], me["data_offset"], me["new_data_offset"]))
        if r in roles:
            sys.exit("role %d twice" % r)
        roles[r] = (i, me["data_offset"])
    if sorted(roles) != list(range(n)):
        sys.exit("roles %s, want 0..%d" % (sorted(roles), n - 1))
    for r in range(n):
        i, off = roles[r]
        if off % 1024:
            sys.exit("role %d data offset %d is not whole KiB" % (r, off))
        print(i, off // 1024)

cmd = sys.argv[1]
{"fill": fill, "scatter": scatter, "writer": writer, "geom": geom}[cmd](*sys.argv[2:])
PY
mdio () { $PYTHON "$tmp/mdio.py" "$@"; }

# ---- the scenarios, on the host -------------------------------------------------
ov="$tmp/overlay"
mkdir -p "$ov/guest"
: >"$ov/guest/arrays"
disk_args=()
ndisk=0
declare -A want_sha=() want_mdsize=() scen_line=()
scenarios=()

# do_reshape D CTL ARGS...: one live reshape with a writer running.
do_reshape ()
{
  local d="$1" ctl="$2" wpid rc=0 n; shift 2
  expect_run "$label: set speed" "$NBDRAID" -C "$ctl" set speed-min=1M speed-max="$RESHAPE_SPEED"
  rm -f "$d/stop"
  mdio writer "$uri" "$((seed + 7))" "$d/stop" >"$d/writer.out" 2>&1 &
  wpid=$!
  bg_pids+=("$wpid")
  sleep 0.3
  if timeout 240 "$NBDRAID" -C "$ctl" reshape "$@" --start --wait >"$d/reshape.out" 2>&1; then ok; else
    fail "$label: nbdraid reshape $*"; sed 's/^/    /' "$d/reshape.out" >&2
  fi
  touch "$d/stop"
  wait "$wpid" || rc=$?
  n="$(tail -n 1 "$d/writer.out")"
  if [ "$rc" -eq 0 ]; then ok; else fail "$label: writer during reshape exited $rc"; cat "$d/writer.out" >&2; fi
  echo "$test_name: $label: reshape $* (with $n writes during it)"
}

# scenario LABEL "CREATE ARGS" NMEMBERS NEXTRA [STEP]...
# STEP: "reshape ARGS" (@X0@, @X1@ ... name the extra files) or
# "resize-max" (resize the export to component size x data members) or
# "resize-for ARGS" (resize the export to what the refusal of
# `reshape ARGS` names, as nbdraid(8) says).
scenario ()
{
  local cargs="$2" n="$3" nx="$4" i s size0 size1 nd
  label="$1"
  shift 4
  local d="$tmp/$label"
  mkdir "$d"
  seed=$(( ${#scenarios[@]} * 1000 + 1 ))
  local -a members=() files=()
  for ((i = 0; i < n; i++)); do members+=("$d/m$i"); done
  # shellcheck disable=SC2086
  if ! create_array $cargs --size="$MSIZE" "${members[@]}"; then
    fail "$label: create"; return 0
  fi
  files=("${members[@]}")
  for ((i = 0; i < nx; i++)); do truncate -s "$MSIZE" "$d/x$i"; files+=("$d/x$i"); done
  if ! start_raid "$label" "${members[@]}" control="$d/ctl"; then
    fail "$label: server did not start"; return 0
  fi
  ok
  expect_run "$label: fill" mdio fill "$uri" "$seed"
  expect_run "$label: unaligned writes" mdio scatter "$uri" "$((seed + 1))" 40
  for s in "$@"; do
    s="${s//@X/$d/x}"; s="${s//@/}"
    size0="$(nbd_size "$uri")"
    case "$s" in
      reshape\ *)
        # shellcheck disable=SC2086
        do_reshape "$d" "$d/ctl" ${s#reshape }
        size1="$(nbd_size "$uri")"
        # more writes in the new layout, some of them in a grown tail
        expect_run "$label: writes after reshape" mdio scatter "$uri" "$((seed + 2))" 30
        if [ "$size1" -gt "$size0" ]; then
          expect_run "$label: writes in the grown tail" mdio scatter "$uri" "$((seed + 3))" 20 "$size0"
        fi
        ;;
      resize-for\ *)
        # the documented workflow: the refused reshape names the size
        # shellcheck disable=SC2086
        if "$NBDRAID" -C "$d/ctl" reshape ${s#resize-for } >"$d/refusal" 2>&1; then
          fail "$label: reshape ${s#resize-for } was not refused before the resize"
        fi
        nd="$(sed -n 's/.*resize it to at most \([0-9]*\).*/\1/p' "$d/refusal")"
        if [ -n "$nd" ]; then ok; else
          fail "$label: the refusal names no size:"; sed 's/^/    /' "$d/refusal" >&2; nd="$size0"
        fi
        expect_run "$label: resize" "$NBDRAID" -C "$d/ctl" resize --force "$nd"
        ;;
      resize-max)
        # all the rows the members now hold (a reshape that moved the
        # data offset back left more than the array uses)
        examine "$d/ex0.json" "${members[@]}" "${files[@]:n}" || true
        nd="$(( $($PYTHON "$testsdir/e2e_common.py" record-field "$d/ex0.json" component_size) *
                $($PYTHON "$testsdir/e2e_common.py" record-field "$d/ex0.json" data_disks) ))"
        expect_run "$label: resize to $nd" "$NBDRAID" -C "$d/ctl" resize "$nd"
        expect_run "$label: wait after the resize" "$NBDRAID" -C "$d/ctl" wait --timeout=120
        ;;
      *) fail "$label: unknown step '$s'" ;;
    esac
  done
  size1="$(nbd_size "$uri")"
  expect_run "$label: nbdcopy the export out" nbdcopy "$uri" "$d/export.img"
  want_sha[$label]="$(sha256sum "$d/export.img" | cut -d' ' -f1)"
  rm -f "$d/export.img"
  stop_nbdkit "$label"

  # the final geometry, and the members in role order
  if ! examine "$d/ex.json" "${files[@]}"; then fail "$label: examine"; return 0; fi
  if ! mdio geom "$d/ex.json" >"$d/geom" 2>"$d/geom.err"; then
    fail "$label: final geometry: $(cat "$d/geom.err")"; return 0
  fi
  ok
  local level layout chunk rd comp_k ddisks asize line idx off rows_k
  read -r level layout chunk rd comp_k ddisks asize <"$d/geom"
  expect_eq "$label: examine array_size is the export size" "$size1" "$asize"
  # md's component: the rows the array uses (a reshape that moved the
  # data offset back leaves more behind the data offset than the array
  # uses; md would not have grown into that space either)
  rows_k=$(( (size1 + ddisks * chunk * 1024 - 1) / (ddisks * chunk * 1024) * chunk ))
  if [ "$rows_k" -gt "$comp_k" ]; then
    fail "$label: the export ($size1) is larger than $ddisks x the component (${comp_k}K)"
    rows_k="$comp_k"
  fi
  want_mdsize[$label]=$((rows_k * 1024 * ddisks))
  line="$label $level $layout $chunk $rd $rows_k $size1"
  while read -r idx off; do
    disk_args+=(-drive "file=${files[$idx]},format=raw,if=none,id=d$ndisk,snapshot=on,cache=unsafe"
                -device "scsi-hd,drive=d$ndisk,bus=scsi0.0,channel=0,scsi-id=$ndisk,lun=0")
    line="$line $ndisk:$off"
    ndisk=$((ndisk + 1))
  done < <(tail -n +2 "$d/geom")
  echo "A $line" >>"$ov/guest/arrays"
  scen_line[$label]="$line"
  scenarios+=("$label")
  echo "$test_name: $label: raid$level $layout chunk ${chunk}K, $rd devices, export $size1 bytes, component ${comp_k}K, md ${want_mdsize[$label]}"
}

t_host="$(now)"
# Created, no reshape: every layout md has for the level.
for lay in left-symmetric left-asymmetric right-symmetric right-asymmetric parity-first parity-last; do
  scenario "r5-$lay" "--level=5 --layout=$lay" 4 0
done
scenario r4 "--level=4" 4 0
for lay in left-symmetric left-asymmetric right-symmetric right-asymmetric parity-first parity-last \
           left-symmetric-6 right-asymmetric-6 parity-first-6; do
  scenario "r6-$lay" "--level=6 --layout=$lay" 5 0
done
scenario r6-4K "--level=6 --chunk=4K" 4 0
scenario r0 "--level=0 --chunk=32K" 3 0
scenario r1 "--level=1" 2 0

# Live reshapes.
scenario grow-5 "--level=5" 4 1 "reshape --add=@X0@"
scenario chunk-128K "--level=5" 4 0 "reshape --chunk=128K"
scenario chunk-32K "--level=5" 4 0 "reshape --chunk=32K"
scenario layout-ra "--level=5" 4 0 "reshape --layout=right-asymmetric"
scenario layout-pf "--level=5 --layout=right-symmetric" 4 0 "reshape --layout=parity-first"
scenario r5-to-r4 "--level=5" 4 0 "reshape --level=4"
scenario r4-to-r5 "--level=4" 4 0 "reshape --level=5"
scenario r5-to-r6 "--level=5" 4 1 "reshape --level=6 --add=@X0@"
scenario r6-to-r5 "--level=6" 6 0 "reshape --level=5 --raid-devices=5"
scenario r6-grow "--level=6 --chunk=32K" 5 1 "reshape --add=@X0@"
# No room on the members (the smallest data offset, no tail): the shrink
# needs the resize its refusal names first (with room it needs none).
scenario shrink-4 "--level=5 --data-offset=4M" 5 0 "resize-for --raid-devices=4" "reshape --raid-devices=4"
scenario r0-to-r5 "--level=0" 3 1 "reshape --level=5 --add=@X0@"
scenario r1-to-r5 "--level=1" 2 0 "reshape --level=5"
# The space such a reshape leaves behind the moved data offset, taken into
# the array by a resize: every row must be consistent there too (md
# resyncs the rows a grow adds).
scenario r5-to-r6-resize "--level=5" 4 1 "reshape --level=6 --add=@X0@" resize-max
# Several in a row: the data offset moves each time.
scenario chain "--level=5 --chunk=32K" 4 2 \
  "reshape --add=@X0@" "reshape --chunk=64K" "reshape --layout=left-asymmetric" \
  "reshape --level=6 --add=@X1@" "reshape --level=5 --raid-devices=5"
echo "$test_name: host side of ${#scenarios[@]} scenarios, $ndisk disks: $(elapsed "$t_host") s"

# Negative control: the left-symmetric raid5 again, with one data byte of
# role 0 inverted (row 0 of role 0 holds data chunk 0: array byte 4099).
neg="r5-left-symmetric"
read -r _ _ _ _ _ _ _ first_disk _ <<<"${scen_line[$neg]}"
neg_id="${first_disk%%:*}"
neg_off="$(( ${first_disk#*:} * 1024 + 4099 ))"
echo "FLIP $neg_id $neg_off" >>"$ov/guest/arrays"
echo "A $neg-neg ${scen_line[$neg]#* }" >>"$ov/guest/arrays"

# ---- the guest -------------------------------------------------------------------
install -m 755 "$clients_dir/md-init.sh" "$ov/guest/init.sh"
echo "NDISK=$ndisk" >"$ov/guest/params"
run_guest md "$ov" 480 -device virtio-scsi-pci,id=scsi0 "${disk_args[@]}"
guest_results md

# ---- what md said ------------------------------------------------------------------
r="$tmp/md.results.txt"
touch "$r"
md_field () { awk -v k="$1" -v n="$2" '$1 == k && $2 == n { print $3; exit }' "$r"; }
for s in "${scenarios[@]}"; do
  expect_eq "$s: md's sha256 of the array equals the export's" "${want_sha[$s]}" \
    "$(awk -v n="$s" '$1 == "SUM" && $3 == n { print $2; exit }' "$r")"
  expect_eq "$s: md's array size" "${want_mdsize[$s]}" "$(md_field MDSIZE "$s")"
  case "${scen_line[$s]}" in
    "$s 0 "*) ;;
    *) expect_eq "$s: md check mismatch_cnt" 0 "$(md_field MISMATCH "$s")" ;;
  esac
done
got="$(awk -v n="$neg-neg" '$1 == "SUM" && $3 == n { print $2; exit }' "$r")"
if [ -n "$got" ] && [ "$got" != "${want_sha[$neg]}" ]; then ok; else
  fail "negative control: sha256 of the damaged array '$got' should differ from '${want_sha[$neg]}'"
fi
got="$(md_field MISMATCH "$neg-neg")"
if [ -n "$got" ] && [ "$got" -gt 0 ]; then ok; else
  fail "negative control: md check of the damaged array counted '$got' mismatches, want > 0"
fi
echo "$test_name: negative control: md counted $got mismatched sectors"

echo "$test_name: ${#scenarios[@]} arrays checked by md; guest boot $guest_boot_time s, guest run $guest_run_time s"
clients_finish
