#!/usr/bin/env bash
# Install, build and run the demo on embedded SQLite (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh demo
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target dbpool_cli >/dev/null
mkdir -p out
build/release/dbpool demo --input data/sample_input.txt --output out/demo.json "$@"
echo "wrote out/demo.json" >&2
