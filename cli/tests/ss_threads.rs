//! `shmnet ss` and threads: a process whose main thread exited while
//! others run is live (listed, its file kept).

mod common;

use common::*;

fn state(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("State:").map(|s| s.trim().to_owned()))
        .unwrap_or_default()
}

#[test]
fn process_whose_main_thread_exited_is_listed() {
    let dir = tmpdir("ss-leader");
    let mut server = run_py(&dir, "leader_exit.py", &[]);
    let port = first_line_word(&mut server);
    let mut c = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut c), "connected");
    wait_for("the server's main thread gone", || {
        state(server.pid()).starts_with('Z').then_some(())
    });
    // The client's connect returns before the server's thread accepts
    // (shared memory needs no accept to connect): wait for the accept.
    wait_for("the server's accepted connection", || {
        (of_pid(&ss(&dir, &[]), server.pid()).len() == 2).then_some(())
    });
    for _ in 0..2 {
        let v = ss(&dir, &[]);
        let mine = of_pid(&v, server.pid());
        assert_eq!(mine.len(), 2, "listener and connection: {v}");
        assert_eq!(v["files_removed"], 0, "{v}");
    }
}

/// Forked children whose first use of an inherited connection is from
/// two threads at once (one sends, one reads the echo): once every byte
/// is echoed and read, no queue is shown (no byte counted twice).
#[test]
fn two_threads_first_use_counts_each_byte_once() {
    let dir = tmpdir("ss-2threads");
    let mut server = run_py(&dir, "echo_threads.py", &[]);
    let port = first_line_word(&mut server);
    let trials = 20;
    let mut client = run_py(&dir, "fork_two_threads.py", &[&port, &trials.to_string()]);
    let mut out = Lines::of(&mut client);
    for _ in 0..trials {
        assert_eq!(out.words()[0], "child");
    }
    // The parent closes its copy of the last connection after the fork,
    // maybe after that child printed: its entry may still be listed.
    let conns = wait_for("the children's and the server's connections", || {
        let conns: Vec<_> = sockets(&ss(&dir, &[]))
            .into_iter()
            .filter(|s| s["state"] != "listening")
            .collect();
        (conns.len() == 2 * trials).then_some(conns)
    });
    for s in conns {
        assert_eq!(s["send_queue"], 0, "{s}");
        assert_eq!(s["recv_queue"], 0, "{s}");
    }
}

/// A process that execs ten times keeping its connection is listed with
/// it, in one file (each image's file is removed at its exec).
#[test]
fn many_execs_stay_listed() {
    let dir = tmpdir("ss-reexec");
    let mut server = run_py(&dir, "sink_server.py", &[]);
    let port = first_line_word(&mut server);
    let mut client = run_py(&dir, "reexec.py", &[&port, "10", "0"]);
    assert_eq!(first_line(&mut client), format!("final {}", client.pid()));
    let v = wait_for("the last image's connection", || {
        let v = ss(&dir, &[]);
        (of_pid(&v, client.pid()).len() == 1).then_some(v)
    });
    assert_eq!(of_pid(&v, client.pid())[0]["bytes_sent"], 110, "{v}");
    let mine = status_files(&dir)
        .iter()
        .filter(|n| n.starts_with(&format!("status-{}-", client.pid())))
        .count();
    assert_eq!(mine, 1);
}
