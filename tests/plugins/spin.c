/*
 * spin: a CPU-bound plugin for the workers bench. Each execute spins SPIN_ITERS rounds of
 * integer mixing (default 2,000,000, about a millisecond) and returns the mix, so the
 * compiler cannot drop the loop. Exports: version (1), metadata, execute, free_string.
 * Result output: {"mix":N}
 */
#include <stdio.h>

#include "common.h"

#ifndef SPIN_ITERS
#define SPIN_ITERS 2000000
#endif

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    uint64_t x = (uint64_t)(uintptr_t)context_json | 1u;
    for (uint64_t i = 0; i < SPIN_ITERS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    char buf[128];
    int n = snprintf(buf, sizeof buf,
                     "{\"success\":true,\"output\":{\"mix\":%llu},\"error\":null,\"files\":[]}",
                     (unsigned long long)(x & 0xffff));
    if (n < 0 || (size_t)n >= sizeof buf) {
        return NULL;
    }
    return sg_strdup(buf);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
