//! The local address an emulated connection gets when the program did not
//! bind one is the kernel's choice (docs/compatibility.md): for a
//! destination that is one of the namespace's own addresses, that address;
//! for one routed elsewhere, the route's source — on both ends
//! (getsockname at the client, getpeername at the server). Before, every
//! non-loopback partition address got 127.0.0.1 in the emulated mode, so
//! servers' loopback-only rules admitted such clients (found by the gateway
//! review, 2026-12-06).
//!
//! Needs root (namespaces: 10.211.16.x and 10.211.17.x only inside them).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::host::{skip_unless_root, Netns};
use common::python;

/// Accepts one connection, prints `peer IP` (getpeername), sends a byte.
const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4)
print("ready", flush=True)
c, a = s.accept()
print("peer", a[0], flush=True)
c.sendall(b"x")
c.close()
"#;

/// Connects, prints `local IP` (getsockname), reads the server's byte.
const CLIENT: &str = r#"
import socket, sys
s = socket.socket()
s.connect((sys.argv[1], int(sys.argv[2])))
print("local", s.getsockname()[0], flush=True)
assert s.recv(1) == b"x"
"#;

fn emulated(cmd: &mut Command, partitions: &str, dir: &Path) {
    cmd.env("SHMNET_PARTITIONS", partitions)
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", dir);
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the server in `srv_ns` and the client in `cli_ns` (both preloaded,
/// emulated) to `host:port`; returns (client's local IP, server's peer IP).
fn exchange(
    srv_ns: &Netns,
    cli_ns: &Netns,
    host: &str,
    port: &str,
    parts: &str,
) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("shmnet-srcaddr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut srv = srv_ns.preloaded(python());
    srv.args(["-c", SERVER, host, port]);
    emulated(&mut srv, parts, &dir);
    let mut srv = srv.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(srv.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let mut cli = cli_ns.preloaded(python());
    cli.args(["-c", CLIENT, host, port]);
    emulated(&mut cli, parts, &dir);
    let out = cli.output().unwrap();
    let peer = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (local, peer)
}

/// One namespace whose `lo` holds 10.211.16.1 (a partition address):
/// a client of it is 10.211.16.1 at both ends, as over kernel TCP.
#[test]
fn a_local_partition_address_is_its_own_source() {
    if skip_unless_root("a_local_partition_address_is_its_own_source") {
        return;
    }
    let ns = Netns::create();
    ip(&[
        "-n",
        ns.name(),
        "addr",
        "add",
        "10.211.16.1/32",
        "dev",
        "lo",
    ]);
    let got = exchange(&ns, &ns, "10.211.16.1", "18160", "10.211.16.0/24");
    assert_eq!(
        got,
        (
            "local 10.211.16.1".to_string(),
            "peer 10.211.16.1".to_string()
        )
    );
}

/// Namespaces A (10.211.17.1) and B (10.211.17.2) on a veth pair; B serves
/// the emulated address 10.211.18.5, which A routes through B: A's client
/// is 10.211.17.1 (the route's source) at both ends.
#[test]
fn a_routed_partition_address_takes_the_routes_source() {
    if skip_unless_root("a_routed_partition_address_takes_the_routes_source") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(17);
    ip(&[
        "-n",
        a.name(),
        "route",
        "add",
        "10.211.18.0/24",
        "via",
        "10.211.17.2",
    ]);
    let got = exchange(&b, &a, "10.211.18.5", "18170", "10.211.18.0/24");
    assert_eq!(
        got,
        (
            "local 10.211.17.1".to_string(),
            "peer 10.211.17.1".to_string()
        )
    );
}
