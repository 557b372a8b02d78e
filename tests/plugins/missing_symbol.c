/*
 * missing_symbol: calls a function no library defines. A shared object may link with an
 * undefined symbol, and inspection has no reason to refuse it, but dlopen with RTLD_NOW
 * fails ("undefined symbol: skillgate_test_no_such_symbol"): the host must keep that text.
 * Exports: version (1), metadata, execute, free_string.
 */
#include "common.h"

extern int skillgate_test_no_such_symbol(void);

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    (void)context_json;
    return skillgate_test_no_such_symbol() ? sg_strdup("{}") : NULL;
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
