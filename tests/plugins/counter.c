/*
 * counter: proves the host serializes calls. Each execute increments an atomic "active"
 * counter, records the highest value ever seen, sleeps about 2 ms, and decrements it.
 * Exports: version (1), metadata, execute, free_string.
 * Result output: {"max_active":N,"calls":M} — N stays 1 if calls never overlap; M counts
 * the calls made so far, this one included.
 */
#define _POSIX_C_SOURCE 200809L

/* -DSLEEP_MS=N changes the time each call spends inside the plugin (default 2 ms). */
#ifndef SLEEP_MS
#define SLEEP_MS 2
#endif
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "common.h"

static atomic_uint active;
static atomic_uint max_active;
static atomic_uint calls;

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    (void)context_json;
    unsigned int now = atomic_fetch_add(&active, 1) + 1;
    unsigned int seen = atomic_load(&max_active);
    while (now > seen && !atomic_compare_exchange_weak(&max_active, &seen, now)) {
        /* `seen` was reloaded by the failed exchange; retry while we are still higher. */
    }
    unsigned int call = atomic_fetch_add(&calls, 1) + 1;

    struct timespec left = {.tv_sec = SLEEP_MS / 1000, .tv_nsec = (SLEEP_MS % 1000) * 1000L * 1000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }

    atomic_fetch_sub(&active, 1);

    char buf[160];
    int n = snprintf(buf, sizeof buf,
                     "{\"success\":true,\"output\":{\"max_active\":%u,\"calls\":%u},"
                     "\"error\":null,\"files\":[]}",
                     atomic_load(&max_active), call);
    if (n < 0 || (size_t)n >= sizeof buf) {
        return NULL;
    }
    return sg_strdup(buf);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
