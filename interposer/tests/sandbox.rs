//! Sandboxed processes (docs/architecture.md, "Sandboxed processes"): a
//! program that installs a seccomp filter like OpenSSH's pre-authentication
//! child (read, write, poll, futex, clocks, sleeps, memory, close,
//! shutdown; open/stat denied with EACCES; anything else kills the process)
//! keeps streaming over shared memory with read/write/poll.
//!
//! `tests/helpers/c/seccomp_echo.c` does the work: two connections per run, the
//! first echoed with blocking read/write (random-sized chunks, so both
//! sides sleep and wake on doorbells), the second non-blocking, full
//! duplex with poll, a few MiB each way (rings fill: POLLOUT through
//! filler); sha256 compared across the ends. Run in the emulated mode
//! (`Net::emulated`) and the default mode (`Net::loopback`), with the server
//! sandboxed after accept (alone, or in a child forked after accept, whose
//! connections are then shared with the parent, as sshd's are), and the
//! client sandboxed too. The counters prove shared memory carried both
//! connections. A SECCOMP_MODE_STRICT client gets EACCES from data calls
//! instead of being killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{build_c, preloaded, run, Background, Net, TIMEOUT};

fn echo() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("seccomp_echo", &["-O2", "-Wall"]))
}

/// The network of a test: `Net::emulated` (SHMNET_FALLBACK=never on
/// its own /24) or `Net::loopback` (the default mode on its own loopback
/// host).
fn net(name: &str, emulated: bool) -> Net {
    let net = if emulated {
        Net::emulated(name)
    } else {
        Net::loopback(name)
    };
    std::fs::create_dir_all(net.shm_dir()).unwrap();
    net
}

/// `program` preloaded on `net`: its SHMNET_DIR, and when emulated the
/// partition and SHMNET_FALLBACK=never.
fn command(net: &Net, program: &Path) -> Command {
    let mut cmd = preloaded(program);
    if net.partitions.is_empty() {
        cmd.env("SHMNET_DIR", net.shm_dir());
    } else {
        net.env(&mut cmd);
    }
    cmd
}

fn server(net: &Net, sandboxed: bool, forked: bool, mib: u32, via: &str) -> (Background, String) {
    let mut cmd = command(net, echo());
    cmd.env("SECCOMP_VIA", via);
    cmd.args(["server", &net.host_str()])
        .arg(u8::from(sandboxed).to_string())
        .arg(u8::from(forked).to_string())
        .arg(mib.to_string());
    let mut srv = Background::start("seccomp_echo server", &mut cmd, TIMEOUT, false);
    let port = srv.expect("port ")[5..].trim().to_string();
    (srv, port)
}

/// Both connections went over shared memory: the client's connects and
/// the server's accepts are counted as such.
fn assert_shm(net: &Net, what: &str) {
    let c = common::stats::read(&net.shm_dir());
    assert_eq!(
        (c.get("shm").copied(), c.get("accepted_shm").copied()),
        (Some(2), Some(2)),
        "{what}: counters {c:?}"
    );
}

/// "NAME N sent=HEX recv=HEX ..." -> (sent, recv) in that order of the
/// line's own keys.
fn hashes(line: &str) -> (String, String) {
    let get = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_string()
    };
    (get("sent="), get("recv="))
}

fn echo_test(name: &str, emulated: bool, server_forks: bool, client_sandboxed: bool) {
    echo_test_via(name, emulated, server_forks, client_sandboxed, "prctl")
}

/// `echo_test` with the filters installed through `via`: "prctl" or
/// "syscall" (seccomp(2) through libc's syscall(), as libseccomp does).
fn echo_test_via(
    name: &str,
    emulated: bool,
    server_forks: bool,
    client_sandboxed: bool,
    via: &str,
) {
    let net = net(name, emulated);
    let mib = 4;
    let (mut srv, port) = server(&net, true, server_forks, mib, via);
    let mut cmd = command(&net, echo());
    cmd.env("SECCOMP_VIA", via);
    cmd.args(["client", &net.host_str(), &port])
        .arg(u8::from(client_sandboxed).to_string())
        .arg(mib.to_string());
    let out = run(&mut cmd);
    let server_lines: Vec<String> = ["server 1", "server 2", "done"]
        .iter()
        .map(|p| srv.expect(p))
        .collect();
    let server_err = srv.finish();
    assert!(
        out.status.success() && out.stdout.contains("done"),
        "{name}: client {}\nstdout:\n{}\nstderr:\n{}\nserver stderr:\n{server_err}",
        out.status,
        out.stdout,
        out.stderr
    );
    for (i, want) in [(1, (mib as usize) << 19), (2, (mib as usize) << 20)] {
        let client = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("client {i} ")))
            .unwrap_or_else(|| panic!("{name}: no client {i} line:\n{}", out.stdout));
        assert!(
            client.contains(&format!("bytes={want} "))
                || client.ends_with(&format!("bytes={want}")),
            "{name}: {client}"
        );
        let (c_sent, c_recv) = hashes(client);
        let (s_sent, s_recv) = hashes(&server_lines[i - 1]);
        assert_eq!(
            c_sent, s_recv,
            "{name}: connection {i}: server got other bytes"
        );
        assert_eq!(
            s_sent, s_recv,
            "{name}: connection {i}: server echoed other bytes"
        );
        assert_eq!(
            c_recv, c_sent,
            "{name}: connection {i}: client got other bytes back"
        );
    }
    for err in [&out.stderr, &server_err] {
        assert!(!err.contains("libshmnet"), "{name}: {err}");
    }
    assert_shm(&net, name);
}

#[test]
fn sandboxed_server_emulated() {
    echo_test("sbx-server-emu", true, false, false);
}

#[test]
fn sandboxed_server_default_mode() {
    echo_test("sbx-server-def", false, false, false);
}

#[test]
fn sandboxed_forked_server_and_client_emulated() {
    echo_test("sbx-both-emu", true, true, true);
}

#[test]
fn sandboxed_forked_server_and_client_default_mode() {
    echo_test("sbx-both-def", false, true, true);
}

#[test]
fn sandboxed_client_emulated() {
    echo_test("sbx-client-emu", true, false, true);
}

/// The filters installed with seccomp(2) through libc's syscall()
/// (libseccomp's seccomp_load): seen by the syscall() hook as by the
/// prctl one (before it, the KILL filter killed these processes).
#[test]
fn sandboxed_through_seccomp_syscall_forked_server_and_client() {
    echo_test_via("sbx-syscall-emu", true, true, true, "syscall");
    echo_test_via("sbx-syscall-def", false, true, true, "syscall");
}

/// SECCOMP_MODE_STRICT leaves read, write, exit and sigreturn: waiting on a
/// ring is impossible, so data calls on a shared-memory connection fail
/// with EACCES — the process is not killed.
#[test]
fn strict_mode_fails_data_calls_without_killing() {
    let net = net("sbx-strict", true);
    let (mut srv, port) = server(&net, false, false, 1, "prctl");
    let mut cmd = command(&net, echo());
    cmd.args(["strict", &net.host_str(), &port]);
    let out = run(&mut cmd);
    assert!(
        out.status.success() && out.stdout.contains("strict ok"),
        "strict client {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    srv.expect("done");
    srv.finish();
    assert_shm(&net, "strict");
}

/// Calls a filter allows must not get the process killed for the library's
/// sake (found by review), in both modes: getsockopt (answered from memory:
/// no replica socket), dup and close of a second fd for a connection (no
/// close-on-exec bookkeeping: it needs fcntl); and a filter that refuses
/// none of the library's calls (allow-all, on a worker thread) changes
/// nothing for the unfiltered main thread — it connects, accepts and
/// binds over shared memory as before (the filter program is evaluated),
/// as after a denylist of calls the library never makes (review: setns
/// and process_vm_readv on its list made such a filter a sandbox).
#[test]
fn calls_a_filter_allows_never_kill_and_harmless_filters_change_nothing() {
    let exe = build_c("seccomp_calls", &["-O1", "-Wall", "-pthread"]);
    for emulated in [true, false] {
        let cases = ["getsockopt", "dup", "closedup", "allowall", "denyunused"];
        for case in cases {
            // A network of its own per case: the program uses its port and
            // the next.
            let net = net(&format!("sbx-calls-{case}-{emulated}"), emulated);
            let mut cmd = command(&net, &exe);
            let out = run(cmd.args([case, &net.host_str(), &net.port_str()]));
            let want = if case == "allowall" || case == "denyunused" {
                "connect ok\naccept ok\nbind ok\n"
            } else {
                "survived\n"
            };
            assert_eq!(
                (out.status.code(), out.stdout.as_str()),
                (Some(0), want),
                "{case} ({}:{}): {}",
                net.host,
                net.port,
                out.stderr
            );
        }
    }
}

/// Every system call the library's own code makes (read off its machine
/// code: `mov $NR, %eax` ... `syscall`, as rustix's raw calls compile) is
/// one the seccomp evaluator (`platform/seccomp_filter.rs`) runs a
/// program's filter on. A call missing there is one a filter could kill
/// while the evaluator says the filter changes nothing (CI met it: rustix's
/// raw open(2) for /proc/loadavg). x86_64 only; skipped without objdump.
#[test]
#[cfg(target_arch = "x86_64")]
fn every_system_call_in_the_library_is_known_to_the_seccomp_evaluator() {
    use std::collections::{BTreeSet, HashMap};
    let Ok(out) = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(common::lib())
        .output()
    else {
        eprintln!("sandbox.rs: no objdump; the system call scan is skipped");
        return;
    };
    assert!(out.status.success(), "objdump failed");
    let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
        .or_else(|_| std::fs::read_to_string("/usr/include/asm/unistd_64.h"))
        .expect("the kernel's unistd_64.h (linux-libc-dev)");
    let names: HashMap<u64, &str> = header
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("#define __NR_")?.split_whitespace();
            let name = w.next()?;
            Some((w.next()?.parse().ok()?, name))
        })
        .collect();
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/platform/seccomp_filter.rs"),
    )
    .expect("seccomp_filter.rs");
    let listed: BTreeSet<&str> = src
        .split("libc::SYS_")
        .skip(1)
        .filter_map(|s| {
            s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
        })
        .collect();
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut nr, mut seen) = (None, BTreeSet::new());
    for line in text.lines() {
        let insn = line.split('\t').nth(1).unwrap_or("").trim();
        if line.ends_with(">:") {
            nr = None;
        } else if let Some(v) = insn
            .strip_prefix("mov    $0x")
            .and_then(|r| r.strip_suffix(",%eax"))
        {
            nr = u64::from_str_radix(v, 16).ok();
        } else if insn == "syscall" {
            if let Some(n) = nr.take() {
                seen.insert(n);
            }
        }
    }
    assert!(
        seen.len() > 20,
        "the scan found only {seen:?}: objdump's format changed?"
    );
    let missing: Vec<String> = seen
        .iter()
        .filter_map(|n| names.get(n).map(|name| (n, name)))
        .filter(|(_, name)| !listed.contains(*name))
        .map(|(n, name)| format!("{name} ({n})"))
        .collect();
    assert!(
        missing.is_empty(),
        "system calls the library makes that seccomp_filter.rs does not list: {missing:?}"
    );
}

/// O_NONBLOCK set under a filter installed through prctl, by F_SETFL or
/// FIONBIO, is the connection's mode: a send on a full ring says EAGAIN, as
/// kernel TCP's. The library cannot ask for the mode under a filter, and
/// took the one it had forgotten at the F_SETFL for blocking: the send
/// waited for ever (review of conn14, sbfill.c).
#[test]
fn nonblocking_set_under_a_filter_is_kept() {
    let exe = build_c("seccomp_nonblock", &["-O1", "-Wall"]);
    for mode in ["fcntl", "fionbio"] {
        let want = format!("{mode}: non-blocking 1, filled: EAGAIN; again EAGAIN\n");
        let tcp = Net::loopback(&format!("sbx-nonblock-tcp-{mode}"));
        let out = run(Command::new(&exe).args([mode, &tcp.host_str(), &tcp.port_str()]));
        assert_eq!(out.stdout, want, "kernel: {}", out.stderr);
        for emulated in [true, false] {
            let net = net(&format!("sbx-nonblock-{mode}-{emulated}"), emulated);
            let mut cmd = command(&net, &exe);
            let out = run(cmd.args([mode, &net.host_str(), &net.port_str()]));
            assert_eq!(
                (out.status.code(), out.stdout.as_str()),
                (Some(0), want.as_str()),
                "{mode}, emulated {emulated}: {}",
                out.stderr
            );
        }
    }
}
