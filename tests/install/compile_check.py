#!/usr/bin/env python3
"""Compile every source of a configured build, unoptimised, output thrown away.

   compile_check.py BUILD_DIR/compile_commands.json

Each file once (the first of its compile commands), with the build's own
compiler and flags, two at a time, with -O0 -g0 added and the object
written to /dev/null. Prints the diagnostics of each file that gave an
error or a warning and exits 1 if any did: a check in seconds of what
building it all would show in minutes (warnings that need the optimiser
aside)."""
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

entries = {}
for e in json.load(open(sys.argv[1])):
    entries.setdefault(e["file"], e)


def check(e):
    words, out, skip = shlex.split(e["command"]), [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("-o", "-c"):
            skip = True
        else:
            out.append(w)
    # Compiled without optimisation or debug information (the later flags
    # win) and thrown away: GCC's -fsyntax-only stops before it looks for
    # unused functions, and optimising would take minutes.
    r = subprocess.run(out + ["-O0", "-g0", "-c", "-o", "/dev/null", e["file"]], cwd=e["directory"],
                       capture_output=True, text=True)
    return e["file"], r.returncode, r.stderr


bad = 0
with ThreadPoolExecutor(2) as pool:
    for name, rc, err in pool.map(check, entries.values()):
        if rc != 0 or "warning:" in err:
            bad += 1
            print(name + ":\n" + err)
print("%d files checked, %d with errors or warnings" % (len(entries), bad))
sys.exit(1 if bad or not entries else 0)
