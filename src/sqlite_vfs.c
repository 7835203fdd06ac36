/*
 * sqlite_vfs.c — "dbpool-unix" and "dbpool-memdb" (sqlite_vfs.h).
 *
 * Lock waits that a signal does not cut short. SQLite's busy handler
 * (busy_timeout) counts the time it waited by the sleeps it asked for, and
 * the Unix VFS sleeps with usleep, which a signal handler installed without
 * SA_RESTART ends early: under an application's interval timer a
 * statement gave up on a lock after a few milliseconds with "database is
 * locked", busy_timeout (5000 ms) not nearly spent. File databases are
 * opened through "dbpool-unix", the default Unix VFS under another name
 * with a sleep that sleeps the whole time asked. Everything else is the
 * default VFS's own, its locks' bookkeeping included (shared with the
 * application's connections to the same file). Memory databases are
 * opened through "dbpool-memdb", SQLite's memdb VFS under another name
 * with the same sleep: memdb's own sleeps through the default VFS, and a
 * lock wait on sqlite::memory: ended early the same way. Its functions
 * ignore the VFS they are called with but for pAppData (the default VFS,
 * for randomness, time and dlopen), which the copy keeps; the databases
 * it holds are found by name, whichever of the two opened them.
 *
 * SQLite opens a database attached to a connection (ATTACH, in a lease or
 * in after_connect) through the VFS of its main database: through memdb,
 * a file path became an empty database in memory, and what was written
 * to it was lost. So dbpool-memdb gives memdb the pool's own databases
 * (DBPOOL_MEMDB_PREFIX, their journals, and nameless temporary files, as
 * memdb had them) and dbpool-unix every other path.
 *
 * Cancellation. A pthread_cancel that took effect inside sqlite3_step (at
 * a read, a write, an fsync, a lock wait's sleep) would end the thread
 * with the statement half-run and the connection unusable; the pool would
 * then hand it out again. The core used to disable cancellation around
 * every statement call, six pthread_setcancelstate calls a statement
 * (about 36 ns, a third of a cached SELECT 1's whole cost through the
 * pool). Instead, the calls of these VFSes that may reach a cancellation
 * point disable it themselves: the Unix VFS's open, close, read, write,
 * sync, truncate, lock and unlock, file control, shared-memory map and
 * unmap, delete, sleep and randomness. Those are the calls that make
 * system calls POSIX names as cancellation points (close, fsync, open,
 * pread, pwrite, nanosleep, fcntl's F_SETLKW; an unlock may close a
 * descriptor SQLite kept for later). The rest make none: fstat,
 * F_SETLK/F_GETLK locks, mmap, memory barriers and the shared-memory
 * locks (which use F_SETLKW only in a build with SETLK_TIMEOUT: then those
 * are wrapped too). Memory databases make no system call at all, but
 * through the default VFS's sleep and randomness, both replaced here.
 * The cost moves to where I/O happens, beside a system call that costs
 * far more. SQLite's random number generator is seeded through the
 * default VFS, not the connection's, once per process (the Unix VFS's
 * open starts it anew in a forked child): it is seeded here, cancellation
 * off, when the VFS is made and after each open, before any statement
 * needs it.
 */
#include "sqlite_vfs.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

static sqlite3_vfs unix_vfs, mixed_vfs;
static const sqlite3_vfs *base_unix; /* the default VFS whose file functions unix_vfs wraps */
static sqlite3_vfs *real_memdb;
static bool unix_vfs_ok, mixed_vfs_ok;
static bool wrap_shm_lock; /* SQLite built with SETLK_TIMEOUT: shared-memory locks may wait */
static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;

/* ---- files of the Unix VFS, each call that may block with cancellation off */

/* A file of dbpool-unix: our methods, then the Unix VFS's file itself
 * (no pointer to it: it is always right behind, which saves 8 bytes a
 * file, and a connection has two or three open). */
#define NC_HEADER ((int)((sizeof(sqlite3_file) + 7) & ~(size_t)7))

static sqlite3_file *real(sqlite3_file *f) { return (sqlite3_file *)((char *)f + NC_HEADER); }

#define NC_CALL(expr)                                                                                        \
    do {                                                                                                     \
        int cancel_state_ = dbpool__nocancel_begin();                                                        \
        int rc_ = (expr);                                                                                    \
        dbpool__nocancel_end(cancel_state_);                                                                 \
        return rc_;                                                                                          \
    } while (0)

static int nc_close(sqlite3_file *f) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xClose(r));
}
static int nc_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xRead(r, buf, n, off));
}
static int nc_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xWrite(r, buf, n, off));
}
static int nc_truncate(sqlite3_file *f, sqlite3_int64 size) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xTruncate(r, size));
}
static int nc_sync(sqlite3_file *f, int flags) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xSync(r, flags));
}
static int nc_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    sqlite3_file *r = real(f);
    return r->pMethods->xFileSize(r, size);
}
static int nc_lock(sqlite3_file *f, int level) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xLock(r, level));
}
static int nc_unlock(sqlite3_file *f, int level) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xUnlock(r, level));
}
static int nc_check_reserved_lock(sqlite3_file *f, int *out) {
    sqlite3_file *r = real(f);
    return r->pMethods->xCheckReservedLock(r, out);
}
static int nc_file_control(sqlite3_file *f, int op, void *arg) {
    sqlite3_file *r = real(f);
    int cancel_state = dbpool__nocancel_begin();
    int rc = r->pMethods->xFileControl(r, op, arg);
    dbpool__nocancel_end(cancel_state);
    /* The Unix VFS names itself (its file was opened through it): a VFS
     * that wraps another puts its own name in front, SQLite's convention. */
    if (op == SQLITE_FCNTL_VFSNAME && rc == SQLITE_OK && *(char **)arg)
        *(char **)arg = sqlite3_mprintf("%s/%z", unix_vfs.zName, *(char **)arg);
    return rc;
}
static int nc_sector_size(sqlite3_file *f) {
    sqlite3_file *r = real(f);
    return r->pMethods->xSectorSize(r);
}
static int nc_device_characteristics(sqlite3_file *f) {
    sqlite3_file *r = real(f);
    return r->pMethods->xDeviceCharacteristics(r);
}
static int nc_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xShmMap(r, region, size, extend, out));
}
static int nc_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
    sqlite3_file *r = real(f);
    if (!wrap_shm_lock)
        return r->pMethods->xShmLock(r, offset, n, flags);
    NC_CALL(r->pMethods->xShmLock(r, offset, n, flags));
}
static void nc_shm_barrier(sqlite3_file *f) {
    sqlite3_file *r = real(f);
    r->pMethods->xShmBarrier(r);
}
static int nc_shm_unmap(sqlite3_file *f, int delete_flag) {
    sqlite3_file *r = real(f);
    NC_CALL(r->pMethods->xShmUnmap(r, delete_flag));
}
static int nc_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out) {
    sqlite3_file *r = real(f);
    return r->pMethods->xFetch(r, off, n, out);
}
static int nc_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
    sqlite3_file *r = real(f);
    return r->pMethods->xUnfetch(r, off, p);
}

/* One table per version of the wrapped file's methods (the Unix VFS's
 * variants differ: 1 for dot-file locks, 3 for POSIX locks) and per
 * whether it has shared memory (SQLite allows WAL only when xShmMap is
 * set: the no-lock variant has none). [shm][version - 1]. */
static sqlite3_io_methods nc_methods[2][3];

static void nc_methods_make(void) {
    for (int shm = 0; shm < 2; shm++) {
        for (int v = 1; v <= 3; v++) {
            sqlite3_io_methods *m = &nc_methods[shm][v - 1];
            *m = (sqlite3_io_methods){
                .iVersion = v,
                .xClose = nc_close,
                .xRead = nc_read,
                .xWrite = nc_write,
                .xTruncate = nc_truncate,
                .xSync = nc_sync,
                .xFileSize = nc_file_size,
                .xLock = nc_lock,
                .xUnlock = nc_unlock,
                .xCheckReservedLock = nc_check_reserved_lock,
                .xFileControl = nc_file_control,
                .xSectorSize = nc_sector_size,
                .xDeviceCharacteristics = nc_device_characteristics,
            };
            if (v >= 2) {
                m->xShmMap = shm ? nc_shm_map : NULL;
                m->xShmLock = nc_shm_lock;
                m->xShmBarrier = nc_shm_barrier;
                m->xShmUnmap = nc_shm_unmap;
            }
            if (v >= 3) {
                m->xFetch = nc_fetch;
                m->xUnfetch = nc_unfetch;
            }
        }
    }
}

static int nc_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    sqlite3_file *r = real(f);
    f->pMethods = NULL;
    r->pMethods = NULL;
    (void)vfs;
    /* Opened through the Unix VFS itself, not through dbpool-unix, a copy
     * of it: its open reads the VFS's name, and unix-excl's files take
     * their process-wide exclusive lock only when it is "unix-excl". */
    int cancel_state = dbpool__nocancel_begin();
    int rc = base_unix->xOpen((sqlite3_vfs *)base_unix, name, r, flags, out);
    /* The Unix VFS's open resets SQLite's random number generator in a
     * process it has not seen before (a child after fork); the statement
     * that next needs a random number would seed it again through the
     * default VFS, reading /dev/urandom with the caller's cancellation
     * state. Seeded here instead (a no-op but a few bytes' copy after). */
    unsigned char seed;
    sqlite3_randomness(1, &seed);
    dbpool__nocancel_end(cancel_state);
    /* SQLite closes a file whose xOpen set pMethods, even when it failed. */
    const sqlite3_io_methods *m = r->pMethods;
    if (m) {
        int v = m->iVersion < 1 ? 1 : m->iVersion > 3 ? 3 : m->iVersion;
        f->pMethods = &nc_methods[v >= 2 && m->xShmMap ? 1 : 0][v - 1];
    }
    return rc;
}

static int nc_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
    NC_CALL(base_unix->xDelete(vfs, name, sync_dir));
}

static int nc_randomness(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    sqlite3_vfs *d = (sqlite3_vfs *)base_unix; /* memdb's asks the default VFS: the same */
    NC_CALL(d->xRandomness(d, n, out));
}

static int sleep_whole(sqlite3_vfs *vfs, int us) {
    (void)vfs;
    if (us <= 0)
        return 0;
    int64_t until = dbpool__now_ns() + (int64_t)us * 1000;
    struct timespec ts = {(time_t)(until / INT64_C(1000000000)), (long)(until % INT64_C(1000000000))};
    int cancel_state = dbpool__nocancel_begin();
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    dbpool__nocancel_end(cancel_state);
    return us;
}

/* ---- dbpool-memdb: the pool's own memory databases, every other path a file */

static bool in_memory(const char *name) {
    return !name || strncmp(name, DBPOOL_MEMDB_PREFIX, sizeof DBPOOL_MEMDB_PREFIX - 1) == 0;
}

static int mixed_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    if (in_memory(name))
        return real_memdb->xOpen(real_memdb, name, f, flags, out);
    return unix_vfs.xOpen(&unix_vfs, name, f, flags, out);
}

static int mixed_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
    (void)vfs;
    if (in_memory(name)) /* memdb deletes nothing: its files go when closed */
        return real_memdb->xDelete ? real_memdb->xDelete(real_memdb, name, sync_dir) : SQLITE_OK;
    return unix_vfs.xDelete(&unix_vfs, name, sync_dir);
}

static int mixed_access(sqlite3_vfs *vfs, const char *name, int flags, int *res) {
    (void)vfs;
    if (in_memory(name))
        return real_memdb->xAccess(real_memdb, name, flags, res);
    return unix_vfs.xAccess(&unix_vfs, name, flags, res);
}

static int mixed_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    (void)vfs;
    if (in_memory(name))
        return real_memdb->xFullPathname(real_memdb, name, n, out);
    return unix_vfs.xFullPathname(&unix_vfs, name, n, out);
}

static void vfs_make(void) {
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    sqlite3_vfs *unix_own = sqlite3_vfs_find("unix");
    /* Only the Unix VFS (any of its variants: they share its open), whose
     * functions take any struct that carries its pAppData; an
     * application's own default VFS is left alone, whatever its name. */
    if (!base || !unix_own || base->xOpen != unix_own->xOpen)
        return;
    base_unix = base;
    wrap_shm_lock = sqlite3_compileoption_used("ENABLE_SETLK_TIMEOUT") != 0;
    nc_methods_make();
    /* Seeded now, cancellation off (the default VFS reads /dev/urandom). */
    int cancel_state = dbpool__nocancel_begin();
    unsigned char seed;
    sqlite3_randomness(1, &seed);
    dbpool__nocancel_end(cancel_state);

    unix_vfs = *base;
    unix_vfs.pNext = NULL;
    unix_vfs.zName = "dbpool-unix";
    unix_vfs.szOsFile = NC_HEADER + base->szOsFile;
    unix_vfs.xOpen = nc_open;
    unix_vfs.xDelete = nc_delete;
    unix_vfs.xRandomness = nc_randomness;
    unix_vfs.xSleep = sleep_whole;
    unix_vfs_ok = sqlite3_vfs_register(&unix_vfs, 0) == SQLITE_OK;
    real_memdb = sqlite3_vfs_find("memdb");
    if (!unix_vfs_ok || !real_memdb || real_memdb->iVersion < 2)
        return; /* plain memdb */
    mixed_vfs = *real_memdb;
    mixed_vfs.iVersion = 2; /* no system calls of its own */
    mixed_vfs.pNext = NULL;
    mixed_vfs.zName = "dbpool-memdb";
    /* Room for either's file; paths as long as the Unix VFS takes. */
    if (unix_vfs.szOsFile > mixed_vfs.szOsFile)
        mixed_vfs.szOsFile = unix_vfs.szOsFile;
    mixed_vfs.mxPathname = unix_vfs.mxPathname;
    mixed_vfs.xOpen = mixed_open;
    mixed_vfs.xDelete = mixed_delete;
    mixed_vfs.xAccess = mixed_access;
    mixed_vfs.xFullPathname = mixed_full_pathname;
    mixed_vfs.xRandomness = nc_randomness;
    mixed_vfs.xSleep = sleep_whole;
    mixed_vfs_ok = sqlite3_vfs_register(&mixed_vfs, 0) == SQLITE_OK;
}

const char *dbpool__sqlite_file_vfs(void) {
    pthread_once(&vfs_once, vfs_make);
    return unix_vfs_ok ? unix_vfs.zName : NULL;
}

const char *dbpool__sqlite_memory_vfs(void) {
    pthread_once(&vfs_once, vfs_make);
    return mixed_vfs_ok ? mixed_vfs.zName : "memdb";
}

bool dbpool__sqlite_vfs_cancel_free(sqlite3 *db) {
    sqlite3_vfs *v = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &v) != SQLITE_OK)
        return false;
    return (v == &unix_vfs && unix_vfs_ok) || (v == &mixed_vfs && mixed_vfs_ok);
}
