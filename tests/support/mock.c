/* mock.c — fixtures for tests on the mock backend ("mock:" URLs). */
#include "driver_mock.h"
#include "testsupport.h"

int dbt_mock_setup(void **state) {
    (void)state;
    dbpool__mock_reset();
    return 0;
}

void dbt_mock_options(dbpool_options *o, int min_size, int max_size, bool thread_cache) {
    dbt_options(o, min_size, max_size);
    o->thread_cache = thread_cache;
    o->maintenance_interval_ms = 0;
    o->validation = DBPOOL_VALIDATE_NEVER;
}

int dbt_conn_id(dbpool_conn *c) { return dbpool__mock_conn_id(dbpool_conn_native(c)); }

dbpool_stats dbt_stats(dbpool *p) {
    dbpool_stats s;
    dbpool_get_stats(p, &s);
    return s;
}

long dbt_mock_live(void) {
    dbpool__mock_counters mc;
    dbpool__mock_get_counters(&mc);
    return mc.live;
}
