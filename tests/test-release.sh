#!/usr/bin/env bash
# nbdkit-raid: what a release promises about itself.
#
# Proves: one version, configure.ac's, everywhere: `nbdraid --version`
# (text and --json), the plugin's `--dump-plugin` (version= and
# raid_version=), the tarball's name (PACKAGE_VERSION, from make), the
# Debian package (debian/changelog) and every man page's footer, which
# also carries configure.ac's RELEASE_DATE.  `nbdkit PLUGIN --help` and
# `--dump-plugin` name the same parameters, each with its default
# (raid_param_NAME=DEFAULT), and the plugin man page's PARAMETERS section
# documents every one of them.

set -euo pipefail
source "$(dirname "$0")/functions.sh"
e2e_init test-release "$@"
requires nbdkit
requires man

dump="$(nbdkit_run "$PLUGIN" --dump-plugin)"

# ---- one version
v="$(sed -n 's/^AC_INIT(\[nbdkit-raid\], \[\([^]]*\)\].*/\1/p' "$abs_srcdir/configure.ac")"
date="$(sed -n 's/^AC_SUBST(\[RELEASE_DATE\], \[\([^]]*\)\].*/\1/p' "$abs_srcdir/configure.ac")"
[ -n "$v" ] && [ -n "$date" ] && ok || fail "no version or RELEASE_DATE in configure.ac"
expect_eq "PACKAGE_VERSION (the tarball's)" "$v" "${PACKAGE_VERSION:-unset}"
expect_eq "nbdraid --version" "nbdraid (nbdkit-raid) $v" "$("$NBDRAID" --version)"
expect_eq "nbdraid --version --json" "$v" \
  "$("$NBDRAID" --version --json | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["version"])')"
expect_eq "--dump-plugin version=" "$v" "$(sed -n 's/^version=//p' <<<"$dump")"
expect_eq "--dump-plugin raid_version=" "$v" "$(sed -n 's/^raid_version=//p' <<<"$dump")"
expect_eq "debian/changelog" "$v" \
  "$(sed -n '1s/^nbdkit-raid (\([^)]*\)).*/\1/p' "$abs_srcdir/debian/changelog")"
for page in nbdkit-raid-plugin.1 nbdraid.8 nbdkit-raid-control.7; do
  if [ -f "$abs_builddir/man/$page" ]; then
    expect_eq "man/$page: .TH release and date" "\"$date\" \"nbdkit-raid-$v\"" \
      "$(sed -n 's/^\.TH [^ ]* [0-9] \("[^"]*" "[^"]*"\).*/\1/p' "$abs_builddir/man/$page")"
  else
    fail "man/$page was not made"
  fi
done

help="$(nbdkit_run "$PLUGIN" --help | sed -n '/^plugin: raid/,$p')"
mapfile -t params < <(sed -n 's/^raid_param_\([^=]*\)=.*/\1/p' <<<"$dump")
expect_eq "--dump-plugin lists the parameters" \
  "member control reshape-autostart speed-min speed-max member-timeout force write-gather" "${params[*]}"

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
