//! `shmnet ss` reads the ring itself (its segment, read-only): a peer that
//! closed, exited or was killed with 10 bytes unread leaves the survivor's
//! row closed-by-peer with RECV-Q 10 (the kernel's CLOSE-WAIT, Recv-Q 10;
//! review #4), and a connection two processes write in turn shows every
//! byte queued (3000, not the highest holder's 2000; review #5).

mod common;

use common::*;
use serde_json::Value;

fn server_row(v: &Value, pid: u32) -> Option<Value> {
    let c = connections(v, pid);
    (c.len() == 1).then(|| c[0].clone())
}

#[test]
fn a_peer_gone_with_data_unread_leaves_close_wait() {
    for mode in ["close", "exit", "kill"] {
        let dir = tmpdir(&format!("ring-peer-{mode}"));
        let mut server = run_py(&dir, "idle_server.py", &[]);
        let port = first_line(&mut server);
        let arg = if mode == "kill" { "stay" } else { mode };
        let mut client = run_py(&dir, "send_close.py", &[&port, arg]);
        assert_eq!(first_line(&mut client), "sent");
        if mode == "kill" {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(client.pid() as i32, libc::SIGKILL) };
        }
        if mode != "close" {
            client.wait_exit();
        }
        let row = wait_for(&format!("{mode}: the server's row closed-by-peer"), || {
            server_row(&ss(&dir, &[]), server.pid()).filter(|r| r["state"] == "closed-by-peer")
        });
        assert_eq!(row["recv_queue"], 10, "{mode}: {row}");
        assert_eq!(row["send_queue"], 0, "{mode}: {row}");
        assert!(connections(&ss(&dir, &[]), client.pid()).is_empty());
    }
}

#[test]
fn two_writers_in_turn_show_every_byte_queued() {
    let dir = tmpdir("ring-two-writers");
    let mut server = run_py(&dir, "idle_server.py", &[]);
    let port = first_line(&mut server);
    let mut writers = run_py(&dir, "two_writers.py", &[&port]);
    let w = first_line(&mut writers);
    let words: Vec<&str> = w.split_whitespace().collect();
    let (parent, child): (u32, u32) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    let v = wait_for("the server's row and both writers'", || {
        let v = ss(&dir, &[]);
        (server_row(&v, server.pid()).is_some()
            && connections(&v, parent).len() == 1
            && connections(&v, child).len() == 1)
            .then_some(v)
    });
    let srv = server_row(&v, server.pid()).unwrap();
    assert_eq!(srv["recv_queue"], 3000, "{srv}");
    assert_eq!(srv["state"], "established");
    for pid in [parent, child] {
        let c = &connections(&v, pid)[0];
        assert_eq!(c["send_queue"], 3000, "{c}");
        assert_eq!(c["recv_queue"], 0, "{c}");
    }
}
