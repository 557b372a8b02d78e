/*
 * chatty: a well-behaved plugin that prints, as VT Code's plugins may.
 * Constructor: printf, never flushed (a worker makes stdout line-buffered, so the line
 * reaches the log anyway), and fprintf(stderr).
 * Execute: write(2) of a plain and a JSON-looking line to fd 1, fprintf(stderr)
 * (once plainly, once with an ESC sequence and a carriage return);
 * with input {"flood": N} it then writes N bytes to fd 1 as 100-byte lines of 'f'.
 * Result output: {"chatty":true,"flooded":N}
 */
#include "common.h"

#include <stdio.h>
#include <unistd.h>

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }
EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }
EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }

__attribute__((constructor)) static void chatty_constructor(void) {
    printf("chatty: constructor on stdout\n");
    fprintf(stderr, "chatty: constructor on stderr\n");
}

static int write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    if (context_json == NULL) return NULL;
    /* write(2), not stdio: nothing here flushes the constructor's buffered printf. */
    static const char line1[] = "chatty: execute on stdout\n";
    if (write_all(1, line1, sizeof line1 - 1) != 0) return NULL;
    static const char fake[] = "{\"success\":false,\"note\":\"printed, not returned\"}\n";
    if (write_all(1, fake, sizeof fake - 1) != 0) return NULL;
    fprintf(stderr, "chatty: execute on stderr\n");
    fprintf(stderr, "chatty: \x1b[2J cleared\r\n");

    unsigned long flood = 0;
    const char *at = strstr(context_json, "\"flood\":");
    if (at != NULL) flood = strtoul(at + strlen("\"flood\":"), NULL, 10);
    static char line[100];
    memset(line, 'f', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (unsigned long left = flood; left > 0;) {
        size_t n = left < sizeof line ? (size_t)left : sizeof line;
        if (write_all(1, line, n) != 0) return NULL;
        left -= n;
    }

    char out[128];
    snprintf(out, sizeof out,
             "{\"success\":true,\"output\":{\"chatty\":true,\"flooded\":%lu},\"error\":null,"
             "\"files\":[]}",
             flood);
    return sg_strdup(out);
}
