/*
 * result_not_json: vtcode_plugin_execute returns "this is not json" (malloc'd, valid UTF-8).
 * Exports: version (1), metadata, execute, free_string.
 */
#include "common.h"

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    (void)context_json;
    return sg_strdup("this is not json");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
