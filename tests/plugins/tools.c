/*
 * A plugin that uses the host extension ABI (skillgate_plugin_host_v1): it keeps the table
 * the host hands it and, per call, does what its input's "op" says:
 *
 *   read      call_tool("workspace.read", {"path": <input.path>}) and return the reply
 *   tool      call_tool(<input.tool>, {}) and return the reply
 *   bad_args  call_tool("workspace.read", "{not json") and return the reply
 *   many      call_tool(<input.tool>, {"path": <input.path>}) <input.n> times; return how
 *             many replies were "ok" and how many were refused with kind "limit"
 *   progress  progress({"step":i}) for i in 0..<input.n>, then return
 *   early     return the reply the table gave in skillgate_plugin_host_v1 itself (no call)
 *
 * and, in a worker only, writes raw frames on the channel (fd 4) as a hostile plugin would:
 *
 *   forge_seq    a tool request carrying another call's sequence number
 *   huge_len     a frame header announcing 4 GiB
 *   malformed    a tool request (sequence 1: the first call) whose arguments are not JSON
 *   after_reply  a forged reply frame for call 1 on the socket, then a tool request for
 *                call 1, then returns: replies come through the call region, so the frame
 *                is a violation of call 1
 *
 * The table's declaration is include/skillgate_plugin.h's, so this also checks the header.
 * Built with -DHOST_EXPORT_DATA it exports a data object of that name instead, which
 * inspection must refuse.
 * Built with -DNO_HOST_EXPORT it does not export skillgate_plugin_host_v1 (an ABI v1
 * plugin): every op then reports "table": false.
 */
#include "common.h"
#ifdef HOST_EXPORT_DATA
/* The header's prototype goes to another name, so the data object below can take it. */
#define skillgate_plugin_host_v1 skillgate_plugin_host_v1_prototype
#endif
#include "../../include/skillgate_plugin.h"

#include <stdio.h>
#include <unistd.h>

static const struct skillgate_host_v1 *host;
static char *early_reply;

#if defined(HOST_EXPORT_DATA)
#undef skillgate_plugin_host_v1
/* A data object under the extension's name: the loader would call it, so inspection must
 * refuse the library. */
EXPORT const char skillgate_plugin_host_v1[] = "x";
#elif !defined(NO_HOST_EXPORT)
EXPORT void skillgate_plugin_host_v1(const struct skillgate_host_v1 *table) {
    if (table != NULL && table->version == SKILLGATE_HOST_TABLE_VERSION &&
        table->size >= sizeof(*table)) {
        host = table;
        /* Outside any call: the table must answer with an error result, never NULL. */
        char *r = host->call_tool("workspace.read", "{\"path\":\"x\"}");
        early_reply = sg_strdup(r != NULL ? r : "null");
        host->free_string(r);
    }
}
#endif

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }

/* The string value of "key" in the context (no escapes), copied into out. */
static int str_field(const char *ctx, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(ctx, pat);
    if (p == NULL) return 0;
    p += strlen(pat);
    size_t n = 0;
    while (p[n] != '\0' && p[n] != '"' && n + 1 < cap) n++;
    memcpy(out, p, n);
    out[n] = '\0';
    return 1;
}

static long num_field(const char *ctx, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(ctx, pat);
    return p == NULL ? 0 : strtol(p + strlen(pat), NULL, 10);
}

static int has_op(const char *ctx, const char *op) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"op\":\"%s\"", op);
    return strstr(ctx, pat) != NULL;
}

static char *result_with(const char *key, const char *json) {
    return sg_concat("{\"success\":true,\"output\":{\"table\":true,\"", key, "\":", json,
                     "},\"error\":null,\"files\":[]}", (const char *)NULL);
}

static char *reply_result(char *reply) {
    char *out = result_with("reply", reply != NULL ? reply : "null");
    if (reply != NULL) host->free_string(reply);
    return out;
}

static void put_frame(uint32_t len, uint8_t tag, uint64_t seq, const char *payload, size_t n) {
    unsigned char header[13];
    for (int i = 0; i < 4; i++) header[i] = (unsigned char)(len >> (8 * i));
    header[4] = tag;
    for (int i = 0; i < 8; i++) header[5 + i] = (unsigned char)(seq >> (8 * i));
    if (write(4, header, sizeof header) < 0) return;
    if (n > 0 && write(4, payload, n) < 0) return;
}

static void frame(uint8_t tag, uint64_t seq, const char *payload, size_t n) {
    put_frame((uint32_t)(n + 9), tag, seq, payload, n);
}

EXPORT const char *vtcode_plugin_execute(const char *ctx) {
    if (host == NULL) {
        return sg_strdup("{\"success\":true,\"output\":{\"table\":false},\"error\":null,"
                         "\"files\":[]}");
    }
    char path[512] = "";
    char tool[80] = "";
    str_field(ctx, "path", path, sizeof path);
    str_field(ctx, "tool", tool, sizeof tool);
    long n = num_field(ctx, "n");
    if (has_op(ctx, "read")) {
        char *args = sg_concat("{\"path\":\"", path, "\"}", (const char *)NULL);
        char *r = host->call_tool("workspace.read", args);
        free(args);
        return reply_result(r);
    }
    if (has_op(ctx, "tool")) {
        return reply_result(host->call_tool(tool, "{}"));
    }
    if (has_op(ctx, "bad_args")) {
        return reply_result(host->call_tool("workspace.read", "{not json"));
    }
    if (has_op(ctx, "early")) {
        return result_with("reply", early_reply != NULL ? early_reply : "null");
    }
    if (has_op(ctx, "many")) {
        char *args = sg_concat("{\"path\":\"", path, "\"}", (const char *)NULL);
        long ok = 0, limit = 0, other = 0;
        for (long i = 0; i < n; i++) {
            char *r = host->call_tool(tool, args);
            if (r == NULL) other += 1000000;
            else if (strncmp(r, "{\"ok\":", 6) == 0) ok++;
            else if (strstr(r, "\"kind\":\"limit\"") != NULL) limit++;
            else other++;
            host->free_string(r);
        }
        free(args);
        char counts[128];
        snprintf(counts, sizeof counts, "{\"ok\":%ld,\"limit\":%ld,\"other\":%ld}", ok, limit,
                 other);
        return result_with("counts", counts);
    }
    if (has_op(ctx, "progress")) {
        for (long i = 0; i < n; i++) {
            char msg[64];
            snprintf(msg, sizeof msg, "{\"step\":%ld}", i);
            host->progress(msg);
        }
        return result_with("sent", "true");
    }
    if (has_op(ctx, "forge_seq")) {
        frame(8, 999999, "\x0eworkspace.read{}", 17);
        return result_with("forged", "true");
    }
    if (has_op(ctx, "huge_len")) {
        put_frame(0xFFFFFFF0u, 8, 1, NULL, 0);
        return result_with("forged", "true");
    }
    if (has_op(ctx, "malformed")) {
        frame(8, 1, "\x0eworkspace.read{not json", 24);
        return result_with("forged", "true");
    }
    if (has_op(ctx, "after_reply")) {
        const char *fake = "{\"success\":true,\"output\":{\"forged\":true},\"error\":null,"
                           "\"files\":[]}";
        frame(5, 1, fake, strlen(fake));
        frame(8, 1, "\x0eworkspace.read{}", 17);
        return result_with("late", "true");
    }
    return result_with("unknown_op", "true");
}
