#!/bin/sh
# The build a newcomer without libpq, Connector/C or libmicrohttpd gets
# (or a packager who turns them off): SQLite only. Configures everything
# (library, command, tests, benchmarks) with DBPOOL_WITH_PG, _MYSQL and
# _MICROHTTPD OFF and DBPOOL_WERROR=ON, with this build's compiler, and
# without backtrace() (DBPOOL_NO_EXECINFO=ON: musl has no <execinfo.h>), and
# compiles every source (tests/install/compile_check.py): code for the server
# backends must be left out cleanly, not leave an unused function behind
# (test_alloc_failure's server scenarios once did, and -Werror stopped the
# build). Then builds the command alone that way: --version lists sqlite
# alone, and given server URLs it must say what to install, and nothing
# misleading.
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
  -DDBPOOL_WITH_PG=OFF -DDBPOOL_WITH_MYSQL=OFF -DDBPOOL_WITH_MICROHTTPD=OFF -DDBPOOL_NO_EXECINFO=ON \
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

# The command of that build, given a server URL: one line that names the
# library and the package to install, exit status 1, no password, and no
# advice that does not apply (bench and stat said "cannot connect ...:
# check the URL and that the database is up", demo "check --db (run with
# --verbose ...)", for a URL nothing had been wrong with). An unoptimised
# build of the library and the command only.
cmake -S "$src" -B "$tmp/cli" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug -DDBPOOL_WERROR=ON \
  -DDBPOOL_SHARED=OFF -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF -DDBPOOL_WITH_PG=OFF -DDBPOOL_WITH_MYSQL=OFF \
  -DDBPOOL_WITH_MICROHTTPD=OFF >"$tmp/configure-cli.log" 2>&1 || {
  cat "$tmp/configure-cli.log" >&2
  fail "configure of the command with the server backends OFF"
}
cmake --build "$tmp/cli" -j2 --target dbpool_cli >"$tmp/build-cli.log" 2>&1 || {
  grep -m 20 -E 'error|warning' "$tmp/build-cli.log" >&2 || tail -20 "$tmp/build-cli.log" >&2
  fail "the command does not build with the server backends OFF"
}
dbpool=$tmp/cli/dbpool
# --version says what this build has.
version=$("$dbpool" --version) || fail "dbpool --version failed"
case $version in
"dbpool "*" (backends: sqlite; metrics-listen: no)") ;;
*) fail "dbpool --version of a SQLite-only build without libmicrohttpd: '$version'" ;;
esac
pg='postgresql://app:s3cretPW@127.0.0.1:1/app'
my='mysql://app:s3cretPW@127.0.0.1:1/app'
printf 'one\ntwo\n' >"$tmp/input.txt"
expect_unbuilt() { # LIBRARY PACKAGE ARGS...: dbpool ARGS names LIBRARY and PACKAGE, and nothing that misleads
  library=$1
  package=$2
  shift 2
  status=0
  "$dbpool" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
  what="dbpool $1 with a URL of a backend not built in"
  [ "$status" = 1 ] || fail "$what: exit status $status, not 1: $(cat "$tmp/err")"
  [ ! -s "$tmp/out" ] || fail "$what: wrote to stdout: $(cat "$tmp/out")"
  [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: not one line on stderr: $(cat "$tmp/err")"
  for text in "not compiled into this build" "$library" "$package" DBPOOL_EUNSUPPORTED; do
    grep -qF -- "$text" "$tmp/err" || fail "$what: the error does not say '$text': $(cat "$tmp/err")"
  done
  for text in s3cretPW "cannot connect" "database is up" "check --db" "--verbose"; do
    ! grep -qF -- "$text" "$tmp/err" || fail "$what: the error says '$text': $(cat "$tmp/err")"
  done
}
expect_unbuilt libpq libpq-dev bench "$pg" --duration 0.2
expect_unbuilt "MariaDB Connector/C" libmariadb-dev bench "$my" --duration 0.2
expect_unbuilt libpq libpq-dev stat "$pg" 1 1
expect_unbuilt "MariaDB Connector/C" libmariadb-dev stat "$my" 1 1
expect_unbuilt libpq libpq-dev demo --input "$tmp/input.txt" --output "$tmp/demo.json" --db "$pg"
expect_unbuilt "MariaDB Connector/C" libmariadb-dev demo --input "$tmp/input.txt" --output "$tmp/demo.json" \
  --db "$my"
# check answers in JSON: unhealthy, with the same error.
status=0
"$dbpool" check "$pg" >"$tmp/out" 2>"$tmp/err" || status=$?
[ "$status" = 1 ] || fail "dbpool check $pg: exit status $status, not 1"
if ! grep -qF '"error_code": "DBPOOL_EUNSUPPORTED"' "$tmp/out" || ! grep -qF libpq-dev "$tmp/out"; then
  fail "dbpool check with a PostgreSQL URL: $(cat "$tmp/out" "$tmp/err")"
fi
! grep -qF s3cretPW "$tmp/out" "$tmp/err" || fail "dbpool check showed the password"
# The SQLite demo works.
"$dbpool" demo --input "$tmp/input.txt" --output "$tmp/demo.json" >/dev/null 2>"$tmp/err" ||
  fail "dbpool demo on SQLite: $(cat "$tmp/err")"
grep -q '"rows_inserted": 2' "$tmp/demo.json" || fail "dbpool demo on SQLite: $(cat "$tmp/demo.json")"
echo "ok: SQLite only, $(tail -1 "$tmp/compile.log"); the command names what a server URL needs"
