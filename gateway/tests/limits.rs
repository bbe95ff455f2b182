//! A local connection beyond the peer's stream limit is refused (reset)
//! after --open-timeout rather than left hanging (found by the first
//! adversarial review: the 1001st stream hung for good), and goes through
//! once a stream ends. Here B allows 2 streams (--max-streams 2) and A
//! waits 1 s. Needs root (ip netns).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Pair, B_SERVICE};

const PORT: u16 = 7300;

fn echo(listener: TcpListener) {
    for c in listener.incoming() {
        let Ok(mut c) = c else { return };
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// A connection from A whose first byte came back (its stream is open).
fn open(pair: &Pair) -> TcpStream {
    let mut s = Pair::inside(&pair.a, || TcpStream::connect((B_SERVICE, PORT)).unwrap());
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    s
}

#[test]
fn a_stream_past_the_peers_limit_is_refused_not_left_hanging() {
    if !common::root() {
        eprintln!(
            "a_stream_past_the_peers_limit_is_refused_not_left_hanging: skipped (needs root)"
        );
        return;
    }
    let pair = Pair::new("limit");
    pair.certs();
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, PORT)).unwrap());
    std::thread::spawn(move || echo(listener));
    let _b = pair.gateway_b(&["--max-streams", "2"], &[]);
    let listen = format!("0.0.0.0:{PORT}");
    let mut a = pair.gateway_a("a", &listen, &["--open-timeout", "1"], &[]);
    a.wait_for("links established: 1");
    let first = open(&pair);
    let _second = open(&pair);

    let mut third = Pair::inside(&pair.a, || TcpStream::connect((B_SERVICE, PORT)).unwrap());
    third
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The reset shows at the read, or at the write if it came first.
    let got = match third.write_all(b"x") {
        Err(e) => Err(e),
        Ok(()) => third.read(&mut [0u8; 1]),
    };
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the third stream: {got:?} (want a reset)"
    );
    a.wait_for("stream limit");

    drop(first);
    // The first stream's end frees a slot (B learns it from A's END_STREAM
    // and its server's close): a new connection goes through, retried
    // while the end is on its way.
    let mut fourth = None;
    for _ in 0..50 {
        let mut s = Pair::inside(&pair.a, || TcpStream::connect((B_SERVICE, PORT)).unwrap());
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let _ = s.write_all(b"y");
        let mut c = [0u8; 1];
        if s.read_exact(&mut c).is_ok() {
            fourth = Some(c[0]);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fourth, Some(b'y'), "after a stream ended");
}
