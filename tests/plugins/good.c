/*
 * good: a well-behaved plugin that echoes its context, plus a marker naming the build.
 *   -DMARKER=\"v2\"  (default "v1") proves which build of the library was loaded.
 *   -DPAD_BYTES=N     adds N bytes of read-only data (a library past a size threshold).
 * Exports: vtcode_plugin_version (1), vtcode_plugin_metadata, vtcode_plugin_execute,
 * vtcode_plugin_free_string.
 * Result output: {"echo":<context>,"marker":MARKER}
 */
#include "common.h"

#ifndef MARKER
#define MARKER "v1"
#endif

#ifdef PAD_BYTES
/* Padding that makes the library larger than skillgate holds on the heap between
 * verification and load (1 MiB), so a test can take the sealed-at-verification path. */
__attribute__((used)) static const unsigned char sg_pad[PAD_BYTES] = {1};
#endif

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    return sg_echo_result(context_json, ",\"marker\":\"" MARKER "\"");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
