/*
 * abi2: a good plugin except that vtcode_plugin_version returns 2. The metadata still says
 * "abi_version":1 unless built with -DMETADATA_ABI_VERSION=2, so a host must check the
 * function's answer, not only the metadata.
 * Exports: version (2), metadata, execute, free_string.
 * Result output: {"echo":<context>,"abi":2}
 */
#include "common.h"

EXPORT uint32_t vtcode_plugin_version(void) { return 2; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    return sg_echo_result(context_json, ",\"abi\":2");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
