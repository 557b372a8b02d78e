/*
 * skillgate_plugin.h: the native skill plugin ABI, version 1 (VT Code's), for C and C++.
 *
 * A plugin is a shared library exporting the functions below with C linkage and default
 * visibility. skillgate loads it only after checking its signature and its ELF hardening;
 * with gcc or clang build it as
 *
 *   cc -shared -fPIC -O2 -Wl,-z,now -Wl,-z,relro -Wl,-z,noexecstack -o libNAME.so plugin.c
 *
 * (full RELRO, BIND_NOW and a non-executable stack; the same flags with g++ for C++; link
 * nothing beyond the C and C++ runtimes, or statically, unless the host's policy allows the
 * library). NAME is the manifest's "name". `skill-sign sign` refuses a library built
 * otherwise, naming the flags to add.
 *
 * Strings: every `const char *` a plugin returns is NUL-terminated UTF-8 JSON that the
 * plugin allocated; the host copies it and then hands it back to the plugin's own
 * vtcode_plugin_free_string exactly once (hosts never call free() on it, since plugin and
 * host may not share an allocator). The host's strings (the context) are the host's: read
 * them during the call, never free or keep them.
 *
 * Calls: skillgate makes one call at a time per plugin, whatever the plugin says about
 * thread safety, on a thread (or in a worker process) that Landlock and seccomp restrict.
 */
#ifndef SKILLGATE_PLUGIN_H
#define SKILLGATE_PLUGIN_H

#include <stdint.h>

/* The ABI version this header describes; vtcode_plugin_version() returns it. */
#define SKILLGATE_PLUGIN_ABI_VERSION 1u

/* Marks a declaration exported: default visibility even under -fvisibility=hidden. The
 * declarations below carry it, so a definition of them is exported too. */
#if defined(__GNUC__) || defined(__clang__)
#define SKILLGATE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define SKILLGATE_PLUGIN_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version the plugin implements: return SKILLGATE_PLUGIN_ABI_VERSION. */
SKILLGATE_PLUGIN_EXPORT uint32_t vtcode_plugin_version(void);

/*
 * The plugin's metadata, a JSON object with these keys (a host may refuse any other):
 *   {"name": "NAME", "description": "...", "version": "1.0.0", "author": "..." | null,
 *    "abi_version": 1, "when_to_use": "..." | null, "when_not_to_use": "..." | null,
 *    "allowed_tools": ["..."] | null, "thread_safe": false}
 * name, version and abi_version must equal the signed plugin.json's, or the host refuses the
 * plugin. Returns a string released by vtcode_plugin_free_string.
 */
SKILLGATE_PLUGIN_EXPORT const char *vtcode_plugin_metadata(void);

/*
 * Runs one call. context_json (never kept past the call) is
 *   {"input": {...}, "workspace_root": "/path" | null, "config": {...}}
 * and the result is
 *   {"success": true | false, "output": {...}, "error": "..." | null, "files": ["/path", ...]}
 * (a failure sets "success": false and "error"). The result is at most the host's output limit
 * (1 MiB by default). Returns a string released by vtcode_plugin_free_string; NULL counts as
 * a faulted call.
 */
SKILLGATE_PLUGIN_EXPORT const char *vtcode_plugin_execute(const char *context_json);

/*
 * Releases a string returned by vtcode_plugin_metadata or vtcode_plugin_execute. Must accept
 * NULL. Optional in VT Code's ABI (without it the host leaks each string), but export it.
 */
SKILLGATE_PLUGIN_EXPORT void vtcode_plugin_free_string(const char *string);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SKILLGATE_PLUGIN_H */
