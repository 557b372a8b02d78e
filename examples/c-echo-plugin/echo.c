/*
 * c-echo: the echo example skill plugin, in C (VT Code native plugin ABI v1).
 *
 * Build (warning-free, full RELRO, non-executable stack):
 *   cc -shared -fPIC -O2 -Wall -Wextra -Werror \
 *      -Wl,-z,now -Wl,-z,relro -Wl,-z,noexecstack -o libc-echo.so echo.c
 *
 * Exports the ABI declared in include/skillgate_plugin.h (which also makes them visible):
 *   vtcode_plugin_version     -> SKILLGATE_PLUGIN_ABI_VERSION
 *   vtcode_plugin_metadata    -> malloc'd JSON
 *   vtcode_plugin_execute     -> malloc'd JSON, NULL on error
 *   vtcode_plugin_free_string    frees either of the above
 *
 * execute returns
 *   {"success":true,"output":{"echo":<ctx>,"lang":"c"},"error":null,"files":[]}
 * where <ctx> is the context JSON received from the host, verbatim (the host sends valid JSON).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Relative, so the build line above needs no -I; a plugin of your own uses -I <skillgate>/include. */
#include "../../include/skillgate_plugin.h"

static const char METADATA[] =
    "{\"name\":\"c-echo\","
    "\"description\":\"Echoes its input back\","
    "\"version\":\"0.1.0\","
    "\"author\":\"skillgate examples\","
    "\"abi_version\":1,"
    "\"when_to_use\":\"To see a signed plugin run\","
    "\"when_not_to_use\":null,"
    "\"allowed_tools\":[],"
    "\"thread_safe\":false}";

static const char RESULT_HEAD[] = "{\"success\":true,\"output\":{\"echo\":";
static const char RESULT_TAIL[] = ",\"lang\":\"c\"},\"error\":null,\"files\":[]}";

/* Copies `s` to a new malloc'd string (NULL on allocation failure). */
static char *copy_string(const char *s) {
    size_t len = strlen(s);
    char *out = malloc(len + 1);
    if (out != NULL) {
        memcpy(out, s, len + 1);
    }
    return out;
}

uint32_t vtcode_plugin_version(void) {
    return SKILLGATE_PLUGIN_ABI_VERSION;
}

const char *vtcode_plugin_metadata(void) {
    return copy_string(METADATA);
}

const char *vtcode_plugin_execute(const char *context_json) {
    if (context_json == NULL) {
        return NULL;
    }
    size_t head = sizeof RESULT_HEAD - 1;
    size_t ctx = strlen(context_json);
    size_t tail = sizeof RESULT_TAIL - 1;
    if (ctx > SIZE_MAX - head - tail - 1) {
        return NULL;
    }
    char *out = malloc(head + ctx + tail + 1);
    if (out == NULL) {
        return NULL;
    }
    memcpy(out, RESULT_HEAD, head);
    memcpy(out + head, context_json, ctx);
    memcpy(out + head + ctx, RESULT_TAIL, tail + 1); /* includes the NUL */
    return out;
}

void vtcode_plugin_free_string(const char *s) {
    free((void *)s);
}
