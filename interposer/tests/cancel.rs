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

/// `exe HOST PORT ARGS...` over kernel TCP, then emulated (shm-only, and
/// the default mode): each prints what kernel TCP printed (`keep` maps a
/// line to what is compared, e.g. without a timing).
fn same_as_kernel(name: &str, args: &[&str], keep: fn(&str) -> String) {
    let exe = build_c(name, &["-O1", "-Wall", "-pthread"]);
    let lines = |cmd: &mut Command, host: &str, port: u16| {
        cmd.args([host, &port.to_string()]).args(args);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "{name} {args:?}: {}\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout.lines().map(keep).collect::<Vec<_>>()
    };
    let tcp = Net::loopback("cancel-fix-tcp");
    let kernel = lines(&mut Command::new(&exe), &tcp.host_str(), tcp.port);
    let emu = Net::emulated("cancel-fix-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    assert_eq!(
        lines(&mut cmd, &emu.host_str(), emu.port),
        kernel,
        "emulated, {name} {args:?}"
    );
    emu.assert_shm_only(emu.port, "after the emulated run");
    let def = Net::loopback("cancel-fix-default");
    let mut cmd = preloaded(&exe);
    cmd.env("SHMNET_DIR", def.shm_dir());
    assert_eq!(
        lines(&mut cmd, &def.host_str(), def.port),
        kernel,
        "default mode, {name} {args:?}"
    );
}

fn whole(line: &str) -> String {
    line.to_string()
}

/// A request for a thread that never slept in the library is not seen by
/// a later thread with the same pthread_t: its recv(MSG_WAITALL) and
/// blocking write complete (were 5 of 10 bytes and 2 of 4 MiB).
#[test]
fn a_stale_request_does_not_cut_a_later_call_short() {
    same_as_kernel("cancel_stale", &[], whole);
}

/// A blocking read restarts after an SA_RESTART handler as the kernel's
/// does: with another handler without SA_RESTART installed ("mixed"), and
/// in a thread with cancellation disabled after a cancellable blocking
/// read ("disabled"); both were EINTR.
#[test]
fn a_blocking_read_restarts_as_with_kernel_tcp() {
    for mode in ["plain", "mixed", "disabled"] {
        same_as_kernel("cancel_sigrestart", &[mode], whole);
    }
}

/// 4100 cancels of threads outside the library (distinct pthread_t) leave
/// the library able to cancel a blocked reader (it hung: a full table).
#[test]
fn cancels_outside_the_library_take_no_room() {
    same_as_kernel("cancel_leak", &["41", "own"], whole);
}

/// A signal handler (SA_RESTART) cancelling the thread it interrupted in a
/// blocking read: the thread is cancelled (timings left out).
#[test]
fn a_handler_cancels_the_thread_it_interrupted() {
    same_as_kernel("cancel_in_handler", &[], |l| {
        l.split(" after ").next().unwrap_or(l).to_string()
    });
}

/// A thread in recv, accept or poll whose SIGUSR1 handler (SA_RESTART)
/// computes 0.5 s while pthread_cancel is called: cancelled (the recv was
/// restarted after the handler and never ended: the hook's re-sends were
/// all spent on the handler).
#[test]
fn a_thread_in_a_long_signal_handler_is_cancelled() {
    same_as_kernel("cancel_handler_busy", &[], whole);
}

/// A sandboxed thread (seccomp filter killing on gettid) interrupted by an
/// SA_RESTART signal in a blocking read: read returns 1 (was SIGSYS).
#[test]
fn a_sandboxed_read_survives_a_signal() {
    same_as_kernel("cancel_seccomp_read", &[], whole);
}

/// pthread_cancel in a program whose seccomp filter kills on getpid: the
/// thread is cancelled (was SIGSYS: wake's getpid).
#[test]
fn pthread_cancel_in_a_sandbox_makes_no_system_call_of_ours() {
    let exe = build_c("cancel_seccomp", &["-O1", "-Wall", "-pthread"]);
    let plain = run(&mut Command::new(&exe));
    let ours = run(&mut preloaded(&exe));
    assert!(plain.status.success(), "{}", plain.stderr);
    assert!(
        ours.status.success(),
        "preloaded: {} {}",
        ours.status,
        ours.stderr
    );
    assert_eq!(ours.stdout, plain.stdout);
}
