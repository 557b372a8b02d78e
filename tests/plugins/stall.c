/*
 * stall: answers at once with its version, or, when the context holds the word "stall",
 * busy-loops (no system call: the thread stays runnable) for STALL_MS milliseconds of wall
 * time first, so a test can cancel or time out a call that is running.
 *   -DSTALL_MS=N  (default 10000) how long a stalled call spins before it answers.
 *   -DSTALL_METADATA_FROM=K  (default 0: never) vtcode_plugin_metadata spins as long from
 *                 its K-th call on (counted in this copy's statics), so a second load of the
 *                 same library can be made to hang in its checks.
 * Exports: version (1), metadata, execute, free_string.
 * Result output: {"version":PLUGIN_VERSION,"stalled":true|false}
 */
#include <string.h>
#include <time.h>

#include "common.h"

#ifndef STALL_MS
#define STALL_MS 10000
#endif

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

#ifndef STALL_METADATA_FROM
#define STALL_METADATA_FROM 0
#endif

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void spin_for_stall_ms(void) {
    long long until = now_ms() + STALL_MS;
    volatile unsigned long spins = 0;
    while (now_ms() < until) {
        spins++;
    }
}

EXPORT const char *vtcode_plugin_metadata(void) {
#if STALL_METADATA_FROM > 0
    static unsigned int calls;
    if (++calls >= STALL_METADATA_FROM) {
        spin_for_stall_ms();
    }
#endif
    return sg_strdup(PLUGIN_METADATA);
}

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    int stall = context_json != NULL && strstr(context_json, "stall") != NULL;
    if (stall) {
        spin_for_stall_ms();
    }
    return sg_strdup(stall ? "{\"success\":true,\"output\":{\"version\":\"" PLUGIN_VERSION
                             "\",\"stalled\":true},\"error\":null,\"files\":[]}"
                           : "{\"success\":true,\"output\":{\"version\":\"" PLUGIN_VERSION
                             "\",\"stalled\":false},\"error\":null,\"files\":[]}");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
