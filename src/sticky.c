/*
 * sticky.c — connections parked for the thread that last released them.
 *
 * A clean release with nobody waiting may park the connection for the
 * releasing thread instead of making it idle: it stays on the pool's parked
 * list (counted in n_parked) and the thread remembers it in a small
 * thread-local cache. The thread's next acquire takes it back with one
 * compare-and-swap on the connection's `park` word and its next release
 * gives it back with another: no pool lock, no shared cache line, so
 * threads that each keep one connection scale like threads that share
 * nothing (HikariCP's ConcurrentBag does the same with its thread-local
 * list).
 *
 * The park word (pool_internal.h) is the only thing shared between the
 * owner and everyone else:
 *   tag|FREE  parked, not in use: the owner may take it (-> tag|BUSY), and
 *             anyone holding the pool lock may take it away (-> 0).
 *   tag|BUSY  the owner is using it; only the owner changes it back.
 *   +WANTED   set under the lock by someone who wants it back; the owner's
 *             release (BUSY -> FREE) then fails and the owner returns it
 *             the ordinary way, under the lock.
 *   0         not parked: state and lists say where it is.
 * Everything that takes a parked connection away holds the pool lock and
 * moves it out of the parked list in the same critical section, so state
 * still equals list membership at every unlock.
 *
 * Fairness follows the pool's barging window (pool.c): an owner may take
 * its parked connection back ahead of a waiter only while the first waiter
 * has waited less than the window, as any running thread may take an idle
 * one. Before anyone waits, a free parked connection is taken from its
 * owner (steal). Once the first waiter has waited past the window the pool
 * starves: every parked connection is recalled (free ones at once, busy
 * ones at their release), nothing is parked, and the fast acquire stays
 * out while the pool's `gate` says so.
 *
 * The owner touches nothing of the pool after a successful BUSY -> FREE:
 * from then on the connection may be taken, the pool closed and freed.
 */
#include "perturb.h"
#include "pool_internal.h"

#include <stdlib.h>

#define lock(p) dbpool__lock(p)
#define unlock(p) dbpool__unlock(p)

/* A few pools per thread: one is the common case. */
#define STICKY_SLOTS 4

typedef struct sticky_slot {
    const dbpool *pool; /* compared only, never dereferenced (it may be freed) */
    uint64_t serial;    /* the pool's serial: an address reused by a new pool does not match */
    dbpool_conn *conn;
    uint64_t free_word; /* tag|PARK_FREE as parked */
} sticky_slot;

#if defined(__GNUC__) || defined(__clang__)
__attribute__((tls_model("initial-exec")))
#endif
static _Thread_local sticky_slot tl_slots[STICKY_SLOTS];

/* dbpool__live_closes() when this thread last dropped the entries of
 * closed pools. */
static _Thread_local uint64_t tl_closes_seen;

/* Lock held, the table full: drop the entries of pools closed since the
 * last look (only when a pool was closed since, so the global lock is
 * taken once per close at most). Without this they stayed for the
 * thread's life: after four pools it used were closed, every pool it used
 * then had to share one entry (by serial), and two taking turns pushed
 * each other's connection out at every release. True when one was
 * dropped. */
static bool forget_closed_pools(void) {
    uint64_t closes = dbpool__live_closes();
    if (closes == tl_closes_seen)
        return false;
    tl_closes_seen = closes; /* read before the looks: a close after them is seen next time */
    DBPOOL_PERTURB();        /* a pool closes between the count and the looks */
    bool dropped = false;
    for (int i = 0; i < STICKY_SLOTS; i++) {
        if (tl_slots[i].pool && !dbpool__live_has(tl_slots[i].pool, tl_slots[i].serial)) {
            tl_slots[i].pool = NULL; /* never read: its pool may be gone */
            dropped = true;
        }
    }
    return dropped;
}

static inline sticky_slot *slot_for(const dbpool *p) {
    for (int i = 0; i < STICKY_SLOTS; i++)
        if (tl_slots[i].pool == p && tl_slots[i].serial == p->serial)
            return &tl_slots[i];
    return NULL;
}

static void parked_unlink(dbpool *p, dbpool_conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        p->parked_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    p->n_parked--;
}

/* Lock held, park word already 0, connection taken from a free parking:
 * its last use is what the owner last stored. */
static void unparked_uncounted(dbpool *p, dbpool_conn *c) {
    parked_unlink(p, c);
    c->last_used_ns = atomic_load_explicit(&c->parked_used_ns, memory_order_relaxed);
}

/* The holder of a tag|BUSY lease (maybe WANTED): make it an ordinary lease. */
static void unpark_own(dbpool *p, dbpool_conn *c) {
    DBPOOL_PERTURB(); /* a recall may mark it wanted before the lock */
    lock(p);
    atomic_store_explicit(&c->park, 0, memory_order_relaxed);
    parked_unlink(p, c);
    c->state = CONN_LEASED;
    p->n_leased++;
    dbpool__note_peak(p, 0); /* a cached lease becomes an ordinary one */
    unlock(p);
}

dbpool_conn *dbpool__sticky_acquire(dbpool *p) {
    if (!p->park_enabled || atomic_load_explicit(&p->gate, memory_order_relaxed))
        return NULL;
    sticky_slot *s = slot_for(p);
    if (!s)
        return NULL;
    dbpool_conn *c = s->conn;
    uint64_t expect = s->free_word;
    int64_t now = dbpool__fast_now_ns(); /* first: the CAS runs while the TSC answers */
    DBPOOL_PERTURB(); /* a steal, recall or new parking may change the word before the CAS */
    if (!atomic_compare_exchange_strong_explicit(&c->park, &expect, s->free_word - PARK_FREE + PARK_BUSY,
                                                 memory_order_acquire, memory_order_relaxed)) {
        if ((expect >> PARK_TAG_SHIFT) != (s->free_word >> PARK_TAG_SHIFT))
            s->pool = NULL; /* taken away: forget it (else: in use by this thread, a second lease) */
        return NULL;
    }
    DBPOOL_PERTURB(); /* busy now: a recall marks it wanted meanwhile */
    /* Idle time alone, without the lock: whether the pool is above
     * min_size is for the ordinary path to decide. */
    if (now >= c->expires_ns || dbpool__needs_validation(p, c, now) || dbpool__idle_timed_out(p, c, now)) {
        /* It needs the checks of the ordinary path: hand it there. */
        unpark_own(p, c);
        s->pool = NULL;
        return c;
    }
    c->uses++;
    c->acquired_ns = now;
    c->lease_start = now; /* the acquire's start, until its caller counts it (acquire.c, acquire_counted) */
    c->validated_rtt_ns = 0;
    return c;
}

bool dbpool__sticky_release(dbpool *p, dbpool_conn *c, bool discard, int64_t now, bool *recorded,
                            int *hooked) {
    *recorded = false;
    *hooked = 0;
    uint64_t w = atomic_load_explicit(&c->park, memory_order_relaxed);
    if (!(w & PARK_BUSY))
        return false; /* an ordinary lease, or released already (the ordinary path says so) */
    DBPOOL_PERTURB(); /* a recall may mark it wanted after the load */
    sticky_slot *s = slot_for(p);
    bool mine = s && s->conn == c && (w & ~PARK_WANTED) == s->free_word - PARK_FREE + PARK_BUSY;
    if (mine && !discard && !(w & PARK_WANTED) && !c->broken && dbpool__needs_reset(p, c) == 0) {
        uint64_t busy = w;
        if (now < c->expires_ns) {
            dbpool__metrics_record(p->metrics, DBPOOL_HIST_USE, now - c->lease_start);
            *recorded = true;
            /* Still busy, so still this thread's: the hook runs before the
             * connection can be anyone else's. Refused, it is closed the
             * ordinary way; kept but wanted back meanwhile, the ordinary
             * way does not ask again. */
            if (p->hooks && p->opt.after_release && (*hooked = dbpool__hook_after_release(p, c) ? 1 : -1) < 0)
                goto ordinary;
            c->last_used_ns = now;
            atomic_store_explicit(&c->parked_used_ns, now, memory_order_relaxed);
            uint64_t expect = busy;
            DBPOOL_PERTURB(); /* maintenance may read parked_used_ns, a recall mark it wanted */
            if (atomic_compare_exchange_strong_explicit(&c->park, &expect, s->free_word, memory_order_release,
                                                        memory_order_relaxed))
                return true; /* nothing of the pool may be touched from here on */
        }
    }
    /* Dirty, broken, discarded, expired, wanted back, refused by
     * after_release, or leased by another thread's cache and released on
     * this one: the ordinary way. The cache that parked it finds its word
     * changed and forgets it. */
ordinary:
    unpark_own(p, c);
    if (mine)
        s->pool = NULL;
    return false;
}

/* Lock held: take a free parked connection away from its owner. */
static bool take_free(dbpool_conn *c) {
    uint64_t w = atomic_load_explicit(&c->park, memory_order_relaxed);
    DBPOOL_PERTURB(); /* the owner may take it back, or give it back, before the CAS */
    while (w & PARK_FREE) {
        if (atomic_compare_exchange_weak_explicit(&c->park, &w, 0, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

bool dbpool__park_locked(dbpool *p, dbpool_conn *c, int64_t now) {
    if (!p->park_enabled)
        return false;
    /* c, being returned, was in use until now beside the others. */
    dbpool__note_peak(p, 1);
    if (!dbpool__may_overtake_locked(p) || p->closed || p->suspended || dbpool__total_locked(p) + 1 > p->cap)
        return false;
    sticky_slot *s = slot_for(p);
    if (s) {
        /* The thread's parked one, if it still has it, is older than c: it
         * goes to the idle list (so the most recently used connection is
         * still the next one handed out), unless it is in use (a second
         * lease at the same time): then c goes there. */
        dbpool_conn *old = s->conn;
        uint64_t w = atomic_load_explicit(&old->park, memory_order_relaxed);
        if ((w >> PARK_TAG_SHIFT) == (s->free_word >> PARK_TAG_SHIFT)) {
            if (!take_free(old))
                return false;
            unparked_uncounted(p, old);
            dbpool__idle_insert_locked(p, old);
        }
    } else {
        for (int i = 0; i < STICKY_SLOTS && !s; i++)
            if (!tl_slots[i].pool)
                s = &tl_slots[i];
        if (!s && forget_closed_pools())
            for (int i = 0; i < STICKY_SLOTS && !s; i++)
                if (!tl_slots[i].pool)
                    s = &tl_slots[i];
        if (!s) /* full: the pool's slot of a busy thread's cache; the old one stays parked */
            s = &tl_slots[p->serial % STICKY_SLOTS];
    }
    uint64_t tag = ++p->park_seq;
    c->state = CONN_PARKED;
    c->last_used_ns = now;
    atomic_store_explicit(&c->parked_used_ns, now, memory_order_relaxed);
    c->prev = NULL;
    c->next = p->parked_head;
    if (p->parked_head)
        p->parked_head->prev = c;
    p->parked_head = c;
    p->n_parked++;
    s->pool = p;
    s->serial = p->serial;
    s->conn = c;
    s->free_word = (tag << PARK_TAG_SHIFT) | PARK_FREE;
    atomic_store_explicit(&c->park, s->free_word, memory_order_release);
    /* Someone waits, inside their window: the owner may take c back
     * first, as a running thread may take an idle connection, but the
     * first waiter is told to look, as for an idle one (else it would
     * sleep to its window's end, or its deadline, beside a connection
     * nobody uses). */
    if (p->wait_head)
        dbpool__poke_head_locked(p);
    return true;
}

dbpool_conn *dbpool__steal_parked_locked(dbpool *p) {
    for (dbpool_conn *c = p->parked_head; c; c = c->next) {
        if (take_free(c)) {
            unparked_uncounted(p, c);
            c->state = CONN_LEASED;
            p->n_leased++;
            return c;
        }
    }
    return NULL;
}

/* Lock held: take c if free, else mark it wanted back. True when taken. */
static bool take_or_mark(dbpool_conn *c) {
    uint64_t w = atomic_load_explicit(&c->park, memory_order_relaxed);
    DBPOOL_PERTURB(); /* the owner may take it back, or give it back, before the CAS */
    for (;;) {
        if (w & PARK_FREE) {
            if (atomic_compare_exchange_weak_explicit(&c->park, &w, 0, memory_order_acquire,
                                                      memory_order_relaxed))
                return true;
        } else if (w & PARK_WANTED) {
            return false;
        } else if (atomic_compare_exchange_weak_explicit(&c->park, &w, w | PARK_WANTED, memory_order_relaxed,
                                                         memory_order_relaxed)) {
            return false;
        }
    }
}

void dbpool__recall_parked_locked(dbpool *p, bool to_waiters, int64_t older_than_ns) {
    dbpool__note_peak(p, 0); /* every maintenance pass comes here while anything is parked */
    dbpool_conn *c = p->parked_head;
    while (c) {
        dbpool_conn *next = c->next;
        bool taken = older_than_ns >= 0
                         ? atomic_load_explicit(&c->parked_used_ns, memory_order_relaxed) <= older_than_ns &&
                               take_free(c)
                         : take_or_mark(c);
        if (taken) {
            unparked_uncounted(p, c);
            if (to_waiters)
                dbpool__publish_locked(p, c, c->last_used_ns);
            else
                dbpool__idle_insert_locked(p, c);
        }
        c = next;
    }
}

bool dbpool__parked_free_locked(const dbpool *p) {
    for (const dbpool_conn *c = p->parked_head; c; c = c->next)
        if (atomic_load_explicit(&c->park, memory_order_relaxed) & PARK_FREE)
            return true;
    return false;
}

void dbpool__parked_counts_locked(const dbpool *p, int *busy, int *free_) {
    *busy = *free_ = 0;
    for (const dbpool_conn *c = p->parked_head; c; c = c->next) {
        if (atomic_load_explicit(&c->park, memory_order_relaxed) & PARK_FREE)
            (*free_)++;
        else
            (*busy)++;
    }
}

/* The thread cache's hand-outs counted with no wait so far (acquire.c,
 * acquire_counted). Lock held. */
static uint64_t fast_leases_locked(const dbpool *p) {
    uint64_t n = 0;
    for (const dbpool_conn *c = p->all_slots; c; c = c->all_next)
        n += atomic_load_explicit(&c->fast_leases, memory_order_relaxed);
    return n;
}

void dbpool__gate_refresh_locked(dbpool *p) {
    int g = p->starving || p->closed || p->suspended || dbpool__total_locked(p) > p->cap;
    if (atomic_load_explicit(&p->gate, memory_order_relaxed) != g)
        atomic_store_explicit(&p->gate, g, memory_order_relaxed);
}

void dbpool__fold_fast_leases_locked(dbpool *p) {
    uint64_t n = fast_leases_locked(p);
    dbpool__metrics_record_zeros(p->metrics, DBPOOL_HIST_ACQUIRE, n - p->fast_folded);
    p->fast_folded = n;
}
