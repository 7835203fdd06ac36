#!/usr/bin/env bash
# The server scripts' start:
# - Ctrl-C during `scripts/pg-server.sh start` / `scripts/mysql-server.sh
#   start` must not leave a server behind: the interrupted start exits
#   non-zero, no process of the half-made server survives, and a second
#   `start` on the same directory works (then `stop` removes everything it
#   made). That second start of MariaDB runs with a normal Debian user's
#   PATH, which has no /usr/sbin (where mariadbd is).
# - In a directory with a space, pg.env can be sourced as documented, and
#   mysql-server.sh (whose mariadb-install-db cannot handle it) refuses
#   the directory with a clear message instead of failing half-way.
#
# The interrupt is sent while the script waits for its freshly launched
# server to answer: a stand-in for pg_isready / mariadb-admin first on the
# search path records that the server was launched and never answers, so
# the moment is certain, not a race.
#
#   test_server_scripts.sh SOURCE_DIR
# Exits 77 (skipped) when a server is not installed, unless
# DBPOOL_TEST_REQUIRE_SERVERS=1.
set -euo pipefail
src=$1
tmp=$(mktemp -d /tmp/dbpool-scripttest-XXXXXX)
chmod 755 "$tmp" # the servers run as an unprivileged user when we are root
pg_dir=$tmp/pg-run
my_dir=$tmp/my-run
cleanup() {
  "$src/scripts/pg-server.sh" stop "$pg_dir" >/dev/null 2>&1 || true
  "$src/scripts/pg-server.sh" stop "$tmp/with space" >/dev/null 2>&1 || true
  "$src/scripts/mysql-server.sh" stop "$my_dir" >/dev/null 2>&1 || true
  "$src/scripts/mysql-server.sh" stop "$tmp/my space" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
skip_or_fail() {
  if [ "${DBPOOL_TEST_REQUIRE_SERVERS:-0}" = 1 ]; then fail "$*"; fi
  echo "skipped: $*" >&2
  exit 77
}

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local n=$(($1 * 10))
  shift
  while ! "$@"; do
    n=$((n - 1))
    [ $n -gt 0 ] || return 1
    sleep 0.1
  done
}
no_process_in() { ! pgrep -f -- "$1" >/dev/null; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# interrupt NAME DIR MARKER PATH2 ENV...: run `NAME start DIR` in a process
# group of its own with ENV, wait for MARKER, Ctrl-C the group, check what
# is left, then start (with PATH=PATH2) and stop the server again.
interrupt() {
  local name=$1 dir=$2 marker=$3 path2=$4
  shift 4
  mkdir -p "$dir"
  chmod 755 "$dir"
  # Job control: the start gets a process group of its own, as in a
  # terminal, and SIGINT is not ignored in it (as it is in a plain & job).
  set -m
  env "$@" "$src/scripts/$name" start "$dir" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  local pid=$!
  set +m
  launched_or_gone() { [ -e "$marker" ] || gone "$pid"; }
  wait_for 60 launched_or_gone
  [ -e "$marker" ] || {
    cat "$tmp/$name.err" >&2
    fail "$name start did not launch its server"
  }
  kill -INT -- "-$pid"
  wait_for 60 gone "$pid" || fail "$name start still runs 60 s after Ctrl-C"
  local rc=0
  wait "$pid" || rc=$?
  [ $rc -ne 0 ] || fail "$name start exited 0 after Ctrl-C"
  wait_for 30 no_process_in "$dir/" || fail "$name start left a server running after Ctrl-C: $(pgrep -af -- "$dir/")"
  [ ! -e "$dir/${name%%-*}.env" ] || fail "$name start wrote an env file although it was interrupted"
  # The directory is usable again at once.
  PATH=$path2 "$src/scripts/$name" start "$dir" >/dev/null 2>"$tmp/$name.err2" || {
    cat "$tmp/$name.err2" >&2
    fail "$name start after an interrupted start failed"
  }
  "$src/scripts/$name" stop "$dir" >/dev/null 2>&1 || fail "$name stop"
  wait_for 30 no_process_in "$dir/" || fail "$name stop left a process running"
}

fake=$tmp/bin
mkdir -p "$fake"
chmod 755 "$fake"

# PostgreSQL: the script calls $PG_BIN/pg_isready after pg_ctl -w start.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ran_one=0
if [ -x "$PG_BIN/pg_ctl" ]; then
  mkdir -p "$fake/pg"
  for f in "$PG_BIN"/*; do ln -s "$f" "$fake/pg/"; done
  rm "$fake/pg/pg_isready"
  printf '#!/bin/sh\n: >"%s"\nexec sleep 60\n' "$tmp/pg-launched" >"$fake/pg/pg_isready"
  chmod 755 "$fake/pg" "$fake/pg/pg_isready"
  interrupt pg-server.sh "$pg_dir" "$tmp/pg-launched" "$PATH" PG_BIN="$fake/pg"
  ran_one=1
elif [ "${DBPOOL_TEST_REQUIRE_SERVERS:-0}" = 1 ]; then
  fail "PostgreSQL 15 not found in $PG_BIN"
fi

# PostgreSQL in a directory with a space: `source DIR/pg.env` works.
if [ -x "$PG_BIN/pg_ctl" ]; then
  # With TLS (DBPOOL_TEST_TLS=1): its certificate paths, with the space,
  # in postgresql.conf and pg.env.
  spaced="$tmp/with space"
  DBPOOL_TEST_TLS=1 "$src/scripts/pg-server.sh" start "$spaced" >/dev/null 2>"$tmp/pg-space.err" || {
    cat "$tmp/pg-space.err" >&2
    fail "pg-server.sh start in a directory with a space"
  }
  got=$(bash -c 'set -e; source "$1/pg.env"; printf %s "$DBPOOL_TEST_PG_SOCKET_DIR"' _ "$spaced") ||
    fail "pg.env of a directory with a space cannot be sourced"
  [ "$got" = "$spaced/pg-sock" ] || fail "pg.env: DBPOOL_TEST_PG_SOCKET_DIR is '$got', not '$spaced/pg-sock'"
  got=$(bash -c 'set -e; source "$1/pg.env"; printf %s "$DBPOOL_TEST_PG_SSL_CA"' _ "$spaced")
  [ "$got" = "$spaced/pg-tls/ca.crt" ] && [ -f "$got" ] ||
    fail "pg.env: DBPOOL_TEST_PG_SSL_CA is '$got', not the CA in '$spaced/pg-tls'"
  grep -q "^ssl = on" "$spaced/pg/postgresql.conf" || fail "DBPOOL_TEST_TLS=1 start did not turn ssl on"
  "$src/scripts/pg-server.sh" stop "$spaced" >/dev/null 2>&1 || fail "pg-server.sh stop in a directory with a space"
  [ ! -e "$spaced/pg-tls" ] || fail "pg-server.sh stop left the TLS certificates in $spaced/pg-tls"
fi

# MariaDB: the script pings with mariadb-admin once the socket exists.
if command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null; then
  mkdir -p "$fake/my"
  printf '#!/bin/sh\n: >"%s"\nexec sleep 60\n' "$tmp/my-launched" >"$fake/my/mariadb-admin"
  chmod 755 "$fake/my" "$fake/my/mariadb-admin"
  interrupt mysql-server.sh "$my_dir" "$tmp/my-launched" /usr/local/bin:/usr/bin:/bin PATH="$fake/my:$PATH"
  # A directory with a space: refused up front, nothing made, nothing left.
  spaced="$tmp/my space"
  if "$src/scripts/mysql-server.sh" start "$spaced" >/dev/null 2>"$tmp/my-space.err"; then
    "$src/scripts/mysql-server.sh" stop "$spaced" >/dev/null 2>&1 || true
    fail "mysql-server.sh start accepted a directory with a space (mariadb-install-db cannot handle it)"
  fi
  grep -q "white space" "$tmp/my-space.err" || {
    cat "$tmp/my-space.err" >&2
    fail "mysql-server.sh start in a directory with a space did not say why it failed"
  }
  [ -z "$(ls -A "$spaced" 2>/dev/null)" ] || fail "mysql-server.sh left files in $spaced: $(ls -A "$spaced")"
  ran_one=1
elif [ "${DBPOOL_TEST_REQUIRE_SERVERS:-0}" = 1 ]; then
  fail "mariadb-server is not installed"
fi
[ $ran_one = 1 ] || skip_or_fail "neither PostgreSQL 15 nor MariaDB is installed"
echo "ok: an interrupted start leaves no server behind and the next start works; a directory with a space works (pg) or is refused (mysql)"
