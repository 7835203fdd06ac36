/* manager.c — several named pools behind one handle. A read-write lock
 * guards the table: lookups share it, opening and closing take it alone
 * (and do the pool's I/O outside it). */
#define _GNU_SOURCE        /* pthread_rwlockattr_setkind_np (glibc) */
#include "pool_internal.h" /* dbpool__forked */
#include "textbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *name;
    dbpool *pool;      /* NULL while its dbpool_manager_open runs */
    unsigned fork_gen; /* dbpool__fork_generation() when reserved */
    bool kept;         /* name taken back from retired: a lister may hold it */
} entry;

struct dbpool_manager {
    pthread_rwlock_t lock;
    entry *items;
    int n, cap;
    /* Names of pools closed through the manager: dbpool_manager_name's
     * pointers stay valid until dbpool_manager_free, so a thread listing
     * the pools cannot read a name freed by another's close. A name opened
     * again takes its string back, so this holds each name once. Room for
     * every open name is made at open, so a close never allocates. */
    char **retired;
    int n_retired, cap_retired;
    struct dbpool_manager *prev, *next; /* every manager of the process (for fork) */
};

/* glibc's rwlock lets a reader in while a writer waits: threads that look
 * pools up without pause (a server's workers) kept dbpool_manager_open
 * and dbpool_manager_close_pool waiting for ever. Writers go first here.
 * No thread takes a manager's read lock twice (no manager function calls
 * another or user code while holding it), which that kind requires. */
static int manager_lock_init(pthread_rwlock_t *lock) {
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr) != 0)
        return -1;
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    int rc = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return rc;
}

/*
 * fork(): a thread of the parent may hold a manager's lock at that moment
 * (a lookup, the stats, an open's reservation), and it does not exist in
 * the child, where that lock would then stay taken for ever: the child's
 * dbpool_manager_close_pool, dbpool_manager_open, ... would hang. So fork
 * waits until no thread is inside a manager (each lock is taken for
 * writing before it, and the table is consistent), and the child starts
 * with fresh locks. No manager function runs user code or waits for
 * anything but pool locks while it holds its lock.
 *
 * The order of the locks, everywhere: managers_lock, a manager's lock, a
 * pool's lock, the list of open pools (live_pools.c: a release asks it
 * with the pool's lock held). The handlers take the managers' locks before
 * that list's: they are registered after its handlers, since pthread_atfork
 * runs the prepare handlers in the reverse order of their registration.
 * Taken the other way round (a manager made before the process's first
 * pool), the forking thread held the list and waited for a manager's
 * reader, the reader waited for a pool's lock, and that lock's holder
 * waited for the list: all three for ever.
 */
static pthread_mutex_t managers_lock = PTHREAD_MUTEX_INITIALIZER;
static dbpool_manager *managers;
static atomic_bool managers_fork_installed;

static void managers_before_fork(void) {
    pthread_mutex_lock(&managers_lock);
    for (dbpool_manager *m = managers; m; m = m->next)
        pthread_rwlock_wrlock(&m->lock);
}

static void managers_after_fork_parent(void) {
    for (dbpool_manager *m = managers; m; m = m->next)
        pthread_rwlock_unlock(&m->lock);
    pthread_mutex_unlock(&managers_lock);
}

/* The child's only thread is not the one that took the locks (another
 * thread id): they are made anew rather than unlocked. */
static void managers_after_fork_child(void) {
    for (dbpool_manager *m = managers; m; m = m->next)
        manager_lock_init(&m->lock);
    pthread_mutex_init(&managers_lock, NULL);
}

int dbpool_manager_new(dbpool_manager **out) {
    if (!out)
        return DBPOOL_EINVAL;
    dbpool_manager *m = calloc(1, sizeof *m);
    if (!m)
        return DBPOOL_ENOMEM;
    if (manager_lock_init(&m->lock) != 0) {
        free(m);
        return DBPOOL_ENOMEM;
    }
    /* Without the handlers a fork could leave the child's manager locked
     * for ever: no manager then (the next call tries again). The list's
     * handlers first (see the order of the locks above). */
    if (dbpool__live_watch() != 0 ||
        dbpool__atfork_once(&managers_fork_installed, managers_before_fork, managers_after_fork_parent,
                            managers_after_fork_child) != 0) {
        pthread_rwlock_destroy(&m->lock);
        free(m);
        return DBPOOL_ENOMEM;
    }
    pthread_mutex_lock(&managers_lock);
    m->next = managers;
    if (managers)
        managers->prev = m;
    managers = m;
    pthread_mutex_unlock(&managers_lock);
    *out = m;
    return DBPOOL_OK;
}

static int find(const dbpool_manager *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->items[i].name, name) == 0)
            return i;
    return -1;
}

/* The entry's pool when this process may use it: not while its open runs,
 * and not in a forked child for a pool the parent opened (its connections
 * are the parent's sessions, and its lock may have been held at fork() by
 * a thread the child does not have). */
static dbpool *usable(const entry *e) { return e->pool && !dbpool__forked(e->pool) ? e->pool : NULL; }

static void remove_at(dbpool_manager *m, int i, bool retire) {
    if (retire)
        m->retired[m->n_retired++] = m->items[i].name;
    else
        free(m->items[i].name);
    memmove(&m->items[i], &m->items[i + 1], (size_t)(m->n - i - 1) * sizeof *m->items);
    m->n--;
}

int dbpool_manager_open(dbpool_manager *m, const char *name, const char *url, const dbpool_options *o,
                        dbpool_error *err) {
    dbpool__clearerr(err);
    if (!m || !name || !*name)
        return dbpool__seterr(err, DBPOOL_EINVAL,
                              "dbpool_manager_open: a manager and a non-empty name are needed");
    /* Checked first: the name goes into the messages below, and a name
     * dbpool_open would refuse deserves that reason, not another. */
    int named = dbpool__check_pool_name(name, err);
    if (named != DBPOOL_OK)
        return named;
    if (!url)
        return dbpool__seterr(err, DBPOOL_EINVAL, "dbpool_manager_open: the URL is NULL");
    /* The manager's name is the pool's name (its key in the manager's JSON
     * and its label in metrics): a URL naming it otherwise would make two
     * pools answer to one name. */
    char *base = NULL;
    dbpool_kv *kv = NULL;
    size_t nkv = 0;
    int parsed = dbpool__url_query(url, &base, &kv, &nkv, err);
    if (parsed != DBPOOL_OK)
        return parsed;
    bool renamed = false;
    for (size_t i = 0; i < nkv; i++)
        if (strcmp(kv[i].key, "pool_name") == 0 && strcmp(kv[i].value, name) != 0)
            renamed = true;
    free(base);
    dbpool__kv_free(kv, nkv);
    if (renamed)
        return dbpool__seterr(err, DBPOOL_EINVAL,
                              "the URL of pool '%s' sets pool_name to another name: in a manager the "
                              "pool is named by dbpool_manager_open; remove pool_name from the URL",
                              name);
    /* Reserve the name first, so that two threads opening the same name
     * cannot both succeed; the open itself runs without the lock. */
    pthread_rwlock_wrlock(&m->lock);
    int taken = find(m, name);
    if (taken >= 0) {
        bool parents = m->items[taken].pool && dbpool__forked(m->items[taken].pool);
        bool opening = !m->items[taken].pool;
        pthread_rwlock_unlock(&m->lock);
        if (opening) /* it may yet fail: "already open" would send the caller to look for it */
            return dbpool__seterr(err, DBPOOL_EINVAL,
                                  "a pool named '%s' is being opened in this manager by another call", name);
        if (parents)
            return dbpool__seterr(err, DBPOOL_EINVAL,
                                  "the name '%s' is taken by a pool the parent process opened before fork(): "
                                  "dbpool_manager_close_pool it first (that touches nothing of the parent's)",
                                  name);
        return dbpool__seterr(err, DBPOOL_EINVAL, "a pool named '%s' is already open in this manager", name);
    }
    if (m->n == m->cap) {
        int cap = m->cap ? m->cap * 2 : 4;
        entry *items = realloc(m->items, (size_t)cap * sizeof *items);
        if (!items) {
            pthread_rwlock_unlock(&m->lock);
            return dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory");
        }
        m->items = items;
        m->cap = cap;
    }
    if (m->cap_retired < m->n_retired + m->n + 1) {
        int cap = m->n_retired + m->n + 1 + 4;
        char **retired = realloc(m->retired, (size_t)cap * sizeof *retired);
        if (!retired) {
            pthread_rwlock_unlock(&m->lock);
            return dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory");
        }
        m->retired = retired;
        m->cap_retired = cap;
    }
    char *copy = NULL;
    bool kept = false;
    for (int k = 0; k < m->n_retired && !copy; k++)
        if (strcmp(m->retired[k], name) == 0) {
            copy = m->retired[k];
            m->retired[k] = m->retired[--m->n_retired];
            kept = true;
        }
    if (!copy)
        copy = dbpool__strdup(name);
    if (!copy) {
        pthread_rwlock_unlock(&m->lock);
        return dbpool__seterr(err, DBPOOL_ENOMEM, "out of memory");
    }
    m->items[m->n++] = (entry){copy, NULL, dbpool__fork_generation(), kept};
    pthread_rwlock_unlock(&m->lock);

    dbpool_options opts;
    if (o)
        opts = *o;
    else
        dbpool_options_init(&opts);
    opts.name = name;
    dbpool *p = NULL;
    int rc = dbpool_open(&p, url, &opts, err);

    pthread_rwlock_wrlock(&m->lock);
    int i = find(m, name);
    if (rc == DBPOOL_OK) {
        atomic_store(&p->managed, true); /* dbpool_close refuses it from now on */
        m->items[i].pool = p;
    } else {
        /* Not listed by dbpool_manager_name while it opened; but a name
         * taken back from an earlier pool of that name was, and must stay
         * valid (room for it: it came from there). */
        remove_at(m, i, m->items[i].kept);
    }
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

dbpool *dbpool_manager_get(dbpool_manager *m, const char *name) {
    if (!m || !name)
        return NULL;
    pthread_rwlock_rdlock(&m->lock);
    int i = find(m, name);
    dbpool *p = i >= 0 ? usable(&m->items[i]) : NULL;
    pthread_rwlock_unlock(&m->lock);
    return p;
}

static void unhold_cancelled(void *p) {
    if (p)
        dbpool__unhold(p);
}

int dbpool_manager_acquire(dbpool_manager *m, const char *name, int64_t timeout_ms, dbpool_conn **out,
                           dbpool_error *err) {
    dbpool__clearerr(err);
    if (out)
        *out = NULL;
    if (!m || !name || !out)
        return dbpool__seterr(err, DBPOOL_EINVAL,
                              "dbpool_manager_acquire: a manager, a name and an out pointer are needed");
    pthread_rwlock_rdlock(&m->lock);
    int i = find(m, name);
    /* In a forked child the parent's pool is refused as dbpool_acquire
     * refuses it, without its lock (a thread that is gone may have held
     * it at fork()). */
    bool parents = i >= 0 && m->items[i].pool && dbpool__forked(m->items[i].pool);
    dbpool *p = i >= 0 ? usable(&m->items[i]) : NULL;
    /* Held before the manager's lock is let go: a dbpool_manager_close_pool
     * racing this call closes the pool, and the acquire then answers
     * DBPOOL_ECLOSED from memory that is still there (the last hold, lease
     * or waiter frees it). */
    if (p) {
        dbpool__lock(p);
        p->n_holding++;
        dbpool__unlock(p);
    }
    pthread_rwlock_unlock(&m->lock);
    if (parents)
        return dbpool__fork_error(err);
    if (!p)
        return dbpool__seterr(err, DBPOOL_ENOTFOUND, "no pool named '%s' is open in this manager",
                              dbpool__check_pool_name(name, NULL) == DBPOOL_OK ? name : "(not a valid name)");
    /* With leak detection on, the lease's stack is taken here, so that its
     * first frame is this function's caller (operations.md), not this
     * function. A caller cancelled while it waits in line
     * (docs/threading.md, "Cancellation") lets its hold go on the way out,
     * or the pool could never be freed. */
    int rc;
    pthread_cleanup_push(unhold_cancelled, p);
    if (p->opt.leak_threshold_ms > 0) {
        lease_trace t;
        dbpool__trace_capture(&t);
        rc = dbpool__acquire_traced(p, timeout_ms, &t, out, err);
    } else {
        rc = dbpool_acquire(p, timeout_ms, out, err);
    }
    pthread_cleanup_pop(0);
    dbpool__unhold(p);
    return rc;
}

int dbpool_manager_close_pool(dbpool_manager *m, const char *name) {
    if (!m || !name)
        return DBPOOL_EINVAL;
    pthread_rwlock_wrlock(&m->lock);
    int i = find(m, name);
    dbpool *p = i >= 0 ? m->items[i].pool : NULL;
    /* From a callback on one of the pool's own threads dbpool_close
     * refuses (it would join that thread): keep the entry, or the pool
     * would be left open with no name to close it by. Not asked in a
     * forked child: no pool thread exists there, the pool's lock may have
     * been held at fork() by one that is gone, and dbpool_close touches
     * nothing there. */
    if (p && !dbpool__forked(p) && dbpool__on_own_thread(p)) {
        pthread_rwlock_unlock(&m->lock);
        return DBPOOL_EMISUSE;
    }
    if (p)
        remove_at(m, i, true);
    pthread_rwlock_unlock(&m->lock);
    if (!p)
        return DBPOOL_ENOTFOUND;
    atomic_store(&p->managed, false);
    dbpool_close(p);
    return DBPOOL_OK;
}

int dbpool_manager_count(dbpool_manager *m) {
    if (!m)
        return 0;
    pthread_rwlock_rdlock(&m->lock);
    int n = 0;
    for (int i = 0; i < m->n; i++)
        n += usable(&m->items[i]) != NULL;
    pthread_rwlock_unlock(&m->lock);
    return n;
}

const char *dbpool_manager_name(dbpool_manager *m, int idx) {
    if (!m || idx < 0)
        return NULL;
    const char *name = NULL;
    pthread_rwlock_rdlock(&m->lock);
    for (int i = 0, k = 0; i < m->n && !name; i++)
        if (usable(&m->items[i]) && k++ == idx)
            name = m->items[i].name;
    pthread_rwlock_unlock(&m->lock);
    return name;
}

int dbpool_manager_pool_stats(dbpool_manager *m, const char *name, dbpool_stats *out) {
    if (out)
        memset(out, 0, sizeof *out);
    if (!m || !name || !out)
        return DBPOOL_EINVAL;
    /* Read under the manager's lock: a dbpool_manager_close_pool of the
     * pool waits for it, so the pool cannot be freed while it is read. */
    pthread_rwlock_rdlock(&m->lock);
    int i = find(m, name);
    dbpool *p = i >= 0 ? usable(&m->items[i]) : NULL;
    if (p)
        dbpool_get_stats(p, out);
    pthread_rwlock_unlock(&m->lock);
    return p ? DBPOOL_OK : DBPOOL_ENOTFOUND;
}

/* One pool's text from a renderer (dbpool_stats_json, ...) in memory of its
 * own, NUL-terminated; *len its length. NULL with *len the error (renderer's
 * or DBPOOL_ENOMEM). The pool works on while it is rendered: its text may
 * have grown since it was measured (new latency figures), so it is
 * rendered again into a larger buffer until the whole of it fits. */
static char *render_one(dbpool *p, int (*render)(dbpool *, char *, size_t), int *len) {
    char *one = NULL;
    size_t cap = 0;
    int got = render(p, NULL, 0);
    while (got >= 0 && (size_t)got >= cap) {
        cap = (size_t)got + 256;
        char *bigger = realloc(one, cap);
        if (!bigger) {
            free(one);
            *len = DBPOOL_ENOMEM;
            return NULL;
        }
        one = bigger;
        got = render(p, one, cap);
    }
    if (got < 0) {
        free(one);
        *len = got;
        return NULL;
    }
    *len = got;
    return one;
}

int dbpool_manager_stats_json(dbpool_manager *m, char *buf, size_t len) {
    int rc = tb_check_args(m, buf, len); /* as dbpool_stats_json */
    if (rc != DBPOOL_OK)
        return rc;
    textbuf tb;
    textbuf *t = &tb;
    tb_init(t, buf, len);
    tb_puts(t, "{\"pools\": {");
    pthread_rwlock_rdlock(&m->lock);
    bool first = true;
    for (int i = 0; i < m->n; i++) {
        /* In a forked child the parent's pools work no more, and reading
         * one takes its lock, which a parent thread may have held at
         * fork(): they are left out. */
        if (!usable(&m->items[i]))
            continue;
        int got;
        char *one = render_one(m->items[i].pool, dbpool_stats_json, &got);
        if (!one) {
            pthread_rwlock_unlock(&m->lock);
            if (len)
                buf[0] = '\0'; /* never a cut document (textbuf.h) */
            return got;
        }
        if (!first)
            tb_puts(t, ", ");
        first = false;
        /* The key is the pool's own JSON name field's value: render it with
         * the same escaping by taking it from the object. Keys are distinct
         * because names are: dbpool_open refuses a name that is empty, not
         * UTF-8 (which would render as U+FFFD) or holds control characters
         * (options.c), and the escaping of valid UTF-8 is one to one. */
        const char *name_field = strstr(one, "\"name\":");
        const char *q1 = name_field ? strchr(name_field + 7, '"') : NULL;
        const char *q2 = q1 ? q1 + 1 : NULL;
        while (q2 && *q2 && *q2 != '"')
            q2 += (*q2 == '\\' && q2[1]) ? 2 : 1;
        if (q1 && q2 && *q2 == '"')
            tb_putn(t, q1, (size_t)(q2 - q1 + 1));
        else
            tb_puts(t, "\"?\"");
        tb_puts(t, ": ");
        tb_putn(t, one, (size_t)got);
        free(one);
    }
    pthread_rwlock_unlock(&m->lock);
    tb_puts(t, "}}");
    return tb_finish(t);
}

/* The metric family of the block that starts at `s` ("# HELP <family> ..."):
 * its name's length. */
static size_t family_len(const char *s) {
    s += 7; /* "# HELP " */
    return strcspn(s, " \n");
}

/* The next family block of a Prometheus text after `s` (a line that starts
 * "# HELP "), or its end. */
static const char *next_family(const char *s) {
    const char *at = strstr(s + 1, "\n# HELP ");
    return at ? at + 1 : s + strlen(s);
}

/* Whether the block at b is that of `family` (flen bytes). */
static bool family_is(const char *b, const char *family, size_t flen) {
    return strncmp(b, "# HELP ", 7) == 0 && family_len(b) == flen && strncmp(b + 7, family, flen) == 0;
}

/* The block of `family` in `text`, or NULL: the one at `*at` when it is
 * that family (the texts list their families in one order), else looked
 * for from the start; *at then the block after it. Blocks start at the
 * start of a line (a pool's name in a label never holds a line feed). */
static const char *find_family(const char *text, const char **at, const char *family, size_t flen) {
    const char *found = **at && family_is(*at, family, flen) ? *at : NULL;
    for (const char *b = text; !found && *b; b = next_family(b))
        if (family_is(b, family, flen))
            found = b;
    if (found)
        *at = next_family(found);
    return found;
}

int dbpool_manager_stats_prometheus(dbpool_manager *m, char *buf, size_t len) {
    int rc = tb_check_args(m, buf, len); /* as dbpool_stats_prometheus */
    if (rc != DBPOOL_OK)
        return rc;
    /* Each pool's text, taken under the manager's lock (a close of the pool
     * waits for it); put together without it. */
    pthread_rwlock_rdlock(&m->lock);
    char **texts = m->n ? calloc((size_t)m->n, sizeof *texts) : NULL;
    const char **at = m->n ? calloc((size_t)m->n, sizeof *at) : NULL; /* where each is read */
    int n = 0, err = m->n && (!texts || !at) ? DBPOOL_ENOMEM : DBPOOL_OK;
    for (int i = 0; i < m->n && err == DBPOOL_OK; i++) {
        if (!usable(&m->items[i])) /* as in the JSON */
            continue;
        int got;
        texts[n] = render_one(m->items[i].pool, dbpool_stats_prometheus, &got);
        if (!texts[n])
            err = got;
        else
            at[n] = texts[n], n++;
    }
    pthread_rwlock_unlock(&m->lock);
    textbuf tb;
    textbuf *t = &tb;
    tb_init(t, buf, len);
    /* Text format 0.0.4 wants each family once, its samples together: the
     * first pool's block of each family whole (HELP, TYPE, samples), then
     * the other pools' samples of that family. Every pool's text is made
     * by the same renderer, so each has every family. */
    for (const char *b = n ? texts[0] : ""; err == DBPOOL_OK && *b;) {
        const char *end = next_family(b);
        tb_putn(t, b, (size_t)(end - b));
        size_t flen = strncmp(b, "# HELP ", 7) == 0 ? family_len(b) : 0;
        for (int k = 1; k < n && flen; k++) {
            const char *o = find_family(texts[k], &at[k], b + 7, flen);
            const char *samples = o ? strchr(o, '\n') : NULL;     /* past HELP */
            samples = samples ? strchr(samples + 1, '\n') : NULL; /* past TYPE */
            if (samples) {
                samples++;
                tb_putn(t, samples, (size_t)(next_family(o) - samples));
            }
        }
        b = end;
    }
    for (int k = 0; k < n; k++)
        free(texts[k]);
    free(texts);
    free(at);
    if (err != DBPOOL_OK) {
        if (len)
            buf[0] = '\0'; /* never a cut text (textbuf.h) */
        return err;
    }
    return tb_finish(t);
}

int dbpool_manager_free(dbpool_manager *m) {
    if (!m)
        return DBPOOL_OK;
    /* A manager freed already is no longer in the list of managers: found
     * by its address alone, without reading its memory (a second free is
     * refused as a second dbpool_close is; a new manager that malloc gave
     * the same address cannot be told apart). The list's lock is held to
     * the end of the checks, so two frees racing cannot both pass. */
    pthread_mutex_lock(&managers_lock);
    dbpool_manager *x = managers;
    while (x && x != m)
        x = x->next;
    if (!x) {
        pthread_mutex_unlock(&managers_lock);
        return DBPOOL_EMISUSE;
    }
    /* From a callback on one of its pools' own threads, that pool's close
     * would be refused and the manager freed anyway: the pool would stay
     * open with nothing left to close it. Refuse before touching anything.
     * (Not asked in a forked child: see dbpool_manager_close_pool.)
     * Taken for writing: the table is taken out below. */
    pthread_rwlock_wrlock(&m->lock); /* after managers_lock, as at fork() */
    bool own = false, opening = false;
    for (int i = 0; i < m->n && !own && !opening; i++) {
        dbpool *p = m->items[i].pool;
        own = p && !dbpool__forked(p) && dbpool__on_own_thread(p);
        /* A dbpool_manager_open still running on another thread would
         * come back to a freed manager (its lock, its table) and leave its
         * pool open with no one to close it. An entry reserved before a
         * fork() belongs to a thread the child does not have: not waited
         * for. */
        opening = !p && m->items[i].fork_gen == dbpool__fork_generation();
    }
    if (own || opening) {
        pthread_rwlock_unlock(&m->lock);
        pthread_mutex_unlock(&managers_lock);
        return DBPOOL_EMISUSE;
    }
    if (m->prev)
        m->prev->next = m->next;
    else
        managers = m->next;
    if (m->next)
        m->next->prev = m->prev;
    pthread_rwlock_unlock(&m->lock);
    pthread_mutex_unlock(&managers_lock);
    /* The pools are closed out of the table: a callback the closes run (a
     * log line, on this thread or on a pool thread being joined) may call
     * the manager, which then shows none of them, rather than pools closed
     * already (their memory gone), and cannot close one again. A pool such
     * a callback opened meanwhile is closed in the next round (its open
     * has returned: the callback ran on this thread or on one the close
     * joined). */
    for (;;) {
        pthread_rwlock_wrlock(&m->lock);
        entry *items = m->items;
        int n = m->n;
        m->items = NULL;
        m->n = m->cap = 0;
        pthread_rwlock_unlock(&m->lock);
        if (!items)
            break;
        for (int i = 0; i < n; i++) {
            if (items[i].pool)
                atomic_store(&items[i].pool->managed, false);
            dbpool_close(items[i].pool);
            free(items[i].name);
        }
        free(items);
    }
    for (int i = 0; i < m->n_retired; i++)
        free(m->retired[i]);
    free(m->retired);
    pthread_rwlock_destroy(&m->lock);
    free(m);
    return DBPOOL_OK;
}
