/*
 * ctor_escape: a complete plugin whose code runs during dlopen, before any call: a constructor
 * and an IFUNC resolver each try to create a marker file. Inside the plugin-thread sandbox both
 * must be denied (they run on the plugin thread, after the sandbox is applied, before dlopen
 * returns); outside it both files appear.
 *
 *   -DMARKER_PATH=\"/abs/path\"  required: the constructor creates MARKER_PATH "-ctor", the
 *                                IFUNC resolver MARKER_PATH "-ifunc"
 * Must be linked with -Wl,-z,now (C_FLAGS do) so the IFUNC resolver runs at load time.
 * Exports: vtcode_plugin_version (1), vtcode_plugin_metadata, vtcode_plugin_execute,
 * vtcode_plugin_free_string.
 * Result output: {"ctor_errno":N,"ifunc_errno":N,"ctor_ran":B,"ifunc_ran":B,"probe":42}
 *   *_errno is the errno the creation saw (0 if the file was created), *_ran whether that
 *   code ran at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "common.h"

#ifndef MARKER_PATH
#error "build with -DMARKER_PATH=\"/abs/path\""
#endif

static int ctor_ran;
static int ctor_errno = -1;
static int ifunc_ran;
static int ifunc_errno = -1;

/* Creates `path`; returns 0 or the errno. No stdio, no allocation: the resolver runs while
 * relocations are being applied. */
static int create_marker(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return errno;
    }
    close(fd);
    return 0;
}

__attribute__((constructor)) static void escape_ctor(void) {
    ctor_ran = 1;
    ctor_errno = create_marker(MARKER_PATH "-ctor");
}

static int probe_impl(void) { return 42; }

typedef int (*probe_fn)(void);

/* Runs while the dynamic loader relocates this library: probe is static, so its GOT slot
 * carries an R_X86_64_IRELATIVE relocation, which glibc applies at dlopen time (with -z now
 * and without it); probe is not in the dynamic symbol table. */
static probe_fn resolve_probe(void) {
    ifunc_ran = 1;
    ifunc_errno = create_marker(MARKER_PATH "-ifunc");
    return probe_impl;
}

static int probe(void) __attribute__((ifunc("resolve_probe")));

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    (void)context_json;
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "{\"success\":true,\"output\":{\"ctor_errno\":%d,\"ifunc_errno\":%d,"
                     "\"ctor_ran\":%s,\"ifunc_ran\":%s,\"probe\":%d},\"error\":null,\"files\":[]}",
                     ctor_errno, ifunc_errno, ctor_ran ? "true" : "false",
                     ifunc_ran ? "true" : "false", probe());
    if (n < 0 || (size_t)n >= sizeof buf) {
        return NULL;
    }
    return sg_strdup(buf);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
