//! Memory that follows use (issue 14, decision 27): connections that
//! streamed a bulk burst and went quiet give their ring pages back, so
//! the shared memory both processes keep resident drops to a bound per
//! connection (the open segment of each direction and the control pages),
//! without either process touching the connection again: the server
//! waits for the next request in a blocking recv per connection, or in
//! epoll_wait on them all.
//!
//! Addresses: the test's own `Net::emulated` (its /24 of the emulated
//! network, `SHMNET_FALLBACK=never`, a private SHMNET_DIR).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{py, Background, Net};

const CONNS: usize = 4;
const BURST: usize = 4 << 20;

/// Server: accepts `CONNS` connections; a thread per connection sends a
/// 4 MiB burst, then waits for the client's last word: in a blocking recv
/// (`recv`), or (`epoll`) the main thread waits in epoll_wait on all the
/// connections once every burst went out.
const SERVER: &str = r#"
import hashlib, os, select, socket, threading, signal
signal.alarm(60)
host, port, conns, burst, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(64)
print('listening', flush=True)
print('pid', os.getpid(), flush=True)
out = threading.Lock()
def serve(c, i):
    data = hashlib.sha256(str(i).encode()).digest() * (burst // 32)
    c.sendall(data)
    with out:  # one line at a time from the threads
        sys.stdout.write('sent %d %s\n' % (i, hashlib.sha256(data).hexdigest()))
        sys.stdout.flush()
    if mode == 'recv':
        if c.recv(1) != b'b':
            sys.exit('no last word')
        c.close()
ts, cs = [], []
for i in range(conns):
    c, _ = l.accept()
    cs.append(c)
    t = threading.Thread(target=serve, args=(c, i))
    t.start()
    ts.append(t)
for t in ts:
    t.join()
if mode == 'epoll':
    ep = select.epoll()
    for c in cs:
        ep.register(c.fileno(), select.EPOLLIN)
    left = {c.fileno(): c for c in cs}
    while left:
        for fd, _ in ep.poll():
            if left[fd].recv(1) != b'b':
                sys.exit('no last word')
            ep.unregister(fd)
            left.pop(fd).close()
print('done', flush=True)
"#;

/// Client: opens the connections, reads each burst whole, says so, waits
/// for the test's `go`, then sends its last word on each.
const CLIENT: &str = r#"
import hashlib, os, socket, time, signal
signal.alarm(60)
host, port, conns, burst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def connect():
    for attempt in range(200):
        try:
            return socket.create_connection((host, port))
        except ConnectionRefusedError:
            time.sleep(0.05)
    sys.exit('no listener')
cs = [connect() for _ in range(conns)]
print('pid', os.getpid(), flush=True)
for i, c in enumerate(cs):
    got = bytearray()
    while len(got) < burst:
        d = c.recv(1 << 20)
        if not d:
            sys.exit('short burst')
        got += d
    print('read', i, hashlib.sha256(got).hexdigest(), flush=True)
print('idle', flush=True)
sys.stdin.readline()
for c in cs:
    c.sendall(b'b')
for c in cs:
    c.close()
"#;

/// Resident bytes of the connection segments `pid` maps (the Rss of its
/// `memfd:shmnet-conn` mappings in /proc/PID/smaps).
fn segment_rss(pid: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut ours = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            ours = line.contains("shmnet-conn");
        } else if ours && first == "Rss:" {
            kib += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    kib << 10
}

fn spawn(net: &Net, body: &str, mode: &str) -> Background {
    let mut cmd = py(
        body,
        &[
            &net.host_str(),
            &net.port_str(),
            &CONNS.to_string(),
            &BURST.to_string(),
            mode,
        ],
    );
    net.env(&mut cmd);
    Background::spawn(cmd.stdin(Stdio::piped()))
}

/// After each connection streamed 4 MiB (2 MiB ring, all 32 segments of
/// the server's direction written) and went quiet, the segments' resident
/// memory in both processes drops to at most 256 KiB per connection (the
/// open segment of 64 KiB per direction, control pages; not the 2 MiB
/// the burst left). A bound after a generous wait, not a timing.
fn a_quiet_connection_gives_back_its_burst(mode: &str) {
    let net = Net::emulated(&format!("memory-burst-{mode}"));
    let mut server = spawn(&net, SERVER, mode);
    server.expect("listening");
    let spid = server
        .expect("pid")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let mut client = spawn(&net, CLIENT, mode);
    let cpid = client
        .expect("pid")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let mut sent = Vec::new();
    let mut read = Vec::new();
    for _ in 0..CONNS {
        let l = server.expect("sent");
        sent.push(l.split_whitespace().nth(2).unwrap().to_string());
    }
    for _ in 0..CONNS {
        let l = client.expect("read");
        read.push(l.split_whitespace().nth(2).unwrap().to_string());
    }
    client.expect("idle");
    sent.sort();
    read.sort();
    assert_eq!(sent, read, "bursts arrived byte-exact");
    let bound = CONNS as u64 * (256 << 10);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut s, mut c);
    loop {
        (s, c) = (segment_rss(&spid), segment_rss(&cpid));
        if (s <= bound && c <= bound) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{mode}: resident segment memory: server {s} B, client {c} B ({CONNS} connections)");
    assert!(
        s <= bound && c <= bound,
        "server {s} B, client {c} B resident after the bursts (bound {bound} B)"
    );
    net.assert_shm_only(net.port, "while the connections are quiet");
    client.go();
    client.finish_clean();
    server.expect("done");
    server.finish_clean();
}

/// The server waits in a blocking recv on each connection.
#[test]
fn a_quiet_connection_gives_back_its_burst_to_a_blocked_reader() {
    a_quiet_connection_gives_back_its_burst("recv");
}

/// The server waits in epoll_wait on all of them (`sockets::quiet`).
#[test]
fn a_quiet_connection_gives_back_its_burst_to_an_event_loop() {
    a_quiet_connection_gives_back_its_burst("epoll");
}
