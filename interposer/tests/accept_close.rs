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
