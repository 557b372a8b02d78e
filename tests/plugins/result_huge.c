/*
 * result_huge: vtcode_plugin_execute returns a valid but huge result,
 *   {"success":true,"output":{"blob":"aaa…a"},"error":null,"files":[]}
 * with HUGE_BYTES 'a' characters (-DHUGE_BYTES=N, default 8 MiB); the whole string is
 * HUGE_BYTES + 61 bytes long (plus the NUL). Malloc'd, freed by vtcode_plugin_free_string.
 * Exports: version (1), metadata, execute, free_string.
 */
#include "common.h"

#ifndef HUGE_BYTES
#define HUGE_BYTES (8u * 1024u * 1024u)
#endif

static const char HEAD[] = "{\"success\":true,\"output\":{\"blob\":\"";
static const char TAIL[] = "\"},\"error\":null,\"files\":[]}";

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    (void)context_json;
    size_t head = sizeof HEAD - 1, tail = sizeof TAIL - 1, blob = (size_t)(HUGE_BYTES);
    if (blob > SIZE_MAX - head - tail - 1) {
        return NULL;
    }
    char *out = malloc(head + blob + tail + 1);
    if (out == NULL) {
        return NULL;
    }
    memcpy(out, HEAD, head);
    memset(out + head, 'a', blob);
    memcpy(out + head + blob, TAIL, tail + 1); /* includes the NUL */
    return out;
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
