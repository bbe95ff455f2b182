//! Resets carried across both gateways when every local leg is shared
//! memory (both gateways preloaded, the client in A through
//! SHMNET_REMOTE, the servers in B shared-memory only): a server's
//! abortive close reaches the client as ECONNRESET, a client's abortive
//! close reaches the server as ECONNRESET (RST -> RST_STREAM -> RST), and
//! a closed port in B is a reset in A, never a clean end of stream. The
//! first adversarial review found every one of them arriving as EOF (a
//! truncated transfer looked complete). Needs root (ip netns).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Certs, Gateway, Pair, A_LINK, B_LINK, B_RANGE, B_SERVICE};

const PORT: u16 = 7200;

/// Port PORT: reads a line, sends 4 MiB, closes with SO_LINGER 0.
/// Port PORT+1: reads until an error or the end, prints how it ended.
const SERVER: &str = r#"
import errno, socket, struct, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
def listener(p):
    s = socket.socket()
    s.bind((host, p))
    s.listen(8)
    return s
abort, report = listener(port), listener(port + 1)
print("ready", flush=True)
def aborter():
    while True:
        c, _ = abort.accept()
        c.recv(100)
        c.sendall(b"a" * (4 << 20))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
threading.Thread(target=aborter, daemon=True).start()
while True:
    c, _ = report.accept()
    n = 0
    try:
        while True:
            d = c.recv(65536)
            if not d:
                print("server eof", flush=True)
                break
            n += len(d)
    except OSError as e:
        print("server", errno.errorcode.get(e.errno, e.errno), flush=True)
    c.close()
"#;

/// `abort PORT`: asks, reads until an error or the end, prints how it ended.
/// `reset PORT`: sends 1 MiB, closes with SO_LINGER 0, prints `closed`.
const CLIENT: &str = r#"
import errno, socket, struct, sys
host, case, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port))
if case == "abort":
    # The reset may come before the request is written (a closed port:
    # the gateways answer at once): the send fails with it then.
    try:
        s.sendall(b"go\n")
        while s.recv(65536):
            pass
        print("client eof")
    except OSError as e:
        print("client", errno.errorcode.get(e.errno, e.errno))
else:
    s.sendall(b"r" * (1 << 20))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("closed")
"#;

fn client(ns: &str, env: &[(&str, &str)], case: &str, port: u16) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "/usr/bin/python3", "-c", CLIENT])
        .args([B_SERVICE, case, &port.to_string()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn resets_cross_the_gateways_on_shared_memory_legs() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("resets_cross_the_gateways_on_shared_memory_legs: skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new("rst");
    common::run(&[
        "ip", "-n", &pair.a, "route", "del", "local", B_RANGE, "dev", "lo",
    ]);
    let ca = Certs::ca(&pair.dir, "test");
    ca.issue(&pair.dir, "a", A_LINK);
    ca.issue(&pair.dir, "b", B_LINK);
    let (d, lib) = (pair.dir.to_str().unwrap(), common::lib());
    let lib = lib.to_str().unwrap();
    let (shm_a, shm_b) = (pair.dir.join("shm-a"), pair.dir.join("shm-b"));
    std::fs::create_dir_all(&shm_a).unwrap();
    std::fs::create_dir_all(&shm_b).unwrap();
    let env_b = [
        ("LD_PRELOAD", lib),
        ("SHMNET_PARTITIONS", B_RANGE),
        ("SHMNET_FALLBACK", "never"),
        ("SHMNET_DIR", shm_b.to_str().unwrap()),
    ];
    let gateway_addr = "127.0.0.1:15001";
    let env_a_gateway = [
        ("LD_PRELOAD", lib),
        ("SHMNET_GATEWAY", gateway_addr),
        ("SHMNET_DIR", shm_a.to_str().unwrap()),
    ];
    let env_a = [
        ("LD_PRELOAD", lib),
        ("SHMNET_REMOTE", B_RANGE),
        ("SHMNET_FALLBACK", "never"),
        ("SHMNET_DIR", shm_a.to_str().unwrap()),
    ];
    let mut server = common::Process(
        Command::new("ip")
            .args(["netns", "exec", &pair.b, "/usr/bin/python3", "-c", SERVER])
            .args([B_SERVICE, &PORT.to_string()])
            .envs(env_b)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let peer = format!("{B_LINK}:15008");
    let f = |n: &str| format!("{d}/{n}");
    let mut b = Gateway::start_with(
        &pair.b,
        &pair.dir,
        "gw-b",
        &[
            "--peer-listen",
            &peer,
            "--serve",
            B_RANGE,
            "--cert",
            &f("b.pem"),
            "--key",
            &f("b.key"),
            "--ca",
            &f("test-ca.pem"),
        ],
        &env_b,
    );
    b.wait_for("peers: listening");
    let mut a = Gateway::start_with(
        &pair.a,
        &pair.dir,
        "gw-a",
        &[
            "--listen",
            gateway_addr,
            "--remote",
            &format!("{B_RANGE}={peer}"),
            "--cert",
            &f("a.pem"),
            "--key",
            &f("a.key"),
            "--ca",
            &f("test-ca.pem"),
        ],
        &env_a_gateway,
    );
    a.wait_for("links established: 1");

    assert_eq!(
        client(&pair.a, &env_a, "abort", PORT),
        "client ECONNRESET",
        "the server's SO_LINGER 0 close, seen by the client in A"
    );
    assert_eq!(client(&pair.a, &env_a, "reset", PORT + 1), "closed");
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "server ECONNRESET",
        "the client's SO_LINGER 0 close, seen by the server in B"
    );
    assert_eq!(
        client(&pair.a, &env_a, "abort", PORT + 2),
        "client ECONNRESET",
        "a closed port in B"
    );
}
