//! What a server behind gateway B sees as its client's address
//! (docs/design/gateway.md, "What a server behind a gateway sees"): never
//! loopback. The first adversarial review found nginx's `allow 127.0.0.1`
//! admitting remote clients: B's preloaded onward connect to an emulated
//! (`never`) partition address took 127.0.0.1 as its source. Now B's own
//! address for the destination by default, and with `--original-source`
//! the remote client's side (here the peer gateway's address: the client
//! in A connects to an address A routes to itself, so its own address is
//! the destination's, which is never presented). Needs root (ip netns).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::{Gateway, Pair, Python, A_LINK, B_LINK, B_RANGE, B_SERVICE};

/// A second service range in B, reached through a second gateway in B
/// that presents original sources.
const B_RANGE_2: &str = "10.211.3.0/24";
const B_SERVICE_2: &str = "10.211.3.2";
const PORT: u16 = 7100;

/// Answers every connection with `peer IP` (getpeername) and closes it.
const WHO: &str = r#"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, a = s.accept()
    c.sendall(("peer %s\n" % a[0]).encode())
    c.close()
"#;

fn who(pair: &Pair, env: &[(&str, &str)], host: &str) -> Python {
    Python::start(&pair.b, WHO, &[host, &PORT.to_string()], env)
}

fn ask(pair: &Pair, host: &str) -> String {
    let mut s = Pair::inside(&pair.a, || TcpStream::connect((host, PORT)).unwrap());
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    got.trim().to_string()
}

#[test]
fn servers_behind_b_never_see_remote_clients_as_loopback() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("servers_behind_b_never_see_remote_clients_as_loopback: skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new("who");
    let (a_ns, b_ns) = (pair.a.as_str(), pair.b.as_str());
    common::run(&[
        "ip",
        "-n",
        b_ns,
        "addr",
        "add",
        &format!("{B_SERVICE_2}/32"),
        "dev",
        "lo",
    ]);
    common::run(&[
        "ip", "-n", a_ns, "route", "add", "local", B_RANGE_2, "dev", "lo",
    ]);
    pair.certs();
    let remote = common::Remote::new(&pair);
    let partitions = format!("{B_RANGE},{B_RANGE_2}");
    let mut env_b = remote.b();
    env_b[1].1 = &partitions;
    let _who_1 = who(&pair, &env_b, B_SERVICE);
    let _who_2 = who(&pair, &env_b, B_SERVICE_2);
    let (peer_1, peer_2) = (format!("{B_LINK}:15008"), format!("{B_LINK}:15009"));
    let id_b = pair.identity("b");
    let id_b: Vec<&str> = id_b.iter().map(String::as_str).collect();
    let mut b1 = Gateway::start_with(
        b_ns,
        &pair.dir,
        "gw-b1",
        &[&["--peer-listen", &peer_1, "--serve", B_RANGE][..], &id_b].concat(),
        &env_b,
    );
    let mut b2 = Gateway::start_with(
        b_ns,
        &pair.dir,
        "gw-b2",
        &[
            &[
                "--peer-listen",
                &peer_2,
                "--serve",
                B_RANGE_2,
                "--original-source",
            ][..],
            &id_b,
        ]
        .concat(),
        &env_b,
    );
    b1.wait_for("peers: listening");
    b2.wait_for("peers: listening");
    let id_a = pair.identity("a");
    let id_a: Vec<&str> = id_a.iter().map(String::as_str).collect();
    let (listen, r1, r2) = (
        format!("0.0.0.0:{PORT}"),
        format!("{B_RANGE}={peer_1}"),
        format!("{B_RANGE_2}={peer_2}"),
    );
    let mut a = Gateway::start(
        a_ns,
        &pair.dir,
        "gw-a",
        &[
            &["--listen", &listen, "--remote", &r1, "--remote", &r2][..],
            &id_a,
        ]
        .concat(),
    );
    a.wait_for("links established: 1");
    assert_eq!(
        ask(&pair, B_SERVICE),
        format!("peer {B_SERVICE}"),
        "default: B's own address for the destination"
    );
    assert_eq!(
        ask(&pair, B_SERVICE_2),
        format!("peer {A_LINK}"),
        "--original-source: the client's host"
    );
}
