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

fn server(net: &Net, sandboxed: bool, forked: bool, mib: u32) -> (Background, String) {
    let mut cmd = command(net, echo());
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
    let net = net(name, emulated);
    let mib = 4;
    let (mut srv, port) = server(&net, true, server_forks, mib);
    let mut cmd = command(&net, echo());
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

/// SECCOMP_MODE_STRICT leaves read, write, exit and sigreturn: waiting on a
/// ring is impossible, so data calls on a shared-memory connection fail
/// with EACCES — the process is not killed.
#[test]
fn strict_mode_fails_data_calls_without_killing() {
    let net = net("sbx-strict", true);
    let (mut srv, port) = server(&net, false, false, 1);
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
