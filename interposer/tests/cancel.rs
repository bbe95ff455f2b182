//! pthread_cancel of a thread blocked in a call the library emulates
//! (decision 36): the thread is cancelled as with kernel TCP ("joined:
//! canceled", its cleanup handler run), and the process lives on. Before,
//! a thread in poll/select/epoll_wait on an emulated connection or in an
//! accept with a parked rendezvous connection aborted the process ("FATAL:
//! exception not rethrown": glibc's forced unwind through the library's
//! frames), and one in accept/recv/read was never cancelled (the join hung).
//!
//! `cancel_blocked HOST PORT WHAT [async]` (tests/helpers/c/cancel_blocked.c)
//! prints what the join saw; each mode must print what kernel TCP does.

mod common;

use std::process::Command;

use common::{build_c, preloaded, run, Net};

const CALLS: &[&str] = &["accept", "recv", "read", "write", "poll", "epoll", "select"];

fn seen(cmd: &mut Command, host: &str, port: u16, what: &str, async_type: bool) -> String {
    cmd.args([host.to_string(), port.to_string(), what.to_string()]);
    if async_type {
        cmd.arg("async");
    }
    let out = run(cmd);
    assert!(
        out.status.success(),
        "cancel_blocked {what} (async {async_type}): {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn every_call_is_cancelled_as_with_kernel_tcp(async_type: bool) {
    let exe = build_c("cancel_blocked", &["-O1", "-Wall", "-pthread"]);
    for what in CALLS {
        let tcp = Net::loopback("cancel-tcp");
        let kernel = seen(
            &mut Command::new(&exe),
            &tcp.host_str(),
            tcp.port,
            what,
            async_type,
        );
        assert_eq!(
            kernel.trim(),
            "joined: canceled, cleanup ran",
            "kernel TCP, {what}"
        );

        let emu = Net::emulated("cancel-emu");
        let mut cmd = preloaded(&exe);
        emu.env(&mut cmd);
        let got = seen(&mut cmd, &emu.host_str(), emu.port, what, async_type);
        assert_eq!(got, kernel, "emulated, {what}");
        emu.assert_shm_only(emu.port, "after the emulated run");

        let def = Net::loopback("cancel-default");
        let mut cmd = preloaded(&exe);
        cmd.env("SHMNET_DIR", def.shm_dir());
        let got = seen(&mut cmd, &def.host_str(), def.port, what, async_type);
        assert_eq!(got, kernel, "default mode, {what}");
    }
}

#[test]
fn a_blocked_call_is_cancelled_as_with_kernel_tcp() {
    every_call_is_cancelled_as_with_kernel_tcp(false);
}

/// Asynchronous cancellation during these calls is undefined by POSIX;
/// the library must do no worse than the kernel path.
#[test]
fn asynchronous_cancellation_does_no_worse_than_kernel_tcp() {
    every_call_is_cancelled_as_with_kernel_tcp(true);
}
