//! A stopping gateway (found by the review of issue 17): what is still
//! open when --drain-timeout runs out is reset at both ends, on the dialing
//! gateway as on the accepting one (goaway.rs), over kernel TCP and shared
//! memory; a local connection whose CONNECT is not answered yet is waited
//! for like a stream; a never-mode gateway whose SHMNET_GATEWAY address is
//! outside SHMNET_PARTITIONS says it is not the gateway. Needs root.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Pair, Python, B_SERVICE, GATEWAY_ADDR};

const TIMEOUT: Duration = Duration::from_secs(60);

/// B's server: reads its first connection until it ends; says how.
fn reader(pair: &Pair, port: u16) -> mpsc::Receiver<Result<usize, ErrorKind>> {
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, port)).unwrap());
    let (told, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(0),
                Ok(_) => {}
                Err(e) => break Err(e.kind()),
            }
        };
        let _ = told.send(end);
    });
    ended
}

fn established(ns: &str, port: u16) -> bool {
    common::established(ns, &format!("sport = :{port}")) > 0
}

fn wait_established(ns: &str, port: u16) {
    let deadline = Instant::now() + TIMEOUT;
    while !established(ns, port) {
        assert!(Instant::now() < deadline, "no connection to B's server");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(g: &common::Gateway) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(g.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
}

#[test]
fn a_dialing_gateway_resets_both_ends_after_its_drain_timeout() {
    if !common::root() {
        return eprintln!("skipped (needs root)");
    }
    let port = 9130;
    let pair = Pair::new("stdial");
    pair.certs();
    let ended = reader(&pair, port);
    let _b = pair.gateway_b(&[], &[]);
    let mut a = pair.gateway_a(
        "a",
        &format!("0.0.0.0:{port}"),
        &["--drain-timeout", "1"],
        &[],
    );
    a.wait_for("links established: 1");
    let mut s = Pair::inside(&pair.a, || TcpStream::connect((B_SERVICE, port)).unwrap());
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"request").unwrap();
    wait_established(&pair.b, port);
    terminate(&a);
    let st = a.child.wait().unwrap();
    let log = a.log_text();
    assert!(st.success(), "{st}\n{log}");
    assert!(
        log.contains("stopped: --drain-timeout passed, 1 streams reset"),
        "{log}"
    );
    let mut b = [0u8; 16];
    let got = s.read(&mut b).map_err(|e| e.kind());
    assert_eq!(got, Err(ErrorKind::ConnectionReset), "A's client\n{log}");
    let end = ended.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(end, Err(ErrorKind::ConnectionReset), "B's server\n{log}");
}

const HOLDING_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"request")
print("ready", flush=True)
try:
    print("recv:", repr(s.recv(100)), flush=True)
except Exception as e:
    print("recv error:", type(e).__name__, flush=True)
"#;

/// Stage 2: A's client and gateway preloaded; the client's leg is shared
/// memory.
#[test]
fn a_preloaded_dialing_gateway_resets_its_shared_memory_leg() {
    if !common::root() {
        return eprintln!("skipped (needs root)");
    }
    let port = 9150;
    let pair = Pair::new("stshm");
    pair.unroute_b();
    pair.certs();
    let remote = common::Remote::new(&pair);
    let ended = reader(&pair, port);
    let _b = pair.gateway_b(&[], &[]);
    let mut a = pair.gateway_a(
        "a",
        GATEWAY_ADDR,
        &["--drain-timeout", "1"],
        &remote.a_gateway(),
    );
    a.wait_for("links established: 1");
    let mut client = Python::start(
        &pair.a,
        HOLDING_CLIENT,
        &[B_SERVICE, &port.to_string()],
        &remote.a(),
    );
    wait_established(&pair.b, port);
    terminate(&a);
    let st = a.child.wait().unwrap();
    let log = a.log_text();
    assert!(st.success(), "{st}\n{log}");
    assert!(log.contains("1 streams reset"), "{log}");
    let line = client.lines.next().map(|l| l.unwrap_or_default());
    assert_eq!(
        line.as_deref(),
        Some("recv error: ConnectionResetError"),
        "{log}"
    );
    let end = ended.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(end, Err(ErrorKind::ConnectionReset), "B's server\n{log}");
}

/// A local connection whose CONNECT B has not answered yet (B's onward
/// connect goes to a neighbour that is not there: ARP gives up after some
/// seconds, and B answers 503) is waited for; it ends with its answer (a
/// reset), not with A's exit.
#[test]
fn a_stopping_gateway_waits_for_a_connection_still_opening() {
    if !common::root() {
        return eprintln!("skipped (needs root)");
    }
    let port = 9140;
    let pair = Pair::new("stopen");
    pair.certs();
    common::run(&[
        "ip",
        "netns",
        "exec",
        &pair.b,
        "ip",
        "route",
        "add",
        "10.211.2.50/32",
        "via",
        "10.211.0.77",
    ]);
    let _b = pair.gateway_b(&[], &[]);
    let mut a = pair.gateway_a(
        "a",
        &format!("0.0.0.0:{port}"),
        &["--drain-timeout", "60"],
        &[],
    );
    a.wait_for("links established: 1");
    let mut s = Pair::inside(&pair.a, || {
        TcpStream::connect(("10.211.2.50", port)).unwrap()
    });
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The gateway has it (the CONNECT is sent) before it is told to stop.
    let deadline = Instant::now() + TIMEOUT;
    while !common::output(&[
        "ip", "netns", "exec", &pair.b, "ss", "-Htn", "state", "syn-sent",
    ])
    .contains("10.211.2.50")
    {
        assert!(Instant::now() < deadline, "B never connected onward");
        std::thread::sleep(Duration::from_millis(20));
    }
    terminate(&a);
    a.wait_for("stopping: GOAWAY to peers, listeners closed; 1 streams open");
    let mut b = [0u8; 16];
    let got = s.read(&mut b).map_err(|e| e.kind());
    let st = a.child.wait().unwrap();
    let log = a.log_text();
    assert!(st.success(), "{st}\n{log}");
    assert_eq!(got, Err(ErrorKind::ConnectionReset), "{log}");
    let answered = log.find("peer answered").expect(&log);
    let stopped = log.find("stopped: every stream ended").expect(&log);
    assert!(answered < stopped, "{log}");
}

/// A never-mode gateway on 127.0.0.1 with SHMNET_PARTITIONS elsewhere has
/// no shared-memory listener and so not the gateway name: it says so.
#[test]
fn a_gateway_address_outside_the_partitions_is_said() {
    if !common::root() {
        return eprintln!("skipped (needs root)");
    }
    let pair = Pair::new("stpart");
    pair.certs();
    let remote = common::Remote::new(&pair);
    let env: Vec<(&str, &str)> = remote
        .a_gateway()
        .into_iter()
        .chain([
            ("SHMNET_FALLBACK", "never"),
            ("SHMNET_PARTITIONS", "10.211.9.0/24"),
        ])
        .collect();
    let mut a = pair.gateway_a("a", GATEWAY_ADDR, &[], &env);
    a.wait_for("local: listening");
    a.wait_for(
        "libshmnet: listen on 127.0.0.1:15001: not the gateway (SHMNET_GATEWAY): 127.0.0.1 is not in SHMNET_PARTITIONS",
    );
}
