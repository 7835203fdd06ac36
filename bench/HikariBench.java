/*
 * HikariBench — HikariCP on the same workloads as bench_pools, printing the
 * same result lines ("R\tbench\timpl\tbackend\tsize\tthreads\tkey=value...").
 * A program that prints figures, not a test. Compiled by bench/run.sh with
 * javac against Debian's jars in /usr/share/java.
 *
 *   java HikariBench cycle|stmt|latency|latency-sleep BACKEND JDBC_URL USER PASSWORD
 *                    SIZES THREADS SECONDS WARMUP_SECONDS [HOLD_US]
 *
 * cycle    getConnection() + close()
 * stmt     getConnection(), Statement.executeQuery("SELECT 1"), read, close,
 *          measured in alternating ~0.1 s slices (ABBA) with the JDBC
 *          baseline: one dedicated DriverManager connection per thread doing
 *          the same statement; prints both rates and their ratio. As in
 *          bench_pools: one set of threads runs the whole measurement and
 *          switches sides, each statement counts for the side it started
 *          on, and the first 0.1 s (half on each side) is not counted.
 * latency  time getConnection() while each holder busy-waits HOLD_US
 * latency-sleep  the same, but each holder sleeps HOLD_US (LockSupport.parkNanos)
 *
 * The JIT compiles the hot paths during the warm-up: every thread count of a
 * pool size is run for WARMUP_SECONDS, untimed, before any is measured.
 */
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Locale;
import java.util.Properties;

public final class HikariBench {
    static volatile boolean stop;
    static volatile boolean go;

    static volatile String mode;
    /* stmt: 0 the dedicated connection, 1 the pool; 2 and 3 the same, not counted (settling) */
    static volatile int side;
    static String backend, url, user, password;
    static Connection[] rawConns;
    static long holdNs = 100_000;
    static boolean sleepHolds; /* latency-sleep: holders sleep, like a thread waiting on its query */

    /* One worker; the padding keeps the counters of two workers off one cache line. */
    static final class Worker extends Thread {
        long p0, p1, p2, p3, p4, p5, p6, p7;
        long ops, errors;
        long[] samples;
        int nsamples;
        long maxHoldNs; /* latency: the longest hold actually took */
        /* stmt: statements on each side; fields, not an array, which would be
         * an object of its own next to the other workers' on the heap */
        long opsRaw, opsPool;
        long q0, q1, q2, q3, q4, q5, q6, q7;
        final HikariDataSource ds;
        volatile boolean ready;

        final int index;

        Worker(HikariDataSource ds, int sampleCap, int index) {
            this.ds = ds;
            this.index = index;
            if (sampleCap > 0) samples = new long[sampleCap];
            setDaemon(true);
        }

        @Override
        public void run() {
            final String mode = HikariBench.mode;
            final Connection own = mode.equals("ab") ? rawConns[index] : null;
            ready = true;
            while (!go) Thread.onSpinWait();
            if (mode.equals("ab")) {
                runInterleaved(own);
                return;
            }
            while (!stop) {
                for (int i = 0; i < 16; i++) {
                    try {
                        switch (mode) {
                            case "cycle": {
                                Connection c = ds.getConnection();
                                c.close();
                                break;
                            }
                            case "stmt": {
                                try (Connection c = ds.getConnection()) {
                                    if (select1(c) != 1) errors++;
                                }
                                break;
                            }
                            case "latency":
                            case "latency-sleep": {
                                long t0 = System.nanoTime();
                                Connection c = ds.getConnection();
                                long t1 = System.nanoTime();
                                if (nsamples < samples.length) samples[nsamples++] = t1 - t0;
                                if (sleepHolds) {
                                    java.util.concurrent.locks.LockSupport.parkNanos(holdNs);
                                } else {
                                    long end = t1 + holdNs;
                                    while (System.nanoTime() < end) Thread.onSpinWait();
                                }
                                maxHoldNs = Math.max(maxHoldNs, System.nanoTime() - t1);
                                c.close();
                                break;
                            }
                            default:
                                throw new IllegalStateException(mode);
                        }
                        ops++;
                    } catch (Exception e) {
                        errors++;
                        if (errors < 3) System.err.println("HikariBench: " + e);
                    }
                }
            }
        }

        /* stmt: alternate between the dedicated connection and the pool as
         * the main thread switches `side`; the side is read before every
         * statement, which counts for the side it started on. */
        void runInterleaved(Connection own) {
            while (!stop) {
                final int phase = side;
                for (int i = 0; i < 16 && side == phase; i++) {
                    try {
                        if ((phase & 1) == 0) {
                            if (select1(own) != 1) {
                                errors++;
                                continue;
                            }
                        } else {
                            try (Connection c = ds.getConnection()) {
                                if (select1(c) != 1) {
                                    errors++;
                                    continue;
                                }
                            }
                        }
                        if (phase == 0) opsRaw++;
                        else if (phase == 1) opsPool++;
                    } catch (Exception e) {
                        errors++;
                        if (errors < 3) System.err.println("HikariBench: " + e);
                    }
                }
            }
        }
    }

    static void sleepSeconds(double s) throws InterruptedException {
        long end = System.nanoTime() + (long) (s * 1e9);
        for (long left; (left = end - System.nanoTime()) > 0; )
            Thread.sleep(left / 1_000_000, (int) (left % 1_000_000));
    }

    /* The stmt measurement: one set of threads, ABBA slices of about 0.1 s
     * after 0.1 s of settling; returns {pool ops/s, raw ops/s, errors}. */
    static double[] interleaved(HikariDataSource ds, int threads, double seconds) throws Exception {
        int slices = Math.max(4, (int) (seconds / 0.1));
        slices += slices % 2;
        double slice = seconds / slices;
        double[] t = new double[2];
        String measured = mode;
        mode = "ab";
        side = 2;
        stop = false;
        go = false;
        ArrayList<Worker> ws = new ArrayList<>();
        for (int i = 0; i < threads; i++) {
            Worker w = new Worker(ds, 0, i);
            ws.add(w);
            w.start();
        }
        for (Worker w : ws) while (!w.ready) Thread.onSpinWait();
        go = true;
        sleepSeconds(0.05);
        side = 3;
        sleepSeconds(0.05);
        for (int k = 0; k < slices; k++) {
            for (int half = 0; half < 2; half++) {
                int now = (k % 2 == 0) == (half == 0) ? 0 : 1;
                long t0 = System.nanoTime();
                side = now;
                sleepSeconds(slice);
                t[now] += (System.nanoTime() - t0) / 1e9;
            }
        }
        stop = true;
        long[] ops = new long[2];
        long errors = 0;
        for (Worker w : ws) {
            w.join();
            ops[0] += w.opsRaw;
            ops[1] += w.opsPool;
            errors += w.errors;
        }
        mode = measured;
        return new double[] {ops[1] / t[1], ops[0] / t[0], errors};
    }

    static int select1(Connection c) throws Exception {
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 1")) {
            return r.next() ? r.getInt(1) : 0;
        }
    }

    static Connection rawConnection() throws Exception {
        Properties p = new Properties();
        if (!user.isEmpty()) {
            p.setProperty("user", user);
            p.setProperty("password", password);
        }
        return DriverManager.getConnection(url, p);
    }

    static HikariDataSource newPool(int size) {
        HikariConfig c = new HikariConfig();
        c.setPoolName("bench");
        c.setJdbcUrl(url);
        if (!user.isEmpty()) {
            c.setUsername(user);
            c.setPassword(password);
        }
        c.setMaximumPoolSize(size);
        c.setMinimumIdle(size);
        c.setConnectionTimeout(30_000);
        return new HikariDataSource(c);
    }

    static final class Result {
        double opsPerSec, elapsed;
        long ops, errors;
        long[] all;
        long minThread = Long.MAX_VALUE, maxThread;
        long maxHoldNs;
    }

    static Result run(HikariDataSource ds, int threads, double seconds, int sampleCap) throws Exception {
        stop = false;
        go = false;
        ArrayList<Worker> ws = new ArrayList<>();
        for (int i = 0; i < threads; i++) {
            Worker w = new Worker(ds, sampleCap, i);
            ws.add(w);
            w.start();
        }
        for (Worker w : ws) while (!w.ready) Thread.onSpinWait();
        long t0 = System.nanoTime();
        go = true;
        Thread.sleep((long) (seconds * 1000));
        stop = true;
        Result r = new Result();
        int n = 0;
        for (Worker w : ws) {
            w.join();
            r.ops += w.ops;
            r.errors += w.errors;
            n += w.nsamples;
            r.minThread = Math.min(r.minThread, w.ops);
            r.maxThread = Math.max(r.maxThread, w.ops);
            r.maxHoldNs = Math.max(r.maxHoldNs, w.maxHoldNs);
        }
        r.elapsed = (System.nanoTime() - t0) / 1e9;
        r.opsPerSec = r.ops / r.elapsed;
        if (sampleCap > 0) {
            r.all = new long[n];
            int k = 0;
            for (Worker w : ws) {
                System.arraycopy(w.samples, 0, r.all, k, w.nsamples);
                k += w.nsamples;
            }
            Arrays.sort(r.all);
        }
        return r;
    }

    static int[] parseList(String s) {
        return Arrays.stream(s.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    public static void main(String[] a) throws Exception {
        if (a.length < 9) {
            System.err.println("usage: HikariBench cycle|stmt|latency BACKEND URL USER PASSWORD SIZES THREADS SECONDS WARMUP [HOLD_US]");
            System.exit(2);
        }
        Locale.setDefault(Locale.ROOT);
        mode = a[0];
        sleepHolds = mode.equals("latency-sleep");
        backend = a[1];
        url = a[2];
        user = a[3];
        // "env:NAME" reads the secret from the environment, so that it
        // never shows in the process list.
        password = a[4].startsWith("env:") ? System.getenv(a[4].substring(4)) : a[4];
        int[] sizes = parseList(a[5]);
        int[] threads = parseList(a[6]);
        double seconds = Double.parseDouble(a[7]);
        double warmup = Double.parseDouble(a[8]);
        if (a.length > 9) holdNs = (long) (Double.parseDouble(a[9]) * 1000);
        if (url.startsWith("jdbc:sqlite:")) Class.forName("org.sqlite.JDBC");
        if (url.startsWith("jdbc:postgresql:")) Class.forName("org.postgresql.Driver");

        for (int size : sizes) {
            HikariDataSource ds = newPool(size);
            int cap = 0;
            if (mode.startsWith("latency"))
                cap = (int) Math.min(50_000_000L, (long) (seconds * 1e9 / holdNs * size * 2) + 1024);
            if (mode.equals("stmt")) {
                int max = Arrays.stream(threads).max().getAsInt();
                rawConns = new Connection[max];
                for (int i = 0; i < max; i++) rawConns[i] = rawConnection();
            }
            String measured = mode;
            for (int t : threads) {
                if (measured.equals("stmt"))
                    interleaved(ds, t, warmup); /* both sides, the same loop as measured */
                else
                    run(ds, t, warmup, cap);
            }
            for (int t : threads) {
                if (measured.equals("stmt")) {
                    double[] ab = interleaved(ds, t, seconds);
                    double pool = ab[0], raw = ab[1];
                    long errors = (long) ab[2];
                    System.out.printf("R\tstmt\tHikariCP\t%s\t%d\t%d\tops_s=%.0f\traw_ops_s=%.0f\tratio=%.4f\terrors=%d%n",
                            backend, size, t, pool, raw, pool / raw, errors);
                    System.out.printf("R\tstmt\traw-jdbc\t%s\t0\t%d\tops_s=%.0f\terrors=0%n", backend, t, raw);
                    System.out.flush();
                    continue;
                }
                Result r = run(ds, t, seconds, cap);
                if (mode.startsWith("latency")) {
                    long[] s = r.all;
                    int n = s.length;
                    double sum = 0;
                    for (long v : s) sum += v;
                    double mean = n > 0 ? sum / n / 1e3 : 0;
                    double p50 = n > 0 ? s[(n - 1) / 2] / 1e3 : 0;
                    double p99 = n > 0 ? s[(int) ((n - 1) * 0.99)] / 1e3 : 0;
                    double max = n > 0 ? s[n - 1] / 1e3 : 0;
                    System.out.printf("R\t" + mode + "\tHikariCP\t%s\t%d\t%d\tops_s=%.0f\tcount=%d\tmean_us=%.1f\tp50_us=%.1f"
                                    + "\tp99_us=%.1f\tmax_us=%.1f\tfairness=%.2f\tmin_thread_ops=%d\tmax_thread_ops=%d"
                                    + "\tmax_hold_us=%.1f\tfails=0\terrors=%d%n",
                            backend, size, t, r.opsPerSec, n, mean, p50, p99, max,
                            mean > 0 ? max / mean : 0.0, r.minThread, r.maxThread, r.maxHoldNs / 1e3, r.errors);
                } else {
                    System.out.printf("R\tcycle\tHikariCP\t%s\t%d\t%d\tops_s=%.0f\tns_op=%.1f\tfails=0\terrors=%d%n",
                            backend, size, t, r.opsPerSec, r.ops > 0 ? r.elapsed * 1e9 / r.ops : 0.0, r.errors);
                }
                System.out.flush();
            }
            if (rawConns != null) {
                for (Connection c : rawConns) c.close();
                rawConns = null;
            }
            ds.close();
        }
    }
}
