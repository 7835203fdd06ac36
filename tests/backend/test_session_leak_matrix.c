/*
 * test_session_leak_matrix.c — state one lease leaves on its session never
 * reaches the next caller, on every backend. Table-driven: per backend a
 * list of ways to change the session, each with a probe. With a pool of
 * one connection, a first lease runs the probe (the clean value), caller A
 * leases, changes the session one way (through dbpool_exec, or on the
 * native handle) and releases, then caller B leases the same connection
 * and runs the probe again: it must read what it read before A. The pool
 * has init_sql and a statement limit, which a reset must give back. Rows
 * docs/operations.md lists as what a reset does not clear are run apart
 * (test_documented_exceptions) and must stay, so that a change of
 * behaviour changes the docs too.
 *
 * The native handle's calls are looked up at run time (the client
 * libraries are loaded with libdbpool), so this test links like its
 * neighbours.
 */
#define _GNU_SOURCE
#include "backend_common.h"

#include <dlfcn.h>

typedef struct row {
    const char *name;
    /* Statements A runs, separated by '\n' lines (each one statement or a
     * multi-statement text); a line starting with '?' runs with one
     * parameter (the rest of the line); a line starting with '!' may fail. */
    const char *change;
    bool native; /* A runs them on the native handle */
    /* B's probe: a query whose first column of the first row is read as
     * an integer (a '?' first: with one parameter); a failure is a result
     * too, which must match as well; a '=' first: a statement, whose
     * success or failure is the result. */
    const char *probe;
} row;

static const row pg_rows[] = {
    {"SET", "SET application_name = 'leak41'", false,
     "SELECT (current_setting('application_name') = 'leak41')::int"},
    {"SET SESSION", "SET SESSION work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"set_config", "SELECT set_config('work_mem', '7MB', false)", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"search_path", "SET search_path = pg_catalog", false,
     "SELECT (current_setting('search_path') = 'pg_catalog')::int"},
    {"session characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
     false, "SELECT (current_setting('default_transaction_isolation') = 'serializable')::int"},
    {"PREPARE", "PREPARE leak41 AS SELECT 1", false,
     "SELECT count(*) FROM pg_prepared_statements WHERE name = 'leak41'"},
    {"WITH HOLD", "BEGIN; DECLARE leak41 CURSOR WITH HOLD FOR SELECT 1; COMMIT", false,
     "SELECT count(*) FROM pg_cursors WHERE name = 'leak41'"},
    {"LISTEN", "LISTEN leak41", false, "SELECT count(*) FROM pg_listening_channels() c WHERE c = 'leak41'"},
    {"temp table", "CREATE TEMP TABLE leak41 (x int)", false,
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"},
    {"temp sequence", "CREATE TEMPORARY SEQUENCE leak41", false,
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"},
    {"temp view", "CREATE OR REPLACE TEMP VIEW leak41 AS SELECT 1", false,
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"},
    {"SELECT INTO TEMP", "SELECT 1 AS x INTO TEMP leak41", false,
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"},
    {"advisory lock", "SELECT pg_advisory_lock(4141)", false,
     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
    {"advisory lock in a CTE", "WITH l AS (SELECT pg_catalog.pg_try_advisory_lock(4142)) SELECT * FROM l",
     false, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
    {"BEGIN", "BEGIN", false, "SELECT (transaction_timestamp() <> statement_timestamp())::int"},
    {"BEGIN in a multi-statement text", "SELECT 1; BEGIN; SELECT 2", false,
     "SELECT (transaction_timestamp() <> statement_timestamp())::int"},
    {"START TRANSACTION", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE", false,
     "SELECT (current_setting('transaction_isolation') = 'serializable')::int"},
    {"failed transaction", "BEGIN\n!SELECT 1/0", false, "SELECT 1"},
    {"SAVEPOINT", "BEGIN; SAVEPOINT s41", false,
     "SELECT (transaction_timestamp() <> statement_timestamp())::int"},
    {"statement cache after DEALLOCATE ALL", "?SELECT 1 + ?::int\n?SELECT 1 + ?::int\nDEALLOCATE ALL", false,
     "?SELECT 1 + ?::int"},
    {"statement cache after DISCARD ALL", "?SELECT 2 + ?::int\n?SELECT 2 + ?::int\nDISCARD ALL", false,
     "?SELECT 2 + ?::int"},
    {"SET after an identifier with $", "SELECT 1 AS a$b$; SET work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"SET after an E string", "SELECT E'\\''; SET work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"SET after a quoted identifier", "SELECT 1 AS \"a\"\"b\"; SET work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"SET after a dollar string", "SELECT $q$ ' $q$; SET work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"SET after U& string", "SELECT U&'d!0061t' UESCAPE '!'; SET work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"SET after a positional parameter-like", "SELECT 1 AS x$1; SET work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"function in pg_temp", "CREATE FUNCTION pg_temp.leak41() RETURNS int LANGUAGE sql AS 'SELECT 1'", false,
     "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname LIKE "
     "'pg_temp%'"},
    {"DECLARE NO SCROLL WITH HOLD", "BEGIN; DECLARE leak41b NO SCROLL CURSOR WITH HOLD FOR SELECT 1; COMMIT",
     false, "SELECT count(*) FROM pg_cursors"},
    {"SET TIME ZONE", "SET TIME ZONE 'Asia/Kolkata'", false,
     "SELECT (current_setting('TimeZone') = 'Asia/Kolkata')::int"},
    {"SET with comment", "set/**/work_mem = '7MB'", false,
     "SELECT (current_setting('work_mem') = '7MB')::int"},
    {"advisory lock shared", "SELECT pg_advisory_lock_shared(4143)", false,
     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
    {"client_encoding", "SET client_encoding = 'LATIN1'", false,
     "SELECT (current_setting('client_encoding') = 'LATIN1')::int"},
    {"standard_conforming_strings", "SET standard_conforming_strings = off", false,
     "SELECT (current_setting('standard_conforming_strings') = 'off')::int"},
    {"DateStyle", "SET datestyle = 'German'", false,
     "SELECT (current_setting('DateStyle') LIKE 'German%')::int"},
    {"RESET of init state", "RESET ALL", false, "SELECT (current_setting('statement_timeout') = '0')::int"},
    {"temp ON COMMIT DELETE ROWS", "CREATE TEMP TABLE leak41oc (x int) ON COMMIT DELETE ROWS", false,
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"},
    {"SET role none", "SET ROLE NONE", false, "SELECT (current_user = session_user)::int"},
    {"init_sql after a reset", "SET application_name = 'leak41i'", false,
     "SELECT (current_setting('work_mem') = '5MB')::int"},
    {"statement limit after a reset", "SET statement_timeout = 0", false,
     "SELECT (current_setting('statement_timeout') = '20s')::int"},
    {"init_sql after DISCARD ALL", "DISCARD ALL", false, "SELECT (current_setting('work_mem') = '5MB')::int"},
    /* On the native handle: what the server reports. */
    {"native SET application_name", "SET application_name = 'leak41n'", true,
     "SELECT (current_setting('application_name') = 'leak41n')::int"},
    {"native BEGIN", "BEGIN", true, "SELECT (transaction_timestamp() <> statement_timestamp())::int"},
    {"native SET TIME ZONE", "SET TIME ZONE 'Asia/Kolkata'", true,
     "SELECT (current_setting('TimeZone') = 'Asia/Kolkata')::int"},
    {"statement cache after native DEALLOCATE ALL", "?SELECT 3 + ?::int\n?SELECT 3 + ?::int\nDEALLOCATE ALL",
     true, "?SELECT 3 + ?::int"},
    {"statement cache after native DISCARD ALL", "?SELECT 4 + ?::int\n?SELECT 4 + ?::int\nDISCARD ALL", true,
     "?SELECT 4 + ?::int"},
    {"set_config with a parameter", "?SELECT set_config('work_mem', ?::text || 'MB', false)", false,
     "SELECT (current_setting('work_mem') = '1MB')::int"},
    {"advisory lock with a parameter",
     "?SELECT pg_advisory_lock(?::bigint)\n?SELECT pg_advisory_lock(?::bigint)", false,
     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
    {"EXPLAIN ANALYZE CREATE TEMP", "EXPLAIN ANALYZE CREATE TEMP TABLE leak41e AS SELECT 1", false,
     "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"},
    {"SET transaction_isolation", "SET default_transaction_read_only = on", false,
     "SELECT (current_setting('default_transaction_read_only') = 'on')::int"},
};

static const row mysql_rows[] = {
    {"user variable", "SET @leak41 = 7", false, "SELECT COALESCE(@leak41, 0)"},
    {"user variable :=", "SELECT @leak41b := 7", false, "SELECT COALESCE(@leak41b, 0)"},
    {"user variable INTO", "SELECT 7 INTO @leak41c", false, "SELECT COALESCE(@leak41c, 0)"},
    {"sql_mode", "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'", false,
     "SELECT @@session.sql_mode = 'NO_BACKSLASH_ESCAPES'"},
    {"time_zone", "SET time_zone = '+05:00'", false, "SELECT @@session.time_zone = '+05:00'"},
    {"autocommit", "SET autocommit = 0", false, "SELECT @@autocommit"},
    {"@@autocommit", "SET @@autocommit = 0", false, "SELECT @@autocommit"},
    {"SET NAMES", "SET NAMES latin1", false, "SELECT @@character_set_client = 'latin1'"},
    {"USE", "USE information_schema", false, "SELECT DATABASE() = 'information_schema'"},
    {"GET_LOCK", "SELECT GET_LOCK('leak41', 0)", false,
     "SELECT COALESCE(IS_USED_LOCK('leak41') = CONNECTION_ID(), 0)"},
    {"LOCK TABLES", "LOCK TABLES leak41_t READ", false, "SELECT COUNT(*) FROM leak41_u"},
    {"temporary table", "CREATE TEMPORARY TABLE leak41_tmp (x INT)", false,
     "SELECT COUNT(*) FROM leak41_tmp"},
    {"temporary table with a parameter", "?CREATE TEMPORARY TABLE leak41pt AS SELECT ? AS x", false,
     "SELECT COUNT(*) FROM leak41pt"},
    {"temporary table AS SELECT", "CREATE TEMPORARY TABLE leak41ct AS SELECT 1 AS x", false,
     "SELECT COUNT(*) FROM leak41ct"},
    {"temporary table SELECT", "CREATE TEMPORARY TABLE leak41cs (x INT) SELECT 1 AS x", false,
     "SELECT COUNT(*) FROM leak41cs"},
    {"PREPARE", "PREPARE leak41 FROM 'SELECT 5'", false, "EXECUTE leak41"},
    {"BEGIN", "BEGIN", false, "SELECT @@in_transaction"},
    {"START TRANSACTION", "START TRANSACTION", false, "SELECT @@in_transaction"},
    {"XA START", "XA START 'leak41'", false, "SELECT @@in_transaction"},
    {"SET TRANSACTION", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false,
     "=START TRANSACTION READ WRITE"},
    {"SET SESSION TRANSACTION", "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", false,
     "SELECT @@session.tx_isolation = 'SERIALIZABLE'"},
    {"GET_LOCK with a parameter", "?SELECT GET_LOCK('leak41p', ?)", false,
     "SELECT COALESCE(IS_USED_LOCK('leak41p') = CONNECTION_ID(), 0)"},
    {"user variable with a parameter", "?SET @leak41p = ?", false, "SELECT COALESCE(@leak41p, 0)"},
    {"HANDLER", "HANDLER leak41_t OPEN", false, "=HANDLER leak41_t READ FIRST"},
    {"XA END (two statements)", "XA START 'leak41f'\nXA END 'leak41f'", false, "=START TRANSACTION"},
    {"native session_track off", "SET SESSION session_track_state_change = OFF", true,
     "SELECT @@session_track_state_change"},
    {"native time_zone after session_track off",
     "SET SESSION session_track_state_change = OFF\nSET SESSION time_zone = '+03:00'", true,
     "SELECT @@session.time_zone = '+03:00'"},
    {"native sysvar tracking off", "SET SESSION session_track_system_variables = ''\nSET @@autocommit = 0",
     true, "SELECT @@autocommit"},
    {"native sysvar tracking off, then state tracking off",
     "SET SESSION session_track_system_variables = ''\nSET SESSION session_track_state_change = OFF", true,
     "SELECT @@session_track_state_change"},
    {"native SET @v after state tracking off",
     "SET SESSION session_track_state_change = OFF\nSET @leak41t = 7", true, "SELECT COALESCE(@leak41t, 0)"},
    {"SET TRANSACTION READ ONLY", "SET TRANSACTION READ ONLY", false, "=INSERT INTO leak41_u VALUES (1)"},
    {"SET SESSION TRANSACTION READ ONLY", "SET SESSION TRANSACTION READ ONLY", false,
     "=INSERT INTO leak41_u VALUES (1)"},
    {"SET STATEMENT", "SET STATEMENT max_statement_time = 5 FOR SELECT 1", false,
     "SELECT @@max_statement_time"},
    {"SET max_statement_time", "SET max_statement_time = 5", false, "SELECT @@max_statement_time"},
    {"SET in a comment-led text", "/* x */ SET @leak41k = 1", false, "SELECT COALESCE(@leak41k, 0)"},
    {"executable comment", "/*!50000 SET @leak41x = 1 */", false, "SELECT COALESCE(@leak41x, 0)"},
    {"native USE", "USE information_schema", true, "SELECT DATABASE() = 'information_schema'"},
    {"native SET NAMES", "SET NAMES latin1", true, "SELECT @@character_set_client = 'latin1'"},
    {"native autocommit", "SET autocommit = 0", true, "SELECT @@autocommit"},
    {"native temporary table", "CREATE TEMPORARY TABLE leak41n_tmp (x INT)", true,
     "SELECT COUNT(*) FROM leak41n_tmp"},
    {"native PREPARE", "PREPARE leak41n FROM 'SELECT 5'", true, "EXECUTE leak41n"},
    {"native SET SESSION max_statement_time", "SET SESSION max_statement_time = 5", true,
     "SELECT @@max_statement_time"},
    {"native mysql_reset_connection", "@mysql_reset_connection", true, "SELECT @@session_track_state_change"},
    {"native SET @v after mysql_reset_connection", "@mysql_reset_connection\nSET @leak41r = 7", true,
     "SELECT COALESCE(@leak41r, 0)"},
    {"character_set_results NULL", "SET character_set_results = NULL", false,
     "SELECT @@character_set_results IS NULL"},
    {"group_concat_max_len", "SET SESSION group_concat_max_len = 4", false, "SELECT @@group_concat_max_len"},
    {"foreign_key_checks", "SET @@session.foreign_key_checks = 0", false, "SELECT @@foreign_key_checks"},
    {"unique_checks via SET", "SET unique_checks = 0", false, "SELECT @@unique_checks"},
    {"sql_select_limit", "SET sql_select_limit = 1", false, "SELECT @@sql_select_limit"},
    {"DEFAULT database via prepared USE", "PREPARE leak41u FROM 'SELECT 1'\nEXECUTE leak41u", false,
     "SELECT DATABASE()"},
    {"init_sql after a reset", "SET time_zone = '+01:00'", false, "SELECT COALESCE(@init41, 0)"},
    {"init_sql after native mysql_reset_connection", "@mysql_reset_connection", true,
     "SELECT COALESCE(@init41, 0)"},
    {"statement limit after a reset", "SET SESSION max_statement_time = 0", false,
     "SELECT @@max_statement_time"},
    {"USE after session_track_schema off", "SET SESSION session_track_schema = OFF\nUSE information_schema",
     false, "SELECT DATABASE() = 'information_schema'"},
    {"native USE after session_track_schema off",
     "SET SESSION session_track_schema = OFF\nUSE information_schema", true,
     "SELECT DATABASE() = 'information_schema'"},
    {"native mysql_select_db", "@mysql_select_db information_schema", true,
     "SELECT DATABASE() = 'information_schema'"},
    {"native mysql_set_character_set", "@mysql_set_character_set latin1", true,
     "SELECT @@character_set_client = 'latin1'"},
    {"native mysql_autocommit", "@mysql_autocommit_off", true, "SELECT @@autocommit"},
    {"native mysql_change_user (same account)", "SET @leak41cu = 1\n@mysql_change_user", true,
     "SELECT COALESCE(@init41, 0)"},
    {"native SET @v after mysql_change_user", "@mysql_change_user\nSET @leak41cv = 7", true,
     "SELECT COALESCE(@leak41cv, 0)"},
    {"temporary table in an anonymous block",
     "BEGIN NOT ATOMIC CREATE TEMPORARY TABLE leak41ab AS SELECT 1 AS x; END", false,
     "SELECT COUNT(*) FROM leak41ab"},
    {"GET_LOCK in an anonymous block", "BEGIN NOT ATOMIC DO GET_LOCK('leak41ab', 0); END", false,
     "SELECT COALESCE(IS_USED_LOCK('leak41ab') = CONNECTION_ID(), 0)"},
    {"user variable in an anonymous block", "BEGIN NOT ATOMIC SET @leak41ab = 7; END", false,
     "SELECT COALESCE(@leak41ab, 0)"},
    {"SET TRANSACTION in an anonymous block", "BEGIN NOT ATOMIC SET TRANSACTION READ ONLY; END", false,
     "=INSERT INTO leak41_u VALUES (2)"},
    {"@@ in an anonymous block", "BEGIN NOT ATOMIC SET @@max_statement_time = 9; END", false,
     "SELECT @@max_statement_time"},
    {"EXECUTE IMMEDIATE in an anonymous block",
     "BEGIN NOT ATOMIC EXECUTE IMMEDIATE 'SELECT GET_LOCK(''leak41ei'', 0)'; END", false,
     "SELECT COALESCE(IS_USED_LOCK('leak41ei') = CONNECTION_ID(), 0)"},
    {"collation after a reset", "SET time_zone = '+02:00'", false,
     "SELECT CRC32(CONCAT(@@collation_connection, @@character_set_results, @@collation_database))"},
    {"native user variable", "SET @leak41n = 7", true, "SELECT COALESCE(@leak41n, 0)"},
    {"native BEGIN", "BEGIN", true, "SELECT @@in_transaction"},
    {"native sql_mode", "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'", true,
     "SELECT @@session.sql_mode = 'NO_BACKSLASH_ESCAPES'"},
};

static const row sqlite_rows[] = {
    {"foreign_keys", "PRAGMA foreign_keys = OFF", false, "PRAGMA foreign_keys"},
    {"foreign_keys on", "PRAGMA foreign_keys = ON", false, "PRAGMA foreign_keys"},
    {"synchronous", "PRAGMA synchronous = 0", false, "PRAGMA synchronous"},
    {"busy_timeout", "PRAGMA busy_timeout = 1", false, "PRAGMA busy_timeout"},
    {"query_only", "PRAGMA query_only = 1", false, "PRAGMA query_only"},
    {"recursive_triggers", "PRAGMA recursive_triggers = 1", false, "PRAGMA recursive_triggers"},
    {"case_sensitive_like", "PRAGMA case_sensitive_like = 1", false, "SELECT 'a' LIKE 'A'"},
    {"ATTACH", "ATTACH ':memory:' AS leak41", false,
     "SELECT count(*) FROM pragma_database_list WHERE name = 'leak41'"},
    {"temp table", "CREATE TEMP TABLE leak41 (x)", false, "SELECT count(*) FROM temp.sqlite_master"},
    {"temp view", "CREATE TEMP VIEW leak41 AS SELECT 1", false, "SELECT count(*) FROM temp.sqlite_master"},
    {"temp trigger", "CREATE TEMP TRIGGER leak41 AFTER INSERT ON leak41_t BEGIN SELECT 1; END", false,
     "SELECT count(*) FROM temp.sqlite_master"},
    {"BEGIN", "BEGIN", false, "SELECT count(*) FROM leak41_t"},
    {"BEGIN IMMEDIATE", "BEGIN IMMEDIATE", false, "SELECT count(*) FROM leak41_t"},
    {"SAVEPOINT", "SAVEPOINT s41", false, "SELECT count(*) FROM leak41_t"},
    {"reverse_unordered_selects", "PRAGMA reverse_unordered_selects = 1", false,
     "PRAGMA reverse_unordered_selects"},
    {"automatic_index", "PRAGMA automatic_index = 0", false, "PRAGMA automatic_index"},
    {"cell_size_check", "PRAGMA cell_size_check = 1", false, "PRAGMA cell_size_check"},
    {"legacy_alter_table", "PRAGMA legacy_alter_table = 1", false, "PRAGMA legacy_alter_table"},
    {"trusted_schema", "PRAGMA trusted_schema = 0", false, "PRAGMA trusted_schema"},
    {"writable_schema", "PRAGMA writable_schema = 1", false, "PRAGMA writable_schema"},
    {"count_changes", "PRAGMA count_changes = 1", false, "PRAGMA count_changes"},
    {"short_column_names", "PRAGMA short_column_names = 0", false, "PRAGMA short_column_names"},
    {"empty_result_callbacks", "PRAGMA empty_result_callbacks = 1", false, "PRAGMA empty_result_callbacks"},
    {"analysis_limit", "PRAGMA analysis_limit = 7", false, "PRAGMA analysis_limit"},
    {"threads", "PRAGMA threads = 3", false, "PRAGMA threads"},
    {"mmap_size", "PRAGMA mmap_size = 65536", false, "PRAGMA mmap_size"},
    {"wal_autocheckpoint", "PRAGMA wal_autocheckpoint = 7", false, "PRAGMA wal_autocheckpoint"},
    {"journal_size_limit", "PRAGMA journal_size_limit = 7", false, "PRAGMA journal_size_limit"},
    {"secure_delete", "PRAGMA secure_delete = 1", false, "PRAGMA secure_delete"},
    {"cache_spill", "PRAGMA cache_spill = 0", false, "PRAGMA cache_spill"},
    {"checkpoint_fullfsync", "PRAGMA checkpoint_fullfsync = 1", false, "PRAGMA checkpoint_fullfsync"},
    {"fullfsync", "PRAGMA fullfsync = 1", false, "PRAGMA fullfsync"},
    {"defer_foreign_keys", "PRAGMA defer_foreign_keys = 1", false, "PRAGMA defer_foreign_keys"},
    {"ignore_check_constraints", "PRAGMA ignore_check_constraints = 1", false,
     "PRAGMA ignore_check_constraints"},
    {"main.synchronous", "PRAGMA main.synchronous = 0", false, "PRAGMA synchronous"},
    {"read_uncommitted", "PRAGMA read_uncommitted = 1", false, "PRAGMA read_uncommitted"},
    {"native fullfsync", "PRAGMA fullfsync = 1", true, "PRAGMA fullfsync"},
    {"foreign_keys in a function form", "SELECT * FROM pragma_foreign_keys", false, "PRAGMA foreign_keys"},
    {"temp table as main-less", "CREATE TABLE temp.leak41x (x)", false,
     "SELECT count(*) FROM temp.sqlite_master"},
    {"temp index", "CREATE TEMP TABLE leak41i (x)\nCREATE INDEX temp.leak41ii ON leak41i (x)", false,
     "SELECT count(*) FROM temp.sqlite_master"},
    {"BEGIN in a multi-statement text", "SELECT 1; BEGIN", false, "=BEGIN"},
    {"SAVEPOINT probe", "SAVEPOINT s42", false, "=BEGIN"},
    {"native BEGIN", "BEGIN", true, "=BEGIN"},
    {"native PRAGMA busy_timeout", "PRAGMA busy_timeout = 1", true, "PRAGMA busy_timeout"},
    {"init_sql's temp table dropped", "DROP TABLE temp.init41", false,
     "SELECT count(*) FROM temp.sqlite_master WHERE name = 'init41'"},
    {"query_only after a temp table", "CREATE TEMP TABLE leak41q (x)\nPRAGMA query_only = 1", false,
     "PRAGMA query_only"},
    {"writable_schema after a temp table", "CREATE TEMP TABLE leak41w (x)\nPRAGMA writable_schema = 1", false,
     "PRAGMA writable_schema"},
    {"foreign_keys off in a transaction", "BEGIN\nCREATE TEMP TABLE leak41f (x)\nPRAGMA foreign_keys = 0",
     false, "PRAGMA foreign_keys"},
    {"native foreign_keys", "PRAGMA foreign_keys = OFF", true, "PRAGMA foreign_keys"},
    {"native temp table", "CREATE TEMP TABLE leak41n (x)", true, "SELECT count(*) FROM temp.sqlite_master"},
    {"native ATTACH", "ATTACH ':memory:' AS leak41n", true,
     "SELECT count(*) FROM pragma_database_list WHERE name = 'leak41n'"},
};

/* A client library's function, found at run time (POSIX: the object
 * pointer dlsym returns converts to a function pointer this way). */
#define SYM(var, name)                                                                                       \
    do {                                                                                                     \
        void *sym_ = dlsym(RTLD_DEFAULT, name);                                                              \
        assert_non_null(sym_);                                                                               \
        memcpy(&(var), &sym_, sizeof(var));                                                                  \
    } while (0)

/* A statement on the native handle; 0 when it ran. */
static int native_run(dbpool_conn *c, const char *sql) {
    void *h = dbpool_conn_native(c);
    assert_non_null(h);
    if (bt_is("pg")) {
        void *(*pqexec)(void *, const char *);
        SYM(pqexec, "PQexec");
        int (*status)(const void *);
        SYM(status, "PQresultStatus");
        void (*clear)(void *);
        SYM(clear, "PQclear");
        void *r = pqexec(h, sql);
        int st = r ? status(r) : -1;
        clear(r);
        return st == 1 /* PGRES_COMMAND_OK */ || st == 2 /* PGRES_TUPLES_OK */ ? 0 : -1;
    }
    if (bt_is("mysql")) {
        int (*query)(void *, const char *);
        SYM(query, "mysql_query");
        void *(*store)(void *);
        SYM(store, "mysql_store_result");
        void (*freeres)(void *);
        SYM(freeres, "mysql_free_result");
        if (strncmp(sql, "@mysql_select_db ", 17) == 0) {
            int (*select_db)(void *, const char *);
            SYM(select_db, "mysql_select_db");
            return select_db(h, sql + 17) == 0 ? 0 : -1;
        }
        if (strncmp(sql, "@mysql_set_character_set ", 25) == 0) {
            int (*set_cs)(void *, const char *);
            SYM(set_cs, "mysql_set_character_set");
            return set_cs(h, sql + 25) == 0 ? 0 : -1;
        }
        if (strcmp(sql, "@mysql_autocommit_off") == 0) {
            char (*autocommit)(void *, char);
            SYM(autocommit, "mysql_autocommit");
            return autocommit(h, 0) == 0 ? 0 : -1;
        }
        if (strcmp(sql, "@mysql_change_user") == 0) {
            /* The same account again, from the test URL
             * (mysql://user:password@host...). */
            char (*change_user)(void *, const char *, const char *, const char *);
            SYM(change_user, "mysql_change_user");
            const char *url = getenv("DBPOOL_TEST_MYSQL_URL");
            char user[128] = "", pw[128] = "", db[128] = "";
            assert_non_null(url);
            assert_true(sscanf(url, "mysql://%127[^:]:%127[^@]@%*[^/]/%127[^?]", user, pw, db) == 3);
            return change_user(h, user, pw, db) == 0 ? 0 : -1;
        }
        if (strcmp(sql, "@mysql_reset_connection") == 0) {
            int (*reset)(void *);
            SYM(reset, "mysql_reset_connection");
            return reset(h) == 0 ? 0 : -1;
        }
        if (query(h, sql) != 0)
            return -1;
        void *r = store(h);
        if (r)
            freeres(r);
        return 0;
    }
    int (*exec)(void *, const char *, void *, void *, char **);
    SYM(exec, "sqlite3_exec");
    return exec(h, sql, NULL, NULL, NULL) == 0 ? 0 : -1;
}

typedef struct probe_out {
    int rc;
    int64_t v;
    char msg[256];
} probe_out;

static probe_out probe(dbpool_conn *c, const char *sql) {
    probe_out o = {0, 0, ""};
    dbpool_error e;
    memset(&e, 0, sizeof e);
    dbpool_param prm = dbpool_param_int64(1);
    bool exec = sql[0] == '=';
    sql += exec;
    bool with = sql[0] == '?';
    if (exec) {
        o.rc = dbpool_exec(c, sql + with, with ? &prm : NULL, with, NULL, &e);
        snprintf(o.msg, sizeof o.msg, "%s", o.rc ? e.message : "");
        return o;
    }
    dbpool_result *r = NULL;
    o.rc = dbpool_query(c, sql + with, with ? &prm : NULL, with, &r, &e);
    if (o.rc != DBPOOL_OK) {
        snprintf(o.msg, sizeof o.msg, "%s", e.message);
        return o;
    }
    int n = dbpool_result_next(r, &e);
    o.v = n == 1 ? dbpool_result_int64(r, 0) : -1000 - n;
    dbpool_result_free(r);
    return o;
}

static void run_change(dbpool_conn *c, const row *w) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", w->change);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        bool may_fail = line[0] == '!';
        line += may_fail;
        bool with = line[0] == '?';
        line += with;
        int rc;
        dbpool_error e;
        memset(&e, 0, sizeof e);
        if (w->native && !with) {
            rc = native_run(c, line);
        } else {
            dbpool_param prm = dbpool_param_int64(1);
            rc = dbpool_exec(c, line, with ? &prm : NULL, with, NULL, &e);
        }
        BT_CHECK(rc == 0 || may_fail, "row \"%s\": \"%s\" failed: %s", w->name, line, e.message);
    }
}

/* What docs/operations.md ("What a reset does not clear") says stays:
 * asserted to stay, so that a change of behaviour changes the docs too. */
static const row pg_documented[] = {
    {"native PREPARE (not scanned)", "PREPARE leak41d AS SELECT 1", true,
     "SELECT count(*) FROM pg_prepared_statements WHERE name = 'leak41d'"},
    {"SET inside a DO block", "DO $$BEGIN PERFORM set_config('work_mem', '6MB', false); END$$", false,
     "SELECT (current_setting('work_mem') = '6MB')::int"},
    {"lastval", "SELECT nextval('leak41_seq')", false, "SELECT lastval()"},
    {"EXECUTE of init_sql's statement", "EXECUTE init41_lock", false,
     "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"},
};

static const row mysql_documented[] = {
    {"native unscoped @@ (MariaDB sends no report)", "SET @@max_statement_time = 7", true,
     "SELECT @@max_statement_time = 7"},
    {"LAST_INSERT_ID", "SELECT LAST_INSERT_ID(41)", false, "SELECT LAST_INSERT_ID()"},
};

static const row sqlite_documented[] = {
    {"PRAGMA on temp", "PRAGMA temp.cache_size = 7", false, "PRAGMA temp.cache_size"},
    {"rows in init_sql's temp table", "INSERT INTO init41 VALUES (1)", false, "SELECT count(*) FROM init41"},
    {"last_insert_rowid", "INSERT INTO leak41_t (rowid, x) VALUES (41000 + random() % 1000, 1)", false,
     "SELECT last_insert_rowid()"},
};

#define MYSQL_SETUP "CREATE TABLE IF NOT EXISTS leak41_t (x INT)\nCREATE TABLE IF NOT EXISTS leak41_u (x INT)"
#define SQLITE_SETUP "CREATE TABLE IF NOT EXISTS leak41_t (x)"

static void run_rows(const row *rows, size_t n, const char *setup, bool documented) {
    dbpool_options o;
    bt_options(&o, 0, 1);
    /* Where every lease starts: init_sql's and the pool's statement limit,
     * which a reset must give back, not the server's defaults. */
    o.statement_timeout_ms = 20000;
    o.init_sql = bt_is("pg") ? "SET work_mem = '5MB'; PREPARE init41_lock AS SELECT pg_advisory_lock(4145)"
                 : bt_is("mysql") ? "SET @init41 = 41"
                                  : "CREATE TEMP TABLE init41 (x)";
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    if (setup)
        run_change(c, &(row){"setup", setup, false, NULL});
    bt_release(c);
    int leaks = 0;
    for (size_t i = 0; i < n; i++) {
        const row *w = &rows[i];
        c = bt_acquire(p);
        probe_out before = probe(c, w->probe);
        bt_release(c);

        c = bt_acquire(p);
        run_change(c, w);
        dbpool_stats s0 = bt_stats(p);
        bt_release(c);
        dbpool_stats s1 = bt_stats(p);
        if (s1.destroyed != s0.destroyed)
            print_message("[%s] CLOSED row \"%s\"\n", bt_backend, w->name);

        c = bt_acquire(p);
        probe_out after = probe(c, w->probe);
        bt_release(c);
        if ((before.rc != after.rc || before.v != after.v) != documented) {
            print_message("[%s] %s row \"%s\": before rc=%d v=%lld (%s), after rc=%d v=%lld (%s)\n",
                          bt_backend, documented ? "documented exception no longer" : "LEAK", w->name,
                          before.rc, (long long)before.v, before.msg, after.rc, (long long)after.v,
                          after.msg);
            leaks++;
        }
    }
    dbpool_close(p);
    BT_CHECK(leaks == 0, "%d row(s) %s (listed above)", leaks,
             documented ? "no longer stay as docs/operations.md says" : "leaked to the next caller");
}

static void test_matrix(void **state) {
    (void)state;
    if (bt_is("pg"))
        run_rows(pg_rows, sizeof pg_rows / sizeof pg_rows[0], NULL, false);
    else if (bt_is("mysql"))
        run_rows(mysql_rows, sizeof mysql_rows / sizeof mysql_rows[0], MYSQL_SETUP, false);
    else
        run_rows(sqlite_rows, sizeof sqlite_rows / sizeof sqlite_rows[0], SQLITE_SETUP, false);
}

static void test_documented_exceptions(void **state) {
    (void)state;
    if (bt_is("pg"))
        run_rows(pg_documented, sizeof pg_documented / sizeof pg_documented[0],
                 "CREATE SEQUENCE IF NOT EXISTS leak41_seq", true);
    else if (bt_is("mysql"))
        run_rows(mysql_documented, sizeof mysql_documented / sizeof mysql_documented[0], MYSQL_SETUP, true);
    else
        run_rows(sqlite_documented, sizeof sqlite_documented / sizeof sqlite_documented[0], SQLITE_SETUP,
                 true);
}

static void nothing_fn(void *ctx, int argc, void **argv) {
    (void)ctx;
    (void)argc;
    (void)argv;
}

/* SQLite: the handle's own settings a caller changes on the native handle
 * (sqlite3_limit, sqlite3_db_config), which no statement shows. */
static void test_sqlite_handle_settings(void **state) {
    (void)state;
    if (!bt_is("sqlite"))
        skip();
    int (*limit)(void *, int, int);
    SYM(limit, "sqlite3_limit");
    int (*db_config)(void *, int, ...);
    SYM(db_config, "sqlite3_db_config");
    int (*busy_timeout)(void *, int);
    SYM(busy_timeout, "sqlite3_busy_timeout");
    dbpool_options o;
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    void *db = dbpool_conn_native(c);
    int length0 = limit(db, 0 /* SQLITE_LIMIT_LENGTH */, -1);
    int64_t busy0 = bt_query_int(c, "PRAGMA busy_timeout", NULL, 0);
    int ext0 = -1, fkey0 = -1;
    db_config(db, 1005 /* SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION */, -1, &ext0);
    db_config(db, 1002 /* SQLITE_DBCONFIG_ENABLE_FKEY */, -1, &fkey0);
    bt_release(c);

    c = bt_acquire(p);
    db = dbpool_conn_native(c);
    limit(db, 0, 10);
    busy_timeout(db, 0);
    db_config(db, 1005, !ext0, (int *)NULL);
    db_config(db, 1002, !fkey0, (int *)NULL);
    bt_release(c);

    c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT length('a long enough text')", NULL, 0) == 18,
             "the last caller's SQLITE_LIMIT_LENGTH fails this caller's statement");
    BT_CHECK(bt_query_int(c, "PRAGMA busy_timeout", NULL, 0) == busy0,
             "the last caller's sqlite3_busy_timeout(db, 0) would fail this caller's statements at once on a "
             "lock");
    BT_CHECK(bt_query_int(c, "PRAGMA foreign_keys", NULL, 0) == fkey0,
             "foreign keys as the last caller set them on the native handle");
    db = dbpool_conn_native(c);
    int ext = -1;
    db_config(db, 1005, -1, &ext);
    BT_CHECK(limit(db, 0, -1) == length0 && ext == ext0,
             "SQLITE_LIMIT_LENGTH %d (was %d), load_extension enabled %d (was %d)", limit(db, 0, -1), length0,
             ext, ext0);
    bt_release(c);

    /* A flag alone, with no limit changed beside it: the release sees it
     * by the statements SQLite expires when a flag changes. Twice: after
     * something else expired them first (a function created, which stays:
     * docs/operations.md), the watch must be armed again. */
    int (*create_function)(void *, const char *, int, int, void *, void (*)(void *, int, void **),
                           void (*)(void *, int, void **), void (*)(void *));
    SYM(create_function, "sqlite3_create_function");
    for (int round = 0; round < 2; round++) {
        c = bt_acquire(p);
        db = dbpool_conn_native(c);
        for (int i = 0; i < round * 2; i++) /* made, then replaced: the replacement expires statements */
            BT_CHECK(create_function(db, "leak41_nothing", 0, 1 /* SQLITE_UTF8 */, NULL, nothing_fn, NULL,
                                     NULL) == 0,
                     "sqlite3_create_function");
        bt_release(c);
        c = bt_acquire(p);
        db_config(dbpool_conn_native(c), 1002, !fkey0, (int *)NULL);
        bt_release(c);
        c = bt_acquire(p);
        BT_CHECK(bt_query_int(c, "PRAGMA foreign_keys", NULL, 0) == fkey0,
                 "round %d: foreign keys as the last caller set them with sqlite3_db_config alone", round);
        bt_release(c);
    }
    dbpool_close(p);
}

/* PostgreSQL: PQreset on the native handle opens a new server session:
 * the next caller must still get the session the pool makes (init_sql,
 * and statements dbpool keeps prepared that exist). */
static void test_pg_native_reconnect(void **state) {
    (void)state;
    if (!bt_is("pg"))
        skip();
    void (*pqreset)(void *);
    SYM(pqreset, "PQreset");
    dbpool_options o;
    bt_options(&o, 0, 1);
    o.init_sql = "SET work_mem = '5MB'";
    dbpool *p = bt_open(&o, NULL);
    dbpool_param prm = dbpool_param_int64(1);
    dbpool_conn *c = bt_acquire(p);
    for (int i = 0; i < 3; i++)
        BT_CHECK(bt_query_int(c, "SELECT 41 + ?::int", &prm, 1) == 42, "kept statement");
    pqreset(dbpool_conn_native(c));
    bt_release(c);

    c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT (current_setting('work_mem') = '5MB')::int", NULL, 0) == 1,
             "init_sql's work_mem is gone after the last caller's PQreset");
    bt_exec(c, "BEGIN");
    dbpool_error e;
    memset(&e, 0, sizeof e);
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, "SELECT 41 + ?::int", &prm, 1, &r, &e);
    BT_CHECK(rc == DBPOOL_OK, "a kept statement in a transaction after the last caller's PQreset: %s",
             e.message);
    if (r)
        dbpool_result_free(r);
    bt_release(c);
    dbpool_close(p);
}

/* PostgreSQL: a DEALLOCATE ALL on the native handle removes the statements
 * dbpool keeps prepared, unseen (documented): the next caller's kept
 * statement inside a transaction fails, and says what may have done it. */
static void test_pg_native_deallocate(void **state) {
    (void)state;
    if (!bt_is("pg"))
        skip();
    dbpool_options o;
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    dbpool_param prm = dbpool_param_int64(1);
    dbpool_conn *c = bt_acquire(p);
    for (int i = 0; i < 3; i++)
        BT_CHECK(bt_query_int(c, "SELECT 41 + ?::int", &prm, 1) == 42, "kept statement");
    assert_int_equal(native_run(c, "DEALLOCATE ALL"), 0);
    bt_release(c);

    c = bt_acquire(p);
    bt_exec(c, "BEGIN");
    dbpool_error e;
    memset(&e, 0, sizeof e);
    dbpool_result *r = NULL;
    int rc = dbpool_query(c, "SELECT 41 + ?::int", &prm, 1, &r, &e);
    if (r)
        dbpool_result_free(r);
    BT_CHECK(rc == DBPOOL_EQUERY && strcmp(e.sqlstate, "26000") == 0 &&
                 strstr(e.message, "DEALLOCATE or DISCARD run on the native handle"),
             "the next caller's kept statement in a transaction: %s", e.message);
    bt_release(c);
    /* Outside a transaction it runs (unnamed from then on). */
    c = bt_acquire(p);
    BT_CHECK(bt_query_int(c, "SELECT 41 + ?::int", &prm, 1) == 42, "kept statement outside a transaction");
    bt_release(c);
    dbpool_close(p);
}

/* The other side: leases that leave nothing behind are not reset (a reset
 * costs round trips, and on MySQL and PostgreSQL init_sql again). */
static void test_clean_leases_not_reset(void **state) {
    (void)state;
    dbpool_options o;
    bt_options(&o, 0, 1);
    dbpool *p = bt_open(&o, NULL);
    dbpool_conn *c = bt_acquire(p);
    bt_exec(c, "DROP TABLE IF EXISTS leak41_clean");
    bt_exec(c, "CREATE TABLE leak41_clean (x INT)");
    bt_release(c);
    dbpool_stats before = bt_stats(p);
    for (int i = 0; i < 3; i++) {
        c = bt_acquire(p);
        dbpool_param prm = dbpool_param_int64(i);
        bt_exec(c, "BEGIN");
        bt_exec_params(c, "INSERT INTO leak41_clean (x) VALUES (?)", &prm, 1);
        bt_exec(c, "COMMIT");
        BT_CHECK(bt_query_int(c, "SELECT COUNT(*) FROM leak41_clean WHERE x = ?", &prm, 1) == 1, "row %d", i);
        bt_exec(c, "SELECT 1");
        bt_release(c);
    }
    /* Took the native handle and changed nothing. */
    c = bt_acquire(p);
    assert_non_null(dbpool_conn_native(c));
    bt_release(c);
    dbpool_stats after = bt_stats(p);
    BT_CHECK(after.rollbacks == before.rollbacks && after.destroyed == before.destroyed,
             "clean leases were reset (%llu) or closed (%llu)",
             (unsigned long long)(after.rollbacks - before.rollbacks),
             (unsigned long long)(after.destroyed - before.destroyed));
    /* One reset, then clean again: what the reset itself does (init_sql
     * again, the pool's settings) is where leases start. */
    c = bt_acquire(p);
    bt_exec(c, bt_is("sqlite") ? "PRAGMA recursive_triggers = 1"
               : bt_is("pg")   ? "SET work_mem = '7MB'"
                               : "SET @leak41_once = 1");
    bt_release(c);
    for (int i = 0; i < 2; i++) {
        c = bt_acquire(p);
        bt_exec(c, "SELECT 1");
        assert_non_null(dbpool_conn_native(c));
        bt_release(c);
    }
    dbpool_stats last = bt_stats(p);
    BT_CHECK(last.rollbacks == after.rollbacks + 1 && last.destroyed == after.destroyed,
             "one dirty lease: %llu resets and %llu closed, expected 1 and 0",
             (unsigned long long)(last.rollbacks - after.rollbacks),
             (unsigned long long)(last.destroyed - after.destroyed));
    c = bt_acquire(p);
    bt_exec(c, "DROP TABLE leak41_clean");
    bt_release(c);
    dbpool_close(p);
}

int main(int argc, char **argv) {
    bt_init(argc, argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_matrix),
                                       cmocka_unit_test(test_pg_native_deallocate),
                                       cmocka_unit_test(test_documented_exceptions),
                                       cmocka_unit_test(test_sqlite_handle_settings),
                                       cmocka_unit_test(test_pg_native_reconnect),
                                       cmocka_unit_test(test_clean_leases_not_reset)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
