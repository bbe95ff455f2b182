//! Early data (gateway/src/early.rs): a client's bytes go on its CONNECT
//! stream before the peer's 200. A peer that answers only once it has the
//! bytes (the proof they came early) and that first refuses the stream
//! with GOAWAY(last-stream-id 0) gets them exactly once, on the next link;
//! a refused destination still resets the client; a request and FIN sent
//! at once are answered whole. Needs root (ip netns).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use common::{count_crc, sink, Gateway, Pair, Python, B_SERVICE, PEER};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A raw HTTP/2 peer gateway over mutual TLS at argv[1]:argv[2] (certs in
/// argv[3]). The first stream's bytes and END_STREAM are taken, then it
/// is refused (argv[4] `goaway`: GOAWAY(last-stream-id 0); `refuse`:
/// RST_STREAM(REFUSED_STREAM)): not processed, so all of them must come
/// again. Every other stream is answered (200,
/// its bytes echoed, END_STREAM) only once its END_STREAM came, so its
/// bytes came before the answer. Prints what each connection received.
const PEER_GATEWAY: &str = r#"
import socket, ssl, struct, sys, threading
host, port, d, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
refused = []
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/b.pem", d + "/b.key")
ctx.load_verify_locations(d + "/test-ca.pem"); ctx.verify_mode = ssl.CERT_REQUIRED
ctx.set_alpn_protocols(["h2"])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port)); srv.listen(16)
print("ready", flush=True)
def frame(t, f, sid, p=b""):
    return struct.pack(">I", len(p))[1:] + bytes([t, f]) + struct.pack(">I", sid) + p
def recvn(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c: raise EOFError
        b += c
    return b
def serve(raw, which):
    got = {}
    try:
        s = ctx.wrap_socket(raw, server_side=True)
        recvn(s, 24); s.sendall(frame(4, 0, 0))
        while True:
            h = recvn(s, 9); ln = int.from_bytes(h[:3], "big"); t, f = h[3], h[4]
            sid = int.from_bytes(h[5:9], "big") & 0x7fffffff; p = recvn(s, ln)
            if t == 4 and not f & 1: s.sendall(frame(4, 1, 0))
            elif t == 6 and not f & 1: s.sendall(frame(6, 1, 0, p))
            elif t == 1:
                print(f"conn {which}: CONNECT on stream {sid}", flush=True)
                got[sid] = b""
            elif t == 0:
                got[sid] += p
                if ln:
                    s.sendall(frame(8, 0, 0, struct.pack(">I", ln)) + frame(8, 0, sid, struct.pack(">I", ln)))
            if t == 0 and f & 1 and not refused:
                refused.append(sid)
                if mode == "goaway":
                    s.sendall(frame(7, 0, 0, struct.pack(">II", 0, 0)))
                    print(f"conn {which}: stream {sid}: {len(got[sid])} bytes and END_STREAM, then GOAWAY(last 0) sent", flush=True)
                else:
                    s.sendall(frame(3, 0, sid, struct.pack(">I", 7)))
                    print(f"conn {which}: stream {sid}: {len(got[sid])} bytes and END_STREAM, then REFUSED_STREAM sent", flush=True)
            elif t == 0 and f & 1:
                data = got[sid]
                print(f"conn {which}: stream {sid}: {len(data)} bytes and END_STREAM before the answer", flush=True)
                out = frame(1, 4, sid, b"\x88")  # :status 200
                for i in range(0, len(data), 16384):
                    out += frame(0, 0, sid, data[i:i + 16384])
                s.sendall(out + frame(0, 1, sid))
    except Exception as e:
        print(f"conn {which}: ended {e!r}", flush=True)
n = 0
while True:
    c, _ = srv.accept(); n += 1
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
"#;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(17) ^ seed).collect()
}

fn connect(ns: &str, port: u16) -> TcpStream {
    Pair::inside(ns, || {
        let s = TcpStream::connect((B_SERVICE, port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    })
}

/// Sends `data` and FIN at once; what comes back until EOF.
fn ask(ns: &str, port: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = connect(ns, port);
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

#[test]
fn early_bytes_refused_by_goaway_arrive_once_on_the_next_link() {
    refused_once(
        "goaway",
        "conn 1: stream 1: 40000 bytes and END_STREAM, then GOAWAY(last 0) sent",
        "conn 2: stream 1:",
    );
}

#[test]
fn early_bytes_of_a_refused_stream_arrive_once_on_the_next_stream() {
    refused_once(
        "refuse",
        "conn 1: stream 1: 40000 bytes and END_STREAM, then REFUSED_STREAM sent",
        "conn 1: stream 3:",
    );
}

/// A client sends 40,000 bytes and FIN at once; the peer refuses the
/// first stream (`mode`) after taking them (`refusal`: its line), then
/// answers the next (`answered`: its line's start) only once the bytes
/// came again.
fn refused_once(mode: &str, refusal: &str, answered: &str) {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("refused_once({mode}): skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new(&format!("early-{mode}"));
    pair.certs();
    let (host, port) = PEER.split_once(':').unwrap();
    let dir = pair.dir.to_str().unwrap();
    let peer = Python::start(&pair.b, PEER_GATEWAY, &[host, port, dir, mode], &[]);
    let status = pair.file("a.json");
    let mut a = pair.gateway_a("a", "0.0.0.0:9300", &["--status-file", &status], &[]);
    a.wait_for("links established: 1");

    // Less than early::LIMIT: all of it goes before the answer.
    let sent = pattern(40_000, 5);
    let back = ask(&pair.a, 9300, &sent).expect("the client's exchange");
    assert!(
        back == sent,
        "echo: {} bytes, sent {}",
        back.len(),
        sent.len()
    );

    // Counted once: one stream, its bytes once.
    wait_status(
        &status,
        &[
            "\"streams_total\":1,",
            "\"bytes_sent\":40000,",
            "\"streams_open\":0,",
        ],
    );
    // The stream was sent again by A itself (after a GOAWAY: not held
    // back by its link task, which had not seen the GOAWAY yet).
    let log = a.log_text();
    let retried = if mode == "goaway" {
        "): again on the next link with its"
    } else {
        "): again with its"
    };
    assert!(log.contains(retried), "{log}");
    drop(a);
    drop(peer.process);
    let lines: Vec<String> = peer.lines.map_while(Result::ok).collect();
    let text = lines.join("\n");
    assert!(text.contains(refusal), "{text}");
    let want = format!("{answered} 40000 bytes and END_STREAM before the answer");
    assert!(text.contains(&want), "{text}");
    assert_eq!(text.matches("before the answer").count(), 1, "{text}");
}

#[test]
fn a_request_and_fin_at_once_are_answered_and_refusals_still_reset() {
    if !common::root() {
        eprintln!(
            "a_request_and_fin_at_once_are_answered_and_refusals_still_reset: skipped (needs root)"
        );
        return;
    }
    let pair = Pair::new("early");
    pair.certs();
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, 9400)).unwrap());
    std::thread::spawn(move || sink(listener));
    // B serves B_SERVICE only: 10.211.2.3 is refused (403); port 9401 is
    // closed (503).
    let mut args = vec!["--peer-listen", PEER, "--serve", "10.211.2.2/32"];
    let id = pair.identity("b");
    args.extend(id.iter().map(String::as_str));
    let mut b = Gateway::start(&pair.b, &pair.dir, "gw-b", &args);
    b.wait_for("peers: listening");
    let status = pair.file("a.json");
    let mut a = pair.gateway_a(
        "a",
        "0.0.0.0:9400",
        &["--listen", "0.0.0.0:9401", "--status-file", &status],
        &[],
    );
    a.wait_for("links established: 1");

    // Below, at and past early::LIMIT (64 KiB), each with FIN at once.
    for n in [10usize, 64 << 10, 1 << 20] {
        let sent = pattern(n, n as u8);
        let back = ask(&pair.a, 9400, &sent).expect("the exchange");
        assert_eq!(back, count_crc(&sent), "{n} bytes and FIN");
    }

    // Refused after the bytes went early: the client is reset all the
    // same, by a closed port (503) and by a destination B does not serve
    // (403).
    assert_eq!(
        refused(&pair.a, B_SERVICE, 9401),
        ErrorKind::ConnectionReset
    );
    a.wait_for("peer answered 503");
    assert_eq!(
        refused(&pair.a, "10.211.2.3", 9400),
        ErrorKind::ConnectionReset
    );
    a.wait_for("peer answered 403");
    let log = a.log_text();
    assert_eq!(log.matches("peer answered").count(), 2, "{log}");
    // Streams and bytes of the answered connections only, none open.
    let sent = 10 + (64 << 10) + (1 << 20);
    wait_status(
        &status,
        &[
            "\"streams_total\":3,",
            &format!("\"bytes_sent\":{sent},"),
            "\"streams_open\":0,",
            "\"resets\":0",
        ],
    );
    drop(b);
}

/// Sends 1000 bytes at once, then reads: how the connection failed.
fn refused(ns: &str, ip: &str, port: u16) -> ErrorKind {
    let mut s = Pair::inside(ns, || TcpStream::connect((ip, port)).unwrap());
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    if let Err(e) = s.write_all(&pattern(1000, 1)) {
        return e.kind();
    }
    let mut buf = [0u8; 100];
    match s.read(&mut buf) {
        Ok(n) => panic!("read {n} bytes from a refused connection"),
        Err(e) => e.kind(),
    }
}

/// Waits (up to 30 s: the file is rewritten every second) for A's status
/// file to hold every one of `want`.
fn wait_status(path: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if want.iter().all(|w| text.contains(w)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} not in {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
