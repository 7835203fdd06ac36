#!/usr/bin/env python3
"""report.py — turn bench/run.sh's results.tsv into bench/report/report.md,
the cycles plot (gnuplot: cycles.svg and cycles.png) and the goals table.

    python3 bench/report.py bench/report/results.tsv bench/report

Input lines (tab-separated):
    M <key> <value>                                   run metadata
    R <bench> <impl> <backend> <size> <threads> k=v... one measured point
A point measured in several rounds is reported as the median of its rounds.
"""
import os
import statistics
import subprocess
import sys
from collections import defaultdict

THREADS_ALL = [1, 2, 4, 8, 32]
THREADS_STMT = [1, 2, 8]


def load(path):
    """Read results.tsv. A line that cannot be read (a truncated file, a
    program killed while printing) is skipped and listed, not fatal."""
    meta, points, skipped = {}, defaultdict(list), []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "M" and len(parts) >= 3:
                meta[parts[1]] = parts[2]
            elif parts[0] == "R":
                try:
                    key = (parts[1], parts[2], parts[3], int(parts[4]), int(parts[5]))
                except (IndexError, ValueError):
                    skipped.append(lineno)
                    continue
                kv = {}
                for item in parts[6:]:
                    if "=" in item:
                        k, v = item.split("=", 1)
                        try:
                            kv[k] = float(v)
                        except ValueError:
                            kv[k] = v
                points[key].append(kv)
    return meta, points, skipped


def round_problem(key, kv):
    """Why one round of a point is no measurement (None when it is one): it
    had errors, or it completed nothing. Such a round is left out of every
    median, ratio and verdict, and listed in the report."""
    bench, impl, backend = key[0], key[1], key[2]
    if bench in ("stall", "mem-heap", "mem-rss") or impl == "dbpool-histogram":
        return None
    errors = kv.get("errors")
    # The floors' "errors" only keep a call from being optimised away.
    if backend != "-" and isinstance(errors, float) and errors > 0:
        return f"{errors:,.0f} errors"
    ops = kv.get("ops_s")
    if not isinstance(ops, float) or not ops > 0:
        return "no operation completed" if isinstance(ops, float) else "no ops_s"
    if bench == "stmt" and "raw_ops_s" in kv and not (isinstance(kv["raw_ops_s"], float) and kv["raw_ops_s"] > 0):
        return "no baseline operation completed"
    if bench.startswith("latency") and not (isinstance(kv.get("count"), float) and kv["count"] > 0):
        return "no acquire timed"
    return None


class Data:
    def __init__(self, meta, points, skipped=()):
        self.meta = meta
        self.points = defaultdict(list)
        self.skipped = list(skipped)
        self.dropped = []  # (key, reason) of every round left out
        self.plotted = False
        for key, rows in points.items():
            for kv in rows:
                why = round_problem(key, kv)
                if why is None:
                    self.points[key].append(kv)
                else:
                    self.dropped.append((key, why))

    def stall_threads(self):
        """The thread counts `bench_pools stall` ran with: one alone, and the
        most (one per CPU), or None for either when it did not run."""
        ts = sorted(k[4] for k in self.points if k[0] == "stall")
        return (1 if 1 in ts else None), (ts[-1] if ts and ts[-1] > 1 else None)

    def get(self, bench, impl, backend, size, threads, field):
        """Median over rounds, or None."""
        rows = self.points.get((bench, impl, backend, size, threads))
        if not rows:
            return None
        vals = [r[field] for r in rows if isinstance(r.get(field), float)]
        return statistics.median(vals) if vals else None

    def pooled_ratio(self, bench, impl, backend, size, threads):
        """An interleaved run's ratio over all rounds together: the measured
        side's statements per second summed over the rounds ÷ the baseline
        side's (every round runs as long). A 98 % goal needs that: one run's
        ratio moves by 1-3 % here, and the worst of three medians of three
        would fall short of a pool costing 1 %."""
        rows = self.points.get((bench, impl, backend, size, threads)) or []
        pairs = [(r["ops_s"], r["raw_ops_s"]) for r in rows
                 if isinstance(r.get("ops_s"), float) and isinstance(r.get("raw_ops_s"), float)]
        base = sum(b for _, b in pairs)
        return sum(a for a, _ in pairs) / base if base > 0 else None

    def rounds(self, bench, impl, backend, size, threads):
        return len(self.points.get((bench, impl, backend, size, threads), []))


def fmt_rate(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def fmt_x(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}×"


def fmt_num(v, digits=1):
    return "–" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


BACKENDS_CYCLE = [("sqlite", "SQLite"), ("postgresql", "PostgreSQL")]
POOLS_CYCLE = ["dbpool", "HikariCP", "apr_reslist", "libzdb"]


def cycle_section(d):
    md = []
    md.append("## 1. Pool overhead: acquire + release cycles per second\n")
    md.append(
        "Aggregate cycles per second over all threads (median of the rounds); nothing is done "
        "with the connection. dbpool with its default options (validation `if_idle` after 500 ms, "
        "which a tight loop never triggers). libzdb returns NULL when its pool is full: the loop "
        "retries after `sched_yield()`; *fails* counts those attempts. libzdb pings on every "
        "borrow, under its pool lock (SQLite: a `SELECT 1`; PostgreSQL: `PQstatus` only).\n"
    )
    header = ["pool", "backend", "size"] + [f"{t} thr" for t in THREADS_ALL]
    rows = []
    for b, bname in BACKENDS_CYCLE:
        for size in (8, 2):
            for impl in POOLS_CYCLE:
                r = [f"**{impl}**" if impl == "dbpool" else impl, bname, size]
                for t in THREADS_ALL:
                    r.append(fmt_rate(d.get("cycle", impl, b, size, t, "ops_s")))
                rows.append(r)
    for impl, label in (("mutex", "floor: private mutex lock+unlock"),
                        ("mutex-shared", "floor: one mutex shared by all threads")):
        rows.append([label, "–", "–"] + [fmt_rate(d.get("cycle", impl, "-", 0, t, "ops_s")) for t in THREADS_ALL])
    md.append(table(header, rows))
    md.append("")
    cm = d.get("cycle", "clock_gettime-monotonic", "-", 0, 1, "ns_op")
    cc = d.get("cycle", "clock_gettime-coarse", "-", 0, 1, "ns_op")
    mu = d.get("cycle", "mutex", "-", 0, 1, "ns_op")
    tp = d.get("cycle", "tsc-pair", "-", 0, 1, "ns_op")
    md.append(
        f"For scale, single-threaded on this machine: one uncontended mutex lock+unlock "
        f"{fmt_num(mu)} ns, one `clock_gettime(CLOCK_MONOTONIC)` {fmt_num(cm)} ns, one "
        f"`clock_gettime(CLOCK_MONOTONIC_COARSE)` {fmt_num(cc)} ns"
        + (f", two reads of the time-stamp counter {fmt_num(tp)} ns (what a lease that times its hold "
           f"for the use-time histogram reads: once when it starts, once when it ends)" if tp else "")
        + ".\n"
    )
    md.append("### dbpool's cycle rate relative to each peer (same backend, size, threads)\n")
    header = ["dbpool ÷", "backend", "size"] + [f"{t} thr" for t in THREADS_ALL]
    rows = []
    for peer in ("HikariCP", "apr_reslist", "libzdb"):
        for b, bname in BACKENDS_CYCLE:
            for size in (8, 2):
                r = [peer, bname, size]
                for t in THREADS_ALL:
                    r.append(fmt_x(ratio(d.get("cycle", "dbpool", b, size, t, "ops_s"),
                                         d.get("cycle", peer, b, size, t, "ops_s"))))
                rows.append(r)
    md.append(table(header, rows))
    md.append("")
    fails = []
    for b, bname in BACKENDS_CYCLE:
        for size in (8, 2):
            for t in THREADS_ALL:
                f = d.get("cycle", "libzdb", b, size, t, "fails")
                if f:
                    fails.append(f"{bname}/{size}/{t} thr: {f:,.0f}")
    if fails:
        md.append("libzdb attempts that found its pool full (median per point): " + "; ".join(fails) + ".\n")
    if d.plotted:
        md.append("![cycles per second](cycles.svg)\n")
    else:
        md.append("(gnuplot failed or is not installed: the plot is missing; see the run log.)\n")
    return "\n".join(md)


STMT_BACKENDS = [("sqlite", "SQLite"), ("postgresql", "PostgreSQL"), ("mariadb", "MariaDB")]
STMT_IMPLS = [
    ("raw", "raw: one dedicated connection per thread", "raw"),
    ("raw-vs-raw", "noise check: raw against itself, interleaved, two sets of sessions", "raw"),
    ("raw-vs-self", "control: raw against itself, interleaved, the same sessions", "raw"),
    ("dbpool", "**dbpool** (dbpool_query API)", "raw"),
    ("dbpool-native", "dbpool lease + native SELECT 1", "raw"),
    ("apr_reslist", "apr_reslist + native SELECT 1", "raw"),
    ("libzdb", "libzdb (Connection_executeQuery)", "raw"),
    ("connect-per-query", "connect per query", "raw"),
    ("raw-jdbc", "JDBC: one dedicated connection per thread", "raw-jdbc"),
    ("HikariCP", "HikariCP (JDBC Statement)", "raw-jdbc"),
]


def stmt_section(d):
    md = ["## 2. Statement cycle: acquire, `SELECT 1`, read the value, release\n"]
    md.append(
        "Statements per second over all threads (pool size 8, so no thread ever waits), and in "
        "brackets the ratio to the baseline: a dedicated raw connection per thread (sqlite3 / "
        "PGconn / MYSQL: on SQLite a statement prepared once per connection, then stepped and reset, "
        "as dbpool's statement cache does; PQexec; mysql_query+store_result), or for "
        "HikariCP a dedicated JDBC connection per thread. One set of threads switches between "
        "each pool and its baseline in alternating ~0.1 s slices (ABBA order, the first 0.1 s "
        "not counted), and the ratio is taken within that run, so that the machine's drift and "
        "the threads' placement hit both sides alike; the ratio shown takes all rounds together "
        "(the measured side's statements per second summed over the rounds ÷ the baseline's). "
        "For dbpool the baseline is the thread's own pooled session, leased for the "
        "whole slice and driven with the raw client library, so both sides talk to the same "
        "server process. The baseline rows are separate runs of the raw loop alone. The "
        "*noise check* row runs the raw loop against itself, each side with its own "
        "connections: its distance from 1.000 is how far apart two sets of sessions are here. "
        "The *control* row runs it against itself on the same connections, interleaved exactly "
        "as dbpool's rows are and for as long: what it reads apart from 1.000 is the method's "
        "own noise and bias, the resolution of dbpool's ratio. "
        "PostgreSQL and MariaDB over TCP on 127.0.0.1; SQLite on a file in WAL mode.\n"
    )
    for b, bname in STMT_BACKENDS:
        header = [f"{bname}"] + [f"{t} thr" for t in THREADS_STMT]
        rows = []
        for impl, label, base in STMT_IMPLS:
            size = 0 if impl in ("raw", "raw-vs-raw", "raw-vs-self", "connect-per-query", "raw-jdbc") else 8
            vals = [d.get("stmt", impl, b, size, t, "ops_s") for t in THREADS_STMT]
            if all(v is None for v in vals):
                continue
            r = [label]
            for t, v in zip(THREADS_STMT, vals):
                rt = d.pooled_ratio("stmt", impl, b, size, t)
                if impl == base or v is None or rt is None:
                    r.append(fmt_rate(v))
                else:
                    r.append(f"{fmt_rate(v)} ({rt:.3f})")
            rows.append(r)
        for impl, label in SHARE_IMPLS:
            cells = [share_cell(d, impl, b, t) for t in THREADS_STMT]
            if any(c != "–" for c in cells):
                rows.append([label] + cells)
        md.append(table(header, rows))
        md.append("")
    md.append(
        "The *inside dbpool* rows (`bench_pools stmt-share`, separate runs) time the calls to "
        "`dbpool_acquire` and `dbpool_release` within each statement cycle, per statement, and "
        "in brackets their share of the whole cycle's time on that thread; the cost of a clock "
        "read is measured and taken out. This is the pool's cost measured directly, with no "
        "second session to compare with; the query API's own work (dbpool_query and the result) "
        "is not in it.\n"
    )
    return "\n".join(md)


SHARE_IMPLS = [
    ("dbpool", "inside dbpool: acquire + release, with dbpool_query"),
    ("dbpool-native", "inside dbpool: acquire + release, with the native call"),
]


def share_cell(d, impl, b, t):
    ns = d.get("stmt-share", impl, b, 8, t, "pool_ns")
    sh = d.get("stmt-share", impl, b, 8, t, "share")
    if ns is None or sh is None:
        return "–"
    return f"{ns:,.0f} ns ({sh:.2%})"


def share_range(d, b):
    """The smallest and largest share of the pool's calls in b's statement cycles."""
    vals = [d.get("stmt-share", impl, b, 8, t, "share") for impl, _ in SHARE_IMPLS for t in THREADS_STMT]
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else None


def latency_section(d):
    md = ["## 3. Acquire latency under 4× oversubscription\n"]
    md.append(latency_table(d, "latency", with_intro=True))
    if d.get("latency-sleep", "dbpool", "sqlite", 2, 8, "mean_us") is not None:
        md.append("### The same with holders that sleep\n")
        md.append(
            "Each holder sleeps instead (`nanosleep`, Java `LockSupport.parkNanos`; with the kernel's "
            "default 50 µs timer slack a hold lasts about 150 µs), as a thread does while its query "
            "waits on the server. On 2 cores, 8 busy-waiting threads also compete for the CPUs, and "
            "the scheduler's choices show in the tail; sleeping holders leave the CPUs to whoever "
            "is woken, so the tail is the pool's.\n"
        )
        md.append(latency_table(d, "latency-sleep", with_intro=False))
    one, every = d.stall_threads()
    secs = d.meta.get('latency_seconds', '1.5')
    parts = []
    for t, how in ((one, "One thread that only reads the clock, the other CPUs idle"),
                   (every, "one such thread on every CPU ({}), as under 8 spinning holders")):
        gap = d.get("stall", "machine", "-", 0, t, "max_gap_us") if t else None
        if gap is not None:
            n = d.get("stall", "machine", "-", 0, t, "gaps_over_500us")
            parts.append(f"{how.format(t)}: stopped for up to {fmt_num(gap)} µs at a time "
                         f"({fmt_num(n, 0)} pauses over 0.5 ms per {secs} s run)")
    if parts:
        md.append(
            "**The machine's own pauses** (`bench_pools stall`, same rounds, medians). " + "; ".join(parts) +
            ". With a CPU free, the kernel runs its own threads there; with every CPU busy it must "
            "stop one of these (docs/benchmarks.md names the ones seen). A pause like that delays whoever holds or waits for a connection "
            "at that moment, under any pool.\n"
        )
    return "\n".join(md)


def latency_table(d, bench, with_intro):
    md = []
    hold = d.meta.get("hold_us", "100")
    if with_intro:
        md.append(
            f"8 threads on a pool of 2; each holder busy-waits {hold} µs, releases, and asks again at "
            "once. Wait = time inside the acquire call. Fairness = longest wait ÷ mean wait (the "
            "goal: ≤ 3); p99 ÷ mean is shown too because one scheduler hiccup on a loaded 2-core "
            "machine sets the max. *ops share* is the fewest and most acquisitions one thread got. "
            "libzdb does not wait: its loop retries `getConnection` after `sched_yield()`, and the "
            "wait shown is the time until a retry succeeds. \"dbpool (own histogram)\" is "
            "`dbpool_get_stats().acquire_wait` of the same run, from the pool's bucketed histogram. "
            "*Longest hold* is the longest time one of the 100 µs holds actually took (a spinning "
            "holder preempted, a sleeping one woken late): every waiter behind that connection "
            "waits for it too, whatever the pool does. *Longest hand-off* (dbpool's own "
            "`handoff_delay`) is the longest a waiter took to run again after a release had handed "
            "it its connection: the kernel's wake-up latency, part of that waiter's wait under any "
            "pool that hands over in order.\n"
        )
    header = ["pool", "backend", "acq/s", "mean µs", "p50 µs", "p99 µs", "max µs", "max÷mean",
              "p99÷mean", "ops share min–max", "longest hold µs", "longest hand-off µs"]
    rows = []
    for b, bname in BACKENDS_CYCLE:
        for impl in ("dbpool", "dbpool-histogram", "HikariCP", "apr_reslist", "libzdb"):
            g = lambda f: d.get(bench, impl, b, 2, 8, f)
            if g("mean_us") is None:
                continue
            label = "dbpool (own histogram)" if impl == "dbpool-histogram" else (
                "**dbpool**" if impl == "dbpool" else impl)
            share = "–"
            if g("min_thread_ops") is not None and g("max_thread_ops") is not None:
                share = f"{g('min_thread_ops'):,.0f}–{g('max_thread_ops'):,.0f}"
            rows.append([label, bname, fmt_rate(g("ops_s")) if g("ops_s") else "–", fmt_num(g("mean_us")),
                         fmt_num(g("p50_us")), fmt_num(g("p99_us")), fmt_num(g("max_us")),
                         fmt_num(g("fairness"), 2), fmt_num(ratio(g("p99_us"), g("mean_us")), 2), share,
                         fmt_num(g("max_hold_us")), fmt_num(g("handoff_max_us"))])
    md.append(table(header, rows))
    md.append("")
    return "\n".join(md)


def memory_section(d):
    md = ["## 4. Memory\n"]
    md.append(
        "**Heap bookkeeping** (bench_memory heap): a counting malloc interposer (plus anonymous "
        "mmaps made through the library call, which is how APR takes its 8 KiB blocks) measures "
        "live bytes after opening N raw connections, and after opening a pool of N (min = max = "
        "N), at N = 10 and N = 50, with the connections as opened and again after one `SELECT 1` on "
        "each (pooled: through `dbpool_query` or the pool's own call; raw: a statement kept prepared, as "
        "in section 2); dbpool's SQLite backend makes a connection's statement cache (16 slots) at "
        "its first statement, so only the second figure has it. The goal is judged on the first. "
        "*marginal* = what one more pooled connection costs over a raw "
        "one (the slope between N = 10 and 50); *fixed* = what the pool costs on its own; *at "
        "N=50* = (pool − raw) ÷ 50, the fixed cost spread over 50 connections. Raw SQLite "
        "connections get the same PRAGMAs as dbpool's backend. Noise is about ±30 B per "
        "connection (libpq's own allocations vary).\n"
    )
    header = ["pool", "backend", "raw conn (B)", "marginal B/conn", "fixed B/pool", "at N=50 B/conn",
              "marginal after a SELECT 1", "at N=50 after a SELECT 1"]
    rows = []
    for impl, b in (("dbpool", "mock"), ("dbpool", "sqlite"), ("dbpool", "postgresql"), ("dbpool", "mariadb"),
                    ("libzdb", "postgresql"), ("libzdb", "mariadb"), ("apr_reslist", "postgresql")):
        g = lambda f: d.get("mem-heap", impl, b, 50, 0, f)
        if g("marginal") is None:
            continue
        rows.append(["**dbpool**" if impl == "dbpool" else impl, b,
                     "–" if b == "mock" else fmt_num(g("raw_per_conn"), 0), fmt_num(g("marginal"), 0),
                     fmt_num(g("fixed"), 0), fmt_num(g("per_conn"), 0), fmt_num(g("marginal_used"), 0),
                     fmt_num(g("per_conn_used"), 0)])
    md.append(table(header, rows))
    md.append("")
    md.append(
        "\n**RSS per connection** (bench_memory rss): resident set growth of the client process "
        "after opening 50 connections, ÷ 50 (one warm-up connection opened and closed first). "
        "Client side only; the servers' per-connection processes/threads are not counted.\n"
    )
    header = ["backend", "raw", "dbpool", "libzdb", "apr_reslist"]
    rows = []
    for b, bname in STMT_BACKENDS:
        r = [bname]
        for impl in ("raw", "dbpool", "libzdb", "apr_reslist"):
            v = d.get("mem-rss", impl, b, 50, 0, "per_conn")
            r.append("–" if v is None else f"{v / 1024:.1f} KiB")
        rows.append(r)
    md.append(table(header, rows))
    md.append("")
    return "\n".join(md)


def barging_section(d):
    windows = [0, 50, 1000, 10000]
    if all(d.get("cycle", f"dbpool-barging-{w}", "sqlite", 2, 1, "ops_s") is None for w in windows):
        return ""
    md = ["## 5. dbpool alone: the barging window\n"]
    md.append(
        "`barging_window_us`: a running thread may take a free connection ahead of a waiter who "
        "has waited less than this; past it, every release hands off to the longest waiter "
        "(FIFO). 0 is strict hand-off. SQLite, pool of 2, one round; cycles as in section 1, "
        "latency as in section 3. The rest of this report uses dbpool's default.\n"
    )
    header = ["barging_window_us", "cycles 1 thr", "cycles 8 thr", "cycles 32 thr", "acq/s (latency)",
              "mean µs", "p99 µs", "max µs", "max÷mean"]
    rows = []
    for w in windows:
        impl = f"dbpool-barging-{w}"
        c = [fmt_rate(d.get("cycle", impl, "sqlite", 2, t, "ops_s")) for t in (1, 8, 32)]
        g = lambda f: d.get("latency", impl, "sqlite", 2, 8, f)
        rows.append([w] + c + [fmt_rate(g("ops_s")), fmt_num(g("mean_us")), fmt_num(g("p99_us")),
                               fmt_num(g("max_us")), fmt_num(g("fairness"), 2)])
    md.append(table(header, rows))
    md.append("")
    if d.get("cycle", "dbpool-nocache", "sqlite", 8, 1, "ops_s") is not None:
        md.append("### The thread cache\n")
        md.append(
            "`thread_cache` (on by default) keeps a released connection for the releasing thread, "
            "which takes it back without the pool lock. The default against the same pool with "
            "`pool_thread_cache=off`, SQLite, one round; latency: 8 threads, pool of 2, "
            f"{d.meta.get('hold_us', '100')} µs holds.\n"
        )
        header = ["thread_cache", "pool", "1 thr", "2 thr", "8 thr", "32 thr"]
        rows = []
        for size in (8, 2):
            for label, impl in (("on (default)", "dbpool"), ("off", "dbpool-nocache")):
                rows.append([label, size] + [fmt_rate(d.get("cycle", impl, "sqlite", size, t, "ops_s"))
                                             for t in (1, 2, 8, 32)])
        md.append(table(header, rows))
        md.append("")
        header = ["thread_cache", "acq/s", "mean µs", "p99 µs", "max µs", "max÷mean"]
        rows = []
        for label, impl in (("on (default)", "dbpool"), ("off", "dbpool-nocache")):
            g = lambda f: d.get("latency", impl, "sqlite", 2, 8, f)
            rows.append([label, fmt_rate(g("ops_s")), fmt_num(g("mean_us")), fmt_num(g("p99_us")),
                         fmt_num(g("max_us")), fmt_num(g("fairness"), 2)])
        md.append(table(header, rows))
        md.append("")
    return "\n".join(md)


def problems_section(d):
    """Every round left out and every line that could not be read: what the
    verdicts and tables below are missing, said where it cannot be missed."""
    if not d.dropped and not d.skipped:
        return ""
    md = ["## Data problems\n",
          "These measurements failed and are left out of every table and verdict below (a point "
          "with no round left shows as –, and a goal that needs it is not judged):\n"]
    for (bench, impl, backend, size, threads), why in sorted(d.dropped):
        md.append(f"- {bench} {impl} {backend}, pool {size}, {threads} thr: {why}")
    if d.skipped:
        lines = ", ".join(str(n) for n in d.skipped[:20]) + (" ..." if len(d.skipped) > 20 else "")
        md.append(f"- results.tsv lines that could not be read (truncated?): {lines}")
    md.append("")
    return "\n".join(md)


def goals_section(d):
    md = ["## Goals (issue #5)\n"]
    rows = []

    def verdict(n_ok, n, expected):
        """n of the expected points were measured, n_ok of them meet the
        goal. A goal is met only when every point it names was measured:
        a peer not installed, a server not started or a run that failed
        leaves it unjudged, never met."""
        if n == 0:
            return "**NOT MEASURED**"
        if n_ok < n:
            return "**NOT MET**"
        if n < expected:
            return f"**NOT MEASURED** at {expected - n} of {expected} points (the rest meet it)"
        return "**MET**"

    # 1. Cycle rate vs HikariCP, libzdb, apr.
    for peer, need in (("HikariCP", 1.0), ("libzdb", 3.0), ("apr_reslist", 3.0)):
        worst, where, n_ok, n = None, "", 0, 0
        for b, bname in BACKENDS_CYCLE:
            for size in (8, 2):
                for t in THREADS_ALL:
                    r = ratio(d.get("cycle", "dbpool", b, size, t, "ops_s"), d.get("cycle", peer, b, size, t, "ops_s"))
                    if r is None:
                        continue
                    n += 1
                    n_ok += r >= need
                    if worst is None or r < worst:
                        worst, where = r, f"{bname}, pool {size}, {t} thr"
        label = ("cycle rate ≥ HikariCP's at every thread count and both pool sizes" if peer == "HikariCP"
                 else f"cycle rate ≥ 3× {peer}'s")
        expected = len(BACKENDS_CYCLE) * 2 * len(THREADS_ALL)
        rows.append([label, f"≥ {need:g}× everywhere",
                     f"worst {fmt_x(worst)} ({where}); {n_ok}/{n} measured points meet it"
                     + (f", {expected - n} not measured" if n < expected else "") if worst is not None else "–",
                     verdict(n_ok, n, expected)])
    # within 2x of the mutex floor single-threaded
    mu = d.get("cycle", "mutex", "-", 0, 1, "ns_op")
    worst, where, n_ok, n = None, "", 0, 0
    for b, bname in BACKENDS_CYCLE:
        for size in (8, 2):
            v = d.get("cycle", "dbpool", b, size, 1, "ns_op")
            if v is not None and mu:
                r = v / mu
                n += 1
                n_ok += r <= 2.0
                if worst is None or r > worst:
                    worst, where = r, f"{bname}, pool {size}: {v:.0f} ns vs {mu:.1f} ns"
    # The two clock reads of the use-time histogram, against the same floor.
    tp = d.get("cycle", "tsc-pair", "-", 0, 1, "ns_op")
    clocks = (f"; the two time-stamp counter reads that time a lease cost {tp:.1f} ns alone, "
              f"{fmt_x(tp / mu, 1)} the floor" if tp and mu else "")
    rows.append(["single-threaded cycle within 2× of a bare mutex lock+unlock", "≤ 2×",
                 f"worst {fmt_x(worst, 1)} ({where}){clocks}" if worst is not None else "–",
                 verdict(n_ok, n, len(BACKENDS_CYCLE) * 2)])
    # 2. fairness: spinning holders (a row even without data), then sleeping ones
    one, every = d.stall_threads()
    gap_idle = d.get("stall", "machine", "-", 0, one, "max_gap_us") if one else None
    gap_busy = d.get("stall", "machine", "-", 0, every, "max_gap_us") if every else None
    for bench, label, word, busy in (
            ("latency", "fairness under 4× oversubscription, 100 µs holds ({}): max wait ≤ 3× mean; p99 reported",
             "hold", True),
            ("latency-sleep", "the same with holders that sleep ({})", "sleep", False)):
        for b, bname in BACKENDS_CYCLE:
            # Judged on the worst run, not the median: with two runs the
            # median is their mean, and a run at 4× would pass beside one
            # at 1.8×. The figures shown are that run's.
            runs = [r for r in d.points.get((bench, "dbpool", b, 2, 8), [])
                    if isinstance(r.get("fairness"), float)]
            worst_run = max(runs, key=lambda r: r["fairness"]) if runs else {}

            def g(field, run=worst_run):
                v = run.get(field)
                return v if isinstance(v, float) else None

            f = g("fairness")
            # The sleeping variant is optional (a run may leave it out), but
            # once it ran, a backend without a result says so.
            if f is None and not busy and not any(k[0] == bench for k in d.points):
                continue
            mean, p99, hold = g("mean_us"), g("p99_us"), g("max_hold_us")
            if len(runs) > 1:
                note_runs = (f"worst of {len(runs)} runs (median max÷mean "
                             f"{fmt_num(d.get(bench, 'dbpool', b, 2, 8, 'fairness'), 2)}): ")
            else:
                note_runs = ""
            note = ""
            gap = gap_busy if busy else gap_idle
            if gap is not None:
                note += (f"; the machine alone paused a thread for up to {fmt_num(gap)} µs "
                         f"({'every CPU busy' if busy else 'a CPU free'})")
            if hold is not None:
                note += f"; the longest 100 µs {word} took {fmt_num(hold)} µs"
            handoff = d.get(bench, "dbpool-histogram", b, 2, 8, "handoff_max_us")
            if handoff is not None:
                note += (f"; the longest a waiter took to run after being handed its connection: "
                         f"{fmt_num(handoff)} µs")
            rows.append([label.format(bname), "≤ 3×",
                         f"{note_runs}max÷mean {fmt_num(f, 2)} (max {fmt_num(g('max_us'))} µs, mean {fmt_num(mean)} µs); "
                         f"p99 {fmt_num(p99)} µs = {fmt_num(ratio(p99, mean), 2)}× mean{note}" if f is not None else "–",
                         verdict(int(f <= 3.0), 1, 1) if f is not None else verdict(0, 0, 1)])
    # 3. statement cycle ratio
    for b, bname, need in (("postgresql", "PostgreSQL", 0.98), ("mariadb", "MariaDB", 0.98), ("sqlite", "SQLite", 0.95)):
        worst, where, per, n_ok, n = None, "", [], 0, 0
        for t in THREADS_STMT:
            r = d.pooled_ratio("stmt", "dbpool", b, 8, t)
            if r is None:
                per.append(f"{t} thr not measured")
                continue
            per.append(f"{t} thr {r:.3f}")
            n += 1
            n_ok += r >= need
            if worst is None or r < worst:
                worst, where = r, f"{t} thr"
        nat = [d.pooled_ratio("stmt", "dbpool-native", b, 8, t) for t in THREADS_STMT]
        nat = [x for x in nat if x is not None]
        native = f"; lease + native call (dbpool-native) worst {min(nat):.1%}" if nat else ""
        aa = [d.pooled_ratio("stmt", "raw-vs-self", b, 0, t) for t in THREADS_STMT]
        aa = [x for x in aa if x is not None]
        noise = (f"; the same method without the pool (control, raw-vs-self) reads "
                 f"{min(aa):.3f}–{max(aa):.3f}" if aa else "")
        sr = share_range(d, b) if b != "sqlite" else None
        if sr is not None:
            noise += (f"; timed directly, dbpool_acquire + dbpool_release are {sr[0]:.2%}–{sr[1]:.2%} "
                      "of a statement cycle")
        rows.append([f"statement cycle through dbpool vs a dedicated raw connection ({bname})",
                     f"≥ {need:.0%}",
                     f"worst {worst:.1%} ({'; '.join(per)}){native}{noise}" if worst is not None else "–",
                     verdict(n_ok, n, len(THREADS_STMT))])
    # 4. bookkeeping
    for b in ("mock", "sqlite", "postgresql", "mariadb"):
        m = d.get("mem-heap", "dbpool", b, 50, 0, "marginal")
        fx = d.get("mem-heap", "dbpool", b, 50, 0, "fixed")
        pc = d.get("mem-heap", "dbpool", b, 50, 0, "per_conn")
        z = d.get("mem-heap", "libzdb", b, 50, 0, "marginal")
        extra = f"; libzdb {z:,.0f} B" if z is not None else ""
        mu = d.get("mem-heap", "dbpool", b, 50, 0, "marginal_used")
        if mu is not None:
            # Said beside the verdict, which is on connections as opened: a
            # cache of prepared statements is not the pool's bookkeeping,
            # but it is memory a used connection holds that a raw one does not.
            extra += f"; after one SELECT 1 on each connection {mu:,.0f} B per connection"
            if b == "sqlite" and m is not None and mu - m > 256:
                extra += " (the statement cache dbpool's SQLite backend makes at a connection's first statement)"
        rows.append([f"pool bookkeeping per connection ({b}) < 512 B", "< 512 B",
                     f"{m:,.0f} B per connection (+ {fmt_num(fx, 0)} B fixed per pool; {fmt_num(pc, 0)} B/conn "
                     f"at N=50){extra}" if m is not None else "–",
                     verdict(int(m < 512), 1, 1) if m is not None else verdict(0, 0, 1)])
    md.append(table(["goal", "target", "measured", "verdict"], rows))
    md.append(
        "\nEach verdict is computed by bench/report.py from the medians below (fairness: from the "
        "worst of the latency runs, whose figures it shows); nothing is "
        "adjusted by hand. A goal is MET only when every point it names was measured; a point "
        "that was not (a peer not installed, a server not started, a run that failed: see *Data "
        "problems* above when there are any) leaves it NOT MEASURED, never met. Bookkeeping is "
        "judged on the marginal cost per connection; the pool's fixed cost is shown beside it.\n"
    )
    return "\n".join(md)


def plot(d, out):
    """cycles.svg / cycles.png: cycles/s against threads, one panel per backend and size."""
    impls = POOLS_CYCLE + ["mutex"]
    panels = []
    for b, bname in BACKENDS_CYCLE:
        for size in (8, 2):
            name = f"cycles_{b}_{size}.dat"
            with open(os.path.join(out, name), "w") as f:
                f.write("# threads " + " ".join(impls) + " (M cycles/s)\n")
                for t in THREADS_ALL:
                    vals = []
                    for impl in impls:
                        v = d.get("cycle", impl, "-" if impl == "mutex" else b, 0 if impl == "mutex" else size, t,
                                  "ops_s")
                        vals.append("NaN" if v is None else f"{v / 1e6:.4f}")
                    f.write(f"{t} " + " ".join(vals) + "\n")
            panels.append((name, f"{bname}, pool of {size}"))
    styles = {
        "dbpool": "lw 3 lc rgb '#d62728' pt 7",
        "HikariCP": "lw 2 lc rgb '#1f77b4' pt 5",
        "apr_reslist": "lw 2 lc rgb '#2ca02c' pt 9",
        "libzdb": "lw 2 lc rgb '#9467bd' pt 11",
        "mutex": "lw 1 dt 2 lc rgb '#555555' pt 0",
    }
    labels = {"mutex": "floor: private mutex"}

    def script(term, fname):
        s = [f"set terminal {term}", f"set output '{fname}'",
             "set multiplot layout 2,2 title 'Acquire+release cycles per second (higher is better)'",
             "set logscale x 2", "set logscale y 10", "set xtics (1,2,4,8,32)", "set xrange [0.8:40]",
             "set yrange [0.05:5000]", "set grid", "set key top center horizontal maxrows 2 font ',9' samplen 2",
             "set ytics ('0.1' 0.1, '1' 1, '10' 10, '100' 100, '1000' 1000)",
             "set xlabel 'threads'", "set ylabel 'M cycles/s'"]
        for name, title in panels:
            s.append(f"set title '{title}'")
            parts = []
            for i, impl in enumerate(impls):
                parts.append(f"'{name}' using 1:{i + 2} with linespoints {styles[impl]} title '{labels.get(impl, impl)}'")
            s.append("plot " + ", ".join(parts))
        s.append("unset multiplot")
        return "\n".join(s) + "\n"

    for fname in ("cycles.svg", "cycles.png"):  # never show an earlier run's plot
        if os.path.exists(os.path.join(out, fname)):
            os.remove(os.path.join(out, fname))
    ok = True
    for term, fname in (("svg size 1100,800 dynamic noenhanced font 'Sans,11'", "cycles.svg"),
                        ("pngcairo size 1100,800 noenhanced font 'Sans,10'", "cycles.png")):
        gp = os.path.join(out, fname.replace(".", "_") + ".gp")
        with open(gp, "w") as f:
            f.write(script(term, fname))
        try:
            r = subprocess.run(["gnuplot", os.path.basename(gp)], cwd=out, capture_output=True, text=True)
        except OSError as e:  # gnuplot not installed
            sys.stderr.write(f"report.py: cannot run gnuplot: {e}\n")
            return False
        if r.returncode != 0:
            sys.stderr.write(f"report.py: gnuplot failed for {fname}: {r.stderr}\n")
            ok = False
    return ok


def header_section(d):
    m = d.meta
    md = ["# dbpool benchmark report\n"]
    md.append(
        f"Generated by `bench/run.sh` ({m.get('started', '?')}); every figure below was measured "
        f"in this one run, side by side, on this machine. Points: {m.get('seconds', '?')} s each, "
        f"{m.get('rounds', '?')} rounds interleaved across implementations, median reported "
        f"(dbpool's statement rows on PostgreSQL and MariaDB and their control: {m.get('stmt_seconds', m.get('seconds', '?'))} s); "
        f"latency: {m.get('latency_seconds', '?')} s per run, median of up to 2 runs.\n"
    )
    rows = [["machine", m.get("cpu", "?")], ["kernel", m.get("kernel", "?")],
            ["load average at start / end", f"{m.get('load_start', '?')} / {m.get('load_end', '?')}"],
            ["dbpool", m.get("dbpool", "?")], ["SQLite", m.get("sqlite", "?")],
            ["PostgreSQL server + libpq", m.get("postgresql", "?")], ["MariaDB server + Connector/C", m.get("mariadb", "?")],
            ["libzdb", m.get("libzdb", "?")], ["APR-util (apr_reslist)", m.get("apr_util", "?")],
            ["HikariCP", m.get("hikaricp", "?")], ["Java", m.get("java", "?")],
            ["duration of the run", f"{m.get('duration_s', '?')} s"]]
    md.append(table(["", ""], rows))
    md.append(
        "\nThe machine has 2 cores: at 4 threads and above every pool is oversubscribed in CPU "
        "terms, and other work on the machine (the load average above) lands in the figures. "
        "See docs/benchmarks.md for what each benchmark does and its caveats.\n"
    )
    return "\n".join(md)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: report.py results.tsv OUTDIR")
    meta, points, skipped = load(sys.argv[1])
    d = Data(meta, points, skipped)
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    d.plotted = plot(d, out)
    parts = [header_section(d), problems_section(d), goals_section(d), cycle_section(d), stmt_section(d), latency_section(d),
             memory_section(d), barging_section(d)]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(parts))
    print(os.path.join(out, "report.md"))


if __name__ == "__main__":
    main()
