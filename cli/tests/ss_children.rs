//! `shmnet ss` with many short-lived forked children: a fork-per-connection
//! server's children claim in their parent's status file and leave none of
//! their own; entries of children that are gone (left with `_exit`, or
//! killed after switching user) are reused once the file is full.

mod common;

use common::*;

/// More connections than a status file has entries (1022).
const CONNECTIONS: &str = "1100";

/// Children that `_exit` leave no file (no 128 KiB per connection), and
/// their entries in the server's file are reused: every socket is listed.
#[test]
fn fork_per_connection_children_leave_no_files() {
    let dir = tmpdir("ss-forkexit");
    let mut server = run_py(&dir, "forkexit.py", &[]);
    let port = Lines::of(&mut server).words()[1].clone();
    let mut client = run_py(&dir, "connect_n.py", &[&port, CONNECTIONS]);
    assert_eq!(first_line(&mut client), format!("done {CONNECTIONS}"));
    let files = status_files(&dir);
    let client_side = format!("status-{}-", client.pid());
    let server_side = format!("status-{}-", server.pid());
    assert!(
        files
            .iter()
            .all(|f| f.starts_with(&client_side) || f.starts_with(&server_side)),
        "{} files: {:?}...",
        files.len(),
        &files[..files.len().min(8)]
    );
    assert_eq!(files.len(), 2, "{files:?}");
    let v = ss(&dir, &[]);
    assert_eq!(v["not_listed"], 0, "{v}");
    assert_eq!(listening(&v, server.pid()).len(), 1, "{v}");
}

/// Workers that switched user (they write into the master's file) and
/// were killed: their entries are reused, the table never fills.
#[test]
fn entries_of_killed_workers_are_reused() {
    if effective_uid() != 0 {
        eprintln!("ss_children.rs: not root: workers cannot switch user; skipped");
        return;
    }
    let dir = tmpdir("ss-respawn");
    let mut master = run_py(&dir, "respawn.py", &[CONNECTIONS]);
    let mut out = Lines::of(&mut master);
    let port = out.words()[1].clone();
    let mut client = run_py(
        &dir,
        "connect_n.py",
        &[&port, CONNECTIONS, "0123456789", "k"],
    );
    assert_eq!(first_line(&mut client), format!("done {CONNECTIONS}"));
    assert_eq!(out.words(), ["spawned", CONNECTIONS]);
    let v = ss(&dir, &[]);
    assert_eq!(v["not_listed"], 0, "{v}");
    assert_eq!(listening(&v, master.pid()).len(), 1, "{v}");
}

/// Sweeps (where a program makes its file, and at exit) look at up to 64
/// names from a rotating place: with more live files than that, the files
/// of killed programs still go.
#[test]
fn sweeps_get_through_many_live_files() {
    let dir = tmpdir("ss-sweep");
    let mut run = run_py(
        &dir,
        "sweep_progress.py",
        &[dir.to_str().unwrap(), "70", "30", "20"],
    );
    assert_eq!(first_line(&mut run), "dead files left 0");
}
