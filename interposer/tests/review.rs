//! Regressions for defects a review of the data path found (scripts in
//! tests/helpers/py/, each run preloaded in `SHMNET_FALLBACK=never` mode on its own
//! 127.77.9.x address): every one hung, lost data or misreported before
//! its fix.

mod common;

use common::{preloaded, python, run, tmpdir};

/// Runs tests/helpers/py/`name`.py preloaded and returns its stdout (stderr shown
/// on failure).
fn script(name: &str, args: &[&str]) -> String {
    script_env(name, args, &[])
}

fn script_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = format!("{}/tests/helpers/py/{name}.py", env!("CARGO_MANIFEST_DIR"));
    let dir = tmpdir(name);
    let out = run(preloaded(python())
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .env("SHMNET_PARTITIONS", "127.77.0.0/16")
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", &dir));
    assert!(
        out.status.success(),
        "{name}: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// A level-triggered poller reading small pieces must never sleep while the
/// ring holds data (the doorbell bytes were once taken before re-arming).
#[test]
fn poll_reader_never_misses_data_left_in_the_ring() {
    let out = script("lost", &["3000"]);
    assert!(out.contains("client: all rounds ok"), "{out}");
}

/// select() must not report an emulated socket readable when there is
/// nothing to read (no in-band handshake bytes, no stale doorbells): a
/// select-then-blocking-recv loop would hang.
#[test]
fn no_spurious_readability_before_data_or_after_it_was_read() {
    let out = script("spurious", &[]);
    assert!(
        out.contains("select says readable before any data was sent: False"),
        "{out}"
    );
    assert!(out.contains("reply: b'reply:ping'"), "{out}");
    assert!(
        out.contains("select readable after the reply was fully read (nothing pending): False"),
        "{out}"
    );
}

/// shutdown() from another thread returns at once and ends a blocked send
/// (EPIPE) or a blocked recv (EOF), as for TCP.
#[test]
fn shutdown_from_another_thread_wakes_blocked_calls() {
    let out = script("shut", &["send"]);
    assert!(out.contains("shutdown() returned within 3s: True"), "{out}");
    assert!(out.contains("send raised BrokenPipeError"), "{out}");
    let out = script("shut", &["recv"]);
    assert!(out.contains("shutdown() returned within 3s: True"), "{out}");
    assert!(out.contains("recv returned b''"), "{out}");
}

/// A thread blocked in recv must not block another thread's non-blocking
/// recv or FIONREAD on the same socket.
#[test]
fn nonblocking_calls_do_not_wait_behind_a_blocked_reader() {
    let out = script("dontwait", &[]);
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
    let out = script("eintr", &[]);
    assert!(out.contains("client: 0 of 400 connections failed"), "{out}");
}

/// A local process that connects to a rendezvous and sends half a message
/// must not stall (or spin) an event loop's non-blocking accept.
#[test]
fn partial_handshake_does_not_stall_nonblocking_accept() {
    let out = script("hostile", &[]);
    let line = out
        .lines()
        .find(|l| l.starts_with("non-blocking accept() took"))
        .unwrap_or_else(|| panic!("{out}"));
    let secs: f64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.trim_end_matches(',').trim_end_matches('s').parse().ok())
        .unwrap_or(99.0);
    assert!(secs < 1.0, "{line}");
}

/// nginx's proxy habits (issue 11): an upstream socket registered in epoll
/// before connect keeps its registration, and an edge-triggered reader that
/// reads what FIONREAD says (never until EAGAIN) keeps getting edges, with
/// the writer blocked on a full ring. Before, the first was never reported
/// again, and the second stalled once four doorbell bytes were left.
#[test]
fn epoll_registration_before_connect_and_fionread_driven_edges() {
    let out = script("edge_fionread", &[]);
    assert!(
        out.contains(&format!("bytes {} crc ok True", 8 << 20)),
        "{out}"
    );
}

/// A listener whose parked connections were handed over is quiet again
/// (their one-shot events are consumed): a postmaster-like server (select,
/// accept, fork) with pgbench-like clients, in both modes. Before, the
/// listener stayed readable, accept spun inside the library (PostgreSQL:
/// unreaped children, `pg_ctl stop` failed).
#[test]
fn listener_is_quiet_after_parked_connections_were_accepted() {
    let exe = common::build_c("forkaccept", &["-O2"]);
    let seq = format!("{}/tests/helpers/py/seq_clients.py", env!("CARGO_MANIFEST_DIR"));
    for (host, port, emulated) in [("127.77.9.32", 19032, true), ("127.0.0.1", 0, false)] {
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            port
        };
        let dir = tmpdir("forkaccept");
        let set = |c: &mut std::process::Command| {
            c.env("SHMNET_DIR", &dir);
            if emulated {
                c.env("SHMNET_PARTITIONS", "127.77.0.0/16")
                    .env("SHMNET_FALLBACK", "never");
            }
        };
        let mut srv = preloaded(&exe);
        srv.args([host, &port.to_string(), "5"]);
        set(&mut srv);
        let mut srv = common::Background::start(
            "forkaccept",
            &mut srv,
            std::time::Duration::from_secs(30),
            false,
        );
        srv.expect("ready");
        let mut cli = preloaded(python());
        cli.arg(&seq)
            .args([host, &port.to_string(), "2", "25", "1", "4"]);
        set(&mut cli);
        let cli = std::thread::spawn(move || run(&mut cli));
        let line = srv.expect("accepted ");
        assert_eq!(
            line, "accepted 50 slow 0 readable_after 0",
            "emulated: {emulated}"
        );
        let out = cli.join().unwrap();
        assert!(
            out.stdout.contains("clients 50"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// A huge SO_RCVTIMEO means "forever", not a panic.
#[test]
fn huge_receive_timeout_is_forever() {
    let out = script("rcvtimeo", &[]);
    assert!(out.contains("recv -> b'hi'"), "{out}");
}

/// A non-blocking writer that filled the connection and waits for EPOLLOUT
/// (edge-triggered, IN|OUT as nginx registers) is woken as soon as the
/// reader frees room: the reader rings the writer's doorbell, instead of the
/// writer waiting until the reader happens to drain the ring.
#[test]
fn epoll_writer_is_woken_when_room_is_freed() {
    let out = script("pollout", &[]);
    assert!(out.contains("bytes ok: True"), "{out}");
}

/// exec with emulated sockets open: an inherited listener is adopted and
/// keeps accepting through shared memory (inetd-style); an inherited
/// connection is re-attached and reads the bytes queued before the exec
/// (before issue 12.7 it read as closed, with a `libshmnet:` line) — never
/// doorbell bytes handed to the program as data.
#[test]
fn exec_adopts_listeners_and_connections() {
    let path = format!("{}/tests/helpers/py/exec_inherit.py", env!("CARGO_MANIFEST_DIR"));
    let dir = tmpdir("exec_inherit");
    let out = run(preloaded(python())
        .arg(path)
        .env("SHMNET_PARTITIONS", "127.77.0.0/16")
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", &dir));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout
            .contains("inherited connection reads: b'queued before exec'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("client got: b'echo: hello after exec'"),
        "{}",
        out.stdout
    );
}

/// Names on the emulated network's loopback addresses are abstract (the
/// kernel drops them with their sockets): SHMNET_DIR holds nothing but the
/// counters, while the program runs and after, however many ports it used.
#[test]
fn shmnet_dir_holds_only_counters() {
    let dir = tmpdir("leftovers");
    let script = "import os, socket, sys\n\
        s = socket.socket(); s.bind(('127.77.9.12', 19012)); s.listen(8)\n\
        for i in range(20):\n\
        \x20   c = socket.create_connection(('127.77.9.12', 19012)); a, _ = s.accept()\n\
        \x20   c.sendall(b'x'); assert a.recv(1) == b'x'; c.close(); a.close()\n\
        s.close()\n\
        print(sorted(os.listdir(sys.argv[1])) if os.path.isdir(sys.argv[1]) else [])\n";
    let out = run(preloaded(python())
        .args(["-c", script])
        .arg(&dir)
        .env("SHMNET_PARTITIONS", "127.77.0.0/16")
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", &dir));
    assert!(out.status.success(), "{}", out.stderr);
    let names: Vec<&str> = out
        .stdout
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|n| !n.is_empty())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("'stats-")),
        "left in SHMNET_DIR while running: {names:?}"
    );
    let after: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().starts_with("stats-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(after.is_empty(), "left in SHMNET_DIR after exit: {after:?}");
}

/// A blocking recv interrupted by a signal behaves as on a kernel socket:
/// restarted under SA_RESTART (it returns the data that arrives later),
/// EINTR without it.
#[test]
fn blocking_recv_follows_sa_restart() {
    let exe = common::build_c("restart", &["-O2", "-pthread"]);
    for (mode, addr, want) in [
        ("restart", "127.77.9.13", "recv 5 signals 1"),
        ("interrupt", "127.77.9.14", "recv -1 EINTR signals 1"),
    ] {
        let dir = tmpdir(mode);
        let out = run(preloaded(&exe)
            .args([mode, addr])
            .env("SHMNET_PARTITIONS", "127.77.0.0/16")
            .env("SHMNET_FALLBACK", "never")
            .env("SHMNET_DIR", &dir));
        assert!(out.status.success(), "{mode}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), want, "{mode}");
    }
}

/// After a blocking recv that waited, the fd stays pollable: a short read
/// or a MSG_PEEK leaves it readable, and the next message wakes select
/// (the woken reader once took its doorbell byte in the wait, losing both).
#[test]
fn fd_stays_pollable_after_a_blocking_recv_waited() {
    let out = script("after_wait", &[]);
    assert!(out.contains("a: 10 readable True rest 90"), "{out}");
    assert!(out.contains("b: 10 readable True True"), "{out}");
    assert!(out.contains("c: 100 next message readable True"), "{out}");
}

/// splice with SPLICE_F_NONBLOCK never blocks on the pipe side.
#[test]
fn splice_nonblock_is_eagain_on_the_pipe_side() {
    let out = script("splice_nonblock", &[]);
    assert!(out.contains("empty pipe -> socket: EAGAIN fast"), "{out}");
    assert!(out.contains("socket -> full pipe: EAGAIN fast"), "{out}");
}

/// close() from a signal handler while the thread is blocked in recv on
/// another connection: the peer sees the close at once (it answers the
/// blocked recv only then).
#[test]
fn close_from_a_signal_handler_reaches_the_peer_at_once() {
    let exe = common::build_c("sigclose", &["-O1"]);
    let dir = tmpdir("sigclose");
    let out = run(preloaded(&exe)
        .env("SHMNET_PARTITIONS", "127.77.0.0/16")
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", &dir));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("returned 2"), "{all}");
}

/// sendfile: a pipe as the source is EINVAL (reading one of our sockets raw
/// once sent its doorbell bytes as data), a count past the end of the file
/// returns at once, and end of file is 0 even on a full non-blocking ring.
#[test]
fn sendfile_sources_and_end_of_file_as_the_kernel() {
    let out = script("sendfile_edges", &[]);
    assert!(out.contains("pipe: EINVAL"), "{out}");
    assert!(out.contains("short file: 100000 fast"), "{out}");
    assert!(out.contains("eof, full ring: 0"), "{out}");
}

/// 4 processes x 40 live connections: 160 distinct local names.
#[test]
fn live_connections_never_share_a_local_name() {
    let out = script("local_names", &[]);
    assert!(out.contains("connections 160 distinct 160"), "{out}");
}

/// A reader raises its flag only when it waits: poll, select and epoll
/// (joining with data already in the ring: level-triggered, EPOLLET,
/// EPOLLONESHOT) still report data no doorbell announced, and never wake
/// for doorbell bytes of data already read.
#[test]
fn lazy_readers_stay_pollable() {
    // Spinning (the default) finds data on the rings; without it, only the
    // look at the rings before the kernel does.
    for spin in ["50", "0"] {
        let out = script_env("lazy", &[], &[("SHMNET_SPIN_US", spin)]);
        assert!(
            out.contains("lt: True 10 True 90 True True"),
            "{spin}: {out}"
        );
        assert!(out.contains("et: True True True 101"), "{spin}: {out}");
        assert!(out.contains("oneshot: True True True 101"), "{spin}: {out}");
        assert!(out.contains("poll: True True 100 True"), "{spin}: {out}");
        assert!(out.contains("mixed: [True]"), "{spin}: {out}");
        assert!(out.contains("pingpong: 2000"), "{spin}: {out}");
    }
}

/// Defects a review of lazy readers found (tests/helpers/py/lazy_races.py; every
/// expected line is what kernel TCP prints).
#[test]
fn lazy_readers_in_epoll_sets_and_beside_other_waiters() {
    let out = script("lazy_races", &[]);
    for line in [
        "A ['IN|OUT'] []",
        "I [['IN|OUT'], ['IN|OUT'], ['IN|OUT']]",
        "B ['IN']",
        "C ['OUT'] ['IN']",
        "D ['IN'] 10 ['IN']",
        "E ['IN']",
        "F ['IN'] ['IN']",
        "race poll lost 0 epoll lost 0 later lost 0",
        "overcount odd 0",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

/// Runs tests/helpers/c/`name`.c (built with -pthread) preloaded.
fn c_program(name: &str) -> String {
    let exe = common::build_c(name, &["-O1", "-pthread"]);
    let dir = tmpdir(name);
    let out = run(preloaded(&exe)
        .env("SHMNET_PARTITIONS", "127.77.0.0/16")
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", &dir));
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// select with nfds above FD_SETSIZE and a larger set (Linux takes it):
/// an fd at 1500 wakes it, a connection at 1600 is seen.
#[test]
fn select_beyond_fd_setsize() {
    let out = c_program("bigsel");
    assert_eq!(out.matches("n=1 pipe set=1").count(), 5, "{out}");
    let out = c_program("bigsel2");
    assert!(out.contains("select n=1"), "{out}");
}

/// Timeouts as the kernel takes them: tv_usec past a second is normalised,
/// negative or out-of-range values are EINVAL.
#[test]
fn select_and_ppoll_timeouts_as_the_kernel() {
    let out = c_program("seltv");
    let waited: f64 = out
        .split("select {0,1200000}: n=0 took=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(waited > 1.1, "{out}");
    assert!(
        out.contains("select {-1,0}: n=-1 errno=Invalid argument"),
        "{out}"
    );
    assert!(
        out.contains("ppoll {0,1500000000}: n=-1 errno=Invalid argument"),
        "{out}"
    );
}

/// Two threads blocked in recv on one connection each get their message
/// (one reader at a time may take doorbell bytes in its sleep).
#[test]
fn two_blocked_readers_each_get_a_message() {
    let out = script("two_readers", &["127.77.9.91"]);
    assert!(out.contains("b'A'") && out.contains("b'B'"), "{out}");
    assert!(out.contains("then b''"), "{out}");
}

/// A peer process that exits (no close) after writing: its data, then EOF,
/// as over TCP (doorbell bytes it left unread made the kernel report
/// ECONNRESET on our end of the Unix connection).
#[test]
fn peer_exit_without_close_is_end_of_stream() {
    for mode in ["late", "early"] {
        let out = script("exit_unread", &["127.77.9.92", mode]);
        assert!(out.contains(&format!("{mode} recv1 b'B'")), "{out}");
        assert!(out.contains("recv2 b''"), "{out}");
    }
    let out = c_program("exit_server");
    assert!(out.contains("reply: 5"), "{out}");
    assert!(out.contains("after server exit: read=0"), "{out}");
}
