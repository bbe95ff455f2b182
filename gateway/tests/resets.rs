//! Resets carried across both gateways when every local leg is shared
//! memory (both gateways preloaded, the client in A through
//! SHMNET_REMOTE, the servers in B shared-memory only): a server's
//! abortive close reaches the client as ECONNRESET, a client's abortive
//! close reaches the server as ECONNRESET (RST -> RST_STREAM -> RST), and
//! a closed port in B is a reset in A, never a clean end of stream. The
//! first adversarial review found every one of them arriving as EOF (a
//! truncated transfer looked complete). Needs root (ip netns).

mod common;

use std::process::Command;

use common::{Pair, Python, B_SERVICE, GATEWAY_ADDR};

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
    pair.unroute_b();
    pair.certs();
    let remote = common::Remote::new(&pair);
    let (env_b, env_a) = (remote.b(), remote.a_never());
    let server = Python::start(&pair.b, SERVER, &[B_SERVICE, &PORT.to_string()], &env_b);
    let mut lines = server.lines;

    let _gateways = pair.gateways(GATEWAY_ADDR, &remote.a_gateway(), &env_b);

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
