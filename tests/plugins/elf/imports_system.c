/*
 * imports_system: the good plugin plus an export that calls system(3), so the library imports
 * `system`. Never called by the tests: the import alone is what inspection refuses.
 * Exports: as good.c, plus sg_run_shell.
 */
#include "../good.c"

EXPORT int sg_run_shell(const char *command) { return system(command); }
