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

/// Accepts one connection for 3 s at most: prints `peer IP` or `none`.
const PATIENT_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4)
s.settimeout(3)
print("ready", flush=True)
try:
    c, a = s.accept()
    print("peer", a[0], flush=True)
except socket.timeout:
    print("none", flush=True)
"#;

/// Binds argv[3] (with IP_TRANSPARENT when argv[4] says so), connects:
/// prints `connected` or the errno's name.
const BOUND_CLIENT: &str = r#"
import errno, socket, sys
s = socket.socket()
if sys.argv[4] == "transparent":
    s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
s.bind((sys.argv[3], 0))
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"#;

/// (client's answer, what the server saw) for a client in `cli_ns` bound
/// to `from`.
fn bound_exchange(
    srv_ns: &Netns,
    cli_ns: &Netns,
    (host, port, parts): (&str, &str, &str),
    from: &str,
    how: &str,
) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("shmnet-srcbound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut srv = srv_ns.preloaded(python());
    srv.args(["-c", PATIENT_SERVER, host, port]);
    emulated(&mut srv, parts, &dir);
    let mut srv = srv.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(srv.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let mut cli = cli_ns.preloaded(python());
    cli.args(["-c", BOUND_CLIENT, host, port, from, how]);
    emulated(&mut cli, parts, &dir);
    let out = cli.output().unwrap();
    let seen = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    let _ = srv.kill();
    let _ = srv.wait();
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (answer, seen)
}

/// A (10.211.19.1) routes the emulated 10.211.20.0/24 to B, which serves
/// 10.211.20.5 (SHMNET_DIR shared). A client of A bound to 127.0.0.1 gets
/// the kernel's EINVAL (a loopback source cannot leave its namespace), and
/// root of A with an IP_TRANSPARENT bind to an address it does not have is
/// not believed by B's listener (root of another namespace has no
/// CAP_NET_ADMIN there). Before, B's server saw 127.0.0.1 (its own
/// loopback) and the made-up address.
#[test]
fn a_connector_of_another_namespace_claims_only_its_own_addresses() {
    if skip_unless_root("a_connector_of_another_namespace_claims_only_its_own_addresses") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(19);
    ip(&[
        "-n",
        a.name(),
        "route",
        "add",
        "10.211.20.0/24",
        "via",
        "10.211.19.2",
    ]);
    let dest = ("10.211.20.5", "18190", "10.211.20.0/24");
    let loopback = bound_exchange(&b, &a, dest, "127.0.0.1", "plain");
    assert_eq!(loopback, ("EINVAL".to_string(), "none".to_string()));
    let (_, seen) = bound_exchange(&b, &a, dest, "10.211.21.9", "transparent");
    assert_ne!(seen, "peer 10.211.21.9");
    // Its own address still goes through (the route's check).
    let own = bound_exchange(&b, &a, dest, "10.211.19.1", "plain");
    assert_eq!(
        own,
        ("connected".to_string(), "peer 10.211.19.1".to_string())
    );
}
