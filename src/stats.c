/* stats.c — names for the statistics' labels. */
#include "pool_internal.h"

const char *dbpool_close_reason_name(dbpool_close_reason r) {
    static const char *const names[DBPOOL_CLOSE_REASON_COUNT] = {
        [DBPOOL_CLOSE_IDLE_TIMEOUT] = "idle_timeout",
        [DBPOOL_CLOSE_LIFETIME] = "lifetime",
        [DBPOOL_CLOSE_BROKEN] = "broken",
        [DBPOOL_CLOSE_VALIDATION] = "validation_failed",
        [DBPOOL_CLOSE_SHRINK] = "shrink",
        [DBPOOL_CLOSE_POOL_CLOSED] = "pool_closed",
        [DBPOOL_CLOSE_DISCARDED] = "discarded",
        [DBPOOL_CLOSE_RESET_FAILED] = "reset_failed",
        [DBPOOL_CLOSE_RECLAIMED] = "leak_reclaimed",
        [DBPOOL_CLOSE_REFRESHED] = "refreshed",
        [DBPOOL_CLOSE_BEFORE_ACQUIRE] = "before_acquire",
        [DBPOOL_CLOSE_AFTER_RELEASE] = "after_release",
    };
    if ((int)r < 0 || r >= DBPOOL_CLOSE_REASON_COUNT)
        return "unknown";
    return names[r];
}
