//! Two gateways in two network namespaces joined by one veth pair: 50
//! concurrent connections with checksums both ways, half-close and resets
//! carried, one TCP connection between the gateways, a slow reader that
//! holds the writer back while the gateways' memory stays bounded, and a
//! peer with an unknown certificate refused. Needs root (ip netns).

mod common;
/// The library's counters (docs/counters.md), read as the interposer's
/// tests read them.
#[path = "../../interposer/tests/common/stats.rs"]
#[allow(dead_code)]
mod stats;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{Certs, Gateway, Pair, Python, B_LINK, B_SERVICE, ECHO, GATEWAY_ADDR};

const PORT: u16 = 9000;
const CONNECTIONS: usize = 50;
const EACH: u64 = 1 << 20;
const LARGE: u64 = 1 << 30;
/// How long the slow reader reads nothing at first.
const STALL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(120);

/// Deterministic bytes from a seed (xorshift), `len` of them into `out`.
fn fill(state: &mut u64, out: &mut [u8]) {
    for chunk in out.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn send_stream(s: &mut TcpStream, seed: u64, len: u64, sent: Option<&AtomicU64>) -> u32 {
    let mut state = seed | 1;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut state, &mut buf[..n]);
        s.write_all(&buf[..n]).unwrap();
        crc.update(&buf[..n]);
        if let Some(c) = sent {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        left -= n as u64;
    }
    crc.finalize()
}

fn expected_crc(seed: u64, len: u64) -> u32 {
    let mut state = seed | 1;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut state, &mut buf[..n]);
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    crc.finalize()
}

/// Reads to EOF: (count, crc32), pausing `pause` every 1 MiB (a slow
/// reader: 20 ms per MiB is about 50 MB/s).
fn drain(s: &mut TcpStream, pause: Duration) -> (u64, u32) {
    try_drain(s, pause).unwrap()
}

fn try_drain(s: &mut TcpStream, pause: Duration) -> std::io::Result<(u64, u32)> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let (mut total, mut since_pause) = (0u64, 0u64);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok((total, crc.finalize()));
        }
        crc.update(&buf[..n]);
        total += n as u64;
        since_pause += n as u64;
        if !pause.is_zero() && since_pause >= 1 << 20 {
            since_pause = 0;
            std::thread::sleep(pause);
        }
    }
}

fn read_u64(s: &mut TcpStream) -> u64 {
    let mut b = [0u8; 8];
    s.read_exact(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// B's service. Modes (first byte): `c` checksum both ways, `s` slow sink,
/// `r` the server resets, `k` the client resets (result on `resets`).
fn serve(listener: TcpListener, resets: mpsc::Sender<ErrorKind>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let resets = resets.clone();
        std::thread::spawn(move || {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut mode = [0u8; 1];
            s.read_exact(&mut mode).unwrap();
            match mode[0] {
                b'c' | b's' => {
                    let seed = read_u64(&mut s);
                    let len = read_u64(&mut s);
                    if mode[0] == b's' {
                        std::thread::sleep(STALL);
                    }
                    let pause = if mode[0] == b's' {
                        Duration::from_millis(20)
                    } else {
                        Duration::ZERO
                    };
                    // (A connection cut on the way ends here, quietly.)
                    let Ok((count, crc)) = try_drain(&mut s, pause) else {
                        return;
                    };
                    let mut reply = count.to_le_bytes().to_vec();
                    reply.extend(crc.to_le_bytes());
                    if s.write_all(&reply).is_err() {
                        return;
                    }
                    if mode[0] == b'c' {
                        send_stream(&mut s, seed ^ 0x5555, len, None);
                    }
                    // Drop: FIN after everything.
                }
                b'r' => {
                    common::zero_linger(&s);
                }
                b'k' => {
                    let mut b = [0u8; 1];
                    let kind = match s.read(&mut b) {
                        Ok(_) => ErrorKind::UnexpectedEof,
                        Err(e) => e.kind(),
                    };
                    let _ = resets.send(kind);
                }
                _ => {}
            }
        });
    }
}

fn connect(ns: &str) -> TcpStream {
    let ns = ns.to_string();
    Pair::inside(&ns, || {
        let s = TcpStream::connect((B_SERVICE, PORT)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    })
}

/// Header, `len` bytes up, FIN; then the server's count and crc and `len`
/// bytes down, then its FIN.
fn checksummed(ns: &str, seed: u64, len: u64) {
    let mut s = connect(ns);
    s.write_all(b"c").unwrap();
    s.write_all(&seed.to_le_bytes()).unwrap();
    s.write_all(&len.to_le_bytes()).unwrap();
    let crc_up = send_stream(&mut s, seed, len, None);
    s.shutdown(Shutdown::Write).unwrap();
    let count = read_u64(&mut s);
    let mut c = [0u8; 4];
    s.read_exact(&mut c).unwrap();
    assert_eq!(
        (count, u32::from_le_bytes(c)),
        (len, crc_up),
        "seed {seed}: up"
    );
    let (down, crc_down) = drain(&mut s, Duration::ZERO);
    assert_eq!(
        (down, crc_down),
        (len, expected_crc(seed ^ 0x5555, len)),
        "seed {seed}: down"
    );
}

fn start_pair(pair: &Pair, certs_for_a: &str) -> (Gateway, Gateway) {
    start_pair_with(pair, certs_for_a, &[])
}

fn start_pair_with(pair: &Pair, certs_for_a: &str, extra: &[&str]) -> (Gateway, Gateway) {
    let status_b = pair.file("gw-b.status.json");
    let b = pair.gateway_b(&[extra, &["--status-file", &status_b]].concat(), &[]);
    let status_a = pair.file("gw-a.status.json");
    let listen = format!("0.0.0.0:{PORT}");
    let a = pair.gateway_a(
        certs_for_a,
        &listen,
        &[extra, &["--status-file", &status_a]].concat(),
        &[],
    );
    (a, b)
}

#[test]
fn gateways_carry_connections_over_one_link() {
    if !common::root() {
        eprintln!("gateways_carry_connections_over_one_link: skipped (needs root)");
        return;
    }
    let pair = Pair::new("carry");
    pair.certs();
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, PORT)).unwrap());
    let (reset_tx, reset_rx) = mpsc::channel();
    std::thread::spawn(move || serve(listener, reset_tx));
    let (mut a, b) = start_pair(&pair, "a");
    a.wait_for("links established: 1");

    // 50 at once, 1 MiB each way, checksummed.
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for i in 0..CONNECTIONS {
            let ns = pair.a.as_str();
            s.spawn(move || checksummed(ns, 0x1000 + i as u64, EACH));
        }
    });

    eprintln!(
        "{CONNECTIONS} connections x {} MiB each way: {:?}",
        EACH >> 20,
        started.elapsed()
    );

    // A reset from the server reaches the client as a reset.
    let mut s = connect(&pair.a);
    s.write_all(b"r").unwrap();
    let mut byte = [0u8; 1];
    let got = s.read(&mut byte);
    assert_eq!(
        got.map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionReset),
        "server reset"
    );
    // And one from the client reaches the server.
    let s = connect(&pair.a);
    (&s).write_all(b"k").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    common::zero_linger(&s);
    drop(s);
    assert_eq!(
        reset_rx.recv_timeout(TIMEOUT).unwrap(),
        ErrorKind::ConnectionReset,
        "client reset"
    );

    // A slow reader: the writer is held back, the gateways hold little.
    let sent = Arc::new(AtomicU64::new(0));

    let rss_before = (a.rss_kib(), b.rss_kib());
    let writer = {
        let (sent, ns) = (sent.clone(), pair.a.clone());
        std::thread::spawn(move || {
            let mut s = connect(&ns);
            s.write_all(b"s").unwrap();
            s.write_all(&7u64.to_le_bytes()).unwrap();
            s.write_all(&LARGE.to_le_bytes()).unwrap();
            let crc = send_stream(&mut s, 7, LARGE, Some(&sent));
            s.shutdown(Shutdown::Write).unwrap();
            let count = read_u64(&mut s);
            let mut c = [0u8; 4];
            s.read_exact(&mut c).unwrap();
            (count, u32::from_le_bytes(c), crc)
        })
    };
    std::thread::sleep(STALL - Duration::from_millis(300));
    let in_flight_while_stalled = sent.load(Ordering::Relaxed);
    let mut peak = (0u64, 0u64);
    let (mut samples, started) = (0, std::time::Instant::now());
    while !writer.is_finished() {
        samples += 1;
        peak = (peak.0.max(a.rss_kib()), peak.1.max(b.rss_kib()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (count, crc, sent_crc) = writer.join().unwrap();
    assert_eq!((count, crc), (LARGE, sent_crc), "large transfer");
    eprintln!(
        "slow reader: {} MiB written while the reader read nothing (of {} MiB); \
         gateway RSS before {} / {} KiB, peak {} / {} KiB (A / B) in {samples} samples over {:?}",
        in_flight_while_stalled >> 20,
        LARGE >> 20,
        rss_before.0,
        rss_before.1,
        peak.0,
        peak.1,
        started.elapsed()
    );
    assert!(
        in_flight_while_stalled < 96 << 20,
        "writer not held back: {in_flight_while_stalled}"
    );
    assert!(
        peak.0 < 64 << 10 && peak.1 < 64 << 10,
        "gateway RSS peak {peak:?} KiB"
    );

    // Exactly one TCP connection between the gateways, and it never dropped.
    assert_eq!(
        common::established(&pair.a, "dport = :15008"),
        1,
        "A's links"
    );
    assert_eq!(
        common::established(&pair.b, "sport = :15008"),
        1,
        "B's links"
    );
    let (log_a, log_b) = (a.log_text(), b.log_text());
    assert_eq!(
        log_a.matches(" up (links established").count(),
        1,
        "{log_a}"
    );
    assert_eq!(log_b.matches("connected").count(), 1, "{log_b}");

    // --status-file: one link each side, up, every stream counted.
    std::thread::sleep(Duration::from_millis(1500));
    let streams = (CONNECTIONS + 3) as u64;
    for (name, role, sent, received) in [
        (
            "gw-a",
            "dialed",
            LARGE + EACH * CONNECTIONS as u64,
            EACH * CONNECTIONS as u64,
        ),
        (
            "gw-b",
            "accepted",
            EACH * CONNECTIONS as u64,
            LARGE + EACH * CONNECTIONS as u64,
        ),
    ] {
        let text = std::fs::read_to_string(pair.dir.join(format!("{name}.status.json"))).unwrap();
        eprintln!("{name} --status-file: {}", text.trim());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let links = v["links"].as_array().unwrap();
        assert_eq!(links.len(), 1, "{text}");
        let l = &links[0];
        assert_eq!(
            (l["role"].as_str(), l["state"].as_str()),
            (Some(role), Some("up")),
            "{text}"
        );
        assert_eq!(l["links_established"], 1, "{text}");
        assert_eq!(
            (l["streams_open"].as_u64(), l["streams_total"].as_u64()),
            (Some(0), Some(streams)),
            "{text}"
        );
        // Headers of each test connection on top of the payloads.
        assert!(l["bytes_sent"].as_u64().unwrap() >= sent, "{text}");
        assert!(l["bytes_received"].as_u64().unwrap() >= received, "{text}");
        assert_eq!(l["resets"], 2, "{text}");
    }
}

#[test]
fn unknown_peer_certificate_is_refused() {
    if !common::root() {
        eprintln!("unknown_peer_certificate_is_refused: skipped (needs root)");
        return;
    }
    let pair = Pair::new("rogue");
    let ca = Certs::ca(&pair.dir, "test");
    ca.issue(&pair.dir, "b", B_LINK);
    // A's certificate from a CA B does not trust; A itself trusts B's CA.
    Certs::ca(&pair.dir, "other").issue(&pair.dir, "rogue", common::A_LINK);
    let (mut a, mut b) = start_pair(&pair, "rogue");
    b.wait_for("refused: TLS");
    a.wait_for("link to");
    std::thread::sleep(Duration::from_millis(300));
    let log_a = a.log_text();
    assert!(!log_a.contains(" up (links established"), "{log_a}");
    assert_eq!(common::established(&pair.b, "sport = :15008"), 0);
}

#[test]
fn preloaded_gateway_reaches_a_shared_memory_listener() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("preloaded_gateway_reaches_a_shared_memory_listener: skipped (needs root, /usr/bin/python3)");
        return;
    }
    // B's echo server, preloaded, emulated mode: its address exists only
    // in shared memory, so B's gateway, preloaded too, reaches it through
    // shared memory or not at all.
    let pair = Pair::new("preload");
    pair.certs();
    let remote = common::Remote::new(&pair);
    let port = PORT + 1;
    let echo = Python::start(&pair.b, ECHO, &[B_SERVICE, &port.to_string()], &remote.b());
    // No kernel listener: only shared memory reaches it.
    let kernel = common::output(&[
        "ip",
        "netns",
        "exec",
        &pair.b,
        "ss",
        "-Htln",
        &format!("sport = :{port}"),
    ]);
    assert_eq!(kernel.trim(), "", "a kernel listener on {port}");
    let (_a, b) = pair.gateways(&format!("0.0.0.0:{port}"), &[], &remote.b());
    std::thread::scope(|sc| {
        for i in 0..8u64 {
            let ns = pair.a.as_str();
            sc.spawn(move || {
                let mut s = Pair::inside(ns, || TcpStream::connect((B_SERVICE, port)).unwrap());
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut w = s.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    let crc = send_stream(&mut w, 0x77 + i, 4 << 20, None);
                    w.shutdown(Shutdown::Write).unwrap();
                    crc
                });
                let (n, crc) = drain(&mut s, Duration::ZERO);
                assert_eq!((n, crc), (4 << 20, writer.join().unwrap()), "echo {i}");
            });
        }
    });
    drop(echo);
    let log_b = b.log_text();
    assert!(!log_b.contains("CONNECT"), "{log_b}");
}

/// A preloaded client: connects, prints `peer IP PORT` (getpeername), sends
/// `n` random bytes while reading the echo, prints `echo ok N`; or
/// `error ERRNO` when connect fails.
const CLIENT: &str = r#"
import os, socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
try:
    s.connect((host, port))
except OSError as e:
    print("error", e.errno, flush=True)
    sys.exit(0)
print("peer", *s.getpeername(), flush=True)
data = os.urandom(n)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    d = s.recv(65536)
    if not d:
        break
    got += d
t.join()
print("echo", "ok" if bytes(got) == data else "mismatch", len(got), flush=True)
"#;

fn client(ns: &str, env: &[(&str, &str)], port: u16, n: usize) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "/usr/bin/python3",
            "-c",
            CLIENT,
            B_SERVICE,
            &port.to_string(),
            &n.to_string(),
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stage 2: a preloaded program in A connects to B's address (no route to
/// it in A): SHMNET_REMOTE sends it through shared memory to A's gateway,
/// which learns the destination from getsockname; B's gateway reaches B's
/// shared-memory-only echo server. getpeername shows the real address.
/// Without a gateway: kernel TCP in the default mode (no route here:
/// ENETUNREACH), ECONNREFUSED in the emulated one, each counted
/// `fallback_no_gateway`.
#[test]
fn remote_range_reaches_the_gateway_through_shared_memory() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("remote_range_reaches_the_gateway_through_shared_memory: skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new("remote");
    pair.unroute_b();
    pair.certs();
    let remote = common::Remote::new(&pair);
    let (env_a, env_a_never) = (remote.a(), remote.a_never());
    let port = PORT + 2;
    let echo = Python::start(&pair.b, ECHO, &[B_SERVICE, &port.to_string()], &remote.b());

    // No gateway yet.
    let enetunreach = format!("error {}", libc::ENETUNREACH);
    let econnrefused = format!("error {}", libc::ECONNREFUSED);
    assert_eq!(
        client(&pair.a, &env_a, port, 1).trim(),
        enetunreach,
        "default mode, no gateway"
    );
    assert_eq!(
        client(&pair.a, &env_a_never, port, 1).trim(),
        econnrefused,
        "emulated, no gateway"
    );
    // Both counted as such, in either mode (the clients have exited).
    let counts = stats::read(std::path::Path::new(&pair.file("shm-a")));
    assert_eq!(
        (
            counts["fallback_no_gateway"],
            counts["fallback_no_listener"]
        ),
        (2, 0),
        "{counts:?}"
    );

    let (a, _b) = pair.gateways(GATEWAY_ADDR, &remote.a_gateway(), &remote.b());

    let want = format!("peer {B_SERVICE} {port}\necho ok {}\n", 4 << 20);
    std::thread::scope(|sc| {
        for env in [&env_a[..], &env_a_never[..]] {
            for _ in 0..4 {
                let ns = pair.a.as_str();
                let want = want.as_str();
                sc.spawn(move || assert_eq!(client(ns, env, port, 4 << 20), want));
            }
        }
    });
    drop(echo);
    let log_a = a.log_text();
    assert!(!log_a.contains("in no --remote range"), "{log_a}");
}

/// The never-mode gateway: A's gateway itself runs in the emulated mode
/// (its SHMNET_GATEWAY address is a partition address, so its listener is
/// an emulated one): it takes the gateway name all the same, and programs
/// of both modes reach B through it.
#[test]
fn an_emulated_mode_gateway_takes_the_gateway_name() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("an_emulated_mode_gateway_takes_the_gateway_name: skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new("nevergw");
    pair.unroute_b();
    pair.certs();
    let remote = common::Remote::new(&pair);
    let (env_a, env_a_never) = (remote.a(), remote.a_never());
    let port = PORT + 4;
    let echo = Python::start(&pair.b, ECHO, &[B_SERVICE, &port.to_string()], &remote.b());
    let gateway_env: Vec<(&str, &str)> = remote
        .a_gateway()
        .into_iter()
        .chain([("SHMNET_FALLBACK", "never")])
        .collect();
    let (a, _b) = pair.gateways(GATEWAY_ADDR, &gateway_env, &remote.b());
    let want = format!("peer {B_SERVICE} {port}\necho ok {}\n", 1 << 20);
    for env in [&env_a[..], &env_a_never[..]] {
        assert_eq!(client(&pair.a, env, port, 1 << 20), want);
    }
    drop(echo);
    let log_a = a.log_text();
    assert!(!log_a.contains("not the gateway"), "{log_a}");
    // No kernel listener: the gateway's address is emulated.
    let kernel = common::output(&["ip", "netns", "exec", &pair.a, "ss", "-Htln"]);
    assert!(!kernel.contains(":15001"), "{kernel}");
}

/// The veth cut mid-transfer: the connection in flight fails with an error
/// (PINGs go unanswered, the link and its streams are dropped, the local
/// socket reset); after the link comes back a new connection succeeds on a
/// second link.
#[test]
fn link_cut_and_restored() {
    if !common::root() {
        eprintln!("link_cut_and_restored: skipped (needs root)");
        return;
    }
    let pair = Pair::new("cut");
    pair.certs();
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, PORT)).unwrap());
    let (reset_tx, _reset_rx) = mpsc::channel();
    std::thread::spawn(move || serve(listener, reset_tx));
    let fast_pings = ["--ping-interval", "0.3", "--ping-timeout", "1"];
    let (mut a, _b) = start_pair_with(&pair, "a", &fast_pings);
    a.wait_for("links established: 1");
    checksummed(&pair.a, 1, 64 << 10);

    // In flight: a slow transfer that cannot finish before the cut.
    let sent = Arc::new(AtomicU64::new(0));
    let in_flight = {
        let (sent, ns) = (sent.clone(), pair.a.clone());
        std::thread::spawn(move || {
            let mut s = connect(&ns);
            s.write_all(b"s").unwrap();
            s.write_all(&7u64.to_le_bytes()).unwrap();
            s.write_all(&LARGE.to_le_bytes()).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let mut state = 7u64;
            loop {
                fill(&mut state, &mut buf);
                if let Err(e) = s.write_all(&buf) {
                    return e.kind();
                }
                if sent.fetch_add(buf.len() as u64, Ordering::Relaxed) > LARGE {
                    return ErrorKind::Other;
                }
            }
        })
    };
    while sent.load(Ordering::Relaxed) < 1 << 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    common::run(&["ip", "-n", &pair.a, "link", "set", "gwa", "down"]);
    let failed = in_flight.join().unwrap();
    assert!(
        matches!(failed, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "in flight: {failed:?}"
    );
    a.wait_for("down: no PING answer");
    common::run(&["ip", "-n", &pair.a, "link", "set", "gwa", "up"]);
    // A new connection waits for the link, then goes through.
    checksummed(&pair.a, 2, 1 << 20);
    a.wait_for("links established: 2");
}

/// Unmodified programs across: curl in A (preloaded, SHMNET_REMOTE) fetches
/// from nginx in B (preloaded, shared memory only) through both gateways;
/// curl's `remote_ip` (getpeername) is B's address.
#[test]
fn curl_fetches_from_nginx_across_the_gateways() {
    let nginx = std::path::Path::new("/usr/sbin/nginx");
    if !common::root() || !nginx.exists() {
        eprintln!("curl_fetches_from_nginx_across_the_gateways: skipped (needs root, nginx)");
        return;
    }
    let pair = Pair::new("curl");
    pair.unroute_b();
    pair.certs();
    let remote = common::Remote::new(&pair);
    let prefix = pair.dir.join("nginx");
    for dir in [&prefix.join("www"), &prefix.join("tmp")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let port = 8080u16;
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off; master_process off; pid nginx.pid; error_log stderr warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; sendfile on; client_body_temp_path tmp;\n\
             server {{ listen {B_SERVICE}:{port}; root www; }} }}\n"
        ),
    )
    .unwrap();
    let mut content = vec![0u8; 16 << 20];
    fill(&mut 99u64, &mut content);
    std::fs::write(prefix.join("www/big.bin"), &content).unwrap();
    let _nginx = common::Process(
        std::process::Command::new("ip")
            .args(["netns", "exec", &pair.b, "/usr/sbin/nginx", "-p"])
            .arg(format!("{}/", prefix.display()))
            .args(["-c", "nginx.conf", "-e", "stderr"])
            .envs(remote.b())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !prefix.join("nginx.pid").exists() {
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _gateways = pair.gateways(GATEWAY_ADDR, &remote.a_gateway(), &remote.b());
    let out = pair.dir.join("out.bin");
    let curl = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.a, "curl", "-sS", "--max-time", "60"])
        .args(["-w", "%{http_code} %{remote_ip} %{remote_port}", "-o"])
        .arg(&out)
        .arg(format!("http://{B_SERVICE}:{port}/big.bin"))
        .envs(remote.a())
        .output()
        .unwrap();
    assert!(
        curl.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        format!("200 {B_SERVICE} {port}")
    );
    assert!(
        std::fs::read(&out).unwrap() == content,
        "curl's file differs"
    );
}
