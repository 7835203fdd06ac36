#!/usr/bin/env bash
# Build the libFuzzer targets with clang and run each for a bounded time.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DDBPOOL_FUZZ=ON -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF \
  -DDBPOOL_SANITIZE=address,undefined >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target fuzz_url fuzz_sql_scans fuzz_options fuzz_stats \
  fuzz_cli_args fuzz_trace >/dev/null
seed() { # DIR TEXT
  mkdir -p "$1"
  printf '%s' "$2" > "$1/$(printf '%s' "$2" | md5sum | cut -c1-12)"
}
seed_bytes() { # DIR TEXT with printf's octal escapes (\000 is a NUL byte)
  mkdir -p "$1"
  printf -- "$2" > "$1/$(printf '%s' "$2" | md5sum | cut -c1-12)"
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
# A mode byte, then a pool name (1: through pool_name in the URL; 2: also a manager's).
for s in '\000default' '\001a"b\\\\c d' '\002caf\303\251 \342\202\254' '\003x\033y'; do
  seed_bytes build/fuzz/corpus-stats "$s"
done
# Arguments separated by NUL; \001 stands for a URL with a password.
for s in '--threads\0005\000--metrics-listen\000[::1]:9187\000\001' '--query=\001\000--mode\000statement\000sqlite::memory:' \
  '--duration\0000.5\000--hold-ms=0.1\000--burst\00010\000--json\000mock:' '--timeout\000\001'; do
  seed_bytes build/fuzz/corpus-cli "$s"
done
seed_bytes build/fuzz/corpus-options '\377\377\377\377\001\002\003\004\005\006\007\010'
seed_bytes build/fuzz/corpus-trace '\005\040\043main+0x1f\377libc.so.6(+0x2724a)\377??'
build/fuzz/fuzz_options -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 build/fuzz/corpus-options
build/fuzz/fuzz_stats -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 build/fuzz/corpus-stats
build/fuzz/fuzz_cli_args -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 build/fuzz/corpus-cli
build/fuzz/fuzz_trace -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 build/fuzz/corpus-trace
