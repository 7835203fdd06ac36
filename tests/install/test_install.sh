#!/bin/sh
# Installs the build into a scratch prefix and uses it the way a program
# outside this tree would, with the README's commands: the README's quick
# start, compiled as written against the installed header through
# pkg-config (PKG_CONFIG_PATH and an rpath, nothing else), linked once to
# the shared and once to the static library, must print "1 alice". The
# prefix is given relative to the current directory, which dbpool.pc must
# not depend on; installed in pkg-config's system directories, dbpool.pc
# must not name them. Also checks that the shared library exports the public API
# only and that the installed command runs.
#
#   test_install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d /tmp/dbpool-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

(cd "$tmp" && cmake --install "$build" --prefix prefix) >"$tmp/install.log" || {
  cat "$tmp/install.log" >&2
  fail "cmake --install"
}
pc=$(find "$tmp/prefix" -name dbpool.pc)
[ -n "$pc" ] || fail "no dbpool.pc installed"
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
cd "$tmp/.." # anywhere but where it was installed from
libdir=$(pkg-config --variable=libdir dbpool)
[ -f "$(pkg-config --variable=includedir dbpool)/dbpool.h" ] || fail "dbpool.h is not where dbpool.pc says"

# The quick start: the first C block after the "## Quick start" heading.
awk '/^## Quick start/ { q = 1 } q && /^```c$/ { on = 1; next } on && /^```$/ { exit } on { print }' \
  "$src/README.md" >"$tmp/quickstart.c"
grep -q dbpool_open "$tmp/quickstart.c" || fail "no quick start found in README.md"

# shellcheck disable=SC2046  # pkg-config's output is a list of words
cc -std=c11 -Wall -Wextra -Werror "$tmp/quickstart.c" $(pkg-config --cflags --libs dbpool) \
  -Wl,-rpath,"$(pkg-config --variable=libdir dbpool)" -o "$tmp/qs_shared" ||
  fail "the quick start does not build against the shared library"
# Before 1.0 the soname names the minor version (every 0.x may change the
# ABI); from 1.0 on, the major version alone.
major=$(sed -n 's/^#define DBPOOL_VERSION_MAJOR \([0-9]*\)$/\1/p' "$src/include/dbpool.h")
minor=$(sed -n 's/^#define DBPOOL_VERSION_MINOR \([0-9]*\)$/\1/p' "$src/include/dbpool.h")
soname=libdbpool.so.$major
[ "$major" = 0 ] && soname=$soname.$minor
ldd "$tmp/qs_shared" | grep -qF "$soname => $libdir/" || fail "qs_shared does not load $libdir/$soname"
out=$("$tmp/qs_shared") || fail "qs_shared exited $?"
[ "$out" = "1 alice" ] || fail "qs_shared printed '$out', not '1 alice'"

# Installed where pkg-config's system directories are (a distribution's
# /usr: here the scratch prefix, named as such), dbpool.pc adds no -I or -L:
# pkg-config drops those only when they are written as the same path, and
# an -L of the system's library directory ahead of another package's would
# make the linker take the system's copy of that package's libraries.
prefix_abs=$(cd "$tmp/prefix" && pwd)
sys_libdir=$(dirname "$(find "$prefix_abs" -name libdbpool.a)")
sys_incdir=$(dirname "$(find "$prefix_abs" -name dbpool.h)")
sys_flags=$(PKG_CONFIG_SYSTEM_LIBRARY_PATH=$sys_libdir PKG_CONFIG_SYSTEM_INCLUDE_PATH=$sys_incdir \
  pkg-config --cflags --libs --static dbpool)
case " $sys_flags" in
*" -I"* | *" -L"*) fail "installed in the system's directories, dbpool.pc still names them: $sys_flags" ;;
esac
[ "$(pkg-config --variable=libdir dbpool)" = "$sys_libdir" ] ||
  fail "libdir is $(pkg-config --variable=libdir dbpool), not $sys_libdir"

# A prefix with a space in it: pkg-config's flags name it with the space
# escaped, as one word each.
(cd "$tmp" && cmake --install "$build" --prefix "sp ace") >"$tmp/install2.log" || fail "cmake --install to 'sp ace'"
eval "set -- $(PKG_CONFIG_PATH=$(dirname "$(find "$tmp/sp ace" -name dbpool.pc)") pkg-config --cflags dbpool)"
[ $# -eq 1 ] && [ -f "${1#-I}/dbpool.h" ] || fail "installed in '$tmp/sp ace', pkg-config --cflags gives: $*"

# Static: the archive itself, with the libraries dbpool.pc lists for it.
static_libs=$(pkg-config --static --libs dbpool | sed 's/-ldbpool\b//')
# shellcheck disable=SC2086
cc -std=c11 -Wall -Wextra -Werror "$tmp/quickstart.c" $(pkg-config --cflags dbpool) "$libdir/libdbpool.a" \
  $static_libs -o "$tmp/qs_static" || fail "the quick start does not link with libdbpool.a and pkg-config --static"
out=$("$tmp/qs_static") || fail "qs_static exited $?"
[ "$out" = "1 alice" ] || fail "qs_static printed '$out', not '1 alice'"

# The shared library exports dbpool_* and nothing else (no dbpool__ internals).
nm -D --defined-only "$libdir/libdbpool.so" | awk '{ print $3 }' >"$tmp/exports"
n=$(grep -c '^dbpool_[a-z]' "$tmp/exports" || true)
[ "$n" -ge 40 ] || fail "only $n dbpool_ functions exported"
others=$(grep -v '^dbpool_[a-z]' "$tmp/exports" || true)
[ -z "$others" ] || fail "libdbpool.so exports more than the API: $others"
# Each one is declared in the installed header, and the header's functions
# are all there.
header="$(pkg-config --variable=includedir dbpool)/dbpool.h"
while read -r f; do
  grep -q "\b$f(" "$header" || fail "libdbpool.so exports $f, which dbpool.h does not declare"
done <"$tmp/exports"
grep -oE '^[a-z].*\b(dbpool_[a-z_0-9]+)\(' "$header" | grep -v 'static inline' |
  grep -oE 'dbpool_[a-z_0-9]+\($' | tr -d '(' | sort -u >"$tmp/declared"
missing=$(sort -u "$tmp/exports" | comm -23 "$tmp/declared" - | tr '\n' ' ')
[ -z "$missing" ] || fail "dbpool.h declares functions libdbpool.so does not export: $missing"

if [ -x "$tmp/prefix/bin/dbpool" ]; then
  "$tmp/prefix/bin/dbpool" --help >/dev/null || fail "the installed dbpool --help exited $?"
fi
echo "ok: installed, quick start printed '1 alice' (shared and static), $n functions exported"
