/*
 * result_not_utf8: vtcode_plugin_execute returns the bytes FF FE '{' '}' (malloc'd; not UTF-8).
 * Exports: version (1), metadata, execute, free_string.
 */
#include "common.h"

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    (void)context_json;
    return sg_strdup("\xff\xfe{}");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
