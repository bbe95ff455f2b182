//! Blocking calls on emulated connections end as they do on kernel TCP:
//! woken by shutdown from another thread or a close in a signal handler,
//! not holding up non-blocking calls of other threads, restarted or
//! interrupted by signals as SA_RESTART says, with several blocked readers
//! each getting a message and a huge SO_RCVTIMEO meaning forever. Each
//! test runs a helper program (tests/helpers/py, tests/helpers/c)
//! preloaded with `SHMNET_FALLBACK=never` on an address `common::Net`
//! hands out; every one of them hung or lost data before its fix.

mod common;

use common::{emulated_script, run, Net};

/// shutdown() from another thread returns at once and ends a blocked send
/// (EPIPE) or a blocked recv (EOF), as for TCP.
#[test]
fn shutdown_from_another_thread_wakes_blocked_calls() {
    let out = emulated_script("shut", &["send"], &[]);
    assert!(out.contains("shutdown() returned within 3s: True"), "{out}");
    assert!(out.contains("send raised BrokenPipeError"), "{out}");
    let out = emulated_script("shut", &["recv"], &[]);
    assert!(out.contains("shutdown() returned within 3s: True"), "{out}");
    assert!(out.contains("recv returned b''"), "{out}");
}

/// A thread blocked in recv must not block another thread's non-blocking
/// recv or FIONREAD on the same socket.
#[test]
fn nonblocking_calls_do_not_wait_behind_a_blocked_reader() {
    let out = emulated_script("dontwait", &[], &[]);
    assert!(
        out.contains("recv(MSG_DONTWAIT) -> BlockingIOError"),
        "{out}"
    );
    assert!(
        out.contains("ioctl(FIONREAD) -> b'\\x00\\x00\\x00\\x00'"),
        "{out}"
    );
}

/// A busy interval timer (EINTR everywhere) must not break the handshake.
#[test]
fn signals_during_accept_and_connect_lose_no_connection() {
    let out = emulated_script("eintr", &[], &[]);
    assert!(out.contains("client: 0 of 400 connections failed"), "{out}");
}

/// A huge SO_RCVTIMEO means "forever", not a panic.
#[test]
fn huge_receive_timeout_is_forever() {
    let out = emulated_script("rcvtimeo", &[], &[]);
    assert!(out.contains("recv -> b'hi'"), "{out}");
}

/// A blocking recv interrupted by a signal behaves as on a kernel socket:
/// restarted under SA_RESTART (it returns the data that arrives later),
/// EINTR without it.
#[test]
fn blocking_recv_follows_sa_restart() {
    for (mode, want) in [
        ("restart", "recv 5 signals 1"),
        ("interrupt", "recv -1 EINTR signals 1"),
    ] {
        let net = Net::emulated(mode);
        let out = run(net
            .c_helper("restart", &["-O2", "-pthread"])
            .args([mode, &net.host_str()]));
        assert!(out.status.success(), "{mode}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), want, "{mode}");
    }
}

/// close() from a signal handler while the thread is blocked in recv on
/// another connection: the peer sees the close at once (it answers the
/// blocked recv only then).
#[test]
fn close_from_a_signal_handler_reaches_the_peer_at_once() {
    let net = Net::emulated("sigclose");
    let out = run(&mut net.c_helper("sigclose", &["-O1"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("returned 2"), "{all}");
}

/// Two threads blocked in recv on one connection each get their message
/// (one reader at a time may take doorbell bytes in its sleep).
#[test]
fn two_blocked_readers_each_get_a_message() {
    let out = emulated_script("two_readers", &[], &[]);
    assert!(out.contains("b'A'") && out.contains("b'B'"), "{out}");
    assert!(out.contains("then b''"), "{out}");
}

/// select and ppoll with a timeout too long for the clock ({LONG_MAX, 0},
/// which the kernel takes as forever) answer as the kernel does, not EIO
/// (the library's deadline once overflowed: found by review).
#[test]
fn select_and_ppoll_take_a_timeout_too_long_for_the_clock() {
    let out = common::net::emulated_c("huge_timeout", &["-O1"], &[]);
    assert!(out.contains("select=1 errno=-"), "{out}");
    assert!(out.contains("ppoll=1 errno=-"), "{out}");
}
