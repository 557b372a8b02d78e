/*
 * dtor_plugin: the complete good plugin plus one destructor (a DT_FINI_ARRAY entry) and a
 * constructor that registers an atexit handler (an import of __cxa_atexit or atexit, which
 * inspection can see, though not how many handlers it will register). Neither does anything:
 * the fixture exists to be counted.
 * Exports: as good.c.
 */
#include <stdlib.h>

#include "../good.c"

static volatile int sg_dtor_ran;

static void sg_exit_handler(void) {
    sg_dtor_ran = 2;
}

__attribute__((destructor)) static void sg_dtor(void) {
    sg_dtor_ran = 1;
}

__attribute__((constructor)) static void sg_register_exit_handler(void) {
    (void)atexit(sg_exit_handler);
}
