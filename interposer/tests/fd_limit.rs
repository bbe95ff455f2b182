//! `ulimit -n` gives shared memory the connections it gives kernel TCP,
//! less the few fds docs/benchmarks.md lists ("10,000 idle connections at
//! kernel TCP's fd limit"): a server process needs its listener's
//! rendezvous socket (a listening Unix socket; the default mode's kernel
//! TCP listener besides); nothing per connection. The last accept's memfd
//! borrows the connection's number while an io_uring fixed-file slot holds
//! the connection (decision 58); without io_uring (`SHMNET_URING=0`, or
//! io_uring_setup refused by a seccomp filter) it needs room of its own. An emulated client needs
//! one free fd at its last connect to a loopback partition address
//! (kernel TCP's needs none).
//!
//! `fdlimit LIMIT N ADDR PORT` (tests/helpers/c/fdlimit.c) sets
//! RLIMIT_NOFILE to LIMIT (soft = hard), forks a server, connects N times
//! until the first failure, and sends 8 bytes each way on every accepted
//! connection (checked). The lowest limit at which kernel TCP fits N is
//! searched first, in the same test; each mode must then fit N at that
//! limit plus its documented extra fds, and fall short of N at the kernel's
//! limit by no more than those.

mod common;

use std::process::Command;

use common::{build_c, emulated_script, preloaded, run, Net};

/// Connections per run: enough that a per-connection fd would show.
const N: u32 = 300;

/// fds beyond kernel TCP's, in the server (docs/benchmarks.md): the
/// rendezvous socket; the default mode's kernel TCP listener besides. The
/// last accept's memfd takes the connection's number, the connection held
/// meanwhile in an io_uring fixed-file slot (decision 58).
const EXTRA_EMULATED: u32 = 1;
const EXTRA_DEFAULT: u32 = 2;
/// Without io_uring (`SHMNET_URING=0`, as where the kernel, its
/// `io_uring_disabled` sysctl or a seccomp profile refuses it): room for
/// the memfd besides, one fd more.
const NO_URING: u32 = 1;
/// fds beyond kernel TCP's, in the client: the emulated mode's connect
/// needs one free fd (its Unix socket goes onto the application's number
/// first, decision 38); the default mode's falls back to kernel TCP at
/// the limit, on the application's socket.
const EXTRA_CLIENT_EMULATED: u32 = 1;
const EXTRA_CLIENT_DEFAULT: u32 = 0;

#[derive(Debug, PartialEq)]
struct Fit {
    opened: u32,
    accepted: u32,
    checked: u32,
}

fn fit(cmd: &mut Command, limit: u32, host: &str, port: u16) -> Fit {
    fit_as(cmd, limit, host, port, &[])
}

/// `fit` with fdlimit's extra arguments (`epoll`).
fn fit_as(cmd: &mut Command, limit: u32, host: &str, port: u16, extra: &[&str]) -> Fit {
    let out = run(cmd
        .args([
            limit.to_string(),
            N.to_string(),
            host.to_string(),
            port.to_string(),
        ])
        .args(extra));
    let w: Vec<&str> = out.stdout.split_whitespace().collect();
    match (out.status.success(), w.as_slice()) {
        (true, ["opened", o, "accepted", a, "checked", c]) => Fit {
            opened: o.parse().unwrap(),
            accepted: a.parse().unwrap(),
            checked: c.parse().unwrap(),
        },
        _ => panic!(
            "fdlimit {limit} {N} {host} {port}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        ),
    }
}

fn all(f: &Fit) -> bool {
    f.opened == N && f.accepted == N && f.checked == N
}

/// The lowest limit at or below `from` at which `fits` holds, stepping
/// down one at a time (`fits(from)` must hold): the fds a transport costs
/// are a handful, so a few runs.
fn lowest(from: u32, fits: impl Fn(u32) -> bool) -> u32 {
    let mut limit = from;
    while limit > N && fits(limit - 1) {
        limit -= 1;
    }
    limit
}

/// Kernel TCP's lowest limit that fits N (binary search from N + 64; a
/// run that fits checks every connection's bytes).
fn kernel_lowest(fits: impl Fn(u32) -> bool) -> u32 {
    let (mut lo, mut hi) = (N, N + 64);
    assert!(fits(hi), "kernel TCP does not fit {N} at {hi}");
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

#[test]
fn connections_under_ulimit_n_match_kernel_tcp_but_for_the_listed_fds() {
    let exe = build_c("fdlimit", &["-O2", "-Wall"]);
    // Kernel TCP: the lowest limit that fits N.
    let tcp = Net::loopback("fdlimit-tcp");
    let kernel = |limit| fit(&mut Command::new(&exe), limit, &tcp.host_str(), tcp.port);
    let limit = kernel_lowest(|l| all(&kernel(l)));
    let short = kernel(limit - 1);
    assert!(!all(&short), "kernel TCP at {}: {short:?}", limit - 1);
    // Its client alone (the server holds the listener besides): lowest
    // limit at which it opens all N.
    let client_limit = lowest(limit, |l| kernel(l).opened == N);

    // Emulated (SHMNET_FALLBACK=never): all at the kernel's limit plus
    // the listed fds, carried by shared memory only.
    let emu = Net::emulated("fdlimit-emu");
    let emulated = |limit| {
        let mut cmd = preloaded(&exe);
        emu.env(&mut cmd);
        fit(&mut cmd, limit, &emu.host_str(), emu.port)
    };
    let client = emulated(client_limit + EXTRA_CLIENT_EMULATED);
    assert_eq!(
        client.opened,
        N,
        "emulated client at {} (kernel TCP's opens {N} at {client_limit}): {client:?}",
        client_limit + EXTRA_CLIENT_EMULATED
    );
    let got = emulated(limit + EXTRA_EMULATED);
    assert!(
        all(&got),
        "emulated at {} (kernel TCP fits {N} at {limit}): {got:?}",
        limit + EXTRA_EMULATED
    );
    let at_kernel = emulated(limit);
    assert!(
        at_kernel.checked + EXTRA_EMULATED >= N && at_kernel.checked == at_kernel.accepted,
        "emulated at kernel TCP's limit {limit}: {at_kernel:?}"
    );
    // The lowest limits themselves, as for kernel TCP: a server that
    // needs fewer fds than listed here (or a client) shows, and the
    // listed extras must then come down (docs/benchmarks.md).
    let server = lowest(limit + EXTRA_EMULATED, |l| all(&emulated(l)));
    let client = lowest(client_limit + EXTRA_CLIENT_EMULATED, |l| {
        emulated(l).opened == N
    });
    assert_eq!(
        (server - limit, client - client_limit),
        (EXTRA_EMULATED, EXTRA_CLIENT_EMULATED),
        "emulated: lowest server limit {server}, client {client} (kernel TCP {limit}, {client_limit})"
    );
    // Without io_uring: the accept makes room for the memfd first, as
    // before decision 58.
    let no_uring = |limit| {
        let mut cmd = preloaded(&exe);
        emu.env(&mut cmd).env("SHMNET_URING", "0");
        fit(&mut cmd, limit, &emu.host_str(), emu.port)
    };
    let from = limit + EXTRA_EMULATED + NO_URING;
    assert!(all(&no_uring(from)), "without io_uring at {from}");
    let server = lowest(from, |l| all(&no_uring(l)));
    assert_eq!(
        server - limit,
        EXTRA_EMULATED + NO_URING,
        "emulated without io_uring: lowest server limit {server} (kernel TCP {limit})"
    );
    // The same where io_uring_setup is refused (a seccomp filter the
    // program was started under says EPERM, as container runtimes'
    // profiles do): the library falls back, nothing fails.
    let filter = build_c("uring_filter", &["-O2", "-Wall"]);
    let denied = |limit| {
        let mut cmd = preloaded(&filter);
        cmd.arg("deny").arg(&exe);
        emu.env(&mut cmd);
        fit(&mut cmd, limit, &emu.host_str(), emu.port)
    };
    let from = limit + EXTRA_EMULATED + NO_URING;
    assert!(all(&denied(from)), "io_uring refused, at {from}");
    let server = lowest(from, |l| all(&denied(l)));
    assert_eq!(
        server - limit,
        EXTRA_EMULATED + NO_URING,
        "emulated with io_uring_setup refused: lowest server limit {server} (kernel TCP {limit})"
    );
    emu.assert_shm_only(emu.port, "after the emulated runs");

    // The default mode (preloaded both ends on a loopback address):
    // all at the kernel's limit plus its listed fds, over shared memory.
    let def = Net::loopback("fdlimit-default");
    let watch = def.watch(def.port);
    let default = |limit| {
        let mut cmd = preloaded(&exe);
        cmd.env("SHMNET_DIR", def.shm_dir());
        fit(&mut cmd, limit, &def.host_str(), def.port)
    };
    let client = default(client_limit + EXTRA_CLIENT_DEFAULT);
    assert_eq!(
        client.opened,
        N,
        "default-mode client at {} (kernel TCP's opens {N} at {client_limit}): {client:?}",
        client_limit + EXTRA_CLIENT_DEFAULT
    );
    let got = default(limit + EXTRA_DEFAULT);
    assert!(
        all(&got),
        "default mode at {} (kernel TCP fits {N} at {limit}): {got:?}",
        limit + EXTRA_DEFAULT
    );
    watch.assert_none("after the default-mode run that fit");
    let at_kernel = default(limit);
    assert!(
        at_kernel.checked + EXTRA_DEFAULT >= N && at_kernel.checked == at_kernel.accepted,
        "default mode at kernel TCP's limit {limit}: {at_kernel:?}"
    );
    let server = lowest(limit + EXTRA_DEFAULT, |l| all(&default(l)));
    let client = lowest(client_limit + EXTRA_CLIENT_DEFAULT, |l| {
        default(l).opened == N
    });
    assert_eq!(
        (server - limit, client - client_limit),
        (EXTRA_DEFAULT, EXTRA_CLIENT_DEFAULT),
        "default mode: lowest server limit {server}, client {client} (kernel TCP {limit}, {client_limit})"
    );
    let no_uring = |limit| {
        let mut cmd = preloaded(&exe);
        cmd.env("SHMNET_DIR", def.shm_dir())
            .env("SHMNET_URING", "0");
        fit(&mut cmd, limit, &def.host_str(), def.port)
    };
    let from = limit + EXTRA_DEFAULT + NO_URING;
    assert!(all(&no_uring(from)), "without io_uring at {from}");
    let server = lowest(from, |l| all(&no_uring(l)));
    assert_eq!(
        server - limit,
        EXTRA_DEFAULT + NO_URING,
        "default mode without io_uring: lowest server limit {server} (kernel TCP {limit})"
    );
    watch.assert_none("after the default-mode searches");
}

/// An epoll server (fdlimit's `epoll`: an event loop that sleeps on one
/// set holding every connection) fits what kernel TCP's epoll server fits
/// but for the same listed fds: the library's epoll waker (decision 44)
/// costs a process with one thread no fd (decision 57). main's library
/// needed one more in both modes (the waker, made at the first sleep on a
/// set of connections), which the poll server above did not show.
#[test]
fn an_epoll_server_fits_what_kernel_tcp_fits_but_for_the_listed_fds() {
    let exe = build_c("fdlimit", &["-O2", "-Wall"]);
    let epoll = ["epoll"];
    let tcp = Net::loopback("fdlimit-ep-tcp");
    let kernel = |limit| {
        fit_as(
            &mut Command::new(&exe),
            limit,
            &tcp.host_str(),
            tcp.port,
            &epoll,
        )
    };
    let limit = kernel_lowest(|l| all(&kernel(l)));

    let emu = Net::emulated("fdlimit-ep-emu");
    let emulated = |limit| {
        let mut cmd = preloaded(&exe);
        emu.env(&mut cmd);
        fit_as(&mut cmd, limit, &emu.host_str(), emu.port, &epoll)
    };
    let got = emulated(limit + EXTRA_EMULATED);
    assert!(
        all(&got),
        "emulated epoll server at {} (kernel TCP fits {N} at {limit}): {got:?}",
        limit + EXTRA_EMULATED
    );
    let server = lowest(limit + EXTRA_EMULATED, |l| all(&emulated(l)));
    assert_eq!(
        server - limit,
        EXTRA_EMULATED,
        "emulated epoll server: lowest limit {server} (kernel TCP {limit})"
    );
    emu.assert_shm_only(emu.port, "after the emulated runs");

    let def = Net::loopback("fdlimit-ep-default");
    let watch = def.watch(def.port);
    let default = |limit| {
        let mut cmd = preloaded(&exe);
        cmd.env("SHMNET_DIR", def.shm_dir());
        fit_as(&mut cmd, limit, &def.host_str(), def.port, &epoll)
    };
    let got = default(limit + EXTRA_DEFAULT);
    assert!(
        all(&got),
        "default-mode epoll server at {} (kernel TCP fits {N} at {limit}): {got:?}",
        limit + EXTRA_DEFAULT
    );
    let server = lowest(limit + EXTRA_DEFAULT, |l| all(&default(l)));
    assert_eq!(
        server - limit,
        EXTRA_DEFAULT,
        "default-mode epoll server: lowest limit {server} (kernel TCP {limit})"
    );
    watch.assert_none("after the default-mode searches");
}

/// fdlimit_asyncio.py LIMIT N HOST PORT: what fits, and the server's
/// memfds when it had accepted half of N.
fn fit_asyncio(cmd: &mut Command, limit: u32, host: &str, port: u16) -> (Fit, i64) {
    let out = run(cmd
        .arg(common::helper("py/fdlimit_asyncio.py"))
        .args([limit.to_string(), N.to_string(), host.to_string()])
        .arg(port.to_string()));
    let w: Vec<&str> = out.stdout.split_whitespace().collect();
    match (out.status.success(), w.as_slice()) {
        (true, ["opened", o, "accepted", a, "checked", c, "memfds", m]) => {
            let fit = Fit {
                opened: o.parse().unwrap(),
                accepted: a.parse().unwrap(),
                checked: c.parse().unwrap(),
            };
            (fit, m.parse().unwrap())
        }
        _ => panic!(
            "fdlimit_asyncio {limit} {N} {host} {port}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        ),
    }
}

/// An asyncio server (fdlimit_asyncio.py: asyncio's own accept loop, which
/// at EMFILE calls the loop's exception handler and looks at the listener
/// again a second later, as aiohttp's does) fits what kernel TCP's fits but
/// for the same listed fds, in both modes. While fds are plentiful the
/// library keeps a memfd per connection for exec, up to a quarter of the
/// numbers above its fd floor (`KeptMemfd`; an eighth of limits up to
/// 8,192: an aiohttp server with 4,000 connections holds
/// 7,988 fds at `ulimit -n` 20,000, 3,976 of them memfds); they are given
/// back when an accept runs out (decision 35), so the limit itself gives
/// the connections: the runs that fit kept some at half of N.
#[test]
fn an_asyncio_server_fits_what_kernel_tcp_fits_but_for_the_listed_fds() {
    let tcp = Net::loopback("fdlimit-aio-tcp");
    let kernel = |l| {
        fit_asyncio(
            &mut Command::new(common::python()),
            l,
            &tcp.host_str(),
            tcp.port,
        )
    };
    let limit = kernel_lowest(|l| all(&kernel(l).0));

    let emu = Net::emulated("fdlimit-aio-emu");
    let emulated = |l| {
        let mut cmd = preloaded(common::python());
        emu.env(&mut cmd);
        fit_asyncio(&mut cmd, l, &emu.host_str(), emu.port)
    };
    let def = Net::loopback("fdlimit-aio-default");
    let watch = def.watch(def.port);
    let default = |l| {
        let mut cmd = preloaded(common::python());
        cmd.env("SHMNET_DIR", def.shm_dir());
        fit_asyncio(&mut cmd, l, &def.host_str(), def.port)
    };
    for (name, extra, run) in [
        (
            "emulated",
            EXTRA_EMULATED,
            &emulated as &dyn Fn(u32) -> (Fit, i64),
        ),
        ("default-mode", EXTRA_DEFAULT, &default),
    ] {
        let (got, kept) = run(limit + extra);
        assert!(
            all(&got),
            "{name} asyncio server at {} (kernel TCP fits {N} at {limit}): {got:?}",
            limit + extra
        );
        // It fitted with memfds kept on the way: they were given back.
        assert!(
            kept > 0,
            "{name} asyncio server at {}: no memfd kept at {} connections",
            limit + extra,
            N / 2
        );
        let server = lowest(limit + extra, |l| all(&run(l).0));
        assert_eq!(
            server - limit,
            extra,
            "{name} asyncio server: lowest limit {server} (kernel TCP {limit})"
        );
    }
    emu.assert_shm_only(emu.port, "after the emulated runs");
    watch.assert_none("after the default-mode runs");
}

/// `fd_churn ADDR PORT N LIMIT`'s "ok O lost L failed F accepted A echoed E".
fn churn_run(cmd: &mut Command, host: &str, port: u16) -> Vec<u32> {
    const CHURN_N: u32 = 200;
    let out = run(cmd.args([host, &port.to_string(), &CHURN_N.to_string(), "20"]));
    let w: Vec<&str> = out.stdout.split_whitespace().collect();
    match (out.status.success(), w.as_slice()) {
        (true, ["ok", o, "lost", l, "failed", f, "accepted", a, "echoed", e]) => {
            [o, l, f, a, e].iter().map(|v| v.parse().unwrap()).collect()
        }
        _ => panic!(
            "fd_churn {host} {port}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        ),
    }
}

/// Accepting at the limit while other threads open and close fds and
/// one forks: the number accept made room with can be taken before the
/// memfd arrives, and, once the process forked, before a parked
/// connection comes out of the shared parking queue. Kernel TCP loses no
/// connection there (EMFILE, the connection stays queued); neither may we
/// (both fds are taken with a peek, so they stay queued with their
/// message; the queue's pop under a lock its processes share: decision
/// 38). At limit 16, main lost 66 of 300 without the forks; with the
/// peek alone and the forks, 223; at 20 (here), 134 of 300.
#[test]
fn no_connection_is_lost_when_other_threads_take_the_free_fds() {
    let exe = build_c("fd_churn", &["-O2", "-Wall", "-pthread"]);
    let tcp = Net::loopback("fdchurn-tcp");
    let kernel = churn_run(&mut Command::new(&exe), &tcp.host_str(), tcp.port);
    assert_eq!(kernel[1], 0, "kernel TCP lost some: {kernel:?}");

    let emu = Net::emulated("fdchurn-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    let got = churn_run(&mut cmd, &emu.host_str(), emu.port);
    assert_eq!(
        (got[1], got[2]),
        (0, 0),
        "emulated: ok/lost/failed/accepted/echoed {got:?} (kernel TCP {kernel:?})"
    );
    emu.assert_shm_only(emu.port, "after the emulated run");

    let def = Net::loopback("fdchurn-default");
    let watch = def.watch(def.port);
    let mut cmd = preloaded(&exe);
    cmd.env("SHMNET_DIR", def.shm_dir());
    let got = churn_run(&mut cmd, &def.host_str(), def.port);
    assert_eq!(
        (got[1], got[2]),
        (0, 0),
        "default mode: ok/lost/failed/accepted/echoed {got:?} (kernel TCP {kernel:?})"
    );
    watch.assert_none("after the default-mode run");
}

/// A connect with one free fd (the emulated mode's Unix socket goes onto
/// the application's number first, decision 38) works as kernel TCP's: a
/// refusal leaves an AF_INET socket that connects when the listener is
/// there. Before, both connects said EMFILE.
#[test]
fn a_connect_with_one_free_fd_works_and_a_refused_one_can_be_retried() {
    let exe = build_c("connect_at_limit", &["-O2", "-Wall"]);
    let want = "refused 1 domain inet connected 1 echoed 1";
    let tcp = Net::loopback("atlimit-tcp");
    let out = run(Command::new(&exe).args([&tcp.host_str(), &tcp.port.to_string()]));
    assert_eq!(out.stdout.trim(), want, "kernel TCP: {}", out.stderr);

    let emu = Net::emulated("atlimit-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    let out = run(cmd.args([&emu.host_str(), &emu.port.to_string()]));
    assert_eq!(out.stdout.trim(), want, "emulated: {}", out.stderr);
    emu.assert_shm_only(emu.port, "after the emulated run");
}

/// A socket bound to a kernel name (127.0.0.1:0, outside the partition)
/// keeps it through a refused connect with one free fd, as under kernel
/// TCP: the replica put back on the number is bound to it again. Before,
/// getsockname said 0.0.0.0:0 afterwards.
#[test]
fn a_bound_socket_keeps_its_name_through_a_refused_connect_at_the_limit() {
    let exe = build_c("connect_at_limit", &["-O2", "-Wall"]);
    let want = "refused 1 domain inet connected 1 echoed 1 name_kept 1";
    let tcp = Net::loopback("atlimitb-tcp");
    let out = run(Command::new(&exe).args([&tcp.host_str(), &tcp.port.to_string(), "bind"]));
    assert_eq!(out.stdout.trim(), want, "kernel TCP: {}", out.stderr);

    let emu = Net::emulated("atlimitb-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    let out = run(cmd.args([&emu.host_str(), &emu.port.to_string(), "bind"]));
    assert_eq!(out.stdout.trim(), want, "emulated: {}", out.stderr);
}

/// `connect_churn ADDR PORT N`'s "connected C failed F other_errno X
/// not_inet D nonblocking B noecho E".
fn connect_churn_run(cmd: &mut Command, host: &str, port: u16) -> Vec<u32> {
    let out = run(cmd.args([host, &port.to_string(), "300"]));
    let w: Vec<&str> = out.stdout.split_whitespace().collect();
    match (out.status.success(), w.as_slice()) {
        (
            true,
            ["connected", c, "failed", f, "other_errno", x, "not_inet", d, "nonblocking", b, "noecho", e],
        ) => [c, f, x, d, b, e]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect(),
        _ => panic!(
            "connect_churn {host} {port}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        ),
    }
}

/// Connects with one free fd while another thread opens and closes fds:
/// the number the one-fd connect freed can be taken before its probe or
/// memfd, and the connect fails (EMFILE; kernel TCP's needs no fd). The
/// socket must then still be the program's: AF_INET, blocking, and a
/// retried connect that succeeds echoes. Before, a failed connect left a
/// shut-down Unix socket (3,241 of 1,000 rounds' connects) and a retry
/// that worked a non-blocking socket (read: EAGAIN).
#[test]
fn a_connect_at_the_limit_that_fails_under_fd_churn_leaves_the_programs_socket() {
    let exe = build_c("connect_churn", &["-O2", "-Wall", "-pthread"]);
    let tcp = Net::loopback("connchurn-tcp");
    let kernel = connect_churn_run(&mut Command::new(&exe), &tcp.host_str(), tcp.port);
    assert_eq!(kernel, [300, 0, 0, 0, 0, 0], "kernel TCP");

    let emu = Net::emulated("connchurn-emu");
    let mut cmd = preloaded(&exe);
    emu.env(&mut cmd);
    let got = connect_churn_run(&mut cmd, &emu.host_str(), emu.port);
    assert!(
        got[0] > 0 && got[2..] == [0, 0, 0, 0],
        "emulated: connected/failed/other_errno/not_inet/nonblocking/noecho {got:?}"
    );
    emu.assert_shm_only(emu.port, "after the emulated run");
}

/// A forked server (its listener has a parking queue) in blocking accept
/// with exactly one free fd, in the parent and in the child: the
/// connection is accepted, as kernel TCP's would be (decision 58: the
/// blocking accept's copy of the listener gives the number back, the
/// memfd borrows the connection's number from an io_uring slot). Without
/// io_uring, EMFILE in both, as before.
#[test]
fn a_forked_blocking_server_accepts_with_one_free_fd() {
    let out = emulated_script("accept_at_limit_forked", &[], &[]);
    assert_eq!(out, "child accepted\nparent accepted\n");
    let out = emulated_script("accept_at_limit_forked", &[], &[("SHMNET_URING", "0")]);
    assert_eq!(out, "child EMFILE\nparent EMFILE\n");
}

/// `cmd` run by `launcher` (its program and arguments after the
/// launcher's path, its environment as it was).
fn under(launcher: &std::path::Path, action: &str, inner: &Command) -> Command {
    let mut cmd = Command::new(launcher);
    cmd.arg(action)
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

/// A server near its fd limit under a seccomp filter whose action for
/// io_uring_setup is KILL (systemd's SystemCallFilter=, bwrap, minijail):
/// started under it (uring_filter.c kill), or installing it itself with
/// prctl(PR_SET_SECCOMP) or seccomp(2) through syscall() (libseccomp).
/// The library makes no io_uring call (decision 58): the server lives,
/// says EMFILE at one free number as without io_uring, and serves at two;
/// in both modes. Without a filter the same server accepts at one free
/// number: it reached the near-limit trigger that makes the ring. With
/// `SHMNET_URING=1` (which skips the /proc/self/status check) the
/// prctl and seccomp hooks alone keep io_uring off.
#[test]
fn a_server_under_a_seccomp_filter_that_kills_for_io_uring_lives() {
    let filter = build_c("uring_filter", &["-O2", "-Wall"]);
    let emu = Net::emulated("fdlimit-kill-emu");
    let def = Net::loopback("fdlimit-kill-default");
    let watch = def.watch(def.port);
    let fallback = "free1 EMFILE\nfree2 accepted\n";
    for (net, name) in [(&emu, "emulated"), (&def, "default")] {
        let script = |mode: &str, forced: bool| {
            let mut cmd = if name == "emulated" {
                net.py_helper("accept_at_limit_seccomp", &[mode])
            } else {
                let mut cmd = common::py_file("accept_at_limit_seccomp.py", &[mode]);
                cmd.env("SHMNET_DIR", def.shm_dir())
                    .env("TEST_HOST", def.host_str())
                    .env("TEST_PORT", def.port_str());
                cmd
            };
            if forced {
                cmd.env("SHMNET_URING", "1");
            }
            cmd
        };
        let out = common::stdout_of("no filter", &mut script("none", false));
        assert_eq!(out, "free1 accepted\nfree2 accepted\n", "{name}, no filter");
        let out = common::stdout_of(
            "started under",
            &mut under(&filter, "kill", &script("exec", false)),
        );
        assert_eq!(out, fallback, "{name}, started under the filter");
        for mode in ["prctl", "syscall"] {
            for forced in [false, true] {
                let out = common::stdout_of(mode, &mut script(mode, forced));
                assert_eq!(out, fallback, "{name}, {mode}, SHMNET_URING=1: {forced}");
            }
        }
    }
    emu.assert_shm_only(emu.port, "after the emulated runs");
    watch.assert_none("after the default-mode runs");
}
