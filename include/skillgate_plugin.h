/*
 * skillgate_plugin.h: the native skill plugin ABI, version 1 (VT Code's), for C and C++, and
 * skillgate's optional host extension, version 1 (skillgate_plugin_host_v1, at the end).
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

/*
 * ---- The host extension, version 1 (skillgate; optional) -------------------------------------
 *
 * A plugin may ask its host to do things for it instead of doing them itself ("host tools":
 * read a file of the workspace the host chose to share, run an operation the host allows)
 * and report progress during a call. It exports skillgate_plugin_host_v1; skillgate calls it
 * once after loading the plugin and before any call (thread mode: on the plugin thread;
 * process mode: in the worker), with a table that lives as long as the process. A host
 * without the extension (VT Code) never calls it, and a plugin that does not export it is a
 * plain ABI v1 plugin, treated exactly as one.
 *
 * The table is versioned and size-prefixed so it can grow: check version == 1 and
 * size >= sizeof(struct skillgate_host_v1) before keeping it; never read past `size`.
 *
 *   call_tool(name, json_args): asks the host to run tool `name` (1-64 characters of
 *     A-Z a-z 0-9 . _ + -) with `json_args` (one JSON value; NULL means null). Never returns
 *     NULL. The reply is {"ok": <result>} or {"error": {"kind": K, "message": "..."}} with K
 *     one of: denied (the signed plugin.json's "tools" and the host's policy
 *     host_tools.allow must both name the tool), no_host_tools, unknown_tool, bad_request,
 *     failed, limit (per call: requests, request and reply size), timeout (the call's
 *     deadline covers every request), recursion (a plugin called from inside a tool may not
 *     call tools), no_call (outside a call, or in thread mode from a thread other than the
 *     one running vtcode_plugin_execute). Release the reply with free_string.
 *   progress(json): one progress message (a JSON value) the host receives while the call
 *     runs, in order. Fire and forget: past the host's bounds messages are dropped.
 *   free_string(s): releases a reply of call_tool (never free() it).
 *
 * Built-in tools a host may offer: "workspace.read" {"path": "relative/path"} ->
 * {"content": "...", "bytes": N}; "workspace.write" {"path": ..., "content": "..."} ->
 * {"bytes": N}; both beneath the workspace the host named, never through a symlink.
 */
#define SKILLGATE_HOST_TABLE_VERSION 1u

struct skillgate_host_v1 {
    uint32_t version; /* SKILLGATE_HOST_TABLE_VERSION */
    uint32_t size;    /* sizeof the table as the host built it */
    char *(*call_tool)(const char *name, const char *json_args);
    void (*progress)(const char *json);
    void (*free_string)(char *string);
};

/* Optional: receives the host's table (see above). */
SKILLGATE_PLUGIN_EXPORT void skillgate_plugin_host_v1(const struct skillgate_host_v1 *host);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SKILLGATE_PLUGIN_H */
