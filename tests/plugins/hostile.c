/*
 * hostile: a complete plugin whose execute attempts the escape named by its input and reports
 * what happened, without ever crashing the host. Used by tests/sandbox.rs: outside a sandbox
 * most actions succeed; inside the plugin-thread sandbox each must be denied.
 *
 * Build: the usual flags plus -pthread (tests pass it as an extra argument).
 *
 * Input (the context's "input" object; only these keys are read):
 *   "action": one of the names below (anything else: success false, error "unknown action")
 *   "path":   a file or directory (read_file, write_file, thread_read, chdir)
 *   "port":   a TCP/UDP port on 127.0.0.1 (tcp_connect, udp_send)
 *   "pid":    a process id (kill; ptrace_parent, where it defaults to getppid())
 *   "mask":   the umask to set (umask; default 077)
 *
 * Output: {"action":"<name>","ok":<bool>,"errno":<int>,"stage":"<step>"[,"value":<long>]}
 *   ok     the attempted operation SUCCEEDED (the escape worked)
 *   errno  the errno of the step that failed, 0 when ok
 *   stage  which step the result is about ("open", "read", "socket", "connect", ...)
 *   value  an action-specific number (umask: the syscall's raw return; int80: the raw eax;
 *          setrlimit: the limit requested; fork: the child's pid)
 *
 * Actions:
 *   read_file      open(path, O_RDONLY) + read 1 byte
 *   write_file     open(path, O_WRONLY|O_CREAT|O_TRUNC) + write "pwned"
 *   thread_read    read_file on a pthread this plugin creates (joined; its result reported;
 *                  stage "pthread_create" if the thread could not be created)
 *   fork           raw fork (clone(SIGCHLD) where SYS_fork does not exist); child _exit(0)s
 *   execve         execve("/bin/false") on the calling thread: success replaces the process
 *                  with one that exits 1, so a sandbox failure fails the test run loudly
 *   posix_spawn    posix_spawn("/bin/true") (glibc: clone3, then clone(CLONE_VM|CLONE_VFORK))
 *   tcp_connect    socket(AF_INET, SOCK_STREAM) + connect(127.0.0.1:port)
 *   udp_send       socket(AF_INET, SOCK_DGRAM) + sendto(127.0.0.1:port, "x")
 *   ptrace_parent  ptrace(PTRACE_ATTACH, pid or getppid()); on success wait + PTRACE_DETACH
 *   kill           kill(pid, SIGCONT)
 *   sigaction      install a SIGUSR2 handler (left installed if it succeeds)
 *   chdir          chdir(path) (not undone)
 *   umask          raw umask(mask) (not undone); ok = result != -1
 *   setrlimit      RLIMIT_NOFILE soft limit lowered by one (not undone)
 *   mprotect_exec  anonymous RW page, then mprotect(PROT_READ|PROT_EXEC)
 *   mmap_exec_anon mmap(PROT_READ|PROT_WRITE|PROT_EXEC, MAP_ANONYMOUS|MAP_PRIVATE)
 *   int80          x86-64 only: int $0x80 with eax = 20 (i386 getpid); value = raw eax
 *                  (sign-extended), ok = value > 0. Elsewhere: ok false, errno ENOSYS.
 *   noop           ok true
 *
 * Implicit and other-protocol connects (need "port"; each reports the step that failed):
 *   mptcp_connect     socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP) + connect
 *   fastopen_sendto   TCP socket + sendto(MSG_FASTOPEN) (connects implicitly)
 *   fastopen_connect  TCP socket + setsockopt(TCP_FASTOPEN_CONNECT) + connect
 *   mptcp_fastopen    MPTCP socket + sendto(MSG_FASTOPEN)
 *
 * Moving things inside a grant (needs "path" and "to"):
 *   rename          renameat2(path, to): e.g. moving a symlink over a granted directory
 *
 * Code the plugin writes (needs "path", a file in a read-write grant):
 *   exec_written_file  writes b8 2a 00 00 00 c3 (mov eax, 42; ret) to path, reopens it
 *                      read-only, mmaps it PROT_READ|PROT_EXEC and calls it; value = 42
 *
 * Syscall classes, table-driven (see PROBES below; each names its stage after the call
 * that is expected to fail): io_uring_setup, x32_getpid, tiocsti (ioctl TIOCSTI on fds
 * 0-2), tty_open (open /dev/tty), memfd_exec (memfd_create + execveat), open_by_handle_at,
 * process_vm_readv / process_vm_writev (on the parent), pidfd_open, pidfd_getfd,
 * unix_connect (a path in "path"), unix_abstract, netlink, packet, raw_socket, personality,
 * prctl_dumpable, prctl_seccomp, prctl_nnp_off, prctl_set_mm, seccomp_listener,
 * userfaultfd, perf_event_open, bpf, keyctl, add_key, unshare, setns, mount, pivot_root,
 * open_tree, fsopen, proc_self_mem (open O_RDWR), memfd_reopen (the sealed memfd this
 * library was loaded from, named by dladdr, reopened O_RDWR and written), malloc_bomb (malloc and touch
 * 64 MiB chunks until malloc fails or 64 GiB; value = MiB obtained; ok = the cap was reached)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/un.h>
#include <stddef.h>

#include "common.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef TCP_FASTOPEN_CONNECT
#define TCP_FASTOPEN_CONNECT 30
#endif
#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif

extern char **environ;

/* ---- input parsing: just enough JSON for the keys above --------------------------------- */

/* The text after `"key":` (whitespace skipped) inside the input object, or NULL. */
static const char *find_key(const char *json, const char *key) {
    const char *scope = strstr(json, "\"input\":");
    if (scope == NULL) {
        return NULL;
    }
    char pattern[64];
    int n = snprintf(pattern, sizeof pattern, "\"%s\":", key);
    if (n < 0 || (size_t)n >= sizeof pattern) {
        return NULL;
    }
    const char *at = strstr(scope, pattern);
    if (at == NULL) {
        return NULL;
    }
    at += n;
    while (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r') {
        at++;
    }
    return at;
}

/* Copies the string value of `key` into out (simple escapes undone); 0 on success. */
static int get_string(const char *json, const char *key, char *out, size_t cap) {
    const char *at = find_key(json, key);
    if (at == NULL || *at != '"' || cap == 0) {
        return -1;
    }
    at++;
    size_t len = 0;
    while (*at != '\0' && *at != '"') {
        char c = *at++;
        if (c == '\\') {
            c = *at++;
            if (c == '\0') {
                return -1;
            }
            if (c == 'n') {
                c = '\n';
            } else if (c == 't') {
                c = '\t';
            } /* \" \\ \/ stand for themselves; \uXXXX is not supported */
        }
        if (len + 1 >= cap) {
            return -1;
        }
        out[len++] = c;
    }
    if (*at != '"') {
        return -1;
    }
    out[len] = '\0';
    return 0;
}

/* The integer value of `key`, or `fallback` if missing or not a number. */
static long get_long(const char *json, const char *key, long fallback) {
    const char *at = find_key(json, key);
    if (at == NULL) {
        return fallback;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(at, &end, 10);
    if (end == at || errno != 0) {
        return fallback;
    }
    return v;
}

/* ---- results ------------------------------------------------------------------------------ */

struct outcome {
    int ok;
    int err;
    const char *stage;
    int has_value;
    long value;
};

static struct outcome success(const char *stage) {
    struct outcome o = {1, 0, stage, 0, 0};
    return o;
}

static struct outcome failure(const char *stage, int err) {
    struct outcome o = {0, err, stage, 0, 0};
    return o;
}

static char *report(const char *action, struct outcome o) {
    char value[48] = "";
    if (o.has_value) {
        snprintf(value, sizeof value, ",\"value\":%ld", o.value);
    }
    char buf[320];
    int n = snprintf(buf, sizeof buf,
                     "{\"success\":true,\"output\":{\"action\":\"%s\",\"ok\":%s,\"errno\":%d,"
                     "\"stage\":\"%s\"%s},\"error\":null,\"files\":[]}",
                     action, o.ok ? "true" : "false", o.err, o.stage, value);
    if (n < 0 || (size_t)n >= sizeof buf) {
        return NULL;
    }
    return sg_strdup(buf);
}

static char *refuse(const char *why) {
    return sg_concat("{\"success\":false,\"output\":{},\"error\":\"", why, "\",\"files\":[]}",
                     (const char *)NULL);
}

/* ---- actions ------------------------------------------------------------------------------ */

static struct outcome do_read_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return failure("open", errno);
    }
    char c;
    ssize_t n = read(fd, &c, 1);
    int err = errno;
    close(fd);
    if (n < 0) {
        return failure("read", err);
    }
    return success("read");
}

static struct outcome do_write_file(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return failure("open", errno);
    }
    ssize_t n = write(fd, "pwned", 5);
    int err = errno;
    close(fd);
    if (n != 5) {
        return failure("write", n < 0 ? err : EIO);
    }
    return success("write");
}

struct thread_job {
    const char *path;
    struct outcome result;
};

static void *thread_main(void *arg) {
    struct thread_job *job = arg;
    job->result = do_read_file(job->path);
    return NULL;
}

static struct outcome do_thread_read(const char *path) {
    struct thread_job job = {path, {0, 0, "none", 0, 0}};
    pthread_t t;
    int rc = pthread_create(&t, NULL, thread_main, &job);
    if (rc != 0) {
        return failure("pthread_create", rc);
    }
    rc = pthread_join(t, NULL);
    if (rc != 0) {
        return failure("pthread_join", rc);
    }
    return job.result;
}

static struct outcome do_fork(void) {
#ifdef SYS_fork
    long pid = syscall(SYS_fork);
#else
    long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
#endif
    if (pid == 0) {
        _exit(0); /* the child: no atexit handlers, no stdio, gone at once */
    }
    if (pid < 0) {
        return failure("fork", errno);
    }
    int status;
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {
    }
    struct outcome o = success("fork");
    o.has_value = 1;
    o.value = pid;
    return o;
}

static struct outcome do_execve(void) {
    char *const argv[] = {(char *)"/bin/false", NULL};
    execve("/bin/false", argv, environ);
    return failure("execve", errno); /* only reached if execve failed */
}

static struct outcome do_posix_spawn(void) {
    char *const argv[] = {(char *)"/bin/true", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
    if (rc != 0) {
        return failure("posix_spawn", rc);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    struct outcome o = success("posix_spawn");
    o.has_value = 1;
    o.value = pid;
    return o;
}

static struct sockaddr_in loopback(long port) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

static struct outcome do_tcp_connect(long port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return failure("socket", errno);
    }
    struct sockaddr_in addr = loopback(port);
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    int err = errno;
    close(fd);
    if (rc != 0) {
        return failure("connect", err);
    }
    return success("connect");
}

static struct outcome do_udp_send(long port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return failure("socket", errno);
    }
    struct sockaddr_in addr = loopback(port);
    ssize_t n = sendto(fd, "x", 1, 0, (struct sockaddr *)&addr, sizeof addr);
    int err = errno;
    close(fd);
    if (n != 1) {
        return failure("sendto", n < 0 ? err : EIO);
    }
    return success("sendto");
}

static struct outcome do_ptrace(long pid) {
    if (pid <= 0) {
        errno = 0;
        pid = getppid();
        if (pid <= 0) {
            return failure("getppid", errno != 0 ? errno : ESRCH);
        }
    }
    long rc = ptrace(PTRACE_ATTACH, (pid_t)pid, NULL, NULL);
    if (rc != 0) {
        return failure("ptrace_attach", errno);
    }
    /* Attached: wait for the attach stop, then let the tracee go. */
    int status;
    while (waitpid((pid_t)pid, &status, __WALL) < 0 && errno == EINTR) {
    }
    ptrace(PTRACE_DETACH, (pid_t)pid, NULL, NULL);
    struct outcome o = success("ptrace_attach");
    o.has_value = 1;
    o.value = pid;
    return o;
}

static struct outcome do_kill(long pid) {
    if (pid <= 0) {
        return failure("input", EINVAL); /* never kill(0) or kill(-1) */
    }
    if (kill((pid_t)pid, SIGCONT) != 0) {
        return failure("kill", errno);
    }
    return success("kill");
}

static void on_sigusr2(int sig) { (void)sig; }

static struct outcome do_sigaction(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL) != 0) {
        return failure("sigaction", errno);
    }
    return success("sigaction");
}

static struct outcome do_chdir(const char *path) {
    if (chdir(path) != 0) {
        return failure("chdir", errno);
    }
    return success("chdir");
}

static struct outcome do_umask(long mask) {
    errno = 0;
    long rc = syscall(SYS_umask, (unsigned long)mask);
    struct outcome o = rc == -1 ? failure("umask", errno) : success("umask");
    o.has_value = 1;
    o.value = rc;
    return o;
}

static struct outcome do_setrlimit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return failure("getrlimit", errno);
    }
    if (rl.rlim_cur == 0 || rl.rlim_cur == RLIM_INFINITY) {
        return failure("getrlimit", ERANGE);
    }
    rl.rlim_cur -= 1;
    struct outcome o = setrlimit(RLIMIT_NOFILE, &rl) == 0 ? success("setrlimit")
                                                          : failure("setrlimit", errno);
    o.has_value = 1;
    o.value = (long)rl.rlim_cur;
    return o;
}

static struct outcome do_mprotect_exec(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) {
        page = 4096;
    }
    void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return failure("mmap", errno);
    }
    int rc = mprotect(p, (size_t)page, PROT_READ | PROT_EXEC);
    int err = errno;
    munmap(p, (size_t)page);
    if (rc != 0) {
        return failure("mprotect", err);
    }
    return success("mprotect");
}

static struct outcome do_mmap_exec_anon(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) {
        page = 4096;
    }
    void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return failure("mmap", errno);
    }
    munmap(p, (size_t)page);
    return success("mmap");
}

static struct outcome do_int80(void) {
#if defined(__x86_64__)
    int ret;
    /* i386 getpid is 20. The kernel clobbers nothing but eax here, yet be conservative
     * (older kernels zeroed r8-r11 on the compat entry). */
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(20)
                     : "r8", "r9", "r10", "r11", "memory", "cc");
    struct outcome o = ret > 0 ? success("int80") : failure("int80", ret < 0 ? -ret : 0);
    o.has_value = 1;
    o.value = (long)ret;
    return o;
#else
    return failure("int80", ENOSYS);
#endif
}

/* ---- implicit connects ------------------------------------------------------------------- */

static struct outcome do_stream_connect(long port, int protocol, int fastopen_send,
                                        int fastopen_opt) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, protocol);
    if (fd < 0) {
        return failure("socket", errno);
    }
    struct sockaddr_in addr = loopback(port);
    struct outcome o;
    if (fastopen_opt) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one) != 0) {
            o = failure("setsockopt", errno);
            close(fd);
            return o;
        }
    }
    if (fastopen_send) {
        ssize_t n = sendto(fd, "x", 1, MSG_FASTOPEN | MSG_NOSIGNAL, (struct sockaddr *)&addr,
                           sizeof addr);
        o = n == 1 ? success("sendto") : failure("sendto", n < 0 ? errno : EIO);
    } else {
        int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
        o = rc == 0 ? success("connect") : failure("connect", errno);
    }
    close(fd);
    return o;
}

/* ---- code the plugin writes -------------------------------------------------------------- */

static struct outcome do_exec_written_file(const char *path) {
    static const unsigned char code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return failure("create", errno);
    }
    ssize_t n = write(fd, code, sizeof code);
    int err = errno;
    close(fd);
    if (n != (ssize_t)sizeof code) {
        return failure("write", n < 0 ? err : EIO);
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return failure("open", errno);
    }
    void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        return failure("mmap", err);
    }
#if defined(__x86_64__)
    int (*fn)(void) = (int (*)(void))p;
    struct outcome o = success("call");
    o.has_value = 1;
    o.value = fn();
#else
    struct outcome o = failure("call", ENOSYS);
#endif
    munmap(p, 4096);
    return o;
}

/* ---- syscall classes --------------------------------------------------------------------- */

/* The outcome of a raw syscall's return value: ok when it did not fail. Descriptors it
 * returned are closed. */
static struct outcome raw(const char *stage, long rc, int returns_fd) {
    if (rc < 0) {
        return failure(stage, errno);
    }
    if (returns_fd) {
        close((int)rc);
    }
    return success(stage);
}

struct args {
    const char *path;
    long port;
};

static struct outcome p_io_uring(const struct args *a) {
    (void)a;
    unsigned char params[120];
    memset(params, 0, sizeof params);
    return raw("io_uring_setup", syscall(425 /* io_uring_setup */, 4, params), 1);
}

static struct outcome p_x32(const struct args *a) {
    (void)a;
#if defined(__x86_64__)
    errno = 0;
    long rc = syscall(0x40000000L | 39 /* x32 getpid */);
    struct outcome o = raw("x32_getpid", rc, 0);
    o.has_value = 1;
    o.value = rc;
    return o;
#else
    return failure("x32_getpid", ENOSYS);
#endif
}

static struct outcome p_tiocsti(const struct args *a) {
    (void)a;
    char c = 'x';
    struct outcome o = success("ioctl");
    for (int fd = 0; fd <= 2; fd++) {
        if (ioctl(fd, TIOCSTI, &c) == 0) {
            return success("ioctl");
        }
        o = failure("ioctl", errno);
        if (errno != EPERM) {
            return o; /* a different refusal (ENOTTY, EBADF) says the filter let it through */
        }
    }
    return o;
}

static struct outcome p_tty_open(const struct args *a) {
    (void)a;
    return raw("open", open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY), 1);
}

static struct outcome p_memfd_exec(const struct args *a) {
    (void)a;
    long fd = syscall(SYS_memfd_create, "x", 0);
    if (fd < 0) {
        return failure("memfd_create", errno);
    }
    char *const argv[] = {(char *)"x", NULL};
    syscall(SYS_execveat, (int)fd, "", argv, environ, AT_EMPTY_PATH);
    int err = errno;
    close((int)fd);
    return failure("execveat", err);
}

static struct outcome p_open_by_handle(const struct args *a) {
    (void)a;
    unsigned char handle[136];
    memset(handle, 0, sizeof handle);
    handle[0] = 8; /* handle_bytes */
    return raw("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY),
               1);
}

static struct outcome p_vm(int write_it) {
    char local[8] = "pwned";
    struct iovec l = {local, sizeof local};
    struct iovec r = {(void *)0x10000, sizeof local};
    long rc = syscall(write_it ? SYS_process_vm_writev : SYS_process_vm_readv, getppid(), &l,
                      1, &r, 1, 0);
    return raw(write_it ? "process_vm_writev" : "process_vm_readv", rc, 0);
}
static struct outcome p_vm_read(const struct args *a) { (void)a; return p_vm(0); }
static struct outcome p_vm_write(const struct args *a) { (void)a; return p_vm(1); }

static struct outcome p_pidfd_open(const struct args *a) {
    (void)a;
    return raw("pidfd_open", syscall(434 /* pidfd_open */, getppid(), 0), 1);
}

static struct outcome p_pidfd_getfd(const struct args *a) {
    (void)a;
    /* On a bogus pidfd: the filter answers before the kernel could say EBADF. */
    return raw("pidfd_getfd", syscall(438 /* pidfd_getfd */, 1000, 0, 0), 1);
}

static struct outcome unix_connect(const char *name, int abstract) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return failure("socket", errno);
    }
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t len = strlen(name);
    if (len + 2 > sizeof addr.sun_path) {
        close(fd);
        return failure("input", ENAMETOOLONG);
    }
    memcpy(addr.sun_path + (abstract ? 1 : 0), name, len);
    socklen_t size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (abstract ? 1 : 0));
    int rc = connect(fd, (struct sockaddr *)&addr, size);
    int err = errno;
    close(fd);
    return rc == 0 ? success("connect") : failure("connect", err);
}
static struct outcome p_unix_path(const struct args *a) {
    return unix_connect(a->path[0] != '\0' ? a->path : "/run/skillgate-none.sock", 0);
}
static struct outcome p_unix_abstract(const struct args *a) {
    return unix_connect(a->path[0] != '\0' ? a->path : "skillgate-none", 1);
}

static struct outcome p_netlink(const struct args *a) {
    (void)a;
    return raw("socket", socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0 /* NETLINK_ROUTE */), 1);
}
static struct outcome p_packet(const struct args *a) {
    (void)a;
    return raw("socket", socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x0003)), 1);
}
static struct outcome p_raw_socket(const struct args *a) {
    (void)a;
    return raw("socket", socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP), 1);
}
static struct outcome p_personality(const struct args *a) {
    (void)a;
    return raw("personality", syscall(SYS_personality, READ_IMPLIES_EXEC), 0);
}
static struct outcome p_prctl_dumpable(const struct args *a) {
    (void)a;
    return raw("prctl", prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), 0);
}
static struct outcome p_prctl_seccomp(const struct args *a) {
    (void)a;
    return raw("prctl", prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0), 0);
}
static struct outcome p_prctl_nnp_off(const struct args *a) {
    (void)a;
    return raw("prctl", prctl(PR_SET_NO_NEW_PRIVS, 0, 0, 0, 0), 0);
}
static struct outcome p_prctl_set_mm(const struct args *a) {
    (void)a;
    return raw("prctl", prctl(PR_SET_MM, PR_SET_MM_START_BRK, 0x10000, 0, 0), 0);
}
static struct outcome p_seccomp_listener(const struct args *a) {
    (void)a;
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {1, &allow};
    return raw("seccomp",
               syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                       &prog),
               1);
}
static struct outcome p_userfaultfd(const struct args *a) {
    (void)a;
    return raw("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC), 1);
}
static struct outcome p_perf(const struct args *a) {
    (void)a;
    unsigned char attr[128];
    memset(attr, 0, sizeof attr);
    attr[4] = 128; /* size */
    return raw("perf_event_open", syscall(SYS_perf_event_open, attr, 0, -1, -1, 0), 1);
}
static struct outcome p_bpf(const struct args *a) {
    (void)a;
    unsigned char attr[64];
    memset(attr, 0, sizeof attr);
    return raw("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr), 1);
}
static struct outcome p_keyctl(const struct args *a) {
    (void)a;
    return raw("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0), 0);
}
static struct outcome p_add_key(const struct args *a) {
    (void)a;
    return raw("add_key", syscall(SYS_add_key, "user", "skillgate", "x", 1, -3), 0);
}
static struct outcome p_unshare(const struct args *a) {
    (void)a;
    return raw("unshare", syscall(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */), 0);
}
static struct outcome p_setns(const struct args *a) {
    (void)a;
    return raw("setns", syscall(SYS_setns, 0, 0), 0);
}
static struct outcome p_mount(const struct args *a) {
    (void)a;
    return raw("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL), 0);
}
static struct outcome p_pivot_root(const struct args *a) {
    (void)a;
    return raw("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"), 0);
}
static struct outcome p_open_tree(const struct args *a) {
    (void)a;
    return raw("open_tree", syscall(428 /* open_tree */, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */), 1);
}
static struct outcome p_fsopen(const struct args *a) {
    (void)a;
    return raw("fsopen", syscall(430 /* fsopen */, "tmpfs", 0), 1);
}
static struct outcome p_proc_self_mem(const struct args *a) {
    (void)a;
    return raw("open", open("/proc/self/mem", O_RDWR | O_CLOEXEC), 1);
}

/* Reopens, for writing, the memfd this library was loaded from: the loader was given
 * `/proc/self/fd/N`, the name dladdr reports. Only this plugin's own library is tried: in
 * thread mode the host's other memfds (other plugins' libraries, worker call regions) are in
 * the same descriptor table, and scribbling on them would test nothing about this sandbox
 * and break whatever else the host is running. */
static struct outcome p_memfd_reopen(const struct args *a) {
    (void)a;
    Dl_info info;
    if (dladdr((void *)p_memfd_reopen, &info) == 0 || info.dli_fname == NULL) {
        return failure("dladdr", ENOENT);
    }
    char target[256];
    ssize_t n = readlink(info.dli_fname, target, sizeof target - 1);
    if (n <= 0) {
        return failure("find", errno);
    }
    target[n] = '\0';
    if (strncmp(target, "/memfd:", 7) != 0) {
        return failure("find", ENOENT); /* not loaded from a memfd */
    }
    int w = open(info.dli_fname, O_RDWR | O_CLOEXEC);
    if (w < 0) {
        return failure("open", errno);
    }
    ssize_t k = pwrite(w, "\x7f", 1, 0);
    int err = errno;
    close(w);
    return k == 1 ? success("write") : failure("write", k < 0 ? err : EIO);
}

static struct outcome p_malloc_bomb(const struct args *a) {
    (void)a;
    const size_t chunk = 64u << 20;
    long got = 0;
    void **kept = NULL;
    size_t nkept = 0;
    struct outcome o = success("malloc");
    while (got < 64L * 1024) {
        void *p = malloc(chunk);
        void **more = p == NULL ? NULL : realloc(kept, (nkept + 1) * sizeof *kept);
        if (p == NULL || more == NULL) {
            free(p);
            o = failure("malloc", ENOMEM);
            break;
        }
        kept = more;
        memset(p, 0xa5, chunk);
        kept[nkept++] = p;
        got += 64;
    }
    for (size_t i = 0; i < nkept; i++) {
        free(kept[i]);
    }
    free(kept);
    o.has_value = 1;
    o.value = got;
    return o;
}

struct probe {
    const char *name;
    struct outcome (*run)(const struct args *);
};

static const struct probe PROBES[] = {
    {"io_uring_setup", p_io_uring},
    {"x32_getpid", p_x32},
    {"tiocsti", p_tiocsti},
    {"tty_open", p_tty_open},
    {"memfd_exec", p_memfd_exec},
    {"open_by_handle_at", p_open_by_handle},
    {"process_vm_readv", p_vm_read},
    {"process_vm_writev", p_vm_write},
    {"pidfd_open", p_pidfd_open},
    {"pidfd_getfd", p_pidfd_getfd},
    {"unix_connect", p_unix_path},
    {"unix_abstract", p_unix_abstract},
    {"netlink", p_netlink},
    {"packet", p_packet},
    {"raw_socket", p_raw_socket},
    {"personality", p_personality},
    {"prctl_dumpable", p_prctl_dumpable},
    {"prctl_seccomp", p_prctl_seccomp},
    {"prctl_nnp_off", p_prctl_nnp_off},
    {"prctl_set_mm", p_prctl_set_mm},
    {"seccomp_listener", p_seccomp_listener},
    {"userfaultfd", p_userfaultfd},
    {"perf_event_open", p_perf},
    {"bpf", p_bpf},
    {"keyctl", p_keyctl},
    {"add_key", p_add_key},
    {"unshare", p_unshare},
    {"setns", p_setns},
    {"mount", p_mount},
    {"pivot_root", p_pivot_root},
    {"open_tree", p_open_tree},
    {"fsopen", p_fsopen},
    {"proc_self_mem", p_proc_self_mem},
    {"memfd_reopen", p_memfd_reopen},
    {"malloc_bomb", p_malloc_bomb},
};

/* ---- the ABI ------------------------------------------------------------------------------ */

EXPORT uint32_t vtcode_plugin_version(void) { return 1; }

EXPORT const char *vtcode_plugin_metadata(void) { return sg_strdup(PLUGIN_METADATA); }

EXPORT const char *vtcode_plugin_execute(const char *context_json) {
    if (context_json == NULL) {
        return refuse("no context");
    }
    char action[64];
    if (get_string(context_json, "action", action, sizeof action) != 0) {
        return refuse("no action");
    }
    static char path[4096];
    if (get_string(context_json, "path", path, sizeof path) != 0) {
        path[0] = '\0';
    }
    static char to[4096];
    if (get_string(context_json, "to", to, sizeof to) != 0) {
        to[0] = '\0';
    }
    long port = get_long(context_json, "port", 0);
    long pid = get_long(context_json, "pid", 0);
    long mask = get_long(context_json, "mask", 077);

    int needs_path = strcmp(action, "read_file") == 0 || strcmp(action, "write_file") == 0 ||
                     strcmp(action, "thread_read") == 0 || strcmp(action, "chdir") == 0;
    if (needs_path && path[0] == '\0') {
        return refuse("this action needs a path");
    }
    needs_path = needs_path || strcmp(action, "exec_written_file") == 0;
    if (needs_path && path[0] == '\0') {
        return refuse("this action needs a path");
    }
    int needs_port = strcmp(action, "tcp_connect") == 0 || strcmp(action, "udp_send") == 0 ||
                     strncmp(action, "mptcp_", 6) == 0 || strncmp(action, "fastopen_", 9) == 0;
    if (needs_port && (port <= 0 || port > 65535)) {
        return refuse("this action needs a port in 1..=65535");
    }

    struct outcome o;
    const char *name;
    if (strcmp(action, "read_file") == 0) {
        name = "read_file", o = do_read_file(path);
    } else if (strcmp(action, "write_file") == 0) {
        name = "write_file", o = do_write_file(path);
    } else if (strcmp(action, "thread_read") == 0) {
        name = "thread_read", o = do_thread_read(path);
    } else if (strcmp(action, "fork") == 0) {
        name = "fork", o = do_fork();
    } else if (strcmp(action, "execve") == 0) {
        name = "execve", o = do_execve();
    } else if (strcmp(action, "posix_spawn") == 0) {
        name = "posix_spawn", o = do_posix_spawn();
    } else if (strcmp(action, "tcp_connect") == 0) {
        name = "tcp_connect", o = do_tcp_connect(port);
    } else if (strcmp(action, "udp_send") == 0) {
        name = "udp_send", o = do_udp_send(port);
    } else if (strcmp(action, "ptrace_parent") == 0) {
        name = "ptrace_parent", o = do_ptrace(pid);
    } else if (strcmp(action, "kill") == 0) {
        name = "kill", o = do_kill(pid);
    } else if (strcmp(action, "sigaction") == 0) {
        name = "sigaction", o = do_sigaction();
    } else if (strcmp(action, "chdir") == 0) {
        name = "chdir", o = do_chdir(path);
    } else if (strcmp(action, "umask") == 0) {
        name = "umask", o = do_umask(mask);
    } else if (strcmp(action, "setrlimit") == 0) {
        name = "setrlimit", o = do_setrlimit();
    } else if (strcmp(action, "mprotect_exec") == 0) {
        name = "mprotect_exec", o = do_mprotect_exec();
    } else if (strcmp(action, "mmap_exec_anon") == 0) {
        name = "mmap_exec_anon", o = do_mmap_exec_anon();
    } else if (strcmp(action, "int80") == 0) {
        name = "int80", o = do_int80();
    } else if (strcmp(action, "noop") == 0) {
        name = "noop", o = success("noop");
    } else if (strcmp(action, "mptcp_connect") == 0) {
        name = "mptcp_connect", o = do_stream_connect(port, IPPROTO_MPTCP, 0, 0);
    } else if (strcmp(action, "fastopen_sendto") == 0) {
        name = "fastopen_sendto", o = do_stream_connect(port, 0, 1, 0);
    } else if (strcmp(action, "fastopen_connect") == 0) {
        name = "fastopen_connect", o = do_stream_connect(port, 0, 0, 1);
    } else if (strcmp(action, "mptcp_fastopen") == 0) {
        name = "mptcp_fastopen", o = do_stream_connect(port, IPPROTO_MPTCP, 1, 0);
    } else if (strcmp(action, "rename") == 0) {
        if (path[0] == '\0' || to[0] == '\0') {
            return refuse("rename needs a path and a destination");
        }
        long rc = syscall(SYS_renameat2, AT_FDCWD, path, AT_FDCWD, to, 0);
        name = "rename", o = rc == 0 ? success("rename") : failure("rename", errno);
    } else if (strcmp(action, "exec_written_file") == 0) {
        name = "exec_written_file", o = do_exec_written_file(path);
    } else {
        const struct probe *found = NULL;
        for (size_t i = 0; i < sizeof PROBES / sizeof PROBES[0]; i++) {
            if (strcmp(action, PROBES[i].name) == 0) {
                found = &PROBES[i];
            }
        }
        if (found == NULL) {
            return refuse("unknown action");
        }
        struct args a = {path, port};
        name = found->name, o = found->run(&a);
    }
    return report(name, o);
}

EXPORT void vtcode_plugin_free_string(const char *s) { free((void *)s); }
