/*
 * rendezvous: proves two calls were in flight at once, without timing. The host sends
 * {"input":{"dir":"<a directory the plugin may write>","token":"a","peer":"b"}}.
 * The call creates <dir>/in-<token>, then waits (up to WAIT_MS, default 10000) for
 * <dir>/in-<peer> to exist, and reports {"pid":<getpid()>,"token":"a","met":true|false}.
 * Files are never removed, so if call A saw B's file and B saw A's, each began before the
 * other ended: the calls overlapped. Calls that run one after another cannot both meet.
 * token "crash" aborts at once (the worker dies).
 * Exports: version (1), metadata, execute, free_string.
 */
#define _POSIX_C_SOURCE 200809L

#ifndef WAIT_MS
#define WAIT_MS 10000
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* Copies the string value of `key` in `json` into `out` (at most `cap` - 1 bytes). */
static void find_value(const char *json, const char *key, char *out, size_t cap) {
    char pattern[32];
    out[0] = '\0';
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *p = json == NULL ? NULL : strstr(json, pattern);
    if (p == NULL) {
        return;
    }
    p += strlen(pattern);
    size_t n = 0;
    while (p[n] != '\0' && p[n] != '"' && n + 1 < cap) {
        out[n] = p[n];
        n++;
    }
    out[n] = '\0';
}

static int exists(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    close(fd);
    return 1;
}

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    char dir[512], token[32], peer[32], mine[600], theirs[600];
    find_value(context_json, "dir", dir, sizeof dir);
    find_value(context_json, "token", token, sizeof token);
    find_value(context_json, "peer", peer, sizeof peer);
    if (strcmp(token, "crash") == 0) {
        abort();
    }
    snprintf(mine, sizeof mine, "%s/in-%s", dir, token);
    snprintf(theirs, sizeof theirs, "%s/in-%s", dir, peer);
    int fd = open(mine, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return NULL;
    }
    close(fd);

    int met = 0;
    for (int waited = 0; waited < WAIT_MS; waited += 5) {
        if (exists(theirs)) {
            met = 1;
            break;
        }
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 5L * 1000L * 1000L};
        while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
        }
    }

    char buf[200];
    int n = snprintf(buf, sizeof buf,
                     "{\"success\":true,\"output\":{\"pid\":%ld,\"token\":\"%s\",\"met\":%s},"
                     "\"error\":null,\"files\":[]}",
                     (long)getpid(), token, met ? "true" : "false");
    if (n < 0 || (size_t)n >= sizeof buf) {
        return NULL;
    }
    return sg_strdup(buf);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
