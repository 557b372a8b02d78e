/*
 * export_data: vtcode_plugin_execute is a data object (STT_OBJECT in .rodata), not a function.
 * A loader must refuse it from the symbol table before dlopen; calling it would jump into
 * non-executable data.
 * Exports: vtcode_plugin_version (1, function), vtcode_plugin_metadata (function),
 * vtcode_plugin_free_string (function), vtcode_plugin_execute (OBJECT, 2 bytes "x\0").
 */
#include "common.h"

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char vtcode_plugin_execute[] = "x";

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
