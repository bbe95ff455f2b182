//! A gateway that found its name (`shmnet.4/tcp/gateway`) held by another
//! process takes it back once that process is gone, and then carries
//! connections (found by the first adversarial review: it kept saying
//! `listening` without the name, for good). Needs root (ip netns).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Certs, Gateway, Pair, A_LINK, B_LINK, B_RANGE, B_SERVICE};

const PORT: u16 = 7600;

/// Holds the gateway name (not preloaded), says `held`, waits to be killed.
const SQUATTER: &str = r#"
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0shmnet.4/tcp/gateway")
s.listen(1)
print("held", flush=True)
time.sleep(120)
"#;

const ECHO: &str = r#"
import socket, sys, threading
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
def echo(c):
    while (d := c.recv(65536)):
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
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

fn spawn(ns: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> common::Process {
    let mut p = common::Process(
        Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/python3", "-c", script])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line == "held\n" || line == "ready\n", "{line:?}");
    p
}

#[test]
fn a_squatted_gateway_name_is_taken_back() {
    if !common::root() || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("a_squatted_gateway_name_is_taken_back: skipped (needs root, /usr/bin/python3)");
        return;
    }
    let pair = Pair::new("squat");
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
    let _echo = spawn(&pair.b, ECHO, &[B_SERVICE, &PORT.to_string()], &env_b);
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

    let squatter = spawn(&pair.a, SQUATTER, &[], &[]);
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
