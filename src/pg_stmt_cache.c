/*
 * pg_stmt_cache.c — the PostgreSQL backend's kept prepared statements
 * (pg_stmt_cache.h).
 *
 * A parameterised statement that runs a second time on a connection is
 * prepared there under a name of dbpool's and from then on only bound and
 * executed: the server parses and plans it once, not at every run (pgx's
 * statement cache; JDBC's prepareThreshold). The first run goes unnamed,
 * as before, and leaves only a hash in a small ring of statements seen
 * once: SQL that never comes back (built with a varying IN list, say)
 * costs no prepare and no DEALLOCATE, and does not push the statements
 * that do come back out of the cache. The key is the caller's text
 * together with the parameter types, which follow the values (int4 or
 * int8): a statement prepared for int4 cannot take an int8 value. Names
 * are never reused within a session, so a statement forgotten here but
 * still on the server cannot be confused with a new one; what is forgotten
 * that way (after a caller's DEALLOCATE, DISCARD or SET) is deallocated
 * at the next statement outside a transaction, or gone with the DISCARD
 * ALL the release then runs.
 */
#include "pg_stmt_cache.h"

#include "pg_lexer.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PG_STMT_SLOTS 32
#define PG_STMT_SEEN 32
#define PG_STMT_MAX_SQL 4096 /* longer statements are not kept */

/* What only the release's DISCARD ALL removes is left on the server. */
static void discard_due(pg_session_effect *effect) {
    if (*effect == PG_SESSION_UNCHANGED)
        *effect = PG_SESSION_CHANGED;
}

typedef struct pg_stmt_slot {
    char *sql; /* NULL: empty */
    size_t len;
    Oid *types; /* n of them, as prepared */
    int n;
    uint64_t used; /* the cache's clock at the last use */
    char name[32];
} pg_stmt_slot;

struct pg_stmt_cache {
    uint64_t clock;
    uint64_t serial;             /* names made so far on this connection */
    uint64_t seen[PG_STMT_SEEN]; /* hashes of statements run once, unnamed (0: none) */
    unsigned seen_next;          /* the ring's oldest entry */
    pg_stmt_slot slot[PG_STMT_SLOTS];
    /* Forgotten but still on the server: deallocated at the next
     * statement outside a transaction (or by the release's DISCARD ALL). */
    char (*retired)[sizeof((pg_stmt_slot *)0)->name];
    size_t nretired, retired_cap;
    /* The server sessions behind this connection change between
     * transactions (a pooler such as PgBouncer in transaction mode): a
     * statement of dbpool's was found on a session that never prepared it,
     * or gone right after it was prepared. Every statement runs unnamed
     * from then on. */
    bool shared_sessions;
};

static void stmt_slot_forget(pg_stmt_slot *s) {
    free(s->sql);
    free(s->types);
    memset(s, 0, sizeof *s);
}

/* Forget every kept statement (the server's copies are dropped by the
 * caller, or already gone); the serial stays, so names stay unique. */
static void forget_all(pg_stmt_cache *k) {
    for (int i = 0; k && i < PG_STMT_SLOTS; i++)
        stmt_slot_forget(&k->slot[i]);
}

static void forget_retired(pg_stmt_cache *k) {
    free(k->retired);
    k->retired = NULL;
    k->nretired = k->retired_cap = 0;
}

void dbpool__pg_stmts_free(pg_stmt_cache *k) {
    if (!k)
        return;
    forget_all(k);
    forget_retired(k);
    free(k);
}

void dbpool__pg_stmts_discarded(pg_stmt_cache *k) {
    if (!k)
        return;
    forget_all(k);
    forget_retired(k);
}

/* Forget a kept statement the server still holds: its name waits for
 * drop_retired. False when out of memory: the name is lost, and
 * the caller makes the release's DISCARD ALL due. */
static bool stmt_slot_retire(pg_stmt_cache *k, pg_stmt_slot *s) {
    if (k->nretired == k->retired_cap) {
        size_t cap = k->retired_cap ? 2 * k->retired_cap : PG_STMT_SLOTS;
        void *grown = realloc(k->retired, cap * sizeof *k->retired);
        if (grown) {
            k->retired = grown;
            k->retired_cap = cap;
        }
    }
    bool kept = k->nretired < k->retired_cap;
    if (kept)
        memcpy(k->retired[k->nretired++], s->name, sizeof s->name);
    stmt_slot_forget(s);
    return kept;
}

static void retire_all(pg_stmt_cache *k) {
    for (int i = 0; k && i < PG_STMT_SLOTS; i++)
        if (k->slot[i].sql)
            stmt_slot_retire(k, &k->slot[i]);
}

/* Deallocate the retired statements, in one round trip, when no
 * transaction is open: one of them found gone (a DEALLOCATE behind
 * dbpool's back) fails only that batch, where inside a transaction it
 * would abort the caller's. What a failed batch leaves goes with the
 * DISCARD ALL at release. */
static void drop_retired(pg_stmt_cache *k, PGconn *c, pg_bound *b, pg_session_effect *effect) {
    if (!k || !k->nretired || PQtransactionStatus(c) != PQTRANS_IDLE)
        return;
    size_t cap = k->nretired * (sizeof "DEALLOCATE ;" + sizeof k->retired[0]) + 1;
    char *sql = malloc(cap);
    if (sql) {
        size_t used = 0;
        for (size_t i = 0; i < k->nretired; i++)
            used += (size_t)snprintf(sql + used, cap - used, "DEALLOCATE %s;", k->retired[i]);
        PGresult *r = dbpool__pgb_exec(c, b, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            discard_due(effect); /* what is left */
        PQclear(r);
        free(sql);
    } else {
        discard_due(effect); /* out of memory: left for the release's DISCARD ALL */
    }
    forget_retired(k);
}

static pg_stmt_slot *find(pg_stmt_cache *k, const char *sql, size_t len, const Oid *types, int n) {
    for (int i = 0; k && i < PG_STMT_SLOTS; i++) {
        pg_stmt_slot *s = &k->slot[i];
        if (s->sql && s->len == len && s->n == n && memcmp(s->sql, sql, len) == 0 &&
            memcmp(s->types, types, (size_t)n * sizeof *types) == 0) {
            s->used = ++k->clock;
            return s;
        }
    }
    return NULL;
}

/* Inside a transaction nothing forgotten can be deallocated (see
 * drop_retired), so a statement prepared there while the cache is full (its
 * victim waits for the transaction's end) or while forgotten ones wait
 * would add one more to the server's for as long as the transaction lasts:
 * a long transaction over thousands of distinct statements held thousands.
 * Such a statement runs unnamed instead, until the transaction ends. */
static bool no_room_in_transaction(const pg_stmt_cache *k, PGconn *c) {
    if (!k || PQtransactionStatus(c) == PQTRANS_IDLE)
        return false;
    if (k->nretired > 0)
        return true;
    for (int i = 0; i < PG_STMT_SLOTS; i++)
        if (!k->slot[i].sql)
            return false;
    return true;
}

/* FNV-1a over the text and the types; never 0 (an empty ring entry). */
static uint64_t stmt_hash(const char *sql, size_t len, const Oid *types, int n) {
    uint64_t h = UINT64_C(14695981039346656037);
    const unsigned char *b = (const unsigned char *)sql;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * UINT64_C(1099511628211);
    b = (const unsigned char *)types;
    for (size_t i = 0; i < (size_t)n * sizeof *types; i++)
        h = (h ^ b[i]) * UINT64_C(1099511628211);
    return h ? h : 1;
}

/* Is this the statement's second run? The first one's hash is noted (and
 * true is never answered for it until it comes back). A collision only
 * prepares a statement one run early. */
static bool seen_before(pg_stmt_cache **cache, const char *sql, size_t len, const Oid *types, int n) {
    if (!*cache && !(*cache = calloc(1, sizeof **cache)))
        return false;
    pg_stmt_cache *k = *cache;
    uint64_t h = stmt_hash(sql, len, types, n);
    for (int i = 0; i < PG_STMT_SEEN; i++) {
        if (k->seen[i] == h) {
            k->seen[i] = 0;
            return true;
        }
    }
    k->seen[k->seen_next] = h;
    k->seen_next = (k->seen_next + 1) % PG_STMT_SEEN;
    return false;
}

/* Does text name the statement `name` (and not one whose name only starts
 * with it: _dbpool_s1 in _dbpool_s12)? The quotes around it are
 * translated with the message, so they are not looked for. */
static bool names_statement(const char *text, const char *name) {
    size_t len = strlen(name);
    for (const char *at = text ? strstr(text, name) : NULL; at; at = strstr(at + 1, name))
        if (!isdigit((unsigned char)at[len]))
            return true;
    return false;
}

/* Does a failed prepare of `name` say the name is taken (42P05, raised
 * as the statement is parsed, so nothing ran)? dbpool's names are never
 * reused within a session, so the session is another connection's: a
 * pooler in front of the server shares its sessions. */
static bool name_taken(const PGresult *r, const char *name) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return state && strcmp(state, "42P05") == 0 && !PQresultErrorField(r, PG_DIAG_CONTEXT) &&
           names_statement(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY), name);
}

/* Keep nothing more on this connection (see shared_sessions). What is
 * kept is forgotten: its server copies sit on sessions this connection no
 * longer reaches in particular. */
static void share_sessions(pg_stmt_cache *k) {
    forget_all(k);
    forget_retired(k);
    k->shared_sessions = true;
}

/*
 * Prepare sql (numbered as `rewritten`) and keep it. NULL with *failed set
 * to the server's answer when the prepare failed (a syntax error: the
 * caller's error; *taken too when the server said the name is taken,
 * see name_taken); NULL with *failed NULL when it could not be kept (out
 * of memory): run it unnamed instead.
 */
static pg_stmt_slot *prepare_kept(pg_stmt_cache *k, PGconn *c, pg_bound *b, pg_session_effect *effect,
                                  const char *sql, size_t len, const char *rewritten, const Oid *types, int n,
                                  PGresult **failed, bool *taken) {
    *failed = NULL;
    *taken = false;
    char *sql_copy = malloc(len + 1);
    Oid *types_copy = malloc((size_t)n * sizeof *types);
    if (!k || !sql_copy || !types_copy) {
        free(sql_copy);
        free(types_copy);
        return NULL;
    }
    memcpy(sql_copy, sql, len + 1);
    memcpy(types_copy, types, (size_t)n * sizeof *types);
    pg_stmt_slot *victim = &k->slot[0];
    for (int i = 0; i < PG_STMT_SLOTS && victim->sql; i++)
        if (!k->slot[i].sql || k->slot[i].used < victim->used)
            victim = &k->slot[i];
    if (victim->sql) {
        /* Full: the least recently used one goes, on the server too, with
         * the retired ones (outside a transaction only: inside one, found
         * gone, a DEALLOCATE behind dbpool's back, the failed DEALLOCATE
         * would abort the caller's transaction, and the caller's statement
         * would fail with 25P02; there no_room_in_transaction runs the
         * statement unnamed instead of coming here). */
        if (!stmt_slot_retire(k, victim))
            discard_due(effect); /* out of memory */
        drop_retired(k, c, b, effect);
    }
    char name[sizeof victim->name];
    snprintf(name, sizeof name, "_dbpool_s%llu", (unsigned long long)++k->serial);
    PGresult *r = dbpool__pgb_prepare(c, b, name, rewritten, n, types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        free(sql_copy);
        free(types_copy);
        *failed = r;
        *taken = name_taken(r, name);
        return NULL;
    }
    PQclear(r);
    *victim = (pg_stmt_slot){.sql = sql_copy, .len = len, .types = types_copy, .n = n, .used = ++k->clock};
    memcpy(victim->name, name, sizeof name);
    return victim;
}

/*
 * A kept statement the server no longer runs as kept: 26000, it is gone
 * (a DEALLOCATE or DISCARD on the native handle); 0A000 "cached plan must
 * not change result type", a table it reads changed shape. Nothing ran:
 * both are raised as the statement is bound. The same codes from inside
 * it (a function that runs EXECUTE of a statement of its own) come with a
 * CONTEXT and are the caller's: the statement ran, maybe with effects no
 * rollback undoes (nextval, dblink), and dbpool's statements are all still
 * there. The 0A000 is told by the server function that raises it: the
 * message is translated with lc_messages (the English text is taken from
 * a server that does not send the function).
 */
static bool stmt_gone(const PGresult *r, const char *name, bool *all) {
    *all = false;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!state || PQresultErrorField(r, PG_DIAG_CONTEXT))
        return false;
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (strcmp(state, "26000") == 0)
        return *all = names_statement(primary, name);
    if (strcmp(state, "0A000") != 0)
        return false;
    const char *function = PQresultErrorField(r, PG_DIAG_SOURCE_FUNCTION);
    return function ? strcmp(function, "RevalidateCachedQuery") == 0
                    : primary && strstr(primary, "cached plan must not change result type");
}

/*
 * Run a numbered statement with its parameters: through the kept
 * statement when there is one (or, at its second run, one can be made),
 * else unnamed. A kept
 * statement the server lost or must re-plan is forgotten; outside a
 * transaction it is prepared again and run once more (nothing ran the
 * first time), inside one the error is the caller's, as the transaction is
 * aborted either way.
 */
PGresult *dbpool__pg_exec_cached(PGconn *c, pg_bound *b, pg_stmt_cache **cache, pg_session_effect *effect,
                                 const char *sql, const char *rewritten, int n, const Oid *types,
                                 const char *const *values, const int *lengths, const int *formats) {
    size_t len = strlen(sql);
    drop_retired(*cache, c, b, effect);
    if (len > PG_STMT_MAX_SQL || (*cache && (*cache)->shared_sessions))
        return dbpool__pgb_exec_params(c, b, rewritten, n, types, values, lengths, formats);
    bool outside_transaction = PQtransactionStatus(c) == PQTRANS_IDLE;
    for (int attempt = 0;; attempt++) {
        pg_stmt_slot *s = find(*cache, sql, len, types, n);
        if (!s && attempt == 0 && !seen_before(cache, sql, len, types, n))
            return dbpool__pgb_exec_params(c, b, rewritten, n, types, values, lengths, formats);
        if (!s && no_room_in_transaction(*cache, c))
            return dbpool__pgb_exec_params(c, b, rewritten, n, types, values, lengths, formats);
        if (!s) {
            PGresult *failed;
            bool taken;
            s = prepare_kept(*cache, c, b, effect, sql, len, rewritten, types, n, &failed, &taken);
            if (!s && taken) {
                /* Nothing ran: outside a transaction it runs unnamed, as
                 * every statement from now on; inside the caller's, which
                 * the failed prepare aborted, the error is the caller's. */
                share_sessions(*cache);
                if (!outside_transaction || PQtransactionStatus(c) != PQTRANS_IDLE || (b && b->timed_out))
                    return failed;
                PQclear(failed);
                return dbpool__pgb_exec_params(c, b, rewritten, n, types, values, lengths, formats);
            }
            if (!s)
                return failed ? failed
                              : dbpool__pgb_exec_params(c, b, rewritten, n, types, values, lengths, formats);
        }
        PGresult *r = dbpool__pgb_exec_prepared(c, b, s->name, n, values, lengths, formats);
        if (b && b->timed_out)
            return r;
        bool all = false;
        if (PQresultStatus(r) != PGRES_FATAL_ERROR || !stmt_gone(r, s->name, &all))
            return r;
        if (all) {
            /* This one is gone. The others may be (a DEALLOCATE ALL or
             * DISCARD ALL on the native handle) or not (a DEALLOCATE of
             * this one): forgotten while the server kept them, they stayed
             * there for the connection's life, 31 more at each such event.
             * They are retired: the next statement outside a transaction
             * deallocates them, and a batch that finds one gone leaves
             * the rest to the release's DISCARD ALL (drop_retired). */
            stmt_slot_forget(s);
            for (int i = 0; i < PG_STMT_SLOTS; i++)
                if ((*cache)->slot[i].sql && !stmt_slot_retire(*cache, &(*cache)->slot[i]))
                    discard_due(effect); /* still on the server, out of memory */
        } else if (!stmt_slot_retire(*cache, s))
            discard_due(effect); /* still on the server, out of memory */
        if (!outside_transaction || PQtransactionStatus(c) != PQTRANS_IDLE) {
            /* Gone inside the caller's transaction, which it aborted: a
             * pooler ran the transaction on another session than the one
             * that prepared it (or a DEALLOCATE on the native handle).
             * Kept again, it would fail the next transaction that lands
             * elsewhere, and the next: from now on nothing is kept. */
            if (all)
                share_sessions(*cache);
            return r;
        }
        if (attempt > 0 && all) {
            /* Prepared again just now and gone already: the prepare and
             * the run reached different sessions. Nothing ran (26000 is
             * raised as the statement is bound): run it unnamed, as every
             * statement from now on. */
            share_sessions(*cache);
            PQclear(r);
            return dbpool__pgb_exec_params(c, b, rewritten, n, types, values, lengths, formats);
        }
        if (attempt > 0)
            return r;
        PQclear(r);
    }
}

/* Does sql hold `word` as a word of its own anywhere (in a string too: a
 * DO block's EXECUTE 'DEALLOCATE ALL'), in any case? Not inside a longer
 * word: a SET application_name = 'discarded-items' in each job of a long
 * lease made the cache forget its statements rather than retire them, and
 * they piled up on the server (one more per job) until the release. */
static bool mentions(const char *sql, const char *word) {
    size_t len = strlen(word);
    for (const char *at = sql; *at; at++)
        if (strncasecmp(at, word, len) == 0 && (at == sql || !dbpool__pg_ident_cont((unsigned char)at[-1])) &&
            !dbpool__pg_ident_cont((unsigned char)at[len]))
            return true;
    return false;
}

void dbpool__pg_stmts_session_changed(pg_stmt_cache *k, const char *sql) {
    if (mentions(sql, "deallocate") || mentions(sql, "discard"))
        forget_all(k);
    else
        retire_all(k);
}
