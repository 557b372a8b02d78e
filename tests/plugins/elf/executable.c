/*
 * executable: the good plugin's code linked as a program (with main), to be built with -pie:
 * ET_DYN like a library, but with PT_INTERP (or, with -Wl,--no-dynamic-linker, DF_1_PIE only).
 * A loader must not take an executable for a plugin.
 */
#include "../good.c"

int main(void) { return 0; }
