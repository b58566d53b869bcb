#!/bin/bash
# Quick start: install dependencies, build, create a demo RAID5 of 4 sparse
# 1 GiB members under /var/tmp/nbdkit-raid-demo, and serve it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
"$top/scripts/build.sh" "$top/build"
b=$top/build
demo=/var/tmp/nbdkit-raid-demo
mkdir -p "$demo"
if [ -f "$demo/pid" ] && kill "$(cat "$demo/pid")" 2>/dev/null; then sleep 1; fi
rm -f "$demo"/m? "$demo/nbd.sock" "$demo/control.sock" "$demo/pid"
"$b/nbdraid/nbdraid" create --level=5 --size=1G "$demo"/m0 "$demo"/m1 "$demo"/m2 "$demo"/m3 >/dev/null
nbdkit -U "$demo/nbd.sock" -P "$demo/pid" "$b/.libs/nbdkit-raid-plugin.so" \
  "$demo"/m0 "$demo"/m1 "$demo"/m2 "$demo"/m3 control="$demo/control.sock"
for _ in $(seq 50); do [ -S "$demo/nbd.sock" ] && break; sleep 0.1; done
echo "Serving a RAID5 of 4 members ($demo/m0..m3)."
echo "NBD URI: nbd+unix:///?socket=$demo/nbd.sock"
echo "Control socket: $demo/control.sock"
echo "Status:  $b/nbdraid/nbdraid -C $demo/control.sock status"
echo "Try:     nbdinfo 'nbd+unix:///?socket=$demo/nbd.sock'"
echo "Stop:    kill \$(cat $demo/pid)"
