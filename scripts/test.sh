#!/usr/bin/env bash
# The whole test suite (the README's second command): install dependencies,
# start throw-away PostgreSQL and MariaDB servers on free loopback ports,
# then build and run every test three times: a -Werror build, an
# ASan+UBSan build and a TSan build. Also checks formatting and runs the
# URL/redactor fuzzer for a bounded time. Exits non-zero on any failure.
#
# To use your own servers instead, export DBPOOL_TEST_PG_URL (and
# DBPOOL_TEST_PG_ADMIN_URL) and/or DBPOOL_TEST_MYSQL_URL (and
# DBPOOL_TEST_MYSQL_ADMIN_URL) before running; see docs/testing.md.
#
#   DBPOOL_TEST_BUILDS="normal asan tsan"   which builds to run (default all)
#   DBPOOL_FUZZ_SECONDS=60                  fuzzing time per target (0 = skip)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh test

work=$(mktemp -d /tmp/dbpool-servers-XXXXXX)
chmod 755 "$work"
started_pg=0
started_my=0
cleanup() {
  local rc=$?
  [ $started_pg = 1 ] && "$root/scripts/pg-server.sh" stop "$work" >/dev/null 2>&1 || true
  [ $started_my = 1 ] && "$root/scripts/mysql-server.sh" stop "$work" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM

# The servers take TLS too (a throw-away CA each): test_pg_tls and
# test_mysql_tls connect with it; the other tests keep their URLs (libpq's
# default sslmode=prefer encrypts them on PostgreSQL).
export DBPOOL_TEST_TLS=1
if [ -z "${DBPOOL_TEST_PG_URL:-}" ]; then
  echo "== starting PostgreSQL" >&2
  started_pg=1
  scripts/pg-server.sh start "$work" >/dev/null
  # shellcheck disable=SC1091
  source "$work/pg.env"
fi
if [ -z "${DBPOOL_TEST_MYSQL_URL:-}" ]; then
  echo "== starting MariaDB" >&2
  started_my=1
  scripts/mysql-server.sh start "$work" >/dev/null
  # shellcheck disable=SC1091
  source "$work/mysql.env"
fi
export DBPOOL_TEST_REQUIRE_SERVERS=1
# The restart and outage tests drive the servers through this directory.
# They check that its env file names the port under test, so with one
# server of your own they still run against the one started here (and
# skip for yours, unless you set DBPOOL_SERVER_DIR yourself: docs/testing.md).
if [ $started_pg = 1 ] && [ $started_my = 1 ]; then
  export DBPOOL_SERVER_DIR="$work"
elif [ $started_pg = 1 ] || [ $started_my = 1 ]; then
  export DBPOOL_SERVER_DIR="${DBPOOL_SERVER_DIR:-$work}"
fi

builds=${DBPOOL_TEST_BUILDS:-normal asan tsan}
for b in $builds; do
  case $b in
  normal) flags=(-DDBPOOL_WERROR=ON) ;;
  # The shared library is only used by test_install, which the sanitizer
  # builds do not run.
  asan) flags=(-DDBPOOL_WERROR=ON -DDBPOOL_SANITIZE=address,undefined -DDBPOOL_SHARED=OFF) ;;
  tsan) flags=(-DDBPOOL_WERROR=ON -DDBPOOL_SANITIZE=thread -DDBPOOL_SHARED=OFF) ;;
  *) echo "unknown build '$b'" >&2; exit 2 ;;
  esac
  echo "== build: $b" >&2
  cmake -S . -B "build/$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDBPOOL_BENCH=OFF "${flags[@]}" >/dev/null
  cmake --build "build/$b" -j"$(nproc)"
  # A test that died with a server stopped (a sanitizer abort skips its
  # clean-up) must not take the next build's tests down with it.
  [ $started_pg = 1 ] && scripts/pg-server.sh restart "$work" >/dev/null
  [ $started_my = 1 ] && scripts/mysql-server.sh restart "$work" >/dev/null
  echo "== tests: $b" >&2
  # Serial: the server tests kill backends and restart servers, which
  # must not hit a neighbour test's connections.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions='$root/tests/tsan.supp'" \
    ctest --test-dir "build/$b" --output-on-failure --timeout 300
done

if [ "${DBPOOL_FUZZ_SECONDS:-30}" != 0 ] && [ -x scripts/fuzz.sh ]; then
  echo "== fuzz" >&2
  scripts/fuzz.sh "${DBPOOL_FUZZ_SECONDS:-30}"
fi

# Not optional: without clang-format the check would be skipped in silence.
command -v clang-format >/dev/null || {
  echo "clang-format not found (scripts/install-deps.sh test installs it)" >&2
  exit 1
}
echo "== format check" >&2
git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run --Werror
echo "== all tests passed" >&2
