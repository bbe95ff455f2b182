//! Whether a seccomp filter a program installs restricts the system calls
//! the library makes (`sandbox`): the filter's classic BPF program is run
//! here, as the kernel will run it, for each call the library's ordinary
//! paths use. A filter that allows every one of them (a denylist of
//! dangerous calls, an allow-all filter a test harness installs) changes
//! nothing; any other answer — an errno, a trap, a kill, or a program this
//! evaluator does not understand — means the restricted data path.
//!
//! Only what seccomp's verifier admits is evaluated: loads of 32-bit words
//! of `struct seccomp_data`, the scratch memory, ALU and jump instructions,
//! returns. Jumps go forward only, so evaluation ends; every index is
//! checked.
#![deny(unsafe_code)]

/// One `struct sock_filter`: code u16, jt u8, jf u8, k u32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    pub(crate) fn from_bytes(b: &[u8; 8]) -> Insn {
        Insn {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// SECCOMP_RET_ALLOW and SECCOMP_RET_LOG let the call through.
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ACTION_FULL: u32 = 0xffff_0000;

/// The program's verdict for one call, or None for a program this
/// evaluator does not follow.
fn run(prog: &[Insn], data: &[u32; 16]) -> Option<u32> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    // Forward jumps only: at most one visit per instruction.
    for _ in 0..=prog.len() {
        let i = *prog.get(pc)?;
        pc += 1;
        let k = i.k;
        match i.code {
            // BPF_LD|BPF_W|BPF_ABS: a word of seccomp_data.
            0x20 => {
                a = *data
                    .get(usize::try_from(k).ok()? / 4)
                    .filter(|_| k % 4 == 0)?
            }
            0x00 => a = k,                            // LD IMM
            0x01 => x = k,                            // LDX IMM
            0x60 => a = *mem.get(k as usize)?,        // LD MEM
            0x61 => x = *mem.get(k as usize)?,        // LDX MEM
            0x02 => *mem.get_mut(k as usize)? = a,    // ST
            0x03 => *mem.get_mut(k as usize)? = x,    // STX
            0x80 => a = 64,                           // LD LEN (sizeof seccomp_data)
            0x81 => x = 64,                           // LDX LEN
            0x07 => x = a,                            // TAX
            0x87 => a = x,                            // TXA
            0x06 => return Some(k),                   // RET K
            0x16 => return Some(a),                   // RET A
            0x05 => pc = pc.checked_add(k as usize)?, // JA
            code if code & 0x07 == 0x04 => {
                // ALU, K or X operand.
                let v = if code & 0x08 != 0 { x } else { k };
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(v),
                    0x10 => a.wrapping_sub(v),
                    0x20 => a.wrapping_mul(v),
                    0x30 => a.checked_div(v)?,
                    0x40 => a | v,
                    0x50 => a & v,
                    0x60 => a.checked_shl(v).unwrap_or(0),
                    0x70 => a.checked_shr(v).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(v)?,
                    0xa0 => a ^ v,
                    _ => return None,
                };
            }
            code if code & 0x07 == 0x05 => {
                // Conditional jumps, K or X operand.
                let v = if code & 0x08 != 0 { x } else { k };
                let taken = match code & 0xf0 {
                    0x10 => a == v,
                    0x20 => a > v,
                    0x30 => a >= v,
                    0x40 => a & v != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            _ => return None,
        }
    }
    None
}

/// The calls the library makes whose arguments filters do not look at.
const PLAIN_CALLS: &[i64] = &[
    // Only calls the library itself makes (a filter that refuses one
    // it never makes must change nothing): segment header reads,
    // sendfile's file offset, SHMNET_DIR's files and locks, std's
    // file metadata, config's hash seeds, rustix's auxv lookup, a
    // connector's CAP_NET_ADMIN (capget).
    libc::SYS_pread64,
    libc::SYS_lseek,
    libc::SYS_statx,
    libc::SYS_unlinkat,
    libc::SYS_mkdirat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_flock,
    libc::SYS_fallocate,
    // MADV_REMOVE: an idle connection's ring pages given back (`conn::trim`).
    libc::SYS_madvise,
    libc::SYS_fchmodat,
    libc::SYS_getcpu,
    // std's available_parallelism (the spin heuristic's CPU count, looked
    // up once, maybe after the filter went on).
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_getuid,
    libc::SYS_getgid,
    libc::SYS_prctl,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_shutdown,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_epoll_create1,
    // A datagram socket's Inbox wakes its waiters (never in a sandbox:
    // datagrams are not emulated there).
    libc::SYS_eventfd2,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    // In rustix's epoll::wait (now out of line in the binary), made only
    // for a timeout past i32 milliseconds: never by ours (zero timeouts).
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_sched_yield,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_munmap,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_close,
    libc::SYS_kill,
    libc::SYS_tgkill,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_openat,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_nanosleep,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_geteuid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_process_vm_writev,
    libc::SYS_fchmod,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_capget,
];

/// The calls the library's ordinary (not sandboxed) paths make, with
/// arguments like its own where filters look at them.
fn library_calls() -> Vec<(i64, [u64; 6])> {
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let cloexec = libc::SOCK_CLOEXEC as u64;
    let nonblock = libc::SOCK_NONBLOCK as u64;
    let mut calls = vec![
        (libc::SYS_mmap, [0, 4096, rw, libc::MAP_SHARED as u64, 3, 0]),
        (libc::SYS_mprotect, [0, 4096, rw, 0, 0, 0]),
    ];
    // The sockets it makes: rendezvous, parking and carriers (Unix stream
    // and datagram), netlink (route, sock_diag), probes (TCP, both
    // families).
    let unix = libc::AF_UNIX as u64;
    let netlink = libc::AF_NETLINK as u64;
    let raw = libc::SOCK_RAW as u64;
    for (domain, ty, proto) in [
        (unix, libc::SOCK_STREAM as u64, 0),
        (unix, libc::SOCK_DGRAM as u64, 0),
        (netlink, raw, libc::NETLINK_ROUTE as u64),
        (netlink, raw, libc::NETLINK_SOCK_DIAG as u64),
        (libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0),
        (libc::AF_INET6 as u64, libc::SOCK_STREAM as u64, 0),
    ] {
        for flags in [0, cloexec, cloexec | nonblock] {
            calls.push((libc::SYS_socket, [domain, ty | flags, proto, 0, 0, 0]));
        }
    }
    for ty in [libc::SOCK_STREAM as u64, libc::SOCK_DGRAM as u64] {
        for flags in [0, cloexec, cloexec | nonblock] {
            calls.push((libc::SYS_socketpair, [unix, ty | flags, 0, 0, 0, 0]));
        }
    }
    for &nr in PLAIN_CALLS {
        calls.push((nr, [0; 6]));
    }
    #[cfg(target_arch = "x86_64")]
    for nr in [libc::SYS_poll, libc::SYS_epoll_wait, libc::SYS_readlink] {
        calls.push((nr, [0; 6]));
    }
    calls
}

/// The kernel's AUDIT_ARCH_* for this build.
fn audit_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(0xc000_003e)
    } else if cfg!(target_arch = "aarch64") {
        Some(0xc000_00b7)
    } else {
        None
    }
}

/// Whether `prog` would refuse (anything but allow or log) a call the
/// library makes; true when that cannot be told.
pub(crate) fn restricts_library(prog: &[Insn]) -> bool {
    refuses_any(prog, library_calls())
}

/// Whether `prog` refuses (or cannot be followed for) io_uring_setup,
/// io_uring_register or io_uring_enter as the fd-limit pocket makes them
/// (`platform::pocket`, decision 58). Kept apart from `library_calls`: a
/// filter without io_uring only switches the pocket off, not the
/// restricted data path on.
pub(crate) fn refuses_uring(prog: &[Insn]) -> bool {
    refuses_any(
        prog,
        vec![
            (libc::SYS_io_uring_setup, [2, 0, 0, 0, 0, 0]),
            (libc::SYS_io_uring_register, [3, 8, 0, 64, 0, 0]),
            (libc::SYS_io_uring_register, [3, 2, 0, 1, 0, 0]),
            (libc::SYS_io_uring_register, [3, 20, 0, 1, 0, 0]),
            (libc::SYS_io_uring_register, [0, (1 << 31) | 6, 0, 1, 0, 0]),
            (libc::SYS_io_uring_enter, [0, 1, 1, 1 | (1 << 4), 0, 0]),
        ],
    )
}

fn refuses_any(prog: &[Insn], calls: Vec<(i64, [u64; 6])>) -> bool {
    let Some(arch) = audit_arch() else {
        return true;
    };
    if prog.is_empty() {
        return true;
    }
    calls.into_iter().any(|(nr, args)| {
        let mut data = [0u32; 16];
        data[0] = nr as u32;
        data[1] = arch;
        // instruction_pointer (words 2-3) stays 0.
        for (i, arg) in args.iter().enumerate() {
            data[4 + 2 * i] = *arg as u32;
            data[5 + 2 * i] = (*arg >> 32) as u32;
        }
        !matches!(
            run(prog, &data).map(|r| r & RET_ACTION_FULL),
            Some(RET_ALLOW | RET_LOG)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
        Insn {
            code: 0x15,
            jt,
            jf,
            k,
        }
    }

    #[test]
    fn allow_all_and_denylists_do_not_restrict() {
        assert!(!restricts_library(&[stmt(0x06, RET_ALLOW)]));
        // Deny ptrace only (EPERM), allow the rest.
        let deny_ptrace = [
            stmt(0x20, 0),
            jeq(libc::SYS_ptrace as u32, 0, 1),
            stmt(0x06, 0x0005_0000 | libc::EPERM as u32),
            stmt(0x06, RET_ALLOW),
        ];
        assert!(!restricts_library(&deny_ptrace));
    }

    #[test]
    fn a_filter_without_io_uring_refuses_it_but_does_not_restrict() {
        for nr in [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
            libc::SYS_io_uring_enter,
        ] {
            let kill = [
                stmt(0x20, 0),
                jeq(nr as u32, 0, 1),
                stmt(0x06, 0x8000_0000),
                stmt(0x06, RET_ALLOW),
            ];
            assert!(refuses_uring(&kill), "{nr}");
            // Not the restricted data path: only the pocket goes off.
            assert!(!restricts_library(&kill), "{nr}");
        }
        assert!(!refuses_uring(&[stmt(0x06, RET_ALLOW)]));
        assert!(refuses_uring(&[]));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_filter_killing_only_open_does_not_restrict() {
        // The library opens files with openat only (clippy.toml forbids
        // rustix's raw open): killing open(2) changes nothing for it.
        let kill_open = [
            stmt(0x20, 0),
            jeq(libc::SYS_open as u32, 0, 1),
            stmt(0x06, 0x8000_0000),
            stmt(0x06, RET_ALLOW),
        ];
        assert!(!restricts_library(&kill_open));
        let kill_fallocate = [
            stmt(0x20, 0),
            jeq(libc::SYS_fallocate as u32, 0, 1),
            stmt(0x06, 0x8000_0000),
            stmt(0x06, RET_ALLOW),
        ];
        assert!(restricts_library(&kill_fallocate));
    }

    #[test]
    fn allowlists_and_odd_programs_restrict() {
        // Allow read and write only, kill the rest.
        let allow_rw = [
            stmt(0x20, 0),
            jeq(libc::SYS_read as u32, 2, 0),
            jeq(libc::SYS_write as u32, 1, 0),
            stmt(0x06, 0),
            stmt(0x06, RET_ALLOW),
        ];
        assert!(restricts_library(&allow_rw));
        // Deny sendto with an errno.
        let deny_sendto = [
            stmt(0x20, 0),
            jeq(libc::SYS_sendto as u32, 0, 1),
            stmt(0x06, 0x0005_0000 | libc::EACCES as u32),
            stmt(0x06, RET_ALLOW),
        ];
        assert!(restricts_library(&deny_sendto));
        // Out-of-range jumps, loads and unknown codes: cannot tell.
        assert!(restricts_library(&[jeq(0, 9, 9)]));
        assert!(restricts_library(&[stmt(0x20, 64), stmt(0x06, RET_ALLOW)]));
        assert!(restricts_library(&[stmt(0xff, 0), stmt(0x06, RET_ALLOW)]));
        assert!(restricts_library(&[]));
    }

    #[test]
    fn a_wrong_arch_check_restricts() {
        // Kill anything not of a foreign arch: kills ours.
        let other_arch = [
            stmt(0x20, 4),
            jeq(0x4000_0003, 1, 0),
            stmt(0x06, 0),
            stmt(0x06, RET_ALLOW),
        ];
        assert!(restricts_library(&other_arch));
    }
}
