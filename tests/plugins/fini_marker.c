/*
 * fini_marker: a well-behaved plugin with finalizers. Its destructor (.fini_array) creates
 * MARKER_PATH ".dtor" and the atexit handler its constructor registers creates MARKER_PATH
 * ".atexit" — whenever and wherever they run. Nothing else touches the files.
 *   -DMARKER_PATH=\"/abs/prefix\"  required
 * Exports: version (1), metadata, execute (echoes its context), free_string.
 * The host must never let these finalizers run outside the sandbox: in thread mode at host
 * exit they would run on the host's exiting thread (skillgate run leaves with _exit); in
 * process mode the worker is killed, and its finalizers would run sandboxed anyway.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <unistd.h>

#include "common.h"

#ifndef MARKER_PATH
#error "build with -DMARKER_PATH=\"/abs/prefix\""
#endif

static void touch(const char *suffix) {
    char *path = sg_concat(MARKER_PATH, suffix, (const char *)NULL);
    if (path == NULL) {
        return;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    }
    free(path);
}

static void at_exit_handler(void) { touch(".atexit"); }

__attribute__((constructor)) static void fini_marker_init(void) { atexit(at_exit_handler); }

__attribute__((destructor)) static void fini_marker_fini(void) { touch(".dtor"); }

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    return sg_echo_result(context_json, "");
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
