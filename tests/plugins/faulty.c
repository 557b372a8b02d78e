/*
 * faulty: one plugin, many ways to misbehave. vtcode_plugin_execute performs the context's
 * input "action" (the host sends {"input":{"action":"<name>"},...}):
 *   segfault     writes through a NULL pointer (volatile), so the process gets SIGSEGV
 *   abort        calls abort(), so the process gets SIGABRT
 *   loop         spins forever on a volatile counter (wall-clock timeout / CPU limit)
 *   memory_bomb  mallocs and fills 64 MiB chunks, never freeing them, until malloc returns
 *                NULL; then returns NULL (a NullResult fault) without touching the pointer
 *   memory_touch as memory_bomb, but then writes through the NULL malloc returned, as a
 *                careless plugin would (SIGSEGV)
 *   fork_bomb    calls fork (the raw syscall, so the ELF import check does not refuse the
 *                plugin before the sandbox can be shown to stop it) up to 64 times, stopping at the first failure; a child exits
 *                at once. Output: {"forks":N,"errno":E} (E is 0 if no call failed)
 *   fd_exhaust   duplicates descriptor 0 until that fails, first with dup(0), then with
 *                fcntl(0, F_DUPFD, 0) (open() of a file would be refused by Landlock before
 *                any limit is reached). Output: {"dup":N,"dup_errno":E,"fcntl":N,
 *                "fcntl_errno":E}; the duplicates are closed again before returning
 *   huge         returns a valid result whose output holds a 256 MiB string
 *                ({"blob":"aaa…a"}); -DHUGE_BYTES=N changes the size
 *   host_symbol  looks up host-side names with dlsym(RTLD_DEFAULT, …) and writes through
 *                any it finds. Output: {"found":["name",…],"control":B} where control says
 *                whether "malloc" was found (proving dlsym itself works)
 *   ok / other   echoes the context like good.c: {"echo":<context>,"action":"<name>"}
 * Exports: version (1), metadata, execute, free_string.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"

#ifndef HUGE_BYTES
#define HUGE_BYTES (256u * 1024u * 1024u)
#endif

#define CHUNK_BYTES ((size_t)64 * 1024 * 1024)

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

/* Copies the value of "action" in `json` into `out` (at most `cap` - 1 bytes). */
static void find_action(const char *json, char *out, size_t cap) {
    static const char KEY[] = "\"action\":\"";
    out[0] = '\0';
    if (json == NULL) {
        return;
    }
    const char *p = strstr(json, KEY);
    if (p == NULL) {
        return;
    }
    p += sizeof KEY - 1;
    size_t n = 0;
    while (p[n] != '\0' && p[n] != '"' && n + 1 < cap) {
        out[n] = p[n];
        n++;
    }
    out[n] = '\0';
}

static char *result_with(const char *output_json) {
    return sg_concat("{\"success\":true,\"output\":", output_json, ",\"error\":null,\"files\":[]}",
                     (const char *)NULL);
}

static const char *do_segfault(void) {
    volatile int *volatile p = NULL;
    *p = 42;
    return NULL;
}

static const char *do_loop(void) {
    volatile unsigned long counter = 0;
    for (;;) {
        counter++;
    }
    return NULL;
}

static const char *do_memory_bomb(int touch) {
    for (;;) {
        char *chunk = malloc(CHUNK_BYTES);
        if (chunk == NULL) {
            if (touch) {
                /* Page by page through what malloc returned (NULL). Not memset: the compiler
                 * may drop a memset of a pointer it can prove NULL. */
                volatile char *volatile p = chunk;
                for (size_t i = 0; i < CHUNK_BYTES; i += 4096) {
                    p[i] = 1;
                }
            }
            return NULL;
        }
        memset(chunk, 1, CHUNK_BYTES);
        /* Keep it: the point is to exhaust memory. */
        __asm__ volatile("" : : "r"(chunk) : "memory");
    }
}

static const char *do_fork_bomb(void) {
    int forks = 0, err = 0;
    for (int i = 0; i < 64; i++) {
        pid_t pid = (pid_t)syscall(SYS_fork);
        if (pid == 0) {
            _exit(0);
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        forks++;
    }
    char buf[96];
    snprintf(buf, sizeof buf, "{\"forks\":%d,\"errno\":%d}", forks, err);
    return result_with(buf);
}

static const char *do_fd_exhaust(void) {
    enum { MAX_TRIES = 4096 };
    static int fds[MAX_TRIES];
    int dups = 0, dup_err = 0, fcntls = 0, fcntl_err = 0;
    for (; dups < MAX_TRIES; dups++) {
        int fd = dup(0);
        if (fd < 0) {
            dup_err = errno;
            break;
        }
        fds[dups] = fd;
    }
    for (int i = 0; i < dups; i++) {
        close(fds[i]);
    }
    for (; fcntls < MAX_TRIES; fcntls++) {
        int fd = fcntl(0, F_DUPFD, 0);
        if (fd < 0) {
            fcntl_err = errno;
            break;
        }
        fds[fcntls] = fd;
    }
    for (int i = 0; i < fcntls; i++) {
        close(fds[i]);
    }
    char buf[160];
    snprintf(buf, sizeof buf, "{\"dup\":%d,\"dup_errno\":%d,\"fcntl\":%d,\"fcntl_errno\":%d}",
             dups, dup_err, fcntls, fcntl_err);
    return result_with(buf);
}

static const char *do_huge(void) {
    static const char HEAD[] = "{\"success\":true,\"output\":{\"blob\":\"";
    static const char TAIL[] = "\"},\"error\":null,\"files\":[]}";
    size_t head = sizeof HEAD - 1, tail = sizeof TAIL - 1, blob = (size_t)(HUGE_BYTES);
    char *out = malloc(head + blob + tail + 1);
    if (out == NULL) {
        return NULL;
    }
    memcpy(out, HEAD, head);
    memset(out + head, 'a', blob);
    memcpy(out + head + blob, TAIL, tail + 1);
    return out;
}

static const char *do_host_symbol(void) {
    static const char *const NAMES[] = {
        "skillgate_host_probe", "verify_and_load",   "skillgate_verify_and_load",
        "worker_main",          "skillgate_worker", "rust_begin_unwind",
    };
    char found[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, NAMES[i]);
        if (sym == NULL) {
            continue;
        }
        /* Found: try to corrupt it, as a hostile plugin would. */
        *(volatile unsigned char *)sym = 0;
        int n = snprintf(found + used, sizeof found - used, "%s\"%s\"", used ? "," : "", NAMES[i]);
        if (n > 0 && (size_t)n < sizeof found - used) {
            used += (size_t)n;
        }
    }
    int control = dlsym(RTLD_DEFAULT, "malloc") != NULL;
    char buf[600];
    snprintf(buf, sizeof buf, "{\"found\":[%s],\"control\":%s}", found, control ? "true" : "false");
    return result_with(buf);
}

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    char action[32];
    find_action(context_json, action, sizeof action);
    if (strcmp(action, "segfault") == 0) {
        return do_segfault();
    }
    if (strcmp(action, "abort") == 0) {
        abort();
    }
    if (strcmp(action, "loop") == 0) {
        return do_loop();
    }
    if (strcmp(action, "memory_bomb") == 0) {
        return do_memory_bomb(0);
    }
    if (strcmp(action, "memory_touch") == 0) {
        return do_memory_bomb(1);
    }
    if (strcmp(action, "fork_bomb") == 0) {
        return do_fork_bomb();
    }
    if (strcmp(action, "fd_exhaust") == 0) {
        return do_fd_exhaust();
    }
    if (strcmp(action, "huge") == 0) {
        return do_huge();
    }
    if (strcmp(action, "host_symbol") == 0) {
        return do_host_symbol();
    }
    char extra[64];
    snprintf(extra, sizeof extra, ",\"action\":\"%s\"", action);
    return sg_echo_result(context_json, extra);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
