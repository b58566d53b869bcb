#!/usr/bin/env bash
# nbdkit-raid: a member host dies and a new one replaces it, over NBD.
#
# A RAID5 of four NBD members (each a separate `nbdkit file` server, as a
# member on another host would be) is filled through nbdcopy.  One member
# server is killed; a read of one of its blocks finds it away (status:
# degraded).  A fifth member server is added over the control socket at
# once: while the away member's grace (member timeout, 3 s here) lasts, a
# `wait` of 0.5 s replies not settled although nothing runs yet (the
# recovery the array owes begins when the grace ends; a client that took
# "idle" for settled stopped waiting there).  Reads still return every
# byte (reconstructed).  `nbdraid wait` returns once the dead member has
# been written off and recovery rebuilt onto the new one: status is
# optimal with the new member in its role.  Then a second original member
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
start_raid raid "$(mu 0)" "$(mu 1)" "$(mu 2)" "$(mu 3)" control="$tmp/ctl" member-timeout=3
size=$(nbdinfo --size "$uri")
head -c "$size" /dev/urandom > "$tmp/src"
expect_run "fill" nbdcopy "$tmp/src" "$uri"

kill -9 "${pid_of[member2]}"
# Row 0's third chunk (array offset 128K) lies on role 2: reading it finds
# the member away.
expect_eq "read of the dead member's block" ok "$($PYTHON -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print('ok' if h.pread(4096, 131072) == open(sys.argv[2], 'rb').read()[131072:135168] else 'differs')
" "$uri" "$tmp/src")"
expect_eq "health after the member host died" degraded "$(status_get "$tmp/ctl" health)"

expect_run "add a new member host" "$NBDRAID" -C "$tmp/ctl" add "$(mu 4)"
expect_eq "wait during the grace: idle, not settled" "idle False missing" "$($PYTHON -c "
import sys; sys.path.insert(0, sys.argv[1])
from e2e_common import control_request
r = control_request(sys.argv[2], {'op': 'wait', 'timeout': 0.5})
m = [x for x in r['members'] if x['role'] == 2][0]
print(r['sync_action'], r.get('settled'), m['state'])" "$testsdir" "$tmp/ctl")"
expect_run "degraded read" nbdcopy "$uri" "$tmp/out1"
expect_run "degraded read: same bytes" cmp "$tmp/src" "$tmp/out1"
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
