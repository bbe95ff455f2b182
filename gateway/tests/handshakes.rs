//! Idle connections to the peer port that never start TLS cannot take
//! gateway B's fds: past 16 handshakes in progress from one address (256
//! in all) new ones are closed at once, and a gateway from another address
//! still links up (found by the first adversarial review: 3000 idle
//! connections exhausted B's fds for the 10 s handshake timeout). Needs
//! root (ip netns).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Pair, B_SERVICE, PEER};

const PORT: u16 = 7500;
const IDLE: usize = 100;
/// A second address of A's, for the idle connections.
const IDLER: &str = "10.211.0.3";

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

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn idle_connections_without_a_handshake_cannot_take_the_fds() {
    if !common::root() {
        eprintln!("idle_connections_without_a_handshake_cannot_take_the_fds: skipped (needs root)");
        return;
    }
    let pair = Pair::new("idle");
    common::run(&[
        "ip",
        "-n",
        &pair.a,
        "addr",
        "add",
        &format!("{IDLER}/24"),
        "dev",
        "gwa",
    ]);
    pair.certs();
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, PORT)).unwrap());
    std::thread::spawn(move || echo(listener));
    let mut b = pair.gateway_b(&[], &[]);
    let before = fds(b.child.id());
    let idle: Vec<std::net::TcpStream> = Pair::inside(&pair.a, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut held = Vec::new();
            for _ in 0..IDLE {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(format!("{IDLER}:0").parse().unwrap()).unwrap();
                let c = s.connect(PEER.parse().unwrap()).await.unwrap();
                held.push(c.into_std().unwrap());
            }
            held
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let during = fds(b.child.id());
    let mut a = pair.gateway_a("a", &format!("0.0.0.0:{PORT}"), &[], &[]);
    a.wait_for("links established: 1");
    let mut s = Pair::inside(&pair.a, || TcpStream::connect((B_SERVICE, PORT)).unwrap());
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"x").unwrap();
    let mut got = [0u8; 1];
    s.read_exact(&mut got).unwrap();
    drop(idle);
    assert!(
        during < before + 16 + 4,
        "B held {during} fds with {IDLE} idle connections ({before} before)"
    );
    b.wait_for("too many handshakes in progress from this address");
}
