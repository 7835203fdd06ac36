#!/bin/sh
# A newcomer's first configure on a machine that lacks a package: the error
# names the package, the Debian package to install and, where the build can
# do without it, the switch that leaves it out (CMake's own REQUIRED says
# only "A required package was not found"). pkg-config is pointed at a
# directory holding only the .pc files of the packages a case keeps.
# Configures only (nothing is built).
#
#   test_configure_missing.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d /tmp/dbpool-missing-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

for m in sqlite3 jansson cmocka; do
  pc=$(pkg-config --variable=pcfiledir "$m")/$m.pc
  [ -f "$pc" ] || {
    echo "skip: $m.pc is not installed" >&2
    exit 77
  }
  mkdir -p "$tmp/pc-$m"
  cp "$pc" "$tmp/pc-$m/"
done

n=0
configure() { # PC_DIRS LOG ARGS...: configure a fresh build that sees only those packages
  dirs=$1
  log=$2
  shift 2
  n=$((n + 1))
  PKG_CONFIG_LIBDIR=$dirs PKG_CONFIG_PATH='' cmake -S "$src" -B "$tmp/b$n" -DDBPOOL_BENCH=OFF "$@" >"$log" 2>&1
}
expect_error() { # LOG WHAT TEXT...: the configure failed, and its error says each TEXT
  log=$1
  what=$2
  shift 2
  for text in "$@"; do
    grep -qF -- "$text" "$log" || {
      cat "$log" >&2
      fail "$what: the configure error does not say '$text'"
    }
  done
}

# No SQLite: the library itself cannot be built.
if configure "$tmp/none" "$tmp/log" -DDBPOOL_TESTS=OFF -DDBPOOL_CLI=OFF; then
  fail "configured without sqlite3"
fi
expect_error "$tmp/log" "no sqlite3" "sqlite3 was not found" "libsqlite3-dev"

# No jansson: the command needs it; the library alone does not.
if configure "$tmp/pc-sqlite3" "$tmp/log" -DDBPOOL_TESTS=OFF; then
  fail "configured the command without jansson"
fi
expect_error "$tmp/log" "no jansson" "jansson was not found" "libjansson-dev" "-DDBPOOL_CLI=OFF -DDBPOOL_TESTS=OFF"
configure "$tmp/pc-sqlite3" "$tmp/log" -DDBPOOL_TESTS=OFF -DDBPOOL_CLI=OFF || {
  cat "$tmp/log" >&2
  fail "the library alone (DBPOOL_CLI=OFF DBPOOL_TESTS=OFF) does not configure without jansson"
}

# No cmocka: the tests need it.
if configure "$tmp/pc-sqlite3:$tmp/pc-jansson" "$tmp/log"; then
  fail "configured the tests without cmocka"
fi
expect_error "$tmp/log" "no cmocka" "cmocka was not found" "libcmocka-dev" "-DDBPOOL_TESTS=OFF"
echo "ok: a missing sqlite3, jansson or cmocka is named, with the package to install and the switch to leave it out"
