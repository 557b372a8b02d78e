/*
 * wrong_name: a good plugin whose metadata names it "someone-else", whatever PLUGIN_NAME is
 * (PLUGIN_VERSION is still used) — the metadata disagrees with the signed manifest.
 * Exports: version (1), metadata, execute, free_string.
 * Result output: {"echo":<context>}
 */
#include "common.h"

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) {
    return sg_strdup(PLUGIN_METADATA_FOR("someone-else"));
}

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    return sg_echo_result(context_json, "");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
