#!/bin/sh
# The library builds with the other compiler too, with DBPOOL_WERROR=ON:
# each flag in the warning set must be one that compiler knows (clang
# rejects GCC-only -W options under -Werror, and warns about them on every
# file without it), and no warning may appear that the first compiler did
# not give. Configures a scratch build of the library alone with the
# compiler this build does not use (clang for a GCC build, gcc for a clang
# one) and builds the static and the shared library; then the shared
# library once more with DBPOOL_SANITIZE=address,undefined; then checks
# that every source of the command, the tests and the benchmarks compiles
# with that compiler (tests/install/compile_check.py: the build's flags,
# unoptimised, objects thrown away).
#
#   test_other_compiler.sh SOURCE_DIR C_COMPILER_ID
set -eu
src=$1
case $2 in
Clang) other=gcc ;;
*) other=clang ;;
esac
command -v "$other" >/dev/null 2>&1 || {
  echo "skip: $other is not installed" >&2
  exit 77
}
tmp=$(mktemp -d /tmp/dbpool-compiler-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cmake -S "$src" -B "$tmp/build" -DCMAKE_C_COMPILER="$other" -DDBPOOL_WERROR=ON -DDBPOOL_TESTS=OFF \
  -DDBPOOL_BENCH=OFF -DDBPOOL_CLI=OFF >"$tmp/configure.log" 2>&1 || {
  cat "$tmp/configure.log" >&2
  fail "configure with $other"
}
cmake --build "$tmp/build" -j2 >"$tmp/build.log" 2>&1 || {
  grep -m 20 -E 'error|warning' "$tmp/build.log" >&2 || cat "$tmp/build.log" >&2
  fail "the library does not build with $other and DBPOOL_WERROR=ON"
}
! grep -q 'warning:' "$tmp/build.log" || {
  grep -m 20 'warning:' "$tmp/build.log" >&2
  fail "$other warns"
}

# With a sanitizer, the shared library links too (clang leaves the
# sanitizer runtime to the executable: its symbols are undefined in a
# shared library).
cmake -S "$src" -B "$tmp/san" -DCMAKE_C_COMPILER="$other" -DDBPOOL_SANITIZE=address,undefined \
  -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF -DDBPOOL_CLI=OFF >"$tmp/configure-san.log" 2>&1 || {
  cat "$tmp/configure-san.log" >&2
  fail "configure with $other and DBPOOL_SANITIZE=address,undefined"
}
cmake --build "$tmp/san" -j2 --target dbpool_shared >"$tmp/build-san.log" 2>&1 || {
  grep -m 10 -E 'error|undefined' "$tmp/build-san.log" >&2 || tail -20 "$tmp/build-san.log" >&2
  fail "libdbpool.so does not link with $other and DBPOOL_SANITIZE=address,undefined"
}

# The command, the tests and the benchmarks compile too (checked, not
# built: every source of a full configure compiled unoptimised to
# /dev/null, which takes seconds where a build would take minutes). A test once used a client
# library's macro that needs a header the test did not include: GCC keeps
# quiet about what a system header's macro expands to, clang fails the build.
if ! command -v python3 >/dev/null 2>&1; then
  echo "ok: the library builds with $other, -Werror, no warnings; and with sanitizers" \
    "(python3 missing: the command and the tests not checked)"
  exit 0
fi
cmake -S "$src" -B "$tmp/all" -DCMAKE_C_COMPILER="$other" -DDBPOOL_WERROR=ON -DDBPOOL_SHARED=OFF \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$tmp/configure-all.log" 2>&1 || {
  cat "$tmp/configure-all.log" >&2
  fail "configure of the command, the tests and the benchmarks with $other"
}
python3 "$(dirname "$0")/compile_check.py" "$tmp/all/compile_commands.json" >"$tmp/compile.log" 2>&1 || {
  head -c 6000 "$tmp/compile.log" >&2
  fail "the command, the tests or the benchmarks do not compile with $other and DBPOOL_WERROR=ON"
}
echo "ok: the library builds with $other, -Werror, no warnings; and with sanitizers;" \
  "$(tail -1 "$tmp/compile.log")"
