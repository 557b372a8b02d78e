//! A seccomp-BPF allowlist for a plugin thread, built by hand.
//!
//! Why not seccompiler: it answers a syscall from a foreign architecture (`int 0x80` on
//! x86-64) with `SECCOMP_RET_KILL_PROCESS`, which in thread mode kills the host. Here every
//! refusal is `SECCOMP_RET_ERRNO` (DESIGN.md §2: `KILL_THREAD` leaves locks held,
//! `KILL_PROCESS` and `TRAP` kill the host), the foreign-architecture and x32 checks
//! included. The filter is installed without `SECCOMP_FILTER_FLAG_TSYNC`, so it binds the
//! calling thread and the threads it creates afterwards, never the host's other threads.
//!
//! The program is a flat list: each allowed syscall is `jeq nr → ret ALLOW`, each syscall
//! with argument rules is a block that always returns, and anything that falls through is
//! `EPERM`. Blocks never jump further than their own end; a block too long for the 8-bit
//! jump field, or a program over the kernel's `BPF_MAXINSNS`, is a [`BuildError`], never a
//! truncated jump.
//!
//! Two programs come from the same list (see [`crate::sandbox`]): the loader's, which may
//! map non-writable files executable (the dynamic loader needs that) but may not start
//! threads, and the plugin's, installed before any plugin code runs on its thread, which
//! may map nothing executable at all. So code a plugin writes to a granted file never
//! becomes code it can run.

use std::io;

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;
const BPF_JA: u16 = 0x05;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
/// x32 syscalls on x86-64 have this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// prctl options a plugin thread may use: naming threads and anonymous mappings.
const PRCTL_ALLOWED: [u32; 3] = [
    libc::PR_SET_NAME as u32,
    libc::PR_GET_NAME as u32,
    0x5356_4d41, /* PR_SET_VMA */
];

/// `IPPROTO_MPTCP`: refused (Landlock's TCP rules do not govern it); named for the tests.
#[cfg(test)]
const IPPROTO_MPTCP: u32 = 262;
/// `MSG_FASTOPEN`: a send that connects implicitly, past Landlock's `connect` check.
const MSG_FASTOPEN: u32 = 0x2000_0000;
/// TCP socket options refused: fast open (an implicit connect, or one on a listener),
/// repair mode (connections made up without a handshake) and upper-layer protocols.
const TCP_OPTIONS_REFUSED: [u32; 9] = [
    19, /* TCP_REPAIR */
    20, /* TCP_REPAIR_QUEUE */
    21, /* TCP_QUEUE_SEQ */
    22, /* TCP_REPAIR_OPTIONS */
    23, /* TCP_FASTOPEN */
    29, /* TCP_REPAIR_WINDOW */
    30, /* TCP_FASTOPEN_CONNECT */
    31, /* TCP_ULP */
    33, /* TCP_FASTOPEN_NO_COOKIE */
];
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub(crate) const BPF_MAXINSNS: usize = 4096;

/// The filter program could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A syscall's argument block is longer than a conditional jump can skip.
    #[error(
        "the rule block for syscall {syscall} has {len} instructions; a jump skips at most 255"
    )]
    BlockTooLong {
        /// The syscall number.
        syscall: i64,
        /// The block's length.
        len: usize,
    },
    /// The program is longer than the kernel accepts.
    #[error("the program has {len} instructions, over the kernel's limit of {max}")]
    ProgramTooLong {
        /// The program's length.
        len: usize,
        /// `BPF_MAXINSNS`.
        max: usize,
    },
}

/// What the filter lets through beyond the base allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FilterOptions {
    /// TCP client sockets (AF_INET/AF_INET6, SOCK_STREAM) and the calls to use them.
    /// Which ports they may reach is Landlock's job.
    pub tcp: bool,
    /// The thread group id signals may target (`tgkill` only within it).
    pub tgid: u32,
    /// Whether the plugin may create threads (`clone` with `CLONE_THREAD`). Turned off
    /// where nothing else bounds how many tasks a worker can start, and on the loader thread.
    pub threads: bool,
    /// Whether non-writable file mappings may be executable: only while the dynamic loader
    /// maps the library and its dependencies, never once plugin calls are served.
    pub exec_mappings: bool,
}

/// Syscalls allowed whatever their arguments: what glibc and Rust std need in a plugin
/// thread (allocation, threads, channels, clocks, I/O on its own descriptors), plus file
/// operations whose reach Landlock governs.
fn base_allowlist() -> Vec<i64> {
    use libc::*;
    vec![
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_pread64,
        SYS_pwrite64,
        SYS_close,
        SYS_fstat,
        SYS_newfstatat,
        SYS_statx,
        SYS_lseek,
        SYS_openat,
        SYS_readlink,
        SYS_readlinkat,
        SYS_getcwd,
        SYS_getdents64,
        SYS_fcntl,
        SYS_ftruncate,
        SYS_fsync,
        SYS_fdatasync,
        SYS_mkdirat,
        SYS_unlinkat,
        SYS_renameat2,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_brk,
        SYS_munmap,
        SYS_mremap,
        SYS_madvise,
        SYS_futex,
        SYS_set_robust_list,
        SYS_get_robust_list,
        SYS_rseq,
        SYS_sched_yield,
        SYS_sched_getaffinity,
        SYS_gettid,
        SYS_getpid,
        SYS_getuid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getegid,
        SYS_set_tid_address,
        SYS_rt_sigprocmask,
        SYS_sigaltstack,
        SYS_rt_sigreturn,
        SYS_clock_gettime,
        SYS_clock_getres,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_gettimeofday,
        SYS_getrandom,
        SYS_uname,
        SYS_getrlimit,
        SYS_exit,
        SYS_exit_group,
    ]
}

/// Socket calls allowed when TCP is granted (the socket itself is checked by argument).
fn tcp_allowlist() -> Vec<i64> {
    use libc::*;
    vec![
        SYS_connect,
        SYS_getsockopt,
        SYS_getsockname,
        SYS_getpeername,
        SYS_recvfrom,
        SYS_recvmsg,
        SYS_shutdown,
        SYS_poll,
        SYS_ppoll,
    ]
}

#[derive(Default)]
struct Program {
    ins: Vec<libc::sock_filter>,
    /// The first block that could not be encoded; reported by [`Program::finish`].
    error: Option<BuildError>,
}

impl Program {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.ins.push(libc::sock_filter { code, jt, jf, k });
    }
    fn load(&mut self, offset: u32) {
        self.push(BPF_LD_W_ABS, 0, 0, offset);
    }
    fn ret(&mut self, value: u32) {
        self.push(BPF_RET_K, 0, 0, value);
    }
    fn deny(&mut self, errno: i32) {
        self.ret(RET_ERRNO | (errno as u32 & 0xffff));
    }
    /// `if nr == sys { <block> }`: the block must end in a return on every path, and the
    /// accumulator still holds the syscall number after it is skipped.
    fn when(&mut self, sys: i64, block: impl FnOnce(&mut Program)) {
        let mut inner = Program::default();
        block(&mut inner);
        if let Some(e) = inner.error.take() {
            self.error.get_or_insert(e);
        }
        let Ok(skip) = u8::try_from(inner.ins.len()) else {
            self.error.get_or_insert(BuildError::BlockTooLong {
                syscall: sys,
                len: inner.ins.len(),
            });
            return;
        };
        self.push(BPF_JEQ_K, 0, skip, sys as u32);
        self.ins.extend(inner.ins);
    }
    /// `if nr is one of sys { return ALLOW }`, as a binary search over the numbers: the
    /// accumulator (the syscall number) is untouched, and control falls through past the
    /// block when the number is none of them. See [`Search`] for why a search.
    fn allow_any(&mut self, sys: &[i64]) {
        let mut set: Vec<u32> = sys.iter().map(|&s| s as u32).collect();
        set.sort_unstable();
        set.dedup();
        let mut search = Search::default();
        search.tree(&set);
        // A number in none of the leaves ends here: over the one `return ALLOW` they share.
        search.ins.push(jump(1));
        let allow = search.ins.len();
        search.ins.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
        for at in std::mem::take(&mut search.to_allow) {
            let offset = allow.saturating_sub(at).saturating_sub(1);
            match (u8::try_from(offset), search.ins.get_mut(at)) {
                (Ok(offset), Some(leaf)) => leaf.jt = offset,
                _ => {
                    self.error.get_or_insert(BuildError::BlockTooLong {
                        syscall: search.ins.get(at).map_or(-1, |leaf| i64::from(leaf.k)),
                        len: offset,
                    });
                }
            }
        }
        if let Some(e) = search.error {
            self.error.get_or_insert(e);
        }
        self.ins.extend(search.ins);
    }
    /// `if (arg & bits) { return EPERM }`, then allow.
    fn allow_unless_flags(&mut self, sys: i64, arg: u32, bits: u32) {
        self.when(sys, |p| {
            p.load(off_arg_lo(arg));
            p.push(BPF_JSET_K, 0, 1, bits);
            p.deny(libc::EPERM);
            p.ret(RET_ALLOW);
        });
    }
    fn finish(self) -> Result<Vec<libc::sock_filter>, BuildError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.ins.len() > BPF_MAXINSNS {
            return Err(BuildError::ProgramTooLong {
                len: self.ins.len(),
                max: BPF_MAXINSNS,
            });
        }
        Ok(self.ins)
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// An unconditional jump over the next `over` instructions.
fn jump(over: usize) -> libc::sock_filter {
    insn(BPF_JA, 0, 0, u32::try_from(over).unwrap_or(u32::MAX))
}

/// Numbers tested one by one at the leaves of a [`Search`].
const SEARCH_LEAF: usize = 4;

/// The code of `if nr in set { return ALLOW }` for a sorted set: a binary search on
/// `nr >= pivot` down to leaves of at most [`SEARCH_LEAF`] equality tests, each jumping to
/// one shared `return ALLOW` ([`Program::allow_any`] places it and sets the jumps).
///
/// Why not one equality test per number, in a row: the kernel installs a filter after
/// running it, in its own emulator, for every syscall number, to cache the numbers it
/// allows whatever their arguments (those then skip the filter), and then compiles it; both
/// grow with the instructions walked and written. The row of about 60 tests (a
/// 163-instruction program) took 139–167 µs to install, measured here on five threads,
/// against 11–12 µs for a 4-instruction filter; every worker thread that restricts itself
/// pays it on the load path. A search walks about 8 instructions per number instead of up
/// to 70, and with one shared return the allowlist takes fewer instructions than the row.
#[derive(Default)]
struct Search {
    ins: Vec<libc::sock_filter>,
    /// The leaves' equality tests, whose `jt` is the jump to the shared return.
    to_allow: Vec<usize>,
    error: Option<BuildError>,
}

impl Search {
    fn tree(&mut self, set: &[u32]) {
        if set.len() <= SEARCH_LEAF {
            for &k in set {
                self.to_allow.push(self.ins.len());
                self.ins.push(insn(BPF_JEQ_K, 0, 0, k));
            }
            // Not found: fall out of this leaf (the caller's jump, or the block's end).
            return;
        }
        let (below, from) = set.split_at(set.len() / 2);
        let Some(&pivot) = from.first() else {
            return;
        };
        let test = self.ins.len();
        self.ins.push(insn(BPF_JGE_K, 0, 0, pivot));
        self.tree(below);
        // Not in the lower half: over the upper half, out of this subtree.
        let skip = self.ins.len();
        self.ins.push(jump(0));
        self.tree(from);
        let upper = self.ins.len().saturating_sub(skip).saturating_sub(1);
        if let Some(j) = self.ins.get_mut(skip) {
            *j = jump(upper);
        }
        // nr >= pivot: over the lower half and the jump that ends it.
        let over_low = skip.saturating_sub(test);
        match (u8::try_from(over_low), self.ins.get_mut(test)) {
            (Ok(over_low), Some(t)) => t.jt = over_low,
            _ => {
                self.error.get_or_insert(BuildError::BlockTooLong {
                    syscall: i64::from(pivot),
                    len: over_low,
                });
            }
        }
    }
}

/// Builds the filter program.
pub(crate) fn build(options: FilterOptions) -> Result<Vec<libc::sock_filter>, BuildError> {
    let mut p = Program::default();
    // A foreign architecture (int 0x80 on x86-64) or an x32 number: refuse, never kill.
    p.load(OFF_ARCH);
    p.push(BPF_JEQ_K, 1, 0, AUDIT_ARCH);
    p.deny(libc::EPERM);
    p.load(OFF_NR);
    p.push(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT);
    p.deny(libc::EPERM);

    // Every number allowed whatever its arguments, in one search: none of them has a rule
    // below, so testing them all first is what testing them in a row was.
    let mut always = base_allowlist();
    if options.tcp {
        always.extend(tcp_allowlist());
    }
    p.allow_any(&always);
    if options.tcp {
        // socket(AF_INET or AF_INET6, SOCK_STREAM[|flags], 0 or IPPROTO_TCP): TCP clients
        // only. MPTCP, SCTP and the rest are other protocols Landlock's port rules do not
        // govern.
        p.when(libc::SYS_socket, |p| {
            p.load(off_arg_lo(0));
            p.push(BPF_JEQ_K, 2, 0, libc::AF_INET as u32);
            p.push(BPF_JEQ_K, 1, 0, libc::AF_INET6 as u32);
            p.deny(libc::EPERM);
            p.load(off_arg_lo(1));
            p.push(BPF_AND_K, 0, 0, 0xf);
            p.push(BPF_JEQ_K, 1, 0, libc::SOCK_STREAM as u32);
            p.deny(libc::EPERM);
            p.load(off_arg_lo(2));
            p.push(BPF_JEQ_K, 1, 0, 0);
            p.push(BPF_JEQ_K, 0, 1, libc::IPPROTO_TCP as u32);
            p.ret(RET_ALLOW);
            p.deny(libc::EPERM);
        });
        // Sends that would connect implicitly (TCP Fast Open) skip Landlock's connect check.
        p.allow_unless_flags(libc::SYS_sendto, 3, MSG_FASTOPEN);
        p.allow_unless_flags(libc::SYS_sendmsg, 2, MSG_FASTOPEN);
        // setsockopt: everything but the TCP options that connect implicitly or make up
        // connections.
        p.when(libc::SYS_setsockopt, |p| {
            p.load(off_arg_lo(1));
            let refused = u8::try_from(TCP_OPTIONS_REFUSED.len() + 1).unwrap_or(u8::MAX);
            p.push(BPF_JEQ_K, 0, refused, libc::IPPROTO_TCP as u32);
            p.load(off_arg_lo(2));
            for (i, option) in TCP_OPTIONS_REFUSED.iter().enumerate() {
                let to_deny = u8::try_from(TCP_OPTIONS_REFUSED.len() - i).unwrap_or(0);
                p.push(BPF_JEQ_K, to_deny, 0, *option);
            }
            p.ret(RET_ALLOW);
            p.deny(libc::EPERM);
        });
    }
    // glibc tries clone3 first and falls back to clone only on ENOSYS.
    p.when(libc::SYS_clone3, |p| p.deny(libc::ENOSYS));
    // clone: threads only (CLONE_THREAD), never new namespaces; none at all when
    // threads are off.
    if options.threads {
        p.when(libc::SYS_clone, |p| {
            p.load(off_arg_lo(0));
            p.push(BPF_JSET_K, 2, 0, CLONE_NAMESPACES);
            p.push(BPF_JSET_K, 0, 1, libc::CLONE_THREAD as u32);
            p.ret(RET_ALLOW);
            p.deny(libc::EPERM);
        });
    }
    // mprotect / pkey_mprotect: never to executable. This also keeps glibc < 2.41 from
    // making every thread stack executable for a library that asks for it.
    p.allow_unless_flags(libc::SYS_mprotect, 2, libc::PROT_EXEC as u32);
    p.allow_unless_flags(libc::SYS_pkey_mprotect, 2, libc::PROT_EXEC as u32);
    if options.exec_mappings {
        // mmap: executable only for file mappings that are not also writable (the loader
        // mapping the sealed library); no anonymous or writable executable memory.
        p.when(libc::SYS_mmap, |p| {
            p.load(off_arg_lo(2));
            p.push(BPF_JSET_K, 0, 5, libc::PROT_EXEC as u32);
            p.push(BPF_JSET_K, 3, 0, libc::PROT_WRITE as u32);
            p.load(off_arg_lo(3));
            p.push(BPF_JSET_K, 1, 0, libc::MAP_ANONYMOUS as u32);
            p.ret(RET_ALLOW);
            p.deny(libc::EPERM);
            p.ret(RET_ALLOW);
        });
    } else {
        p.allow_unless_flags(libc::SYS_mmap, 2, libc::PROT_EXEC as u32);
    }
    // prctl: thread and mapping names only.
    p.when(libc::SYS_prctl, |p| {
        p.load(off_arg_lo(0));
        for (i, option) in PRCTL_ALLOWED.iter().enumerate() {
            let to_allow = u8::try_from(PRCTL_ALLOWED.len() - i).unwrap_or(0);
            p.push(BPF_JEQ_K, to_allow, 0, *option);
        }
        p.deny(libc::EPERM);
        p.ret(RET_ALLOW);
    });
    // prlimit64: reading limits (glibc does, for thread stacks), never setting them.
    p.when(libc::SYS_prlimit64, |p| {
        p.load(off_arg_lo(2));
        p.push(BPF_JEQ_K, 0, 3, 0);
        p.load(off_arg_hi(2));
        p.push(BPF_JEQ_K, 0, 1, 0);
        p.ret(RET_ALLOW);
        p.deny(libc::EPERM);
    });
    // tgkill: only to threads of this process (abort(), pthread_kill).
    p.when(libc::SYS_tgkill, |p| {
        p.load(off_arg_lo(0));
        p.push(BPF_JEQ_K, 0, 1, options.tgid);
        p.ret(RET_ALLOW);
        p.deny(libc::EPERM);
    });
    p.deny(libc::EPERM);
    p.finish()
}

/// Installs the filter on the calling thread (and threads it creates later).
/// `no_new_privs` must already be set on this thread.
#[allow(unsafe_code)]
pub(crate) fn install(program: &[libc::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies the
    // filter. Flags 0: this thread only (no TSYNC).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `no_new_privs` on the calling thread and reads it back.
#[allow(unsafe_code)]
pub(crate) fn set_no_new_privs() -> io::Result<bool> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let now = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    Ok(now == 1)
}

#[cfg(test)]
mod tests;
