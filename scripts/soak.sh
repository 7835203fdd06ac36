#!/usr/bin/env bash
# soak.sh — the endurance run (tests/soak/soak.c): one pool under a mixed
# workload with faults for minutes per backend, sampled for anything that
# grows (descriptors, threads, heap, RSS, server sessions, prepared
# statements, the pool's counters). Exits non-zero on growth or a leak.
#
#   scripts/soak.sh [sqlite] [pg] [mysql]     (default: all three)
#
#   SOAK_SECONDS=600     length of each run
#   SOAK_INTERVAL=10     seconds between samples
#   SOAK_THREADS=12      worker threads
#   SOAK_ARGS=           more options for the program (--thread-cache, --no-faults)
#   SOAK_BUILD=build/soak  build directory (configured here if missing)
#   SOAK_TMP=/tmp        where the run's temporary directory (servers, SQLite file) goes
#   SOAK_SANITIZE=       e.g. address,undefined: a sanitizer build (leaks at exit
#                        are named: ASAN_OPTIONS gets detect_leaks=1)
#   SOAK_SERVER_DIR=     a directory where scripts/pg-server.sh and
#                        scripts/mysql-server.sh started servers for the soak:
#                        their env files are read and the servers restarted
#                        during the run. Without it, throw-away servers (TLS on)
#                        are started in a temporary directory and removed after.
#
# The soak kills the test user's sessions and restarts the servers: never
# point it at servers that others are using.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(sqlite pg mysql)
for b in "${backends[@]}"; do
  case $b in sqlite | pg | mysql) ;; *)
    echo "usage: $0 [sqlite] [pg] [mysql]" >&2
    exit 2
    ;;
  esac
done

build=${SOAK_BUILD:-build/soak}
sanitize=${SOAK_SANITIZE:-}
config=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDBPOOL_BENCH=OFF -DDBPOOL_WERROR=ON -DDBPOOL_SANITIZE="$sanitize")
[ -z "$sanitize" ] || config+=(-DDBPOOL_SHARED=OFF)
cmake -S . -B "$build" "${config[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" --target soak >/dev/null

needs_server=0
for b in "${backends[@]}"; do [ "$b" = sqlite ] || needs_server=1; done

work=$(mktemp -d "${SOAK_TMP:-/tmp}/dbpool-soak-XXXXXX")
chmod 755 "$work"
srv=${SOAK_SERVER_DIR:-}
started=0
cleanup() {
  local rc=$?
  if [ $started = 1 ]; then
    "$root/scripts/pg-server.sh" stop "$srv" >/dev/null 2>&1 || true
    "$root/scripts/mysql-server.sh" stop "$srv" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM

if [ $needs_server = 1 ] && [ -z "$srv" ]; then
  srv=$work/servers
  started=1
  for b in "${backends[@]}"; do
    case $b in
    pg) DBPOOL_TEST_TLS=1 scripts/pg-server.sh start "$srv" >/dev/null ;;
    mysql) DBPOOL_TEST_TLS=1 scripts/mysql-server.sh start "$srv" >/dev/null ;;
    esac
  done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
status=0
for b in "${backends[@]}"; do
  args=(--backend "$b" --seconds "${SOAK_SECONDS:-600}" --interval "${SOAK_INTERVAL:-10}"
    --threads "${SOAK_THREADS:-12}")
  case $b in
  sqlite) args+=(--sqlite-path "$work/soak.db") ;;
  pg | mysql)
    # shellcheck disable=SC1090
    (set +u && source "$srv/$b.env") || {
      echo "soak.sh: $srv/$b.env missing" >&2
      exit 1
    }
    script=$root/scripts/$([ "$b" = pg ] && echo pg || echo mysql)-server.sh
    args+=(--restart-cmd "'$script' kill '$srv' >/dev/null 2>&1; '$script' restart '$srv' >/dev/null 2>&1")
    ;;
  esac
  echo "== soak $b" >&2
  # shellcheck disable=SC1090,SC2086
  if ! (
    [ "$b" = sqlite ] || source "$srv/$b.env"
    exec "$build/tests/soak" "${args[@]}" ${SOAK_ARGS:-}
  ); then
    status=1
  fi
done
exit $status
