//! The filter program checked decision by decision with a small BPF interpreter.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;

/// A small BPF interpreter over the instructions `build` emits, so the program's
/// decisions can be checked without installing it.
fn run(prog: &[libc::sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let ins = prog[pc];
        pc += 1;
        match ins.code {
            BPF_LD_W_ABS => {
                let o = ins.k as usize;
                acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
            }
            BPF_AND_K => acc &= ins.k,
            BPF_RET_K => return ins.k,
            BPF_JA => pc += ins.k as usize,
            BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                let taken = match ins.code {
                    BPF_JEQ_K => acc == ins.k,
                    BPF_JGE_K => acc >= ins.k,
                    _ => acc & ins.k != 0,
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

fn options(tcp: bool) -> FilterOptions {
    FilterOptions {
        tcp,
        tgid: 4242,
        threads: true,
        exec_mappings: true,
    }
}

fn decide_with(options: FilterOptions, nr: i64, args: [u64; 6]) -> u32 {
    run(&build(options).unwrap(), nr, AUDIT_ARCH, args)
}

fn decide(tcp: bool, nr: i64, args: [u64; 6]) -> u32 {
    decide_with(options(tcp), nr, args)
}

#[test]
fn foreign_architecture_and_x32_are_refused_not_killed() {
    let prog = build(options(false)).unwrap();
    assert_eq!(
        run(&prog, 20, 0x4000_0003 /* AUDIT_ARCH_I386 */, [0; 6]),
        EPERM
    );
    assert_eq!(
        run(&prog, libc::SYS_read | 0x4000_0000, AUDIT_ARCH, [0; 6]),
        EPERM
    );
}

#[test]
fn base_calls_pass_and_dangerous_ones_are_eperm() {
    assert_eq!(decide(false, libc::SYS_read, [0; 6]), RET_ALLOW);
    assert_eq!(decide(false, libc::SYS_exit_group, [0; 6]), RET_ALLOW);
    for sys in [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_ptrace,
        libc::SYS_kill,
        libc::SYS_tkill,
        libc::SYS_rt_sigaction,
        libc::SYS_chdir,
        libc::SYS_fchdir,
        libc::SYS_umask,
        libc::SYS_setrlimit,
        libc::SYS_socket,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_setuid,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_open,
        libc::SYS_ioctl,
    ] {
        assert_eq!(decide(false, sys, [0; 6]), EPERM, "syscall {sys}");
    }
    assert_eq!(
        decide(false, libc::SYS_clone3, [0; 6]),
        RET_ERRNO | libc::ENOSYS as u32
    );
}

#[test]
fn argument_rules() {
    let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
    assert_eq!(
        decide(false, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            false,
            libc::SYS_clone,
            [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        decide(
            false,
            libc::SYS_clone,
            [thread | libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]
        ),
        EPERM
    );
    let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    assert_eq!(
        decide(
            false,
            libc::SYS_mprotect,
            [0, 0, libc::PROT_READ as u64, 0, 0, 0]
        ),
        RET_ALLOW
    );
    assert_eq!(
        decide(false, libc::SYS_mprotect, [0, 0, rx, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        decide(false, libc::SYS_pkey_mprotect, [0, 0, rx, 0, 0, 0]),
        EPERM
    );
    let private = libc::MAP_PRIVATE as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    assert_eq!(
        decide(false, libc::SYS_mmap, [0, 0, rx, private, 3, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(false, libc::SYS_mmap, [0, 0, rx, anon, u64::MAX, 0]),
        EPERM
    );
    assert_eq!(
        decide(
            false,
            libc::SYS_mmap,
            [0, 0, rx | libc::PROT_WRITE as u64, private, 3, 0]
        ),
        EPERM
    );
    assert_eq!(
        decide(false, libc::SYS_mmap, [0, 0, 3, anon, u64::MAX, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            false,
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, 0, 0, 0, 0, 0]
        ),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            false,
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        decide(false, libc::SYS_prlimit64, [0, 7, 0, 0x1000, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(false, libc::SYS_prlimit64, [0, 7, 0x1000, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        decide(false, libc::SYS_prlimit64, [0, 7, 1 << 40, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        decide(false, libc::SYS_tgkill, [4242, 1, 6, 0, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(decide(false, libc::SYS_tgkill, [1, 1, 9, 0, 0, 0]), EPERM);
}

#[test]
fn threads_off_refuses_every_clone() {
    let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
    let prog = build(FilterOptions {
        threads: false,
        ..options(false)
    })
    .unwrap();
    assert_eq!(
        run(&prog, libc::SYS_clone, AUDIT_ARCH, [thread, 0, 0, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        run(&prog, libc::SYS_clone3, AUDIT_ARCH, [0; 6]),
        RET_ERRNO | libc::ENOSYS as u32
    );
}

#[test]
fn tcp_grant_allows_stream_sockets_only() {
    let stream = libc::SOCK_STREAM as u64 | libc::SOCK_CLOEXEC as u64;
    assert_eq!(
        decide(
            false,
            libc::SYS_socket,
            [libc::AF_INET as u64, stream, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        decide(
            true,
            libc::SYS_socket,
            [libc::AF_INET as u64, stream, 0, 0, 0, 0]
        ),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            true,
            libc::SYS_socket,
            [libc::AF_INET6 as u64, stream, 0, 0, 0, 0]
        ),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            true,
            libc::SYS_socket,
            [libc::AF_INET as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        decide(
            true,
            libc::SYS_socket,
            [libc::AF_UNIX as u64, stream, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(decide(true, libc::SYS_connect, [0; 6]), RET_ALLOW);
    assert_eq!(decide(false, libc::SYS_connect, [0; 6]), EPERM);
}

#[test]
fn tcp_grant_allows_tcp_and_no_other_stream_protocol() {
    let stream = libc::SOCK_STREAM as u64 | libc::SOCK_NONBLOCK as u64;
    let socket = |domain: i32, protocol: u64| {
        decide(
            true,
            libc::SYS_socket,
            [domain as u64, stream, protocol, 0, 0, 0],
        )
    };
    assert_eq!(socket(libc::AF_INET, 0), RET_ALLOW);
    assert_eq!(socket(libc::AF_INET6, libc::IPPROTO_TCP as u64), RET_ALLOW);
    for protocol in [
        u64::from(IPPROTO_MPTCP),
        libc::IPPROTO_SCTP as u64,
        libc::IPPROTO_UDP as u64,
        libc::IPPROTO_RAW as u64,
        // The kernel reads an int: the high half must not smuggle a protocol past.
        (1 << 32) | u64::from(IPPROTO_MPTCP),
    ] {
        assert_eq!(
            socket(libc::AF_INET, protocol),
            EPERM,
            "protocol {protocol}"
        );
        assert_eq!(
            socket(libc::AF_INET6, protocol),
            EPERM,
            "protocol {protocol}"
        );
    }
    assert_eq!(
        decide(
            true,
            libc::SYS_socket,
            [libc::AF_INET as u64, libc::SOCK_RAW as u64, 6, 0, 0, 0]
        ),
        EPERM
    );
}

#[test]
fn implicit_connects_are_refused() {
    let fastopen = u64::from(MSG_FASTOPEN);
    let nosignal = libc::MSG_NOSIGNAL as u64;
    assert_eq!(
        decide(true, libc::SYS_sendto, [3, 0, 1, nosignal, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(true, libc::SYS_sendto, [3, 0, 1, fastopen | nosignal, 0, 0]),
        EPERM
    );
    assert_eq!(
        decide(true, libc::SYS_sendmsg, [3, 0, nosignal, 0, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(true, libc::SYS_sendmsg, [3, 0, fastopen, 0, 0, 0]),
        EPERM
    );
    assert_eq!(decide(true, libc::SYS_sendmmsg, [0; 6]), EPERM);
    let tcp = libc::IPPROTO_TCP as u64;
    for option in TCP_OPTIONS_REFUSED {
        assert_eq!(
            decide(
                true,
                libc::SYS_setsockopt,
                [3, tcp, u64::from(option), 0, 4, 0]
            ),
            EPERM,
            "TCP option {option}"
        );
    }
    // TCP_NODELAY, and the same numbers at another level, stay allowed.
    assert_eq!(
        decide(true, libc::SYS_setsockopt, [3, tcp, 1, 0, 4, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide(
            true,
            libc::SYS_setsockopt,
            [3, libc::SOL_SOCKET as u64, 30, 0, 4, 0]
        ),
        RET_ALLOW
    );
    assert_eq!(decide(false, libc::SYS_setsockopt, [0; 6]), EPERM);
    assert_eq!(decide(false, libc::SYS_sendto, [0; 6]), EPERM);
}

#[test]
fn without_exec_mappings_nothing_executable_is_mapped() {
    let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    let private = libc::MAP_PRIVATE as u64;
    let loader = options(false);
    let sealed = FilterOptions {
        exec_mappings: false,
        ..loader
    };
    // The control: the loader's filter maps a read-only file executable.
    assert_eq!(
        decide_with(loader, libc::SYS_mmap, [0, 0, rx, private, 3, 0]),
        RET_ALLOW
    );
    assert_eq!(
        decide_with(sealed, libc::SYS_mmap, [0, 0, rx, private, 3, 0]),
        EPERM
    );
    assert_eq!(
        decide_with(
            sealed,
            libc::SYS_mmap,
            [0, 0, libc::PROT_EXEC as u64, libc::MAP_SHARED as u64, 3, 0]
        ),
        EPERM
    );
    assert_eq!(
        decide_with(sealed, libc::SYS_mprotect, [0, 0, rx, 0, 0, 0]),
        EPERM
    );
    // Ordinary allocation still works.
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    assert_eq!(
        decide_with(sealed, libc::SYS_mmap, [0, 0, rw, anon, u64::MAX, 0]),
        RET_ALLOW
    );
}

#[test]
fn a_block_too_long_to_skip_is_an_error_not_a_truncated_jump() {
    let mut p = Program::default();
    p.when(libc::SYS_read, |p| {
        for _ in 0..255 {
            p.load(OFF_NR);
        }
        p.ret(RET_ALLOW);
    });
    assert_eq!(
        p.finish().unwrap_err(),
        BuildError::BlockTooLong {
            syscall: libc::SYS_read,
            len: 256
        }
    );
    // 255 is the longest block a jump can skip.
    let mut p = Program::default();
    p.load(OFF_NR);
    p.when(libc::SYS_read, |p| {
        for _ in 0..254 {
            p.load(OFF_NR);
        }
        p.ret(RET_ALLOW);
    });
    p.deny(libc::EPERM);
    let prog = p.finish().unwrap();
    assert_eq!(run(&prog, libc::SYS_write, AUDIT_ARCH, [0; 6]), EPERM);
    assert_eq!(run(&prog, libc::SYS_read, AUDIT_ARCH, [0; 6]), RET_ALLOW);
}

#[test]
fn a_program_over_the_kernel_limit_is_an_error() {
    let mut p = Program::default();
    for _ in 0..BPF_MAXINSNS / 2 {
        p.when(libc::SYS_read, |p| p.ret(RET_ALLOW));
    }
    assert_eq!(p.ins.len(), BPF_MAXINSNS);
    assert!(p.finish().is_ok());
    let mut p = Program::default();
    for _ in 0..=BPF_MAXINSNS / 2 {
        p.when(libc::SYS_read, |p| p.ret(RET_ALLOW));
    }
    assert_eq!(
        p.finish().unwrap_err(),
        BuildError::ProgramTooLong {
            len: BPF_MAXINSNS + 2,
            max: BPF_MAXINSNS
        }
    );
}

#[test]
fn every_filter_the_sandbox_builds_encodes() {
    for tcp in [false, true] {
        for threads in [false, true] {
            for exec_mappings in [false, true] {
                let prog = build(FilterOptions {
                    tcp,
                    tgid: 1,
                    threads,
                    exec_mappings,
                })
                .unwrap();
                assert!(prog.len() <= BPF_MAXINSNS);
            }
        }
    }
}

/// What the call region (`exec::ring`) needs of a sandboxed worker, and nothing new: the
/// shared futex words are waited on and woken without `FUTEX_PRIVATE_FLAG` (two processes),
/// the region is mapped read-write and shared before the filter, and the calls that wait
/// spin with `sched_yield`. Each is allowed by the filter as it was before the region.
#[test]
fn the_call_region_needs_only_what_the_filter_allowed_already() {
    let region = [
        0,
        2_232_320,
        (libc::PROT_READ | libc::PROT_WRITE) as u64,
        libc::MAP_SHARED as u64,
        5,
        0,
    ];
    assert_eq!(decide(false, libc::SYS_mmap, region), RET_ALLOW);
    for op in [libc::FUTEX_WAIT, libc::FUTEX_WAKE] {
        assert_eq!(
            decide(false, libc::SYS_futex, [0x1000, op as u64, 0, 0, 0, 0]),
            RET_ALLOW,
            "futex op {op}"
        );
    }
    assert_eq!(decide(false, libc::SYS_sched_yield, [0; 6]), RET_ALLOW);
}

/// The search block with a deny after it: what `allow_any` leaves a number that is in none.
fn search_then_deny(set: &[i64]) -> Vec<libc::sock_filter> {
    let mut p = Program::default();
    p.load(OFF_NR);
    p.allow_any(set);
    p.deny(libc::EPERM);
    p.finish().unwrap()
}

#[test]
fn the_search_allows_exactly_its_numbers() {
    // Sizes around the leaf size and the halving, numbers spread, clustered, repeated and
    // unsorted, and the real lists.
    let mut sets: Vec<Vec<i64>> = (0..=70)
        .map(|n| (0..n).map(|i| (i * 37 + 11) % 500).collect())
        .collect();
    sets.push(vec![5, 3, 5, 3, 0, 499, 1]);
    sets.push((100..180).collect());
    sets.push(base_allowlist());
    sets.push(
        base_allowlist()
            .into_iter()
            .chain(tcp_allowlist())
            .collect(),
    );
    for set in &sets {
        let prog = search_then_deny(set);
        for nr in 0..1100_i64 {
            let expected = if set.contains(&nr) { RET_ALLOW } else { EPERM };
            assert_eq!(
                run(&prog, nr, AUDIT_ARCH, [u64::MAX; 6]),
                expected,
                "nr {nr} in a set of {}",
                set.len()
            );
        }
    }
}

#[test]
fn a_search_too_large_to_jump_over_is_an_error() {
    let set: Vec<i64> = (0..400).collect();
    let mut p = Program::default();
    p.allow_any(&set);
    assert!(
        matches!(p.finish(), Err(BuildError::BlockTooLong { .. })),
        "a jump offset would have been truncated"
    );
}

#[test]
fn every_number_allowed_whatever_its_arguments_is_allowed_with_any_arguments() {
    for tcp in [false, true] {
        let mut always = base_allowlist();
        if tcp {
            always.extend(tcp_allowlist());
        }
        for nr in always {
            for args in [[0; 6], [u64::MAX; 6]] {
                assert_eq!(decide(tcp, nr, args), RET_ALLOW, "nr {nr}, tcp {tcp}");
            }
        }
    }
}
