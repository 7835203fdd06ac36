#!/usr/bin/env bash
# Build the libFuzzer target with clang and run it for a bounded time.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DDBPOOL_FUZZ=ON -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF \
  -DDBPOOL_SANITIZE=address,undefined >/dev/null
cmake --build build/fuzz -j"$(nproc)" --target fuzz_url >/dev/null
mkdir -p build/fuzz/corpus
for seed in "sqlite:x.db?journal_mode=wal" "pool_max=3&pool_min=1" "mysql://u:p@h:1,h2:2/db?ssl-mode=REQUIRED"; do
  printf '%s' "$seed" > "build/fuzz/corpus/$(echo "$seed" | md5sum | cut -c1-12)"
done
build/fuzz/fuzz_url -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 build/fuzz/corpus
