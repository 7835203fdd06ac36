#!/bin/sh
# The stress tests of the lock-free paths once more in a build with
# -DDBPOOL_PERTURB=ON (docs/testing.md, "Schedule perturbation"): random
# spins, yields and sleeps inside the thread cache's windows and around the
# pool lock make the races they are after tens of times more frequent than
# in the normal build. Also keeps the marks compiling (-Werror). Configures
# a scratch build (mock backend only, debug invariants on) and builds the
# library and these tests alone.
#
#   test_perturb.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dbpool-perturb-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

tests="test_thread_cache_races test_handout_stress test_chaos_mock test_maint_stress test_refresh_mock"
cmake -S "$src" -B "$tmp/build" -DDBPOOL_PERTURB=ON -DDBPOOL_DEBUG_INVARIANTS=ON -DDBPOOL_WERROR=ON \
  -DDBPOOL_BENCH=OFF -DDBPOOL_SHARED=OFF -DDBPOOL_WITH_PG=OFF -DDBPOOL_WITH_MYSQL=OFF -DDBPOOL_WITH_MICROHTTPD=OFF \
  >"$tmp/configure.log" 2>&1 || {
  cat "$tmp/configure.log" >&2
  fail "configure with DBPOOL_PERTURB=ON"
}
# shellcheck disable=SC2086
cmake --build "$tmp/build" -j2 --target $tests >"$tmp/build.log" 2>&1 || {
  grep -m 20 -E 'error|warning' "$tmp/build.log" >&2 || tail -20 "$tmp/build.log" >&2
  fail "the perturbed build does not build"
}
for t in $tests; do
  "$tmp/build/tests/$t" >"$tmp/$t.log" 2>&1 || {
    cat "$tmp/$t.log" >&2
    fail "$t failed in the perturbed build"
  }
  echo "ok: $t (perturbed)"
done
