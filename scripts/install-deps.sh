#!/usr/bin/env bash
# Install what dbpool needs on Debian 12, from Debian's packages.
#   scripts/install-deps.sh demo   build + run the demo (SQLite only)
#   scripts/install-deps.sh test   everything the test suite needs, servers included
#   scripts/install-deps.sh bench  the benchmark suite's peers and plotting
set -euo pipefail
what=${1:-test}

demo_pkgs=(build-essential cmake pkg-config libsqlite3-dev libjansson-dev)
test_pkgs=("${demo_pkgs[@]}" libcmocka-dev libpq-dev libmariadb-dev libmicrohttpd-dev postgresql pgbouncer mariadb-server
           clang libclang-rt-14-dev clang-format python3 iproute2 procps locales openssl)
bench_pkgs=("${test_pkgs[@]}" gnuplot-nox libzdb-dev libaprutil1-dev default-jdk-headless
            libhikaricp-java libpostgresql-jdbc-java libxerial-sqlite-jdbc-java libslf4j-java)

case "$what" in
demo) pkgs=("${demo_pkgs[@]}") ;;
test) pkgs=("${test_pkgs[@]}") ;;
bench) pkgs=("${bench_pkgs[@]}") ;;
*) echo "usage: $0 demo|test|bench" >&2; exit 2 ;;
esac

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

# A German locale for the server's messages: the PostgreSQL statement cache
# must tell a stale plan by more than its English text
# (test_pg_statement_cache). Made once, outside the locale archive.
german_locale() {
  [ "$what" = demo ] && return 0
  locale -a 2>/dev/null | grep -qix 'de_DE.utf8' && return 0
  $SUDO localedef --no-archive -i de_DE -f UTF-8 de_DE.UTF-8 >&2
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  german_locale
  exit 0
fi
echo "installing: ${missing[*]}" >&2
# On a freshly booted machine apt-daily / unattended-upgrades often hold
# apt's locks for a while. install waits for the dpkg lock (Lock::Timeout);
# update does not wait for the lists lock, so it is tried again.
apt_wait=(-o DPkg::Lock::Timeout=600)
for try in 1 2 3 4 5 6 7 8 9 10 11 12; do
  $SUDO apt-get "${apt_wait[@]}" update -qq && break
  [ "$try" -lt 12 ] || { echo "apt-get update failed 12 times" >&2; exit 1; }
  echo "apt-get update failed (another apt running?); again in 10 s" >&2
  sleep 10
done
# The server packages must not start system-wide services: the tests start
# their own servers on free ports. policy-rc.d 101 forbids service starts.
# The file says who wrote it, so that one left behind by a run that was
# killed (no EXIT trap) is recognised as ours and removed by the next run.
policy_mark='# written by dbpool scripts/install-deps.sh'
if [ ! -e /usr/sbin/policy-rc.d ] || grep -qxF "$policy_mark" /usr/sbin/policy-rc.d 2>/dev/null; then
  printf '#!/bin/sh\n%s\nexit 101\n' "$policy_mark" | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
# Through env, not as a prefix: sudo's env_reset drops DEBIAN_FRONTEND, and
# debconf would then ask questions on the terminal (libc6's "restart
# services?" when libc6-dev upgrades it, tzdata's time zone).
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
german_locale
