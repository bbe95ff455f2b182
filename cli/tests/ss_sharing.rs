//! `shmnet ss` on a socket held by several processes (a parent and the
//! child it handed the connection to): queues and shutdowns are the
//! socket's, whichever holder moved the bytes or shut it; and an entry in
//! another user's file does not pair with ours.

mod common;

use common::*;
use std::process::{Command, Stdio};

/// `server` (a helper printing "port PORT", then "child PID" once its
/// child has the connection) and a client that sent it 100000 bytes:
/// (server, client, child).
fn handed_to_a_child(dir: &std::path::Path, server: &str) -> (Background, Background, u32) {
    let mut server = run_py(dir, server, &[]);
    let mut out = Lines::of(&mut server);
    let port = out.words()[1].clone();
    let mut client = run_py(dir, "sender.py", &[&port]);
    assert_eq!(first_line(&mut client), "sent 100000");
    let child: u32 = out.words()[1].parse().unwrap();
    (server, client, child)
}

/// The parent keeps a connection it handed to a child that read all
/// 100000 bytes: no holder shows a receive queue.
#[test]
fn queues_are_the_sockets_not_a_holders() {
    let dir = tmpdir("ss-keepfd");
    let (server, client, child) = handed_to_a_child(&dir, "keepfd_server.py");
    let v = ss(&dir, &[]);
    for pid in [server.pid(), child, client.pid()] {
        let c = connections(&v, pid);
        assert_eq!(c.len(), 1, "{v}");
        assert_eq!(c[0]["recv_queue"], 0, "{v}");
        assert_eq!(c[0]["send_queue"], 0, "{v}");
    }
}

/// A child shuts down writing on a connection its parent keeps: both
/// holders show it half-closed, the peer closed-by-peer.
#[test]
fn a_holders_shutdown_is_the_sockets() {
    let dir = tmpdir("ss-shutchild");
    let (server, client, child) = handed_to_a_child(&dir, "shutchild_server.py");
    let v = ss(&dir, &[]);
    for pid in [server.pid(), child] {
        assert_eq!(connections(&v, pid)[0]["state"], "half-closed", "{v}");
    }
    assert_eq!(
        connections(&v, client.pid())[0]["state"],
        "closed-by-peer",
        "{v}"
    );
}

/// In a shared (1777) directory, nobody's file naming our connection's
/// segment (with huge counters and a shutdown) changes nothing of ours.
#[test]
fn another_users_entry_does_not_pair_with_ours() {
    if effective_uid() != 0 {
        eprintln!("ss_sharing.rs: not root: cannot act as another user; skipped");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir("ss-forged");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut server = run_py(&dir, "server.py", &[]);
    let port = first_line(&mut server);
    let mut client = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut client), "connected");
    let before = wait_for("the client's connection", || {
        let v = ss(&dir, &[]);
        (connections(&v, client.pid()).len() == 1 && connections(&v, server.pid()).len() == 1)
            .then_some(v)
    });
    let mut forger = Background::spawn(
        Command::new(python())
            .arg(helper("forge_peer.py"))
            .arg(&dir)
            .arg(client.pid().to_string())
            .stdout(Stdio::piped()),
    );
    assert_eq!(first_line(&mut forger), "wrote");
    let after = ss(&dir, &[]);
    for pid in [client.pid(), server.pid()] {
        let (b, a) = (&connections(&before, pid)[0], &connections(&after, pid)[0]);
        for k in ["state", "send_queue", "recv_queue"] {
            assert_eq!(b[k], a[k], "{k}: before {b}, after {a}");
        }
    }
}
