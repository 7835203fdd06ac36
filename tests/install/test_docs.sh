#!/bin/sh
# The documentation as a reader meets it: every C block of README.md and
# docs/*.md compiles against include/dbpool.h with -std=c11 -Wall -Wextra
# -Wpedantic -Werror (a block with its own main as it stands, also as
# C++17; a fragment inside a function body, where `p`, `c` and `err` are
# a pool, a lease and an error, as the docs use them, and a line "..."
# stands for code left out); every fenced block is closed; and every
# table row belongs to a table (a row glued to a paragraph is shown as
# that paragraph's text, pipes and all, and its key is lost to the reader).
#
#   test_docs.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d /tmp/dbpool-docs-XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || cc=gcc
cxx=
for c in c++ g++ clang++; do
  if command -v "$c" >/dev/null 2>&1; then
    cxx=$c
    break
  fi
done

blocks=0
for md in "$src/README.md" "$src"/docs/*.md; do
  name=$(basename "$md" .md)
  # Fences: ```c blocks are written out one file each, named by the line
  # they start on; an unclosed fence of any kind is reported.
  awk -v dir="$tmp" -v name="$name" -v md="$md" '
    /^```/ {
      if (!open) { open = 1; start = NR; lang = substr($0, 4); if (lang == "c") { file = dir "/" name "_" NR ".c"; n++ } next }
      if ($0 == "```") { open = 0; file = ""; next }
    }
    open && lang == "c" { print > file }
    END {
      if (open) { printf "FAIL: %s: the block opened at line %d is never closed\n", md, start > "/dev/stderr"; exit 1 }
    }' "$md" || exit 1
  # Table rows: a line starting with "|" outside a fenced block must follow
  # another table line, or be a header (the next line is |---...).
  awk -v md="$md" '
    /^```/ { fence = !fence; next }
    fence { next }
    {
      lines[NR] = $0
    }
    END {
      for (i = 1; i <= NR; i++) {
        if (substr(lines[i], 1, 1) != "|") continue
        if (i > 1 && substr(lines[i - 1], 1, 1) == "|") continue
        if (substr(lines[i + 1], 1, 4) == "|---" || substr(lines[i + 1], 1, 3) == "|:-") continue
        printf "FAIL: %s:%d: a table row outside a table (after a line that is not one): %.60s\n", md, i, lines[i] > "/dev/stderr"
        bad = 1
      }
      exit bad
    }' "$md" || exit 1
done

for f in "$tmp"/*.c; do
  [ -e "$f" ] || continue
  blocks=$((blocks + 1))
  where=$(basename "$f" .c)
  where="${where%_*}.md, line ${where##*_}" # README_130 -> README.md, line 130
  if grep -q 'int main' "$f"; then
    "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$src/include" "$f" 2>"$tmp/err" ||
      fail "the C block of $where does not compile as C11: $(cat "$tmp/err")"
    if [ -n "$cxx" ]; then
      "$cxx" -std=c++17 -Wall -Wextra -Werror -fsyntax-only -x c++ -I"$src/include" "$f" 2>"$tmp/err" ||
        fail "the C block of $where does not compile as C++17: $(cat "$tmp/err")"
    fi
  else
    {
      printf '#include <dbpool.h>\n#include <signal.h>\n#include <stdio.h>\n#include <stdlib.h>\n'
      printf 'void doc_fragment(dbpool *p, dbpool_conn *c, dbpool_error err);\n'
      printf 'void doc_fragment(dbpool *p, dbpool_conn *c, dbpool_error err) {\n{\n'
      sed 's|^\( *\)\.\.\.$|\1/* ... */|' "$f"
      printf '}\n}\n'
    } >"$tmp/wrapped.c"
    "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -Wno-unused-variable -Wno-unused-but-set-variable \
      -Wno-unused-parameter -fsyntax-only -I"$src/include" "$tmp/wrapped.c" 2>"$tmp/err" ||
      fail "the C fragment of $where does not compile inside a function: $(cat "$tmp/err")"
  fi
done
[ "$blocks" -ge 3 ] || fail "only $blocks C blocks found in README.md and docs/"
echo "ok: $blocks C blocks compile; fences closed; every table row in a table"
