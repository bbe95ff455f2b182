//! Readiness and process semantics of emulated connections, with real
//! preloaded processes: poll/ppoll/select/pselect and epoll (level, edge,
//! one-shot, two sets, nested, shared across fork), the peer going away
//! (close, shutdown, SIGKILL, EPIPE), write space on a full ring,
//! non-blocking connect, sendfile/splice/writev/readv/TCP_CORK, spawning
//! programs with connections open, descriptor flags, and signals; then
//! python and C programs that pin down what once went wrong (a poller
//! missing data left in the ring, spurious or lost wake-ups, lazy readers,
//! select beyond FD_SETSIZE and its timeouts).
//!
//! The C programs are in tests/helpers/c/readiness/ (rd.h explains their
//! protocol: a forked peer process driven over a socketpair, every byte
//! checked against a deterministic stream and an FNV checksum). Each test
//! runs one CASE of one program preloaded with `SHMNET_FALLBACK=never`, on
//! the virtual host and port `common::Net` hands out (each further
//! listener of a program takes the next port). While the connections are
//! open the program stops at a "checkpoint" and the test requires that no
//! kernel TCP socket exists for the host and that a plain client is refused
//! there (`Net::assert_shm_only`): shared memory carries everything. Some
//! cases also run unpreloaded against a real 127.0.0.1 listener;
//! differences from kernel TCP are printed.
//!
//! Every wait is bounded: the programs arm watchdogs (30-40 s), the test
//! kills a program after `WAIT`.
//!
//! Tests marked `#[ignore]` check behaviour the library lacks today (see
//! docs/compatibility.md, "Known gaps"); `cargo test -- --ignored` runs them.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{emulated_c, emulated_script, preloaded, py, python, run, tmpdir, Background, Net};

/// Deadline for a program's next line, and for its exit.
const WAIT: Duration = Duration::from_secs(45);

/// A line on the test's real stderr (libtest does not capture it): the
/// figures and kernel comparisons show in `make test`.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "readiness.rs: {msg}");
}

/// tests/helpers/c/readiness/`name`.c, compiled once per test binary.
fn program(name: &'static str) -> PathBuf {
    common::build_c(
        &format!("readiness/{name}"),
        &["-std=gnu11", "-O2", "-Wall", "-Wextra", "-pthread"],
    )
}

/// Running the C programs on a test's `common::Net`.
trait Drive {
    fn env_in<'a>(&self, cmd: &'a mut Command) -> &'a mut Command;
    fn drive(&self, name: &str, cmd: &mut Command) -> (Vec<String>, String);
    fn c_case(&self, prog: &'static str, case: &str) -> Vec<String>;
    fn c_case_stderr(&self, prog: &'static str, case: &str) -> (Vec<String>, String);
}

impl Drive for Net {
    /// The emulated network, errors logged, run in the test's tmpdir.
    fn env_in<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        self.env(cmd)
            .env("SHMNET_LOG", "error")
            .current_dir(&self.dir)
    }

    /// Run `cmd` (preloaded, our env) to its "ok" line, checking shared
    /// memory at each checkpoint. Returns its stdout lines and stderr;
    /// fails on a FAIL line, a timeout or a non-zero exit.
    fn drive(&self, name: &str, cmd: &mut Command) -> (Vec<String>, String) {
        self.env_in(cmd).stdin(Stdio::piped());
        let mut p = Background::start(name, cmd, WAIT, true);
        let mut checkpoints = 0;
        loop {
            let line = p.line();
            if line == "checkpoint" {
                self.assert_shm_only(self.port, &format!("{name}, connections open"));
                checkpoints += 1;
                p.go();
            } else if line.starts_with("FAIL") {
                p.fail("the program reported a failure");
            } else if line.starts_with("ok") {
                break;
            }
        }
        let (status, stderr) = p.finish_status();
        if !status.is_some_and(|s| s.success()) {
            panic!("{}", p.describe(status, &stderr));
        }
        assert!(checkpoints > 0, "{name}: no checkpoint");
        self.assert_shm_only(self.port, &format!("{name}, after the end"));
        (p.seen.clone(), stderr)
    }

    /// `drive` the C `prog` with CASE `case`; stderr must be empty.
    fn c_case(&self, prog: &'static str, case: &str) -> Vec<String> {
        let (lines, stderr) = self.c_case_stderr(prog, case);
        assert!(stderr.is_empty(), "{prog} {case}: stderr:\n{stderr}");
        lines
    }

    fn c_case_stderr(&self, prog: &'static str, case: &str) -> (Vec<String>, String) {
        let mut cmd = preloaded(program(prog));
        cmd.arg(case)
            .arg(self.host.to_string())
            .arg(self.port.to_string())
            .env("RD_CHECKPOINT", "1");
        self.drive(&format!("{prog} {case}"), &mut cmd)
    }
}

/// The same CASE without the preload, over kernel TCP on 127.0.0.1.
fn kernel_case(prog: &'static str, case: &str) -> Vec<String> {
    let dir = tmpdir(&format!("readiness-kernel-{prog}-{case}"));
    let out = run(Command::new(program(prog))
        .args([case, "kernel", "0"])
        .current_dir(&dir)
        .stdin(Stdio::null()));
    assert!(
        out.status.success(),
        "{prog} {case} over kernel TCP: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout.lines().map(str::to_string).collect()
}

/// "result KEY VALUE..." lines as KEY -> VALUE.
fn results(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("result "))
        .map(|r| match r.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (r.to_string(), String::new()),
        })
        .collect()
}

/// Print where the emulated run's results differ from kernel TCP's.
fn compare_with_kernel(what: &str, emulated: &[String], kernel: &[String]) {
    let (e, k) = (results(emulated), results(kernel));
    for key in e.keys().chain(k.keys().filter(|k| !e.contains_key(*k))) {
        let (ev, kv) = (e.get(key), k.get(key));
        if ev != kv {
            note(&format!(
                "{what}: {key}: emulated {:?}, kernel TCP {:?}",
                ev.map_or("-", String::as_str),
                kv.map_or("-", String::as_str)
            ));
        }
    }
}

fn ok_line(lines: &[String]) -> &str {
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("ok"))
        .map_or("", String::as_str)
}

// ---------------------------------------------------------------------------
// Poll, ppoll, select, pselect

fn poll_family(case: &str) {
    let net = Net::emulated(case);
    let lines = net.c_case("poll", case);
    note(ok_line(&lines));
}

/// Not readable before data, woken when the peer writes, not readable once
/// everything was read (at most one spurious wake, EAGAIN then quiet);
/// POLLOUT on a fresh connection; accepting and connecting side.
#[test]
fn poll_readiness_follows_the_ring() {
    poll_family("poll");
}

#[test]
fn ppoll_readiness_follows_the_ring() {
    poll_family("ppoll");
}

#[test]
fn select_readiness_follows_the_ring() {
    poll_family("select");
}

#[test]
fn pselect_readiness_follows_the_ring() {
    poll_family("pselect");
}

// ---------------------------------------------------------------------------
// Epoll

fn epoll_case(case: &str) -> Vec<String> {
    Net::emulated(&format!("epoll-{case}")).c_case("epoll", case)
}

/// Reported while data is unread, quiet after everything was read; EPOLLOUT
/// on a fresh connection.
#[test]
fn epoll_level_triggered() {
    epoll_case("lt");
}

/// EPOLLET: one report per arrival of new data (read until EAGAIN in
/// between), none without new data.
#[test]
fn epoll_edge_triggered_once_per_arrival() {
    epoll_case("et");
}

/// EPOLLET: data arriving while earlier data is still unread is a new edge
/// for kernel TCP (every arriving segment wakes the socket).
#[test]
fn epoll_edge_triggered_new_data_while_unread() {
    let lines = epoll_case("et_more");
    compare_with_kernel("epoll et_more", &lines, &kernel_case("epoll", "et_more"));
}

/// EPOLLONESHOT: one report until re-armed with EPOLL_CTL_MOD.
#[test]
fn epoll_oneshot_until_rearmed() {
    epoll_case("oneshot");
}

/// One fd in two epoll sets (one LT, one ET): both report.
#[test]
fn epoll_same_fd_in_two_sets() {
    epoll_case("twosets");
}

/// An epoll fd inside another: the outer one reports.
#[test]
fn epoll_nested_in_epoll() {
    epoll_case("nested");
}

/// An epoll fd shared across fork: the child waiting on it is woken when
/// the peer writes.
#[test]
fn epoll_shared_across_fork() {
    let lines = epoll_case("fork");
    for l in lines.iter().filter(|l| l.contains("woken after")) {
        note(&format!("epoll fork: {l}"));
    }
}

// ---------------------------------------------------------------------------
// The peer goes away; compared with kernel TCP

fn hangup_case(case: &str) {
    let lines = Net::emulated(&format!("hangup-{case}")).c_case("hangup", case);
    compare_with_kernel(
        &format!("hangup {case}"),
        &lines,
        &kernel_case("hangup", case),
    );
}

/// Peer close(): POLLIN, POLLRDHUP and EPOLLRDHUP; the data, then EOF.
#[test]
fn peer_close_gives_pollin_rdhup_and_eof() {
    hangup_case("close");
}

/// Peer shutdown(SHUT_WR): the data, then EOF, and EPOLLRDHUP; our
/// direction keeps working.
#[test]
fn peer_shutdown_wr_gives_eof_and_rdhup() {
    hangup_case("shutwr");
}

/// Peer SIGKILLed: POLLIN or POLLHUP; the data, then EOF or ECONNRESET.
#[test]
fn peer_killed_gives_hup_and_eof() {
    hangup_case("kill");
}

/// The same with our bytes unread by the killed peer (kernel TCP: RST,
/// ECONNRESET).
#[test]
fn peer_killed_with_unread_data() {
    hangup_case("kill_unread");
}

/// A connection whose peer closed, polled by a caller that asked for
/// neither reading nor writing (stunnel with its buffer full: it took the
/// Unix socket's POLLHUP for the end and dropped what it had not sent on):
/// poll says nothing, and waits on for the other fds, as over kernel TCP;
/// POLLHUP once both directions are shut. The same script over kernel
/// TCP, the emulated network and the default mode: the same lines.
#[test]
fn a_peer_close_is_silent_to_a_poller_asking_for_nothing() {
    let kernel = common::stdout_of(
        "hangup_silence over kernel TCP",
        Command::new(python())
            .arg(common::helper("py/hangup_silence.py"))
            .arg("127.0.0.1"),
    );
    let net = Net::emulated("hangup-silence");
    let emulated = common::stdout_of(
        "hangup_silence emulated",
        &mut net.py_helper("hangup_silence", &[&net.host_str()]),
    );
    let lo = Net::loopback("hangup-silence-default");
    let mut cmd = common::py_file("hangup_silence.py", &[&lo.host_str()]);
    cmd.env("SHMNET_DIR", lo.shm_dir());
    let default = common::stdout_of("hangup_silence in the default mode", &mut cmd);
    assert!(kernel.contains("both-shut poll 16 20"), "{kernel}");
    assert_eq!(emulated, kernel, "emulated network against kernel TCP");
    assert_eq!(default, kernel, "default mode against kernel TCP");
}

/// siglongjmp out of poll on a connection (its peer closed, events 0; or
/// idle, events POLLIN or 0): the caller's pollfd is as it gave it, and
/// the thread connects and accepts through the library afterwards, as over
/// kernel TCP (review of session 32: pollfd.fd left negated; the library
/// left off for the thread after a poll with no reader).
#[test]
fn siglongjmp_out_of_poll_leaves_the_array_and_the_library_whole() {
    let exe = common::build_c("poll_longjmp", &["-O1", "-Wall"]);
    for mode in ["0", "1", "2"] {
        let host = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let port = common::net::spare_port(host).to_string();
        let kernel = common::stdout_of(
            "poll_longjmp over kernel TCP",
            Command::new(&exe).args(["127.0.0.1", &port, mode]),
        );
        assert!(kernel.contains("accept2 ok"), "{kernel}");
        let net = Net::emulated(&format!("poll-longjmp-{mode}"));
        let mut cmd = preloaded(&exe);
        cmd.args([&net.host_str(), &net.port_str(), mode]);
        net.env(&mut cmd);
        let emulated = common::stdout_of("poll_longjmp emulated", &mut cmd);
        assert_eq!(emulated, kernel, "mode {mode}: emulated vs kernel TCP");
    }
}

/// Writes after the peer (the connecting side, which never read) closed:
/// EPIPE, POLLHUP/POLLERR, SIGPIPE without MSG_NOSIGNAL.
#[test]
fn write_after_connector_closed_is_epipe() {
    hangup_case("epipe");
}

/// Writes after the peer (the accepting side) closed: EPIPE.
#[test]
fn write_after_acceptor_closed_is_epipe() {
    hangup_case("epipe_connector");
}

// ---------------------------------------------------------------------------
// Write space

fn writable_case(case: &str) {
    let lines = Net::emulated(&format!("writable-{case}")).c_case("writable", case);
    note(&format!("writable {case}: {}", ok_line(&lines)));
}

/// Full ring, level-triggered poll(POLLOUT): the writer writes again within
/// 5 s of the reader taking 128 KiB.
#[test]
fn full_ring_poll_pollout_wakes_writer() {
    writable_case("poll");
}

/// Full ring, epoll EPOLLOUT|EPOLLET (EPOLLOUT alone): woken when the
/// reader takes 128 KiB.
#[test]
fn full_ring_epollout_et_alone_wakes_writer() {
    writable_case("epoll_out_et");
}

/// Full ring, epoll EPOLLIN|EPOLLOUT|EPOLLET (as nginx): woken.
#[test]
fn full_ring_epoll_inout_et_wakes_writer() {
    writable_case("epoll_inout_et");
}

/// Level-triggered EPOLLIN with EPOLLOUT added by EPOLL_CTL_MOD before
/// each write and taken back after (wrk, ae, libuv; answered without the
/// kernel while the ring has room): EPOLLOUT at once, nothing after it is
/// taken back, and a full ring's EPOLLOUT comes back when the reader
/// reads (128 KiB frees room in our ring; kernel TCP, whose buffers grow
/// to megabytes, waits for more, so this one is not run against it).
#[test]
fn epoll_lt_epollout_toggled_by_mod() {
    writable_case("epoll_lt");
}

/// EPOLLOUT the waiter added (answered from the ring) reaches whoever
/// sleeps on the set in the kernel: an outer epoll set, poll on the epoll
/// fd, a forked child past the library (the raw system call). Each also
/// over kernel TCP.
#[test]
fn epoll_lt_epollout_reaches_an_outer_set() {
    writable_case("epoll_lt_nested");
    kernel_case("writable", "epoll_lt_nested");
}

#[test]
fn epoll_lt_epollout_reaches_poll_on_the_set() {
    writable_case("epoll_lt_poll");
    kernel_case("writable", "epoll_lt_poll");
}

#[test]
fn epoll_lt_epollout_reaches_a_forked_child() {
    writable_case("epoll_lt_fork");
    kernel_case("writable", "epoll_lt_fork");
}

/// A connection whose EPOLLOUT the ring answers is dup'd, and its number
/// closed and given to an eventfd added to the same set: the eventfd's
/// registration stays its own (the connection's was written over it by
/// number, review H1). Also over kernel TCP.
#[test]
fn epoll_lt_epollout_never_touches_a_reused_number() {
    writable_case("epoll_lt_reuse");
    kernel_case("writable", "epoll_lt_reuse");
}

/// maxevents 1: EPOLLOUT answered from the ring and another fd's event
/// take turns, and a connection's EPOLLIN comes with its EPOLLOUT in one
/// event (the one slot went to EPOLLOUT on every call, review H2). Also
/// over kernel TCP.
#[test]
fn epoll_lt_epollout_leaves_one_slot_to_take_turns() {
    writable_case("epoll_lt_one_slot");
    kernel_case("writable", "epoll_lt_one_slot");
}

/// Full ring, reader idle: poll(POLLOUT) must not return over and over
/// (at most 20 times in 200 ms).
#[test]
fn full_ring_pollout_does_not_spin() {
    writable_case("spin");
}

/// A non-blocking writer fills the connection; the reader is killed
/// (SIGKILL) with those bytes unread. Polling for POLLOUT and sending, as
/// an event loop's writer does: the kernel says ECONNRESET, then EPIPE.
/// (It said EAGAIN for ever: 550,000 poll+send rounds in 2 s, found by
/// review.)
const PY_KILLED_READER: &str = r#"
import errno, os, select, signal, socket, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
host, port = sys.argv[1], int(sys.argv[2])
L = socket.socket(); L.bind((host, port)); L.listen(1); port = L.getsockname()[1]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    c, _ = L.accept(); os.write(w, b"x"); time.sleep(60); os._exit(0)
s = socket.create_connection((host, port)); os.read(r, 1); s.setblocking(False)
try:
    while True: s.send(b"y" * 65536)
except BlockingIOError: pass
os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
p = select.poll(); p.register(s, select.POLLOUT); seen = []
for _ in range(3):
    p.poll(5000)
    try: s.send(b"z"); seen.append("sent")
    except BlockingIOError: seen.append("EAGAIN")
    except OSError as e: seen.append(errno.errorcode[e.errno])
print("sends after the reader was killed:", " ".join(seen), flush=True)
"#;

#[test]
fn a_polling_writer_whose_reader_was_killed_gets_econnreset() {
    let net = Net::emulated("killed-reader");
    let mut cmd = py(PY_KILLED_READER, &[&net.host_str(), &net.port_str()]);
    let ours = common::stdout_of("killed reader, emulated", net.env_in(&mut cmd));
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(PY_KILLED_READER).args(["127.0.0.1", "0"]);
    let kernel = common::stdout_of("killed reader, kernel TCP", &mut cmd);
    assert_eq!(
        kernel.trim(),
        "sends after the reader was killed: ECONNRESET EPIPE EPIPE"
    );
    assert_eq!(ours, kernel, "emulated against kernel TCP");
}

// ---------------------------------------------------------------------------
// Non-blocking connect

/// socket(SOCK_NONBLOCK) + connect: 0 or EINPROGRESS, then POLLOUT,
/// SO_ERROR 0, data both ways.
#[test]
fn nonblocking_connect_completes() {
    let lines = Net::emulated("nbconnect-ok").c_case("nbconnect", "ok");
    compare_with_kernel("nbconnect ok", &lines, &kernel_case("nbconnect", "ok"));
}

/// No listener: ECONNREFUSED, directly or through SO_ERROR.
#[test]
fn nonblocking_connect_refused() {
    let net = Net::emulated("nbconnect-refused");
    // No connection: the program has no checkpoint; drive it directly.
    let out = run(net.env(&mut preloaded(program("nbconnect"))).args([
        "refused",
        &net.host.to_string(),
        &net.port_str(),
    ]));
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.contains("ok refused"),
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(
        net.kernel_sockets(net.port).is_empty(),
        "{:?}",
        net.kernel_sockets(net.port)
    );
    let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    compare_with_kernel(
        "nbconnect refused",
        &lines,
        &kernel_case("nbconnect", "refused"),
    );
}

// ---------------------------------------------------------------------------
// Data paths

/// sendfile of a 3 MiB file (offset pointer, then file position).
#[test]
fn sendfile_into_connection() {
    Net::emulated("sendfile").c_case("datapath", "sendfile");
}

/// splice file -> pipe -> connection, 3 MiB.
#[test]
fn splice_into_connection() {
    Net::emulated("splice").c_case_stderr("datapath", "splice");
}

/// splice connection -> pipe, 3 MiB, bytes checked.
#[test]
fn splice_out_of_connection() {
    Net::emulated("splice-out").c_case("datapath", "splice-out");
}

/// writev/readv with IOV_MAX iovecs of random sizes.
#[test]
fn writev_readv_with_iov_max_iovecs() {
    let lines = Net::emulated("iovmax").c_case("datapath", "iovmax");
    let r = results(&lines);
    if r.get("writev-1025").map(String::as_str) != Some("EINVAL") {
        note(&format!(
            "writev with 1025 iovecs: {:?} (kernel: EINVAL)",
            r.get("writev-1025")
        ));
    }
}

/// TCP_CORK, TCP_NODELAY and send(MSG_MORE) accepted; the data arrives.
#[test]
fn cork_nodelay_and_msg_more() {
    Net::emulated("cork").c_case("datapath", "cork");
}

// ---------------------------------------------------------------------------
// Processes

/// posix_spawn and vfork+execve with two connections open (one inherited
/// by the children, one FD_CLOEXEC); both keep working. A child inheriting
/// a connection prints one `libshmnet:` line (documented), nothing else.
#[test]
fn posix_spawn_and_vfork_with_connections_open() {
    let (_, stderr) = Net::emulated("spawn").c_case_stderr("spawn", "spawn");
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("inherited across exec"))
        .collect();
    assert!(other.is_empty(), "stderr:\n{stderr}");
    note(&format!(
        "spawn: {} 'inherited across exec' lines from the 40 children",
        stderr.lines().count()
    ));
}

/// SOCK_CLOEXEC and SOCK_NONBLOCK on socket() and accept4() honoured
/// (F_GETFD/F_GETFL, EAGAIN, and which fds an exec'd program has).
#[test]
fn sock_cloexec_and_nonblock_flags() {
    let (_, stderr) = Net::emulated("flags").c_case_stderr("spawn", "flags");
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("inherited across exec"))
        .collect();
    assert!(other.is_empty(), "stderr:\n{stderr}");
}

/// python3 with a connection open runs subprocess.run and check_output 50
/// times each (vfork/posix_spawn), then keeps using the connection.
const PY_SUBPROCESS: &str = r#"
import hashlib, os, signal, socket, subprocess, threading
signal.alarm(60)
HOST, PORT = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.bind((HOST, PORT)); srv.listen(4)
def echo():
    conn, _ = srv.accept()
    while True:
        b = conn.recv(65536)
        if not b:
            break
        conn.sendall(b)
    conn.close()
t = threading.Thread(target=echo); t.start()
c = socket.create_connection((HOST, PORT))
sent, got = hashlib.sha256(), hashlib.sha256()
total = 0
def exchange(n):
    global total
    while n:
        k = min(n, 65536)
        data = os.urandom(k)
        c.sendall(data); sent.update(data)
        back = b""
        while len(back) < k:
            b = c.recv(k - len(back))
            assert b, "EOF from the echo"
            back += b
        assert back == data, "echo differs"
        got.update(back); n -= k; total += k
exchange(100000)
print("checkpoint", flush=True); sys.stdin.readline()
for i in range(50):
    subprocess.run(["true"], check=True)
    out = subprocess.check_output(["echo", str(i)])
    assert out == f"{i}\n".encode(), out
    exchange(1000 + i)
exchange(3 << 20)
c.close(); t.join(10)
assert sent.hexdigest() == got.hexdigest()
print("ok python", total, sent.hexdigest()[:16], flush=True)
"#;

#[test]
fn python_subprocess_with_connection_open() {
    let net = Net::emulated("python");
    let host = net.host.to_string();
    let (lines, stderr) = net.drive(
        "python subprocess",
        &mut py(PY_SUBPROCESS, &[&host, &net.port_str()]),
    );
    assert!(stderr.is_empty(), "stderr:\n{stderr}");
    note(ok_line(&lines));
}

// ---------------------------------------------------------------------------
// Signals

fn signal_case(case: &str) -> Vec<String> {
    let lines = Net::emulated(&format!("signals-{case}")).c_case("signals", case);
    for l in lines.iter().filter(|l| l.starts_with("result")) {
        note(&format!("signals {case}: {l}"));
    }
    lines
}

/// An fd put in an epoll set while another thread is asleep in a blocking
/// recv on it: after that read, the next write still wakes epoll_wait
/// (the sleeping reader had taken the doorbell byte, and nothing raised
/// the flag again: the write did not ring; found by review).
#[test]
fn epoll_after_a_blocking_reader_took_the_doorbell() {
    for early in [false, true] {
        let net = Net::emulated(if early { "handover-early" } else { "handover" });
        let mut cmd = net.c_helper("epoll_handover", &["-O1", "-pthread"]);
        cmd.arg(net.host_str()).arg(net.port_str());
        if early {
            cmd.arg("early");
        }
        let out = common::stdout_of("epoll_handover", &mut cmd);
        assert!(
            out.contains("after a new send: epoll_wait(2000 ms) = 1"),
            "{out}"
        );
    }
}

/// SIGALRM without SA_RESTART: a blocking recv fails with EINTR.
#[test]
fn signal_interrupts_blocking_recv() {
    signal_case("recv_intr");
}

/// With SA_RESTART: the recv goes on and returns the later data.
#[test]
fn sa_restart_restarts_blocking_recv() {
    signal_case("recv_restart");
}

/// SIGALRM without SA_RESTART: a send blocked on a full ring fails with
/// EINTR.
#[test]
fn signal_interrupts_blocked_send() {
    // A known gap (docs/compatibility.md): a signal that arrives while the
    // blocked send is between two of its 10 ms wait slices (runnable but
    // not running, on a loaded machine) is handled without interrupting
    // the send, which then completes (seen 3 times in a day of make test
    // runs, never alone; twice in a row at load average 7). Two retries
    // keep this test about EINTR rather than about the scheduler.
    for attempt in 1..=2 {
        if std::panic::catch_unwind(|| signal_case("send_intr")).is_ok() {
            return;
        }
        note(&format!(
            "signals send_intr: retry {attempt} (a signal between wait slices)"
        ));
    }
    signal_case("send_intr");
}

/// With SA_RESTART: the blocked send completes when the peer reads.
#[test]
fn sa_restart_blocked_send_completes() {
    signal_case("send_restart");
}

/// A 1 ms SIGALRM handler writing on one connection and closing others
/// while the main thread does round trips on a third for 2 s: no deadlock,
/// no crash, the handler's bytes arrive in order.
#[test]
fn signal_handler_socket_calls_during_io() {
    signal_case("storm");
}

// ---------------------------------------------------------------------------
// Once missed or spurious wake-ups (python and C programs on the emulated network)

/// A level-triggered poller reading small pieces must never sleep while the
/// ring holds data (the doorbell bytes were once taken before re-arming).
#[test]
fn poll_reader_never_misses_data_left_in_the_ring() {
    let out = emulated_script("lost", &["3000"], &[]);
    assert!(out.contains("client: all rounds ok"), "{out}");
}

/// select() must not report an emulated socket readable when there is
/// nothing to read (no in-band handshake bytes, no stale doorbells): a
/// select-then-blocking-recv loop would hang.
#[test]
fn no_spurious_readability_before_data_or_after_it_was_read() {
    let out = emulated_script("spurious", &[], &[]);
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

/// nginx's proxy habits: an upstream socket registered in epoll
/// before connect keeps its registration, and an edge-triggered reader that
/// reads what FIONREAD says (never until EAGAIN) keeps getting edges, with
/// the writer blocked on a full ring. Before, the first was never reported
/// again, and the second stalled once four doorbell bytes were left.
#[test]
fn epoll_registration_before_connect_and_fionread_driven_edges() {
    let out = emulated_script("edge_fionread", &[], &[]);
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
    let seq = common::helper("py/seq_clients.py");
    for emulated in [true, false] {
        let net = if emulated {
            Net::emulated("forkaccept")
        } else {
            Net::loopback("forkaccept")
        };
        let (host, port) = (net.host_str(), net.port);
        let set = |c: &mut std::process::Command| {
            if emulated {
                net.env(c);
            } else {
                c.env("SHMNET_DIR", net.shm_dir());
            }
        };
        let mut srv = preloaded(&exe);
        srv.args([&host, &port.to_string(), "5"]);
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
            .args([&host, &port.to_string(), "2", "25", "1", "4"]);
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

/// A non-blocking writer that filled the connection and waits for EPOLLOUT
/// (edge-triggered, IN|OUT as nginx registers) is woken as soon as the
/// reader frees room: the reader rings the writer's doorbell, instead of the
/// writer waiting until the reader happens to drain the ring.
#[test]
fn epoll_writer_is_woken_when_room_is_freed() {
    let out = emulated_script("pollout", &[], &[]);
    assert!(out.contains("bytes ok: True"), "{out}");
}

/// After a blocking recv that waited, the fd stays pollable: a short read
/// or a MSG_PEEK leaves it readable, and the next message wakes select
/// (the woken reader once took its doorbell byte in the wait, losing both).
#[test]
fn fd_stays_pollable_after_a_blocking_recv_waited() {
    let out = emulated_script("after_wait", &[], &[]);
    assert!(out.contains("a: 10 readable True rest 90"), "{out}");
    assert!(out.contains("b: 10 readable True True"), "{out}");
    assert!(out.contains("c: 100 next message readable True"), "{out}");
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
        let out = emulated_script("lazy", &[], &[("SHMNET_SPIN_US", spin)]);
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
    let out = emulated_script("lazy_races", &[], &[]);
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

/// select with nfds above FD_SETSIZE and a larger set (Linux takes it):
/// an fd at 1500 wakes it, a connection at 1600 is seen.
#[test]
fn select_beyond_fd_setsize() {
    let out = emulated_c("bigsel", &["-O1", "-pthread"], &[]);
    assert_eq!(out.matches("n=1 pipe set=1").count(), 5, "{out}");
    let out = emulated_c("bigsel2", &["-O1", "-pthread"], &[]);
    assert!(out.contains("select n=1"), "{out}");
}

/// Timeouts as the kernel takes them: tv_usec past a second is normalised,
/// negative or out-of-range values are EINVAL.
#[test]
fn select_and_ppoll_timeouts_as_the_kernel() {
    let out = emulated_c("seltv", &["-O1", "-pthread"], &[]);
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

/// An epoll set's members as the kernel keeps them: data from before an fd
/// joined is reported once per wait, also after it left and joined again;
/// a closed member leaves the set (its number reused by a new connection
/// reports only the new one's data, once added); 300 members served and
/// closed leave the set quiet.
#[test]
fn epoll_members_join_leave_and_close_as_in_the_kernel() {
    let out = emulated_script("epoll_members", &[], &[]);
    for want in [
        "rejoined: read b'early'",
        "rejoined: after reading []",
        "reused number: True",
        "reused number, not added: events []",
        "reused number: read b'second'",
        "many: served 300",
        "many: events after all closed []",
    ] {
        assert!(out.contains(want), "wanted {want:?}:\n{out}");
    }
    let rejoined = out
        .lines()
        .find(|l| l.starts_with("rejoined: events"))
        .unwrap_or_default();
    assert_eq!(rejoined.matches("(").count(), 1, "one event: {out}");
    assert!(
        out.contains("reused number, added: events [(") && out.contains(", True)]"),
        "{out}"
    );
}

/// A registration lasts as long as the connection, not the fd number
/// (epoll(7)): data in the ring is still reported after dup2 of a dup onto
/// the member's number, after close and a dup that gives the number back,
/// and after closing the number while a dup keeps the connection open;
/// with room for one event per wait, every pending member has its turn.
/// Found by review of the member map (issue 14); the first two were lost
/// by it, the third and fourth before it.
#[test]
fn epoll_registration_outlives_the_fd_number_as_in_the_kernel() {
    let out = emulated_script("epoll_dup_member", &[], &[]);
    for want in [
        "baseline: events [(True, 1)] then read 100",
        "dup2(B, A) same file: events [(True, 1)] then read 100",
        "close(A); dup(B) -> A: events [(True, 1)] then read 100",
        "close(A) keep dup: events [(True, 1)] read 100",
        "one event per wait: every member had its turn True",
    ] {
        assert!(out.contains(want), "wanted {want:?}:\n{out}");
    }
}

/// Doorbells that disappear under load: an epoll set's only waiter leaves
/// its members' flags down while it is busy (proven by a raw ppoll, which
/// sees no doorbell byte for new data). Every other way to wait on that
/// set must still be woken by data that came before or during that wait:
/// select, poll or a nested epoll on the epoll fd, a second thread's
/// epoll_wait, epoll_wait on a dup of the epoll fd, a forked child's, and
/// the waiter itself after being busy elsewhere.
#[test]
fn epoll_flags_left_down_still_wake_every_other_waiter() {
    for case in ["select", "poll", "nested", "thread", "dup", "fork", "busy"] {
        for when in ["before", "during"] {
            let net = Net::emulated(&format!("defer-{case}-{when}"));
            let out = common::stdout_of(
                "epoll_deferred",
                net.py_helper("epoll_deferred", &[case, when])
                    .env("SHMNET_DEFER", "1"),
            );
            assert!(out.contains("deferred: True"), "{case} {when}:\n{out}");
            assert!(
                out.contains(&format!("{case}, data {when}: woken True in time True")),
                "{case} {when}:\n{out}"
            );
        }
    }
}

/// Doorbells that name the reader's sleep (decision 41). `skip`: a server
/// asleep in epoll_wait on 4 deferred connections is stopped while the
/// client writes to all 4: the server, continued, reports all 4 messages.
/// (The client rings that sleep once, the kernel finding 1 of the 4
/// fds readable: decision 41's skip, on again since decision 44.) `thief`: another thread of
/// the server reads one member as soon as its data comes while the waiter
/// sleeps; the other member's data, whose ring may have been left out, must
/// still wake the waiter (the byte the thief would have taken is left for
/// it). (Whether the thief gets there before the waiter wakes is up to the
/// scheduler: this case shows no hang, it does not force the race.)
#[test]
fn epoll_named_sleeps_are_rung_once_and_lose_no_data() {
    let net = Net::emulated("named-skip");
    let out = common::stdout_of(
        "epoll_named_sleep",
        net.py_helper("epoll_named_sleep", &["skip"])
            .env("SHMNET_DEFER", "1"),
    );
    assert!(
        out.contains("kernel readable 1 of 4")
            && out.contains("got [(0, b'x0'), (1, b'x1'), (2, b'x2'), (3, b'x3')] in time True")
            && out.contains("server exit 0"),
        "skip:\n{out}"
    );
    for round in 0..5 {
        let net = Net::emulated(&format!("named-thief-{round}"));
        let out = common::stdout_of(
            "epoll_named_sleep",
            net.py_helper("epoll_named_sleep", &["thief"])
                .env("SHMNET_DEFER", "1"),
        );
        assert!(
            out.contains("thief got [b'x0']")
                && out.contains("got [(1, b'x1')] in time True")
                && out.contains("server exit 0"),
            "thief {round}:\n{out}"
        );
    }
}

/// Named sleeps and another thread changing the set (decision 41; found
/// by review): a server asleep on {A, B}, A taken out by another thread
/// (EPOLL_CTL_DEL, MOD to events 0, DEL and ADD to a set of its own,
/// close, dup2 over it, close_range; DEL after a fork; DEL with no fd
/// left for the waker, where the set stops deferring; DEL by a child a
/// one-thread server forked, decision 57), the client writes A then B: B must wake the server (its
/// doorbell must not be left out because A's rang, to an fd no longer in
/// the set; the thread that changed the set wakes the sleeper, decision
/// 43). helpers/c/named_sleep_lost.c.
#[test]
fn epoll_named_sleep_member_removed_by_another_thread_loses_nothing() {
    for case in [
        "del", "mod", "move", "close", "dup2", "range", "fork", "emfile", "forkdel1",
    ] {
        for round in 0..2 {
            let net = Net::emulated(&format!("named-{case}-{round}"));
            let out = common::stdout_of(
                "named_sleep_lost",
                net.c_helper("named_sleep_lost", &["-O1", "-pthread"])
                    .arg(case)
                    .env("SHMNET_DEFER", "1"),
            );
            assert!(out.contains("B seen"), "{case} {round}:\n{out}");
        }
    }
}

/// Deferral (not names): a member whose data came while its flag was down
/// (the waiter busy), taken out of the set and added back by another
/// thread while the waiter sleeps, must be reported at the ADD, as the
/// kernel does (the review's stress.c reaper lost it before decision 44:
/// the thread that adds it wakes the sleeper). helpers/c/named_sleep_lost.c
/// `readd`.
#[test]
fn epoll_member_readded_by_another_thread_reports_data_that_came_deferred() {
    let net = Net::emulated("named-readd");
    let out = common::stdout_of(
        "named_sleep_lost",
        net.c_helper("named_sleep_lost", &["-O1", "-pthread"])
            .arg("readd")
            .env("SHMNET_DEFER", "1"),
    );
    assert!(out.contains("A seen"), "readd:\n{out}");
}

/// Review of decision 44: a forked child that takes A out of an
/// EPOLL_CLOEXEC set (DEL, MOD to events 0) while the parent sleeps named
/// on it (every set is crowded at fork, close-on-exec or not); a
/// connection with data no doorbell announced moved into a set with no
/// connection (an eventfd, or nothing) on which another thread sleeps
/// (reported at the ADD, as the kernel does); a waiter that left its sleep
/// by siglongjmp, then forked a child that waits on the set (the child is
/// not held by a waker it cannot take out: it times out with nothing).
/// helpers/c/named_sleep_lost.c.
#[test]
fn epoll_waker_review_cases() {
    for (case, env, want) in [
        ("childdel", Some("CLOEXEC"), "B seen"),
        ("childmod", Some("CLOEXEC"), "B seen"),
        ("childdel", None, "B seen"),
        ("handoff", None, "A seen"),
        ("handoff", Some("NOEFD"), "A seen"),
        ("ljfork", None, "B seen"),
    ] {
        let net = Net::emulated(&format!("waker-{case}"));
        let mut cmd = net.c_helper("named_sleep_lost", &["-O1", "-pthread"]);
        cmd.arg(case).env("SHMNET_DEFER", "1");
        if let Some(v) = env {
            cmd.env(v, "1");
        }
        let out = common::stdout_of("named_sleep_lost", &mut cmd);
        assert!(out.contains(want), "{case} {env:?}:\n{out}");
        assert!(!out.contains("NOT seen"), "{case} {env:?}:\n{out}");
        if case == "ljfork" {
            assert!(out.contains("1 returns to the app, 0 events"), "{out}");
        }
    }
}

/// Named sleeps and signal handlers (decision 41; found by review): a
/// handler that siglongjmps out of epoll_wait leaves no flag up with the
/// old sleep's name (the next sleep's doorbells are not left out for it),
/// and a handler's epoll_wait on the same set, nested in the sleep, does
/// not end the outer sleep's bookkeeping (its flags stay up while it
/// sleeps on). helpers/c/named_sleep_lost.c.
#[test]
fn epoll_named_sleep_survives_siglongjmp_and_nested_waits() {
    for case in ["longjmp", "nested"] {
        for round in 0..2 {
            let net = Net::emulated(&format!("named-{case}-{round}"));
            let out = common::stdout_of(
                "named_sleep_lost",
                net.c_helper("named_sleep_lost", &["-O1", "-pthread"])
                    .arg(case)
                    .env("SHMNET_DEFER", "1"),
            );
            assert!(out.contains("B seen"), "{case} {round}:\n{out}");
        }
    }
}

/// Decision 79: in a set that lists 256 or more members whose flag is
/// down, 40 calls that find no data raise the idle members' flags (the
/// next data rings a doorbell the kernel sees: a raw ppoll), which leaves
/// a wait to the kernel instead of a look at each ring per call; in a
/// smaller set they stay down. Either way the next data of every member is
/// reported and read whole.
#[test]
fn epoll_idle_members_of_a_big_set_raise_their_flags() {
    for (n, raised) in [("300", "True"), ("50", "False")] {
        let net = Net::emulated(&format!("defer-idle-{n}"));
        let out = common::stdout_of(
            "epoll_idle_raise",
            net.py_helper("epoll_idle_raise", &[n])
                .env("SHMNET_DEFER", "1"),
        );
        assert!(
            out.contains(&format!("raised: {raised}")),
            "{n} members:\n{out}"
        );
        assert!(out.contains("all reported"), "{n} members:\n{out}");
    }
}

/// Deferred flags: the sequences a review found losing a wake-up (data
/// read with one recv after a second thread's wait or a poll on the epoll
/// fd crowded the set; DEL and ADD again, with the set kept or made anew;
/// MOD to EPOLLOUT and back): the next data still wakes epoll_wait. And a
/// set closed and made anew lets its member defer again.
#[test]
fn epoll_deferred_flags_after_crowding_del_and_mod() {
    for case in ["thread", "pollfd", "delad", "delad1", "modout"] {
        let net = Net::emulated(&format!("defer-seq-{case}"));
        let out = common::stdout_of(
            "epoll_deferred_seq",
            net.py_helper("epoll_deferred_seq", &[case])
                .env("SHMNET_DEFER", "1"),
        );
        assert!(out.contains("deferred: True"), "{case}:\n{out}");
        assert!(
            out.contains(&format!("{case}: events [(")) && out.contains("-> OK"),
            "{case}:\n{out}"
        );
    }
    // A partial read after poll on the epoll fd said readable: the data
    // left is reported again.
    let net = Net::emulated("defer-seq-pollpartial");
    let out = common::stdout_of(
        "epoll_deferred_seq",
        net.py_helper("epoll_deferred_seq", &["pollpartial"])
            .env("SHMNET_DEFER", "1"),
    );
    assert!(
        out.contains("poll on epfd again: [(") && out.contains("-> OK"),
        "{out}"
    );
    let net = Net::emulated("defer-seq-reopen");
    let out = common::stdout_of(
        "epoll_deferred_seq",
        net.py_helper("epoll_deferred_seq", &["reopen"])
            .env("SHMNET_DEFER", "1"),
    );
    assert!(out.contains("made anew: True"), "{out}");
}

/// Deferred flags and epoll fds that others could wait on before their
/// first connection joined: made before a fork (a child asleep on the
/// shared instance), duplicated, or nested in another epoll set. The other
/// waiter is woken by data that comes while the parent's thread is busy.
#[test]
fn epoll_deferred_flags_and_epoll_fds_shared_before_use() {
    let net = Net::emulated("defer-made-fork");
    let out = common::stdout_of(
        "epoll_deferred_fork",
        net.py_helper("epoll_deferred_fork", &[])
            .env("SHMNET_DEFER", "1"),
    );
    assert!(out.contains("-> OK"), "fork:\n{out}");
    for case in ["dup", "nest"] {
        let net = Net::emulated(&format!("defer-made-{case}"));
        let out = common::stdout_of(
            "epoll_deferred_early",
            net.py_helper("epoll_deferred_early", &[case])
                .env("SHMNET_DEFER", "1"),
        );
        assert!(out.contains("-> OK"), "{case}:\n{out}");
    }
}

/// Deferred flags, exactly (no stand-in events): data that came while a
/// flag was down is reported through a dup of the epoll fd only until it
/// is read or its connection closed, through an outer epoll set only until
/// it is read, after an exec by the new image's wait on the inherited set,
/// and an epoll fd passed to another process (SCM_RIGHTS) wakes a wait
/// there on data that comes while this one is busy. One thread waiting
/// through two numbers still defers. The flag stays down through an event
/// loop's per-request DEL, ADD EPOLLOUT, DEL, ADD EPOLLIN (hiredis: every
/// reply rang before), and goes down again after a sleep woken by another
/// member (not once the member was idle for many sleeps); wake-ups still
/// come, also for a connection the waiter handed
/// to a worker thread (DEL), which reads it and adds it back while the
/// waiter sleeps (found by review of a version that left the flag down at
/// DEL: that wait was never woken).
#[test]
fn epoll_deferred_flags_are_reported_exactly_everywhere() {
    let cases: &[(&str, &[&str])] = &[
        (
            "churn",
            &["churn: replies rang 0 of 20", "churn after: deferred True"],
        ),
        ("handoff", &["handoff: woken True"]),
        (
            "lower",
            &[
                "lower: woken by the first True",
                "lower: second flag down after the sleep True",
                "lower: both reported True",
                "lower: an idle member's flag stays up True",
            ],
        ),
        ("dupdrain", &["dupdrain: after drain [] []"]),
        ("dupclose", &["dupclose: after close [] []"]),
        (
            "dupwait",
            &["dupwait: dup reports True", "dupwait still: deferred True"],
        ),
        (
            "nest",
            &[
                "nest: outer reports True",
                "nest: outer again True",
                "nest: after drain [] []",
                "nest: inner reports True",
            ],
        ),
        ("scm", &["scm: woken 1"]),
        ("exec", &["exec: after exec True"]),
    ];
    for (case, wants) in cases {
        let net = Net::emulated(&format!("defer-exact-{case}"));
        let out = common::stdout_of(
            "epoll_deferred_exact",
            net.py_helper("epoll_deferred_exact", &[case])
                .env("SHMNET_DEFER", "1"),
        );
        assert!(out.contains(&format!("{case}: deferred True")), "{out}");
        for want in *wants {
            assert!(out.contains(want), "{case}: wanted {want:?}:\n{out}");
        }
        if !["dupdrain", "dupclose", "scm"].contains(case) {
            assert!(
                out.contains(&format!("{case}: late data woke the wait True")),
                "{case}:\n{out}"
            );
        }
    }
}

/// Deferred flags for edge-triggered members (EPOLLET, nginx's
/// registration): while the waiter is busy their flags stay down (a raw
/// ppoll sees no doorbell byte) and our epoll_wait reports one EPOLLIN edge
/// per arrival (several while busy: one; also while older data is unread;
/// none without one); arrivals during a sleep wake it once each; EPOLLOUT
/// edges still come from the kernel; a level- and an edge-triggered member
/// share a set; nginx's FIONREAD-sized reads against a client process at
/// random gaps lose no edge (a lost one stalls the client: 3 s).
#[test]
fn epoll_deferred_edge_triggered_members_get_one_edge_per_arrival() {
    let cases: &[(&str, &[&str])] = &[
        (
            "arrivals",
            &[
                "arrivals: deferred True",
                "arrivals: edges [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
                "arrivals: quiet between True",
                "arrivals: three while busy 1 0",
                "arrivals: still deferred True",
            ],
        ),
        (
            "sleep",
            &[
                "sleep: deferred True",
                "sleep: edges [1, 1, 1, 1, 1, 1, 1, 1] late False",
                "sleep: down after sleeps True",
                "sleep: busy arrival 1 0",
            ],
        ),
        (
            "out",
            &[
                "out: fresh True",
                "out: deferred True",
                "out: arrival True",
                "out: full ring quiet True writable edge after the peer read True bytes True",
                "out: arrival after True",
                "out: close True",
                "out: eof True",
            ],
        ),
        (
            "mixed",
            &[
                "mixed: deferred True",
                "mixed: level every wait, edge once per arrival True",
                "mixed: still deferred True",
            ],
        ),
        (
            "fionread",
            &["fionread: served 400 of 400 stalls 0 client ok True"],
        ),
    ];
    for (case, wants) in cases {
        let net = Net::emulated(&format!("defer-et-{case}"));
        let out = common::stdout_of(
            "epoll_deferred_et",
            net.py_helper("epoll_deferred_et", &[case])
                .env("SHMNET_DEFER", "1"),
        );
        for want in *wants {
            assert!(out.contains(want), "{case}: wanted {want:?}:\n{out}");
        }
    }
}

/// poll and select on an epoll fd say readable exactly when epoll_wait
/// would report an event, also for members whose data no doorbell
/// announced (pending): level-triggered yes; edge-triggered or one-shot
/// once reported, or EPOLLPRI only, no (found by review: they said
/// readable every time, and a loop polling the epoll fd spun).
#[test]
fn poll_on_an_epoll_fd_follows_its_pending_members() {
    let out = emulated_script("epoll_pending_poll", &[], &[]);
    for want in [
        "LT: epoll_wait#1=[(5, 1)] #2=[(5, 1)] poll(epfd)=[[(6, 1)], [(6, 1)], [(6, 1)]] select(epfd)=True",
        "ET: epoll_wait#1=[(5, 1)] #2=[] poll(epfd)=[[], [], []] select(epfd)=False",
        "ONESHOT: epoll_wait#1=[(5, 1)] #2=[] poll(epfd)=[[], [], []] select(epfd)=False",
        "PRI-only: epoll_wait#1=[] #2=[] poll(epfd)=[[], [], []] select(epfd)=False",
    ] {
        assert!(out.contains(want), "wanted {want:?}:\n{out}");
    }
}

/// Forks while threads close fds, in a process with an epoll fd and
/// SHMNET_DEFER=1 (epoll fds tracked): no child hangs on a lock a parent
/// thread held at the fork (a review's reproducer saw 8 of 1,411
/// children hang before the locks were reset in the child).
#[test]
fn forks_beside_threads_closing_fds_never_hang_the_child() {
    let net = Net::emulated("fork-epoll-threads");
    let out = common::stdout_of(
        "fork_epoll_threads",
        net.py_helper("fork_epoll_threads", &["3"])
            .env("SHMNET_DEFER", "1"),
    );
    assert!(out.contains("hung=0"), "{out}");
}

/// A connection once registered EPOLLET and then level-triggered (MOD,
/// DEL + ADD, or in a second set too) keeps being reported while data is
/// unread; an edge-triggered reader that reads part of its data gets an
/// edge for the next arrival, and none without one. With deferral off and
/// on, and the same script over kernel TCP (found by the deferral review:
/// the level-triggered waits found nothing with 290 bytes unread, and the
/// second arrival's edge was lost).
#[test]
fn edge_triggered_then_level_triggered_and_partial_reads() {
    let cases = [
        "level after edge (mod): ok",
        "level after edge (deladd): ok",
        "level after edge (two): ok",
        "edge after a partial read: ok",
        "edges while unread: ok",
        "edges beside a level-triggered set: ok",
    ];
    let kernel = common::stdout_of(
        "epoll_et_then_lt (kernel TCP)",
        common::py_file("epoll_et_then_lt.py", &[])
            .env_remove("LD_PRELOAD")
            .env("TEST_HOST", "127.0.0.1")
            .env("TEST_PORT", "0"),
    );
    for want in cases {
        assert!(
            kernel.contains(want),
            "kernel TCP: wanted {want:?}:\n{kernel}"
        );
    }
    for defer in ["0", "1"] {
        let net = Net::emulated(&format!("et-then-lt-{defer}"));
        let out = common::stdout_of(
            "epoll_et_then_lt",
            net.py_helper("epoll_et_then_lt", &[])
                .env("SHMNET_DEFER", defer),
        );
        for want in cases {
            assert!(
                out.contains(want),
                "SHMNET_DEFER={defer}: wanted {want:?}:\n{out}"
            );
        }
    }
}

/// The deferral review's differential fuzzer (helpers/py/epoll_fuzz.py):
/// random writes, partial reads, waits, DEL/ADD, MOD between level- and
/// edge-triggered, reconnects on reused numbers and shutdowns, every
/// wait's answer checked against the kernel's rules; level-triggered,
/// edge-triggered and mixed sets, deferral off and on, and over kernel TCP
/// (which must pass too, or the model is wrong). Before the fixes of
/// 2026-12-06 edge-triggered sets failed 5 seeds of 6.
#[test]
fn epoll_differential_fuzz() {
    let modes: [(&str, &[(&str, &str)]); 3] = [
        ("lt", &[("FUZZ_LT", "1")]),
        ("et", &[("FUZZ_ET", "1")]),
        ("mixed", &[]),
    ];
    for (mode, env) in modes {
        for seed in ["1", "2"] {
            let kernel = common::stdout_of(
                "epoll_fuzz (kernel TCP)",
                common::py_file("epoll_fuzz.py", &[seed, "1500"])
                    .env_remove("LD_PRELOAD")
                    .env("TEST_HOST", "127.0.0.1")
                    .env("TEST_PORT", "0")
                    .envs(env.iter().copied()),
            );
            assert!(kernel.contains("steps ok"), "kernel TCP, {mode}:\n{kernel}");
            for defer in ["0", "1"] {
                let net = Net::emulated(&format!("fuzz-{mode}-{seed}-{defer}"));
                let out = common::stdout_of(
                    "epoll_fuzz",
                    net.py_helper("epoll_fuzz", &[seed, "1500"])
                        .env("SHMNET_DEFER", defer)
                        .envs(env.iter().copied()),
                );
                assert!(
                    out.contains("steps ok"),
                    "{mode}, seed {seed}, SHMNET_DEFER={defer}:\n{out}"
                );
            }
        }
    }
}
