#!/usr/bin/env bash
# Install, build and run the demo on embedded SQLite (the README's first command).
# Arguments go to `dbpool demo` (e.g. --db URL, --pool-size N, --output FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh demo
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DDBPOOL_TESTS=OFF -DDBPOOL_BENCH=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target dbpool_cli >/dev/null
# The report goes to out/demo.json unless the arguments name another file
# (the last --output wins, as in dbpool demo).
out=out/demo.json
# With --help (or -h) before any --, dbpool demo prints its help and
# writes no report.
given=
prev=
help=
options=1
for arg in "$@"; do
  if [ "$arg" = -- ]; then
    options=
  elif [ -n "$options" ] && { [ "$arg" = --help ] || [ "$arg" = -h ]; }; then
    help=1
  fi
  if [ "$prev" = --output ]; then
    given=$arg
  fi
  case $arg in
  --output=*) given=${arg#--output=} ;;
  esac
  prev=$arg
done
if [ -n "$help" ]; then
  exec build/release/dbpool demo "$@"
fi
if [ -z "$given" ]; then
  mkdir -p out
  build/release/dbpool demo --input data/sample_input.txt --output "$out" "$@"
else
  out=$given
  build/release/dbpool demo --input data/sample_input.txt "$@"
fi
echo "wrote $out" >&2
