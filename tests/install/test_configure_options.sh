#!/bin/sh
# The backend switches take CMake's spellings of on and off, in any case
# (-DDBPOOL_WITH_PG=off, =No, =FALSE, =0, ...), as the other options do:
# off leaves the backend out even when its client library is installed,
# on requires it. A value that is neither, nor AUTO, is a configure error,
# not a silent AUTO. Configures only (the library alone, nothing built).
#
#   test_configure_options.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d /tmp/dbpool-options-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

n=0
configure() { # LOG ARGS...: configure a fresh build with ARGS
  log=$1
  shift
  n=$((n + 1))
  cmake -S "$src" -B "$tmp/b$n" -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF -DDBPOOL_CLI=OFF "$@" >"$log" 2>&1
}
backends() { # LOG: the backends line of a configure
  grep -o 'dbpool backends: .*' "$1" || true
}

for v in off OFF No false 0 n Ignore; do
  configure "$tmp/log" -DDBPOOL_WITH_PG="$v" -DDBPOOL_WITH_MYSQL="$v" || {
    cat "$tmp/log" >&2
    fail "configure with DBPOOL_WITH_PG=$v"
  }
  [ "$(backends "$tmp/log")" = "dbpool backends: sqlite mock pg=OFF mysql=OFF" ] ||
    fail "DBPOOL_WITH_PG=DBPOOL_WITH_MYSQL=$v gave '$(backends "$tmp/log")'"
done

# On: the backend is required (compiled in where its library is found).
for v in on Yes true 1; do
  if configure "$tmp/log" -DDBPOOL_WITH_PG="$v" -DDBPOOL_WITH_MYSQL=OFF; then
    [ "$(backends "$tmp/log")" = "dbpool backends: sqlite mock pg=ON mysql=OFF" ] ||
      fail "DBPOOL_WITH_PG=$v gave '$(backends "$tmp/log")'"
  else
    grep -q "libpq was not found" "$tmp/log" || {
      cat "$tmp/log" >&2
      fail "DBPOOL_WITH_PG=$v failed otherwise than on a missing libpq"
    }
  fi
done

for opt in DBPOOL_WITH_PG DBPOOL_WITH_MYSQL; do
  if configure "$tmp/log" -D$opt=maybe; then
    fail "$opt=maybe was accepted: $(backends "$tmp/log")"
  fi
  grep -q "$opt" "$tmp/log" || {
    cat "$tmp/log" >&2
    fail "the error for $opt=maybe does not name $opt"
  }
done

# DBPOOL_NO_TSC (docs/metrics.md: the clock_gettime path of every platform
# but x86-64) is an option: ON compiles everything with it, which a
# -DDBPOOL_NO_TSC on cmake's command line once did not (CMake took it for
# a variable nobody reads, said so in a warning, and built the TSC path).
for v in ON off; do
  configure "$tmp/log" -DDBPOOL_NO_TSC=$v || {
    cat "$tmp/log" >&2
    fail "configure with DBPOOL_NO_TSC=$v"
  }
  cc_json="$tmp/b$n/compile_commands.json"
  # The command of each entry whose file is src/fast_clock.c (CMake writes
  # an entry's keys one to a line, in no order a script should rely on).
  clock_cc=$(awk '/^ *\{/ { cmd = ""; file = "" } /"command":/ { cmd = $0 } /"file":/ { file = $0 }
    /^ *\}/ && file ~ /src\/fast_clock\.c"/ { print cmd }' "$cc_json")
  [ -n "$clock_cc" ] || fail "no compile command for src/fast_clock.c in $cc_json"
  if [ $v = ON ]; then
    printf '%s\n' "$clock_cc" | grep -q -- '-DDBPOOL_NO_TSC' ||
      fail "DBPOOL_NO_TSC=ON: src/fast_clock.c is compiled without -DDBPOOL_NO_TSC"
  elif grep -q -- '-DDBPOOL_NO_TSC' "$cc_json"; then
    fail "DBPOOL_NO_TSC=off: compiled with -DDBPOOL_NO_TSC"
  fi
  ! grep -q 'Manually-specified variables were not used' "$tmp/log" ||
    fail "DBPOOL_NO_TSC=$v: CMake says the variable was not used"
done

# DBPOOL_NO_EXECINFO=ON builds leak reports without backtrace(), as where
# <execinfo.h> is missing (musl): src/leak.c is compiled without
# DBPOOL_HAVE_EXECINFO, and the configure says so. Left OFF, the check
# finds <execinfo.h> where the C library has it (glibc).
for v in ON OFF; do
  configure "$tmp/log" -DDBPOOL_NO_EXECINFO=$v || {
    cat "$tmp/log" >&2
    fail "configure with DBPOOL_NO_EXECINFO=$v"
  }
  said=$(grep -o "dbpool leak reports: holder's stack (backtrace) [A-Z]*" "$tmp/log" || true)
  leak_cc=$(awk '/^ *\{/ { cmd = ""; file = "" } /"command":/ { cmd = $0 } /"file":/ { file = $0 }
    /^ *\}/ && file ~ /src\/leak\.c"/ { print cmd }' "$tmp/b$n/compile_commands.json")
  [ -n "$leak_cc" ] || fail "no compile command for src/leak.c"
  if [ $v = ON ]; then
    [ "$said" = "dbpool leak reports: holder's stack (backtrace) OFF" ] ||
      fail "DBPOOL_NO_EXECINFO=ON: the configure says '$said'"
    ! printf '%s\n' "$leak_cc" | grep -q -- '-DDBPOOL_HAVE_EXECINFO' ||
      fail "DBPOOL_NO_EXECINFO=ON: src/leak.c is compiled with -DDBPOOL_HAVE_EXECINFO"
  elif [ -f /usr/include/execinfo.h ]; then
    [ "$said" = "dbpool leak reports: holder's stack (backtrace) ON" ] ||
      fail "<execinfo.h> is there, but the configure says '$said'"
    printf '%s\n' "$leak_cc" | grep -q -- '-DDBPOOL_HAVE_EXECINFO' ||
      fail "<execinfo.h> is there, but src/leak.c is compiled without -DDBPOOL_HAVE_EXECINFO"
  fi
done

# DBPOOL_FUZZ (libFuzzer) is clang's: with GCC the configure says so,
# rather than every fuzz target failing in the build on -fsanitize=fuzzer.
if command -v gcc >/dev/null 2>&1; then
  if configure "$tmp/log" -DCMAKE_C_COMPILER=gcc -DDBPOOL_FUZZ=ON; then
    fail "DBPOOL_FUZZ=ON was accepted with gcc, which has no libFuzzer"
  fi
  grep -q "DBPOOL_FUZZ=ON needs clang" "$tmp/log" || {
    cat "$tmp/log" >&2
    fail "the error for DBPOOL_FUZZ=ON with gcc does not say it needs clang"
  }
fi
echo "ok: DBPOOL_WITH_PG / DBPOOL_WITH_MYSQL take CMake's on and off spellings, reject others;" \
  "DBPOOL_NO_TSC=ON compiles the clock_gettime path; DBPOOL_NO_EXECINFO=ON leaves backtrace() out;" \
  "DBPOOL_FUZZ=ON asks for clang"
