#!/usr/bin/env bash
# nbdkit-raid: what a release promises about itself.
#
# Proves: `nbdkit PLUGIN --help` and `--dump-plugin` name the same
# parameters, each with its default (raid_param_NAME=DEFAULT), and the
# plugin man page's PARAMETERS section documents every one of them.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-release "$@"
requires nbdkit
requires man

dump="$(nbdkit "$PLUGIN" --dump-plugin)"
help="$(nbdkit "$PLUGIN" --help | sed -n '/^plugin: raid/,$p')"
mapfile -t params < <(sed -n 's/^raid_param_\([^=]*\)=.*/\1/p' <<<"$dump")
expect_eq "--dump-plugin lists the parameters" \
  "member control reshape-autostart speed-min speed-max member-timeout force" "${params[*]}"

# The plugin man page as man renders it: generated in the build tree, or
# the source's.
manpage () {
  local f
  for f in "$abs_builddir/man/$1" "$abs_srcdir/man/$1"; do
    [ -f "$f" ] && { MANWIDTH=200 man -l "$f" 2>/dev/null | col -b; return; }
  done
  echo "missing man page $1" >&2
}
params_section="$(manpage nbdkit-raid-plugin.1 | sed -n '/^PARAMETERS/,/^[A-Z]/p')"

for p in "${params[@]}"; do
  dflt="$(sed -n "s/^raid_param_$p=//p" <<<"$dump")"
  [ -n "$dflt" ] && ok || fail "--dump-plugin: $p has no default"
  if grep -q -E "^\[?$p=" <<<"$help"; then ok; else fail "--help does not list $p="; fi
  line="$(grep -A2 -E "^\[?$p=" <<<"$help" | tr '\n' ' ')"
  if grep -q -E "\((default|required)" <<<"$line"; then ok
  else fail "--help: $p= without its default: $line"; fi
  if grep -q -E "(^|[[ ])$p=" <<<"$params_section"; then ok
  else fail "nbdkit-raid-plugin(1) PARAMETERS does not document $p="; fi
done
finish
