/*
 * ctor_plugin: the complete good plugin plus a constructor that creates MARKER_PATH as soon as
 * the library is loaded. Built with a weakening link flag (e.g. -Wl,-z,lazy) it must be refused
 * at inspection, and the marker must then never appear: no plugin code ran.
 *   -DMARKER_PATH=\"/abs/path\"  required
 * Exports: as good.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <unistd.h>

#include "../good.c"

#ifndef MARKER_PATH
#error "build with -DMARKER_PATH=\"/abs/path\""
#endif

__attribute__((constructor)) static void sg_ctor_marker(void) {
    int fd = open(MARKER_PATH, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    }
}
