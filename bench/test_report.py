#!/usr/bin/env python3
"""test_report.py — checks bench/report.py on small hand-made results files:
its verdicts, and that missing or broken data is said, never counted as met.
Run by hand (no server, no benchmark run needed):

    python3 bench/test_report.py

Exits non-zero and names the failed check when one fails.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "report.py")

THREADS_ALL = [1, 2, 4, 8, 32]
THREADS_STMT = [1, 2, 8]


def r(*fields, **kv):
    return "\t".join(["R"] + [str(f) for f in fields] + [f"{k}={v}" for k, v in kv.items()])


def latency_line(impl, backend, fairness, errors=0, count=20000, mean=200.0):
    return r("latency", impl, backend, 2, 8, ops_s=20000 if count else 0, count=count, mean_us=mean if count else 0,
             p50_us=150.0 if count else 0, p99_us=600.0 if count else 0, max_us=mean * fairness if count else 0,
             fairness=f"{fairness:.2f}" if count else "0.00", min_thread_ops=2000, max_thread_ops=3000,
             max_hold_us=400.0, fails=0, errors=errors)


def complete(rounds=3):
    """A full, healthy run in which dbpool meets every goal."""
    out = ["M\tseconds\t0.5", f"M\trounds\t{rounds}", "M\tlatency_seconds\t1.5", "M\thold_us\t100"]
    for _ in range(rounds):
        for t in THREADS_ALL:
            out.append(r("cycle", "mutex", "-", 0, t, ops_s=100e6 * t, ns_op=10.0 / t, fails=0, errors=0))
            out.append(r("cycle", "mutex-shared", "-", 0, t, ops_s=50e6, ns_op=20.0, fails=0, errors=0))
        for b in ("sqlite", "postgresql"):
            for size in (8, 2):
                for t in THREADS_ALL:
                    for impl, rate in (("dbpool", 60e6), ("HikariCP", 20e6), ("apr_reslist", 10e6),
                                       ("libzdb", 1e6)):
                        out.append(r("cycle", impl, b, size, t, ops_s=rate, ns_op=1e9 / rate, fails=0, errors=0))
        for b in ("sqlite", "postgresql", "mariadb"):
            for t in THREADS_STMT:
                out.append(r("stmt", "raw", b, 0, t, ops_s=10000, errors=0))
                out.append(r("stmt", "dbpool", b, 8, t, ops_s=9950, raw_ops_s=10000, ratio=0.995, errors=0))
                out.append(r("stmt", "raw-vs-self", b, 0, t, ops_s=10000, raw_ops_s=10000, ratio=1.0, errors=0))
    for _ in range(2):
        for b in ("sqlite", "postgresql"):
            out.append(latency_line("dbpool", b, 2.0))
    for b in ("mock", "sqlite", "postgresql", "mariadb"):
        out.append(r("mem-heap", "dbpool", b, 50, 0, raw_bytes=1000, pool_bytes=2000, per_conn=300, marginal=200,
                     fixed=5000, raw_per_conn=20))
    return out


def report(lines, path_env=None):
    """Run report.py on `lines`; returns (exit status, report.md or stderr)."""
    d = tempfile.mkdtemp(prefix="dbpool-report-test.")
    try:
        tsv = os.path.join(d, "results.tsv")
        with open(tsv, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(os.environ)
        if path_env is not None:
            env["PATH"] = path_env
        p = subprocess.run([sys.executable, REPORT, tsv, os.path.join(d, "out")], capture_output=True, text=True,
                           env=env)
        if p.returncode != 0:
            return p.returncode, p.stderr
        with open(os.path.join(d, "out", "report.md")) as f:
            return 0, f.read()
    finally:
        shutil.rmtree(d)


def goal_row(md, start):
    for line in md.splitlines():
        if line.startswith("| " + start):
            return line
    raise AssertionError(f"no goal row starting with {start!r}")


FAILED = []


def check(name, cond, detail=""):
    print(("ok     " if cond else "FAILED ") + name)
    if not cond:
        FAILED.append(name)
        if detail:
            print("       " + detail.replace("\n", "\n       "))


def main():
    rc, md = report(complete())
    check("a complete, healthy run reports", rc == 0, md)
    if rc != 0:
        sys.exit(1)
    goals = [l for l in md.splitlines() if l.startswith("| ") and "**" in l.split("|")[-2]]
    check("a complete, healthy run meets every goal",
          goals and all(l.split("|")[-2].strip() == "**MET**" for l in goals), "\n".join(goals))

    # A latency run in which every acquire failed: no wait was timed, and a
    # fairness of 0.00 is no measurement of fairness.
    lines = [l for l in complete() if not (l.startswith("R\tlatency\tdbpool\tsqlite"))]
    lines.append(latency_line("dbpool", "sqlite", 0.0, errors=5000, count=0))
    rc, md = report(lines)
    row = goal_row(md, "fairness under 4× oversubscription, 100 µs holds (SQLite)")
    check("failed latency run: the fairness goal is not met", rc == 0 and "**MET**" not in row, row)
    check("failed latency run: listed as a data problem",
          "## Data problems" in md and re.search(r"latency dbpool sqlite, pool 2, 8 thr: 5,000 errors", md) is not None,
          md[:1500])

    # Two latency runs, one fair and one not: the median (their mean) would
    # pass; the goal is a bound on every run.
    lines = [l for l in complete() if not l.startswith("R\tlatency\tdbpool\tpostgresql")]
    lines += [latency_line("dbpool", "postgresql", 1.8), latency_line("dbpool", "postgresql", 4.0)]
    rc, md = report(lines)
    row = goal_row(md, "fairness under 4× oversubscription, 100 µs holds (PostgreSQL)")
    check("fairness: one unfair run of two is not met", rc == 0 and "**NOT MET**" in row and "4.00" in row, row)

    # The heap figures after a statement on each connection are shown beside
    # the bookkeeping goal, not hidden behind the figure as opened.
    lines = [l for l in complete() if not l.startswith("R\tmem-heap\tdbpool\tsqlite")]
    lines.append(r("mem-heap", "dbpool", "sqlite", 50, 0, raw_bytes=1000, pool_bytes=2000, per_conn=300,
                   marginal=370, fixed=5000, raw_per_conn=20, per_conn_used=2861, marginal_used=1957,
                   fixed_used=45170, raw_per_conn_used=20))
    rc, md = report(lines)
    row = goal_row(md, "pool bookkeeping per connection (sqlite)")
    check("bookkeeping: the figure after a statement is in the goal row", rc == 0 and "1,957 B" in row, row)

    # Holders that sleep: run on SQLite, failed on PostgreSQL.
    lines = complete() + [latency_line("dbpool", "sqlite", 2.0).replace("R\tlatency\t", "R\tlatency-sleep\t"),
                          latency_line("dbpool", "postgresql", 0.0, errors=100, count=0)
                          .replace("R\tlatency\t", "R\tlatency-sleep\t")]
    rc, md = report(lines)
    row = goal_row(md, "the same with holders that sleep (PostgreSQL)") if rc == 0 and \
        "holders that sleep (PostgreSQL)" in md else "(no row)"
    check("sleeping holders failed on one backend: its row says not measured", "NOT MEASURED" in row, row)

    # HikariCP measured on SQLite only (its PostgreSQL run failed).
    lines = [l for l in complete() if not l.startswith("R\tcycle\tHikariCP\tpostgresql")]
    rc, md = report(lines)
    row = goal_row(md, "cycle rate ≥ HikariCP's")
    check("HikariCP half measured: not MET 'everywhere'", rc == 0 and "**MET**" not in row and "NOT MEASURED" in row,
          row)

    # A peer whose every cycle failed (ops_s=0, errors): not a point where dbpool wins.
    lines = [l for l in complete() if not l.startswith("R\tcycle\tapr_reslist\tpostgresql\t2\t32")]
    lines += [r("cycle", "apr_reslist", "postgresql", 2, 32, ops_s=0, ns_op=0.0, fails=0, errors=900)] * 3
    rc, md = report(lines)
    row = goal_row(md, "cycle rate ≥ 3× apr_reslist's")
    check("a peer's failed point: the goal is not met", rc == 0 and "**MET**" not in row, row)

    # dbpool's statement run failed at 8 threads on MariaDB.
    lines = [l for l in complete() if not l.startswith("R\tstmt\tdbpool\tmariadb\t8\t8")]
    rc, md = report(lines)
    row = goal_row(md, "statement cycle through dbpool vs a dedicated raw connection (MariaDB)")
    check("statement goal with a thread count missing: not met", rc == 0 and "**MET**" not in row, row)

    # No PostgreSQL at all: its goals say so.
    lines = [l for l in complete() if "\tpostgresql\t" not in l]
    rc, md = report(lines)
    row = goal_row(md, "statement cycle through dbpool vs a dedicated raw connection (PostgreSQL)")
    check("no PostgreSQL: its statement goal is not measured", rc == 0 and "NOT MEASURED" in row, row)

    # A truncated file: the last line cut short.
    lines = complete() + ["R\tcycle\tdbpool\tsqlite\t8\t"]
    rc, md = report(lines)
    check("a truncated line does not crash the report", rc == 0, md)
    check("a truncated line is listed", rc == 0 and "could not be read" in md, md[:1500])

    # No gnuplot on the PATH: the report is still written, and says the plot is missing.
    bindir = tempfile.mkdtemp(prefix="dbpool-report-path.")
    try:
        rc, md = report(complete(), path_env=bindir)
    finally:
        shutil.rmtree(bindir)
    check("no gnuplot: the report is still written", rc == 0, md)
    check("no gnuplot: the report says the plot is missing, and does not link it",
          rc == 0 and "plot is missing" in md and "cycles.svg" not in md, md[-800:])

    if FAILED:
        print(f"{len(FAILED)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
