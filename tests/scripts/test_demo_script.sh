#!/usr/bin/env bash
# scripts/demo.sh (what `make demo` runs) forwards its arguments to
# `dbpool demo`, and its last line names the report it wrote. With an
# --output of the caller's, that line must name the caller's file, not
# out/demo.json (which it did not write, and which may hold an older
# report). With --help it prints the help and claims no report.
#
# The script runs in a scratch copy of the tree, with stand-ins for what it
# installs and builds (scripts/install-deps.sh, cmake) and the command
# already built, so the test takes no packages and no build.
#
#   test_demo_script.sh SOURCE_DIR DBPOOL_CLI
set -euo pipefail
src=$1
cli=$2
tmp=$(mktemp -d /tmp/dbpool-demotest-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

tree=$tmp/tree
mkdir -p "$tree/scripts" "$tree/data" "$tree/build/release" "$tmp/bin"
cp "$src/scripts/demo.sh" "$tree/scripts/"
cp "$src/data/sample_input.txt" "$tree/data/"
printf '#!/bin/sh\nexit 0\n' >"$tree/scripts/install-deps.sh"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/cmake"
chmod +x "$tree/scripts/install-deps.sh" "$tmp/bin/cmake"
ln -s "$cli" "$tree/build/release/dbpool"
export PATH="$tmp/bin:$PATH"

# Without --output: out/demo.json, named so.
err=$("$tree/scripts/demo.sh" 2>&1 >/dev/null) || fail "demo.sh failed: $err"
[ -s "$tree/out/demo.json" ] || fail "out/demo.json was not written"
[ "$(tail -n 1 <<<"$err")" = "wrote out/demo.json" ] || fail "last line: $(tail -n 1 <<<"$err")"

# --output FILE and --output=FILE: that file, named so; out/demo.json is
# not written.
rm -rf "$tree/out"
for form in separate joined; do
  target=$tmp/elsewhere-$form.json
  if [ $form = separate ]; then
    err=$("$tree/scripts/demo.sh" --output "$target" 2>&1 >/dev/null) || fail "demo.sh failed: $err"
  else
    err=$("$tree/scripts/demo.sh" "--output=$target" 2>&1 >/dev/null) || fail "demo.sh failed: $err"
  fi
  [ -s "$target" ] || fail "--output ($form): $target was not written"
  [ "$(tail -n 1 <<<"$err")" = "wrote $target" ] ||
    fail "--output ($form): the last line names another file: $(tail -n 1 <<<"$err")"
  [ ! -e "$tree/out/demo.json" ] || fail "--output ($form): out/demo.json was written too"
done

# --help: the command's help, and no claim of a report (none is written).
rm -rf "$tree/out"
for flag in --help -h; do
  out=$("$tree/scripts/demo.sh" "$flag" 2>"$tmp/err") || fail "demo.sh $flag failed: $(cat "$tmp/err")"
  grep -q '^Usage: dbpool demo' <<<"$out" || fail "demo.sh $flag printed no help: $out"
  ! grep -q 'wrote' "$tmp/err" || fail "demo.sh $flag claims a report: $(cat "$tmp/err")"
  [ ! -e "$tree/out/demo.json" ] || fail "demo.sh $flag wrote out/demo.json"
done
echo "demo.sh names the report it wrote, and claims none for --help"
