//! Resets reach the peer as the kernel's TCP RST does (tcp(7), socket(7)):
//! an abortive close (SO_LINGER {1, 0}), a close with unread data and a
//! process killed with unread data give the peer its data first, then
//! ECONNRESET once (recv, or SO_ERROR; poll adds POLLERR), then end of
//! stream, and EPIPE for writes; a process killed with nothing unread is
//! an orderly end (FIN). Each case runs over kernel TCP (not preloaded)
//! and over shared memory in both modes; the outputs must be the same.
//! Before, every one of them reached the peer as a clean end of stream
//! (found by the gateway review, 2026-12-06: a truncated transfer looked
//! complete).

mod common;

use std::process::Command;

use common::net::Net;
use common::{preloaded, python, stdout_of};

const SCRIPT: &str = r#"
import errno, os, select, signal, socket, struct, sys, time
host, port, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if case == "listener_linger":
    # Set on the listener before listen (nginx, haproxy): the accepted
    # socket inherits it, so its close is a RST (before: a FIN here).
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
srv.bind((host, port))
srv.listen(8)
port = srv.getsockname()[1]

def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))

def reads(s):
    # Reads until an error or the end: "data N" for the bytes, then how it ended.
    n, out = 0, []
    while True:
        try:
            d = s.recv(65536)
        except OSError as e:
            out.append(name(e))
            break
        if not d:
            out.append("eof")
            break
        n += len(d)
    return (["data %d" % n] if n else []) + out

def after(s):
    # What the next recv and send say.
    try:
        r = "eof" if not s.recv(10) else "data"
    except OSError as e:
        r = name(e)
    try:
        s.send(b"x")
        w = "sent"
    except OSError as e:
        w = name(e)
    return ["then " + r, "send " + w]

def bits(mask):
    names = (("IN", select.POLLIN), ("OUT", select.POLLOUT), ("ERR", select.POLLERR),
             ("HUP", select.POLLHUP), ("RDHUP", select.POLLRDHUP))
    return "|".join(n for n, b in names if mask & b) or "-"

def polled(s, events):
    p = select.poll()
    p.register(s, events)
    ev = p.poll(5000)
    return bits(ev[0][1] if ev else 0)

def epolled(s):
    ep = select.epoll()
    ep.register(s, select.EPOLLIN | select.EPOLLRDHUP)
    ev = ep.poll(5)
    ep.close()
    return bits(ev[0][1] if ev else 0)

def pair():
    c = socket.create_connection((host, port))
    a, _ = srv.accept()
    return c, a

out = []
if case == "linger":
    c, a = pair()
    a.sendall(b"x" * 1000)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()
    out += reads(c) + after(c)
elif case == "listener_linger":
    c, a = pair()
    out.append("inherited %d,%d" % struct.unpack("ii", a.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)))
    a.sendall(b"x" * 1000)
    a.close()
    out += reads(c)
elif case == "unread":
    c, a = pair()
    c.sendall(b"y" * 100)
    time.sleep(0.1)
    a.close()
    out += reads(c) + after(c)
elif case == "so_error":
    c, a = pair()
    c.sendall(b"y" * 100)
    time.sleep(0.1)
    a.close()
    p = select.poll()
    p.register(c, select.POLLIN)
    ev = p.poll(5000)
    mask = ev[0][1] & (select.POLLERR | select.POLLHUP) if ev else 0
    out.append("poll %s" % "|".join(n for n, b in (("ERR", select.POLLERR), ("HUP", select.POLLHUP)) if mask & b))
    e = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    out.append("so_error %s" % errno.errorcode.get(e, e))
    out += reads(c)
elif case == "linger_waits":
    # poll and epoll see the reset (POLLERR/EPOLLERR with the hang-up)
    # before anything reads it; here no doorbell byte was left unread at
    # the closer, so the Unix connection's own close says no error.
    c, a = pair()
    a.sendall(b"x" * 1000)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()
    time.sleep(0.1)
    p = select.poll()
    p.register(c, select.POLLIN)
    ev = p.poll(5000)
    mask = ev[0][1] if ev else 0
    out.append("poll %s" % "|".join(n for n, b in (("ERR", select.POLLERR), ("HUP", select.POLLHUP)) if mask & b))
    ep = select.epoll()
    ep.register(c, select.EPOLLIN)
    ev = ep.poll(5)
    mask = ev[0][1] if ev else 0
    out.append("epoll %s" % "|".join(n for n, b in (("ERR", select.EPOLLERR), ("HUP", select.EPOLLHUP)) if mask & b))
    out += reads(c)
elif case == "both_shut":
    # Not a reset: each side ended its stream, one with data unread by the
    # other (both shutdowns make a hang-up on the Unix connection too).
    c, a = pair()
    a.sendall(b"s" * 1000)
    a.shutdown(socket.SHUT_WR)
    c.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    out += reads(a) + reads(c)
elif case in ("killed_unread", "killed_read", "killed_waiting"):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        srv.close()
        c = socket.create_connection((host, port))
        if case == "killed_read":
            got = 0
            while got < 100:
                got += len(c.recv(100 - got))
        os.write(w, b"r")
        if case == "killed_waiting":
            c.recv(1)
        time.sleep(60)
        os._exit(0)
    a, _ = srv.accept()
    if case != "killed_waiting":
        a.sendall(b"z" * 100)
    os.read(r, 1)
    time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if case != "killed_waiting":
        out += reads(a)
    # Sends to the dead peer: after a RST they fail; the kernel's first
    # after a FIN goes (the peer's host answers it with a RST), the next
    # fails (before: every send went into the ring).
    sent = []
    for _ in range(2):
        try:
            a.send(b"x")
            sent.append("sent")
        except OSError as e:
            sent.append(name(e))
        time.sleep(0.05)
    out.append("send %s then %s" % tuple(sent))
elif case in ("fin_bits", "reset_bits"):
    # poll/epoll after the peer's plain close (FIN) with a doorbell byte of
    # ours it took no notice of: IN|RDHUP, not ERR|HUP; after a reset was
    # reported: HUP without ERR (before: IN|ERR|HUP|RDHUP in both).
    c, a = pair()
    c.sendall(b"y" * 100)
    if case == "fin_bits":
        got = 0
        while got < 100:
            got += len(a.recv(100 - got))
    a.close()
    polled(c, select.POLLIN)
    if case == "reset_bits":
        out += reads(c)
    out.append("poll " + polled(c, select.POLLIN | select.POLLOUT | select.POLLRDHUP))
    out.append("pollout " + polled(c, select.POLLOUT))
    out.append("epoll " + epolled(c))
    out += reads(c)
elif case == "fork_once":
    # One connection held by two processes after fork: the reset is one
    # pending error, read by whichever asks first; the other reads the
    # end of the stream. (Per process before: ECONNRESET in both.)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    server = os.fork()
    if server == 0:
        a, _ = srv.accept()
        os.read(go_r, 1)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.close()
        os._exit(0)
    c = socket.create_connection((host, port))
    c.sendall(b"x")
    other = os.fork()
    if other == 0:
        os.write(go_w, b"g")
        r = reads(c)
        os.write(done_w, ("other " + " ".join(r)).encode())
        os._exit(0)
    out.append(os.read(done_r, 100).decode())
    out += ["this " + " ".join(reads(c))]
    os.waitpid(other, 0)
    os.waitpid(server, 0)
print(" / ".join(out), flush=True)
"#;

const CASES: [(&str, &str); 12] = [
    ("linger", "data 1000 / ECONNRESET / then eof / send EPIPE"),
    ("unread", "ECONNRESET / then eof / send EPIPE"),
    ("so_error", "poll ERR|HUP / so_error ECONNRESET / eof"),
    (
        "linger_waits",
        "poll ERR|HUP / epoll ERR|HUP / data 1000 / ECONNRESET",
    ),
    ("both_shut", "eof / data 1000 / eof"),
    ("killed_unread", "ECONNRESET / send EPIPE then EPIPE"),
    ("killed_read", "eof / send sent then EPIPE"),
    ("killed_waiting", "send sent then EPIPE"),
    ("fork_once", "other ECONNRESET / this eof"),
    ("listener_linger", "inherited 1,0 / data 1000 / ECONNRESET"),
    (
        "fin_bits",
        "poll IN|OUT|RDHUP / pollout OUT / epoll IN|RDHUP / eof",
    ),
    (
        "reset_bits",
        "ECONNRESET / poll IN|OUT|HUP|RDHUP / pollout OUT|HUP / epoll IN|HUP|RDHUP / eof",
    ),
];

fn outcome(what: &str, cmd: &mut Command) -> String {
    stdout_of(what, cmd).trim().to_string()
}

#[test]
fn resets_reach_the_peer_as_over_kernel_tcp() {
    let net = Net::emulated("resets");
    let shm = net.dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let (host, port) = (net.host.to_string(), net.port.to_string());
    let mut failures = Vec::new();
    for (case, want) in CASES {
        let kernel = outcome(
            "kernel",
            Command::new(python()).args(["-c", SCRIPT, "127.0.0.1", "0", case]),
        );
        let default = outcome(
            "default mode",
            preloaded(python()).args(["-c", SCRIPT, "127.0.0.1", "0", case]),
        );
        let emulated = outcome(
            "emulated",
            preloaded(python())
                .args(["-c", SCRIPT, &host, &port, case])
                .env("SHMNET_PARTITIONS", &net.partitions)
                .env("SHMNET_FALLBACK", "never")
                .env("SHMNET_DIR", &shm),
        );
        if [&kernel, &default, &emulated].iter().any(|o| *o != want) {
            failures.push(format!(
                "{case}: want {want}\n  kernel:   {kernel}\n  default:  {default}\n  emulated: {emulated}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
