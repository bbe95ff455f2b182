//! pthread_cancel of a thread blocked in a call the library emulates
//! (decision 36): the thread is cancelled as with kernel TCP ("joined:
//! canceled", its cleanup handler run), and the process lives on. Before,
//! a thread in poll/select/epoll_wait on an emulated connection or in an
//! accept with a parked rendezvous connection aborted the process ("FATAL:
//! exception not rethrown": glibc's forced unwind through the library's
//! frames), and one in accept/recv/read/write was never cancelled (the
//! join hung).
//!
//! `cancel_blocked HOST PORT WHAT HOW` (tests/helpers/c/cancel_blocked.c)
//! prints what the join saw; each mode must print what kernel TCP does.

mod common;

use std::path::Path;
use std::process::Command;

use common::{build_c, preloaded, run, Net};

const CALLS: &[&str] = &["accept", "recv", "read", "write", "poll", "epoll", "select"];

fn program() -> std::path::PathBuf {
    build_c("cancel_blocked", &["-O1", "-Wall", "-pthread"])
}

fn seen(cmd: &mut Command, host: &str, port: u16, what: &str, how: &str) -> String {
    cmd.args([host, &port.to_string(), what, how]);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "cancel_blocked {what} {how}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Every call of `CALLS` cancelled `how`, in both modes, prints what it
/// prints over kernel TCP.
fn as_with_kernel_tcp(exe: &Path, how: &str) {
    for what in CALLS {
        let tcp = Net::loopback("cancel-tcp");
        let kernel = seen(&mut Command::new(exe), &tcp.host_str(), tcp.port, what, how);
        let expected = if how == "disabled" {
            format!("still blocked after pthread_cancel\n{what} returned a value\njoined: canceled, cleanup ran\n")
        } else {
            "joined: canceled, cleanup ran\n".to_string()
        };
        assert_eq!(kernel, expected, "kernel TCP, {what} {how}");

        let emu = Net::emulated("cancel-emu");
        let mut cmd = preloaded(exe);
        emu.env(&mut cmd);
        let got = seen(&mut cmd, &emu.host_str(), emu.port, what, how);
        assert_eq!(got, kernel, "emulated, {what} {how}");
        emu.assert_shm_only(emu.port, "after the emulated run");

        let def = Net::loopback("cancel-default");
        let mut cmd = preloaded(exe);
        cmd.env("SHMNET_DIR", def.shm_dir());
        let got = seen(&mut cmd, &def.host_str(), def.port, what, how);
        assert_eq!(got, kernel, "default mode, {what} {how}");
    }
}

#[test]
fn a_blocked_call_is_cancelled_as_with_kernel_tcp() {
    as_with_kernel_tcp(&program(), "deferred");
}

/// Asynchronous cancellation during these calls is undefined by POSIX;
/// the library must do no worse than the kernel path.
#[test]
fn asynchronous_cancellation_does_no_worse_than_kernel_tcp() {
    as_with_kernel_tcp(&program(), "async");
}

/// With cancellation disabled the call stays blocked (pthread_cancel must
/// not end the library's sleep), returns when woken, and the cancel acts
/// once the thread enables it again.
#[test]
fn a_thread_with_cancellation_disabled_stays_blocked() {
    as_with_kernel_tcp(&program(), "disabled");
}

/// An emulated UDP receive (`SHMNET_UDP=1`) against kernel UDP.
#[test]
fn a_blocked_udp_receive_is_cancelled_as_with_kernel_udp() {
    let exe = program();
    for how in ["deferred", "async", "disabled"] {
        let kernel_net = Net::loopback("cancel-udp-kernel");
        let kernel = seen(
            &mut Command::new(&exe),
            &kernel_net.host_str(),
            kernel_net.port,
            "udp",
            how,
        );
        assert!(
            kernel.ends_with("joined: canceled, cleanup ran\n"),
            "kernel UDP {how}: {kernel}"
        );
        let emu = Net::emulated("cancel-udp-emu");
        let mut cmd = preloaded(&exe);
        emu.env(&mut cmd);
        cmd.env("SHMNET_UDP", "1");
        let got = seen(&mut cmd, &emu.host_str(), emu.port, "udp", how);
        assert_eq!(got, kernel, "emulated UDP, {how}");
    }
}
