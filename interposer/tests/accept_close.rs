//! A listener closed by another thread during a blocking accept, its fd
//! number taken at once by an epoll set of the program's: the kernel's
//! accept keeps the file it resolved at entry (the closed listener) and
//! returns the next connection; the program's set is untouched. The
//! library's accept resolves the listener's instance once too, before it
//! waits (review of fd14: it waited on the program's set by number, ate
//! its edge-triggered event and hung).
//!
//! `close_accept HOST PORT ROUNDS` (tests/helpers/c/close_accept.c) prints
//! what it saw; each mode must print what kernel TCP does.

mod common;

use std::process::Command;

use common::{build_c, preloaded, run, Net};

const ROUNDS: &str = "3";

fn seen(cmd: &mut Command, host: &str, port: u16) -> String {
    let out = run(cmd.args([host.to_string(), port.to_string(), ROUNDS.to_string()]));
    assert!(
        out.status.success(),
        "close_accept {host} {port}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

#[test]
fn accept_keeps_the_listener_it_resolved_when_its_number_is_reused() {
    let exe = build_c("close_accept", &["-O1", "-Wall", "-pthread"]);
    let tcp = Net::loopback("close-accept-tcp");
    let kernel = seen(&mut Command::new(&exe), &tcp.host_str(), tcp.port);
    assert_eq!(
        kernel.trim(),
        format!("rounds {ROUNDS} accepted {ROUNDS} intact {ROUNDS}")
    );

    let emu = Net::emulated("close-accept-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    assert_eq!(
        seen(&mut cmd, &emu.host_str(), emu.port),
        kernel,
        "emulated"
    );
    emu.assert_shm_only(emu.port, "after the emulated run");

    let def = Net::loopback("close-accept-default");
    let mut cmd = preloaded(&exe);
    cmd.env("SHMNET_DIR", def.shm_dir());
    assert_eq!(
        seen(&mut cmd, &def.host_str(), def.port),
        kernel,
        "default mode"
    );
}

/// shutdown(SHUT_RD or SHUT_RDWR) of a listener closes it, as the kernel's
/// closes a TCP listener: a thread blocked in accept wakes with EINVAL,
/// accepts after it say EINVAL, connectors are refused and a connection
/// queued before is reset; SHUT_WR changes nothing
/// (`tests/helpers/c/shutdown_accept.c`). The emulated mode said ENOTCONN,
/// left the accept blocked and kept taking connections (review of
/// conn14, shutacc.c); the default mode handed out a shared-memory
/// connection queued before the shutdown.
#[test]
fn shutdown_of_a_listener_wakes_accept_and_refuses_as_the_kernels() {
    let exe = build_c("shutdown_accept", &["-O1", "-Wall", "-pthread"]);
    let run_it = |cmd: &mut Command, host: &str, port: u16| shutdown_accept(cmd, host, port, &[]);
    let tcp = Net::loopback("shutdown-accept-tcp");
    let kernel = run_it(&mut Command::new(&exe), &tcp.host_str(), tcp.port);
    let closed = "blocked accept EINVAL, accept EINVAL, SO_ACCEPTCONN 0, name kept 1, \
                  new connect ECONNREFUSED, polls ready 1";
    let want = [
        format!("SHUT_RD: shutdown 0, {closed}"),
        format!("SHUT_RDWR: shutdown 0, {closed}"),
        "SHUT_RD queued: connect 0, shutdown 0, accept EINVAL, client recv ECONNRESET".into(),
        "SHUT_RDWR queued: connect 0, shutdown 0, accept EINVAL, client recv ECONNRESET".into(),
        "SHUT_WR: shutdown 0, connect 0, blocked accept a connection, SO_ACCEPTCONN 1, \
         name kept 1"
            .into(),
        "how 7: shutdown EINVAL".to_string(),
    ]
    .join("\n");
    assert_eq!(kernel.trim(), want, "kernel");

    let emu = Net::emulated("shutdown-accept-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    assert_eq!(
        run_it(&mut cmd, &emu.host_str(), emu.port),
        kernel,
        "emulated"
    );
    emu.assert_shm_only(emu.port, "after the emulated run");

    let def = Net::loopback("shutdown-accept-default");
    let mut cmd = preloaded(&exe);
    cmd.env("SHMNET_DIR", def.shm_dir());
    assert_eq!(
        run_it(&mut cmd, &def.host_str(), def.port),
        kernel,
        "default mode"
    );
}

/// A default-mode listener shut down (SHUT_RD) and listened again is the
/// kernel's: idle, it does not poll readable; a client (preloaded: refused
/// by the shut rendezvous, it falls back to kernel TCP) is accepted. The
/// branch's first listener shutdown left the rendezvous shut and
/// registered level-triggered: readable for ever, accept EAGAIN (review
/// s38/review-fix38 #1, relisten.c). (The emulated listener cannot listen
/// again: EINVAL, docs/compatibility.md.)
#[test]
fn a_listener_shut_down_and_listened_again_is_idle_as_the_kernels() {
    let exe = build_c("shutdown_accept", &["-O1", "-Wall", "-pthread"]);
    let run_it =
        |cmd: &mut Command, host: &str, port: u16| shutdown_accept(cmd, host, port, &["relisten"]);
    let tcp = Net::loopback("relisten-tcp");
    let kernel = run_it(&mut Command::new(&exe), &tcp.host_str(), tcp.port);
    assert_eq!(
        kernel.trim(),
        "relisten: shutdown 0, listen 0, idle polls readable 0, connect 0, \
         accept a connection, then polls readable 0",
        "kernel"
    );
    let def = Net::loopback("relisten-default");
    let mut cmd = preloaded(&exe);
    cmd.env("SHMNET_DIR", def.shm_dir());
    assert_eq!(
        run_it(&mut cmd, &def.host_str(), def.port),
        kernel,
        "default mode"
    );
}

/// `shutdown_accept HOST PORT extra...`: its output (it must succeed).
fn shutdown_accept(cmd: &mut Command, host: &str, port: u16, extra: &[&str]) -> String {
    common::stdout_of(
        &format!("shutdown_accept {host} {port} {extra:?}"),
        cmd.args([host.to_string(), port.to_string()]).args(extra),
    )
}
