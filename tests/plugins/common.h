/*
 * Shared helpers for skillgate's test plugins (VT Code native plugin ABI v1).
 *
 * Every plugin source in this directory is one behaviour, compiled with
 *   cc -shared -fPIC -O2 -Wall -Wextra -Werror \
 *      -Wl,-z,now -Wl,-z,relro -Wl,-z,noexecstack [-D...] -o lib<name>.so <file>.c
 * (tests/support/build.rs does this). Defines understood by every source:
 *   -DPLUGIN_NAME=\"x\"         metadata "name"     (default "test-plugin")
 *   -DPLUGIN_VERSION=\"1.0.0\"  metadata "version"  (default "1.0.0")
 *   -DMETADATA_ABI_VERSION=N    metadata "abi_version" (default 1; a bare integer)
 *
 * Only the vtcode_plugin_* functions each source defines are exported; everything here is
 * static. Strings returned to the host are malloc'd and released by vtcode_plugin_free_string
 * (free), so the host may free the metadata string as well as execute's result.
 */
#ifndef SKILLGATE_TEST_PLUGIN_COMMON_H
#define SKILLGATE_TEST_PLUGIN_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "test-plugin"
#endif
#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION "1.0.0"
#endif
#ifndef METADATA_ABI_VERSION
#define METADATA_ABI_VERSION 1
#endif

#define SG_STR2(x) #x
#define SG_STR(x) SG_STR2(x)

#define EXPORT __attribute__((visibility("default")))

/* Metadata JSON (exactly the nine VT Code keys) for a plugin called `name`. */
#define PLUGIN_METADATA_FOR(name)                                             \
    "{\"name\":\"" name "\","                                                 \
    "\"description\":\"skillgate test plugin\","                              \
    "\"version\":\"" PLUGIN_VERSION "\","                                     \
    "\"author\":\"skillgate tests\","                                         \
    "\"abi_version\":" SG_STR(METADATA_ABI_VERSION) ","                       \
    "\"when_to_use\":null,"                                                   \
    "\"when_not_to_use\":null,"                                               \
    "\"allowed_tools\":[],"                                                   \
    "\"thread_safe\":false}"

#define PLUGIN_METADATA PLUGIN_METADATA_FOR(PLUGIN_NAME)

/* Concatenates NULL-terminated list of strings into one malloc'd string (NULL on failure). */
static inline char *sg_concat(const char *first, ...) {
    va_list ap;
    size_t total = 0;
    va_start(ap, first);
    for (const char *s = first; s != NULL; s = va_arg(ap, const char *)) {
        size_t len = strlen(s);
        if (len > SIZE_MAX - 1 - total) {
            va_end(ap);
            return NULL;
        }
        total += len;
    }
    va_end(ap);

    char *out = malloc(total + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t pos = 0;
    va_start(ap, first);
    for (const char *s = first; s != NULL; s = va_arg(ap, const char *)) {
        size_t len = strlen(s);
        memcpy(out + pos, s, len);
        pos += len;
    }
    va_end(ap);
    out[pos] = '\0';
    return out;
}

/* A malloc'd copy of `s`. */
static inline char *sg_strdup(const char *s) {
    return sg_concat(s, (const char *)NULL);
}

/* A successful result whose output is `{"echo":<context>` + extra + `}`; `extra` is either ""
 * or starts with a comma. The context is embedded verbatim (the host sends valid JSON). */
static inline char *sg_echo_result(const char *context_json, const char *extra) {
    if (context_json == NULL) {
        return NULL;
    }
    return sg_concat("{\"success\":true,\"output\":{\"echo\":", context_json, extra,
                     "},\"error\":null,\"files\":[]}", (const char *)NULL);
}

#endif /* SKILLGATE_TEST_PLUGIN_COMMON_H */
