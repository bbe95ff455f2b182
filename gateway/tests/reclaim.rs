//! A gateway that found its name (`shmnet.5/tcp/gateway`) held by another
//! process takes it back once that process is gone, and then carries
//! connections (found by the first adversarial review: it kept saying
//! `listening` without the name, for good). Needs root (ip netns).

mod common;

use std::process::Command;

use common::{Pair, Python, B_SERVICE, ECHO, GATEWAY_ADDR};

const PORT: u16 = 7600;

/// Holds the gateway name (not preloaded), says `ready`, waits to be killed.
const SQUATTER: &str = r#"
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0shmnet.5/tcp/gateway")
s.listen(1)
print("ready", flush=True)
time.sleep(120)
"#;

/// A preloaded client in A: connects, sends, prints what came back.
const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"through")
s.shutdown(socket.SHUT_WR)
got = b""
while (d := s.recv(100)):
    got += d
print(got.decode())
"#;

#[test]
fn a_squatted_gateway_name_is_taken_back() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("a_squatted_gateway_name_is_taken_back: skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new("squat");
    pair.unroute_b();
    pair.certs();
    let remote = common::Remote::new(&pair);
    let (env_b, env_a) = (remote.b(), remote.a_never());
    let _echo = Python::start(&pair.b, ECHO, &[B_SERVICE, &PORT.to_string()], &env_b);
    let _b = pair.gateway_b(&[], &env_b);

    let squatter = Python::start(&pair.a, SQUATTER, &[], &[]);
    let mut a = pair.gateway_a("a", GATEWAY_ADDR, &[], &remote.a_gateway());
    a.wait_for("not the gateway");
    a.wait_for("links established: 1");
    drop(squatter);
    a.wait_for("the gateway name is ours again");

    let out = Command::new("ip")
        .args(["netns", "exec", &pair.a, "/usr/bin/python3", "-c", CLIENT])
        .args([B_SERVICE, &PORT.to_string()])
        .envs(env_a)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through",
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
