#!/usr/bin/env bash
# nbdkit-raid: a member host dies and a new one replaces it, over NBD.
#
# A RAID5 of four NBD members (each a separate `nbdkit file` server, as a
# member on another host would be) is filled through nbdcopy.  One member
# server is killed: reads still return every byte (reconstructed), status
# says degraded with that member away.  A fifth member server is added
# over the control socket: once the member timeout (2 s here) has passed,
# the dead member is written off and recovery rebuilds onto the new one;
# status returns to optimal with the new member in its role.  Then a second original member
# server is killed: every byte still reads back, which only works if the
# rebuilt member holds the right data.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-e2e-rebuild-nbd "$@"
requires nbdcopy

for i in 0 1 2 3 4; do
  truncate -s 64M "$tmp/f$i"
  start_nbdkit "member$i" file "$tmp/f$i"
done
mu () { echo "nbd+unix:///?socket=$tmp/member$1.sock"; }

create_array --level=5 --data-offset=4M "$(mu 0)" "$(mu 1)" "$(mu 2)" "$(mu 3)"
start_raid raid "$(mu 0)" "$(mu 1)" "$(mu 2)" "$(mu 3)" control="$tmp/ctl" member-timeout=2
size=$(nbdinfo --size "$uri")
head -c "$size" /dev/urandom > "$tmp/src"
expect_run "fill" nbdcopy "$tmp/src" "$uri"

kill -9 "${pid_of[member2]}"
expect_run "degraded read" nbdcopy "$uri" "$tmp/out1"
expect_run "degraded read: same bytes" cmp "$tmp/src" "$tmp/out1"
expect_eq "health after the member host died" degraded "$(status_get "$tmp/ctl" health)"

expect_run "add a new member host" "$NBDRAID" -C "$tmp/ctl" add "$(mu 4)"
expect_run "wait for recovery" "$NBDRAID" -C "$tmp/ctl" wait --timeout=120
expect_eq "health after recovery" optimal "$(status_get "$tmp/ctl" health)"
"$NBDRAID" -C "$tmp/ctl" status --json > "$tmp/st.json"
expect_eq "new member took role 2" "2 in_sync" "$($PYTHON -c "
import json, sys
d = json.load(open(sys.argv[1]))
m = [x for x in d['members'] if x['spec'] == sys.argv[2]][0]
print(m['role'], m['state'])" "$tmp/st.json" "$(mu 4)")"

kill -9 "${pid_of[member3]}"
expect_run "read with another original member dead" nbdcopy "$uri" "$tmp/out2"
expect_run "the rebuilt member carries its data" cmp "$tmp/src" "$tmp/out2"
finish
