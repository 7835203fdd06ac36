#!/bin/sh
# The build a newcomer without libpq, Connector/C or libmicrohttpd gets
# (or a packager who turns them off): SQLite only. Configures everything
# (library, command, tests, benchmarks) with DBPOOL_WITH_PG, _MYSQL and
# _MICROHTTPD OFF and DBPOOL_WERROR=ON, with this build's compiler, and
# compiles every source (tests/install/compile_check.py): code for the server
# backends must be left out cleanly, not leave an unused function behind
# (test_alloc_failure's server scenarios once did, and -Werror stopped the
# build). Configures and checks only (nothing is built).
#
#   test_sqlite_only.sh SOURCE_DIR C_COMPILER
set -eu
src=$1
cc=$2
command -v python3 >/dev/null 2>&1 || {
  echo "skip: python3 is not installed" >&2
  exit 77
}
tmp=$(mktemp -d /tmp/dbpool-sqlite-only-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cmake -S "$src" -B "$tmp/build" -DCMAKE_C_COMPILER="$cc" -DDBPOOL_WERROR=ON -DDBPOOL_SHARED=OFF \
  -DDBPOOL_WITH_PG=OFF -DDBPOOL_WITH_MYSQL=OFF -DDBPOOL_WITH_MICROHTTPD=OFF \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$tmp/configure.log" 2>&1 || {
  cat "$tmp/configure.log" >&2
  fail "configure with the server backends and libmicrohttpd OFF"
}
grep -qF 'dbpool backends: sqlite mock pg=OFF mysql=OFF' "$tmp/configure.log" ||
  fail "not a SQLite-only configure: $(grep -o 'dbpool backends: .*' "$tmp/configure.log")"
python3 "$(dirname "$0")/compile_check.py" "$tmp/build/compile_commands.json" >"$tmp/compile.log" 2>&1 || {
  head -c 6000 "$tmp/compile.log" >&2
  fail "a SQLite-only build does not compile with DBPOOL_WERROR=ON"
}
echo "ok: SQLite only, $(tail -1 "$tmp/compile.log")"
