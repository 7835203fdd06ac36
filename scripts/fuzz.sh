#!/usr/bin/env bash
# Build the libFuzzer targets with clang and run each for a bounded time.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DDBPOOL_FUZZ=ON -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF \
  -DDBPOOL_SANITIZE=address,undefined >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target fuzz_url fuzz_sql_scans >/dev/null
seed() { # DIR TEXT
  mkdir -p "$1"
  printf '%s' "$2" > "$1/$(printf '%s' "$2" | md5sum | cut -c1-12)"
}
for s in "sqlite:x.db?journal_mode=wal" "pool_max=3&pool_min=1" "mysql://u:p@h:1,h2:2/db?ssl-mode=REQUIRED"; do
  seed build/fuzz/corpus "$s"
done
for s in "SELECT ?, '?' -- ?" "SET search_path = x; SELECT \$a\$ ? \$a\$" "CREATE TEMP TABLE t(x int) /* /* */ */" \
  "SELECT E'\\'' ?', @v := 1 # x" "LOCK TABLES t WRITE; SELECT GET_LOCK('a', 1)"; do
  seed build/fuzz/corpus-sql "$s"
done
build/fuzz/fuzz_url -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 build/fuzz/corpus
build/fuzz/fuzz_sql_scans -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 build/fuzz/corpus-sql
