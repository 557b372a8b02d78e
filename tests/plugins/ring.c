/*
 * ring: attacks the shared call region a process-mode worker maps (src/exec/ring: the memfd
 * at fd 5, its layout in the module docs; the numbers below are checked against the Rust
 * constants by src/exec/ring/tests.rs). The input's "action" picks what it does:
 *   echo       benign: {"echo":<context>,"marker":"ring"}
 *   probe      maps the region read-only if fd 5 is this worker's region (a skillgate-ring
 *              memfd whose header names this process) and reports
 *              {"region":true,"size":N,"call_seq":S,"request_len":L,"on_socket":F}, else
 *              {"region":false} (thread mode: no worker, no region; a region of another
 *              worker the host process holds at 5 names another pid)
 *   scribble   overwrites the whole region with a fixed pseudo-random pattern, the reply
 *              turn last, wakes the host, then sleeps (the host reads the scribbled reply
 *              header at once and ends the worker) and would return the echo
 *   flip_seq   writes a well-formed reply whose sequence number is the call's plus one,
 *              wakes the host, sleeps
 *   huge_len   writes a reply with the call's sequence number and a length of 2^40, wakes
 *              the host, sleeps
 *   bad_tag    writes a reply with the call's sequence number and tag 77, wakes, sleeps
 *   hammer     starts a thread that, until the worker ends, keeps writing (every 0.1 to
 *              1 ms) stale reply headers (the sequence number before the host's current call, a length of
 *              2^40, tag 77, never the reply bytes) and bumping the reply turn; returns
 *              {"echo":<context>,"hammer":1} (0 if the thread could not start)
 *   big        returns {"len":<length of input "data">,"fnv":<FNV-1a 64 of it, as a
 *              string>,"data":<"size" bytes of the pattern a..z>,"on_socket":F,
 *              "request_len":L} (F and L from the header, -1 without a region)
 *   burn       spins until this thread used 300 ms of CPU, then returns the echo
 *   sink       returns {"len":<length of the whole input>} (for the bench: no work per byte
 *              but strlen)
 *   fill       returns {"data":<"size" bytes of "x">} (for the bench: memset)
 *   cpu_lie    writes a false worker_cpu word while the host waits: with "claim":"together"
 *              the host's own CPU (the host then sleeps at once) and returns the echo; with
 *              "claim":"apart" another CPU (the host then polls without yielding), and
 *              never replies (sleeps)
 *   nudge_storm  for 300 ms, bumps the attention count and wakes the host in a loop,
 *              writing nothing on the socket, then returns {"region":true,"bumps":N}
 *   socket_reply  forges a reply that follows on the socket, as the worker sends one too
 *              large for the region: writes an output frame ("kind":"output") or a fault
 *              frame ("kind":"fault") whose payload is exactly "size" bytes (a valid
 *              result, or {"kind":"null_result"}, padded with spaces): publishes a reply
 *              marked "on the socket" with the call's sequence number, wakes the host,
 *              writes the frame on the channel (fd 4), sleeps; {"region":false} without a
 *              region
 */
#include "common.h"

#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING_FD 5
#define CALL_SEQ_AT 128
#define REQUEST_LEN_AT 136
#define REQUEST_ON_SOCKET_AT 144
#define WORKER_PID_AT 12
#define HOST_CPU_AT 160
#define WORKER_CPU_AT 288
#define REPLY_SEQ_AT 256
#define REPLY_LEN_AT 264
#define REPLY_TAG_AT 272
#define REPLY_TURN_AT 276
#define ATTENTION_AT 284
#define REPLY_AREA (4096 + 1114112)
#define REGION_BYTES (4096 + 2 * 1114112)
#define TAG_OUTPUT 1
#define TAG_ON_SOCKET 3
#define CHANNEL_FD 4
#define FRAME_OUTPUT 5
#define FRAME_FAULT 6

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }

static int is_action(const char *ctx, const char *action) {
    char pattern[64];
    int n = snprintf(pattern, sizeof pattern, "\"action\":\"%s\"", action);
    return n > 0 && (size_t)n < sizeof pattern && strstr(ctx, pattern) != NULL;
}

static uint64_t *u64_at(unsigned char *base, size_t at) { return (uint64_t *)(base + at); }
static uint32_t *u32_at(unsigned char *base, size_t at) { return (uint32_t *)(base + at); }

/* This worker's region, mapped with `prot` (size in *size), or NULL: fd 5 must be a file of
 * the region's size whose header has the magic and names this process as its worker. */
static unsigned char *region(int prot, size_t *size) {
    struct stat st;
    if (fstat(RING_FD, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != REGION_BYTES) {
        return NULL;
    }
    unsigned char *base = mmap(NULL, (size_t)st.st_size, prot, MAP_SHARED, RING_FD, 0);
    if (base == MAP_FAILED) {
        return NULL;
    }
    if (memcmp(base, "SGRING01", 8) != 0 || *u32_at(base, WORKER_PID_AT) != (uint32_t)getpid()) {
        munmap(base, (size_t)st.st_size);
        return NULL;
    }
    *size = (size_t)st.st_size;
    return base;
}

static void wake_host(unsigned char *base) {
    syscall(SYS_futex, u32_at(base, REPLY_TURN_AT), FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Publishes a reply header as the worker would (bytes, length, tag, then the sequence
 * number), bumps the reply turn and wakes the host. */
static void forge_reply(unsigned char *base, uint64_t seq, uint64_t len, uint32_t tag,
                        const char *bytes) {
    if (bytes != NULL) {
        memcpy(base + REPLY_AREA, bytes, strlen(bytes));
    }
    __atomic_store_n(u64_at(base, REPLY_LEN_AT), len, __ATOMIC_RELAXED);
    __atomic_store_n(u32_at(base, REPLY_TAG_AT), tag, __ATOMIC_RELAXED);
    __atomic_store_n(u64_at(base, REPLY_SEQ_AT), seq, __ATOMIC_RELEASE);
    __atomic_fetch_add(u32_at(base, REPLY_TURN_AT), 1, __ATOMIC_SEQ_CST);
    wake_host(base);
}

static const char *json_result(const char *output_fields) {
    return sg_concat("{\"success\":true,\"output\":{", output_fields,
                     "},\"error\":null,\"files\":[]}", (const char *)NULL);
}

static const char *echo(const char *ctx, const char *extra) { return sg_echo_result(ctx, extra); }

static void *hammer(void *arg) {
    unsigned char *base = arg;
    for (uint64_t i = 0;; i++) {
        uint64_t call = __atomic_load_n(u64_at(base, CALL_SEQ_AT), __ATOMIC_ACQUIRE);
        __atomic_store_n(u64_at(base, REPLY_LEN_AT), (uint64_t)1 << 40, __ATOMIC_RELAXED);
        __atomic_store_n(u32_at(base, REPLY_TAG_AT), 77, __ATOMIC_RELAXED);
        __atomic_store_n(u64_at(base, REPLY_SEQ_AT), call - 1, __ATOMIC_RELEASE);
        __atomic_fetch_add(u32_at(base, REPLY_TURN_AT), 1, __ATOMIC_SEQ_CST);
        wake_host(base);
        /* In bursts, so that some calls fall between them and some inside. */
        usleep((useconds_t)(100 + (i % 7) * 150));
    }
    return NULL;
}

static uint64_t fnv1a(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static const char *big(const char *ctx) {
    const char *data = strstr(ctx, "\"data\":\"");
    size_t len = 0;
    uint64_t h = fnv1a("", 0);
    if (data != NULL) {
        data += 8;
        const char *end = strchr(data, '"');
        len = end != NULL ? (size_t)(end - data) : 0;
        h = fnv1a(data, len);
    }
    const char *size_at = strstr(ctx, "\"size\":");
    size_t size = size_at != NULL ? (size_t)strtoull(size_at + 7, NULL, 10) : 0;
    long long on_socket = -1, request_len = -1;
    size_t mapped = 0;
    unsigned char *base = region(PROT_READ, &mapped);
    if (base != NULL) {
        on_socket = *u32_at(base, REQUEST_ON_SOCKET_AT);
        request_len = (long long)*u64_at(base, REQUEST_LEN_AT);
        munmap(base, mapped);
    }
    char head[256];
    snprintf(head, sizeof head,
             "\"len\":%zu,\"fnv\":\"%016" PRIx64 "\",\"on_socket\":%lld,\"request_len\":%lld,"
             "\"data\":\"",
             len, h, on_socket, request_len);
    size_t head_len = strlen(head);
    const char *tail = "\"},\"error\":null,\"files\":[]}";
    const char *open = "{\"success\":true,\"output\":{";
    char *out = malloc(strlen(open) + head_len + size + strlen(tail) + 1);
    if (out == NULL) {
        return NULL;
    }
    char *at = out;
    memcpy(at, open, strlen(open));
    at += strlen(open);
    memcpy(at, head, head_len);
    at += head_len;
    for (size_t i = 0; i < size; i++) {
        *at++ = (char)('a' + i % 26);
    }
    memcpy(at, tail, strlen(tail) + 1);
    return out;
}

/* Writes all of `n` bytes on the channel; 0 on success. */
static int write_all(const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(CHANNEL_FD, p, n);
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* socket_reply: a frame of exactly "size" payload bytes on the channel, then the region's
 * reply marked as following there. */
static const char *socket_reply(const char *ctx) {
    size_t mapped = 0;
    unsigned char *base = region(PROT_READ | PROT_WRITE, &mapped);
    if (base == NULL) {
        return json_result("\"region\":false");
    }
    const char *size_at = strstr(ctx, "\"size\":");
    size_t size = size_at != NULL ? (size_t)strtoull(size_at + 7, NULL, 10) : 0;
    int fault = strstr(ctx, "\"kind\":\"fault\"") != NULL;
    const char *body = fault ? "{\"kind\":\"null_result\"}"
                             : "{\"success\":true,\"output\":{\"forged\":\"socket\"},"
                               "\"error\":null,\"files\":[]}";
    size_t body_len = strlen(body);
    if (size < body_len) {
        return json_result("\"size\":\"too small\"");
    }
    uint64_t seq = __atomic_load_n(u64_at(base, CALL_SEQ_AT), __ATOMIC_ACQUIRE);
    unsigned char *frame = malloc(13 + size);
    if (frame == NULL) {
        return NULL;
    }
    uint32_t len = (uint32_t)(size + 9);
    for (int i = 0; i < 4; i++) frame[i] = (unsigned char)(len >> (8 * i));
    frame[4] = fault ? FRAME_FAULT : FRAME_OUTPUT;
    for (int i = 0; i < 8; i++) frame[5 + i] = (unsigned char)(seq >> (8 * i));
    memcpy(frame + 13, body, body_len);
    memset(frame + 13 + body_len, ' ', size - body_len);
    /* Announced first, as the worker does: the host then reads the frame as it comes. */
    forge_reply(base, seq, 0, TAG_ON_SOCKET, NULL);
    write_all(frame, 13 + size);
    free(frame);
    /* The host has what it reads: it returns that call and ends this worker when the
     * handle goes, long before this returns. */
    sleep(60);
    return echo(ctx, "");
}

static double thread_cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

EXPORT const char *vtcode_plugin_execute(const char *ctx) {
    if (ctx == NULL) {
        return NULL;
    }
    if (is_action(ctx, "big")) {
        return big(ctx);
    }
    if (is_action(ctx, "sink")) {
        char fields[64];
        snprintf(fields, sizeof fields, "\"len\":%zu", strlen(ctx));
        return json_result(fields);
    }
    if (is_action(ctx, "fill")) {
        const char *size_at = strstr(ctx, "\"size\":");
        size_t size = size_at != NULL ? (size_t)strtoull(size_at + 7, NULL, 10) : 0;
        const char *open = "{\"success\":true,\"output\":{\"data\":\"";
        const char *tail = "\"},\"error\":null,\"files\":[]}";
        char *out = malloc(strlen(open) + size + strlen(tail) + 1);
        if (out == NULL) {
            return NULL;
        }
        memcpy(out, open, strlen(open));
        memset(out + strlen(open), 'x', size);
        memcpy(out + strlen(open) + size, tail, strlen(tail) + 1);
        return out;
    }
    if (is_action(ctx, "socket_reply")) {
        return socket_reply(ctx);
    }
    if (is_action(ctx, "burn")) {
        double start = thread_cpu_seconds();
        while (thread_cpu_seconds() - start < 0.3) {
        }
        return echo(ctx, "");
    }
    size_t size = 0;
    if (is_action(ctx, "probe")) {
        unsigned char *base = region(PROT_READ, &size);
        if (base == NULL) {
            return json_result("\"region\":false");
        }
        char fields[256];
        snprintf(fields, sizeof fields,
                 "\"region\":true,\"size\":%zu,\"call_seq\":%" PRIu64
                 ",\"request_len\":%" PRIu64 ",\"on_socket\":%u",
                 size, *u64_at(base, CALL_SEQ_AT), *u64_at(base, REQUEST_LEN_AT),
                 *u32_at(base, REQUEST_ON_SOCKET_AT));
        munmap(base, size);
        return json_result(fields);
    }
    if (is_action(ctx, "cpu_lie")) {
        unsigned char *base = region(PROT_READ | PROT_WRITE, &size);
        if (base == NULL) {
            return json_result("\"region\":false");
        }
        int apart = strstr(ctx, "\"claim\":\"apart\"") != NULL;
        /* Keep the lie in place for a while: the host looks at the word between polls. */
        for (int i = 0; i < 2000; i++) {
            uint32_t host_cpu = __atomic_load_n(u32_at(base, HOST_CPU_AT), __ATOMIC_RELAXED);
            __atomic_store_n(u32_at(base, WORKER_CPU_AT), apart ? host_cpu ^ 1 : host_cpu,
                             __ATOMIC_RELAXED);
        }
        if (apart) {
            sleep(60);
        }
        munmap(base, size);
        return echo(ctx, ",\"marker\":\"ring\"");
    }
    if (is_action(ctx, "nudge_storm")) {
        unsigned char *base = region(PROT_READ | PROT_WRITE, &size);
        if (base == NULL) {
            return json_result("\"region\":false");
        }
        struct timespec start;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        uint64_t bumps = 0;
        long long elapsed_ns;
        do {
            __atomic_fetch_add(u32_at(base, ATTENTION_AT), 1, __ATOMIC_SEQ_CST);
            wake_host(base);
            bumps++;
            clock_gettime(CLOCK_MONOTONIC, &now);
            elapsed_ns = (now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec);
        } while (elapsed_ns < 300000000LL);
        munmap(base, size);
        char fields[96];
        snprintf(fields, sizeof fields, "\"region\":true,\"bumps\":%" PRIu64, bumps);
        return json_result(fields);
    }
    int hostile = is_action(ctx, "scribble") || is_action(ctx, "flip_seq") ||
                  is_action(ctx, "huge_len") || is_action(ctx, "bad_tag") ||
                  is_action(ctx, "hammer");
    if (!hostile) {
        return echo(ctx, ",\"marker\":\"ring\"");
    }
    unsigned char *base = region(PROT_READ | PROT_WRITE, &size);
    if (base == NULL) {
        return json_result("\"region\":false");
    }
    uint64_t seq = __atomic_load_n(u64_at(base, CALL_SEQ_AT), __ATOMIC_ACQUIRE);
    if (is_action(ctx, "hammer")) {
        pthread_t t;
        int started = pthread_create(&t, NULL, hammer, base) == 0;
        if (started) {
            pthread_detach(t);
        }
        return echo(ctx, started ? ",\"hammer\":1" : ",\"hammer\":0");
    }
    const char *reply = "{\"success\":true,\"output\":{\"forged\":true},\"error\":null,\"files\":[]}";
    if (is_action(ctx, "scribble")) {
        /* xorshift64 from a fixed seed: the same bytes every run. */
        uint64_t x = 0x9e3779b97f4a7c15ULL;
        for (size_t i = 0; i < size; i += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i != REPLY_TURN_AT - 4 && i + 8 <= size) {
                memcpy(base + i, &x, 8);
            }
        }
        /* The reply turn last (and the host-sleeping word beside it), then the wake-up. */
        __atomic_store_n(u32_at(base, REPLY_TURN_AT - 4), (uint32_t)x, __ATOMIC_RELAXED);
        __atomic_store_n(u32_at(base, REPLY_TURN_AT), (uint32_t)(x >> 32) | 1, __ATOMIC_SEQ_CST);
        wake_host(base);
    } else if (is_action(ctx, "flip_seq")) {
        forge_reply(base, seq + 1, strlen(reply), TAG_OUTPUT, reply);
    } else if (is_action(ctx, "huge_len")) {
        forge_reply(base, seq, (uint64_t)1 << 40, TAG_OUTPUT, NULL);
    } else {
        forge_reply(base, seq, strlen(reply), 77, reply);
    }
    /* The host has what it reads; it ends this worker long before this returns. */
    sleep(60);
    return echo(ctx, "");
}
