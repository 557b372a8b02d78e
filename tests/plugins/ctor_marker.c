/*
 * ctor_marker: NOT a complete plugin. A constructor creates the file named by the environment
 * variable SKILLGATE_TEST_MARKER (if set) as soon as the library is loaded; the library lacks
 * vtcode_plugin_execute, so a loader that inspects exports before dlopen must refuse it, and
 * the marker file must then never appear (the constructor never ran).
 * Exports: vtcode_plugin_version (1) and vtcode_plugin_metadata only (metadata is a static
 * string; there is no free_string, so the host must not free it).
 * Also has one .init_array entry (the constructor).
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <unistd.h>

#include "common.h"

__attribute__((constructor)) static void skillgate_test_marker(void) {
#ifdef MARKER_PATH
    const char *path = MARKER_PATH; /* -DMARKER_PATH=\"/tmp/x\": no environment needed */
#else
    const char *path = getenv("SKILLGATE_TEST_MARKER");
#endif
    if (path == NULL || path[0] == '\0') {
        return;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    }
}

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return PLUGIN_METADATA; }
