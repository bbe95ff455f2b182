//! `shmnet ss` on real processes: a preloaded server with an idle, a
//! slowly streaming and a half-closed client, each listed with its
//! addresses, state and growing byte counts; nothing listed, and no status
//! file left, once they are gone.

mod common;

use common::*;
use serde_json::Value;

fn ss(dir: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec!["ss", "--json", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cli(&args, &[]);
    assert!(
        out.status.success(),
        "ss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ss --json is JSON")
}

fn sockets(v: &Value) -> Vec<Value> {
    v["sockets"].as_array().cloned().unwrap_or_default()
}

fn of_pid(v: &Value, pid: u32) -> Vec<Value> {
    sockets(v).into_iter().filter(|s| s["pid"] == pid).collect()
}

#[test]
fn lists_live_sockets_and_forgets_dead_ones() {
    let dir = tmpdir("ss");
    let mut server = run_py(&dir, "server.py", &[]);
    let port = first_line(&mut server);
    let addr = format!("127.0.0.1:{port}");
    let mut clients = Vec::new();
    for mode in ["idle", "slow", "half"] {
        let mut c = run_py(&dir, "client.py", &[&port, mode]);
        assert_eq!(first_line(&mut c), "connected");
        clients.push(c);
    }
    let (idle, slow, half) = (clients[0].pid(), clients[1].pid(), clients[2].pid());

    // The listener, three connections on each side; the half-closed one
    // seen by the server (it reads until the end of stream).
    // (Each file is read at its own moment: wait for one snapshot that
    // has the half-close on both sides.)
    let first = wait_for("7 sockets, the half-close seen on both sides", || {
        let v = ss(&dir, &[]);
        let all = sockets(&v);
        let server_side = of_pid(&v, server.pid());
        let half_side = of_pid(&v, half);
        (all.len() == 7
            && server_side.iter().any(|s| s["state"] == "closed-by-peer")
            && half_side
                .first()
                .is_some_and(|s| s["state"] == "half-closed"))
        .then_some(v)
    });
    let server_side = of_pid(&first, server.pid());
    let listener: Vec<_> = server_side
        .iter()
        .filter(|s| s["state"] == "listening")
        .collect();
    assert_eq!(listener.len(), 1, "{server_side:?}");
    assert_eq!(listener[0]["local"], addr.as_str());
    for (pid, state) in [
        (idle, "established"),
        (slow, "established"),
        (half, "half-closed"),
    ] {
        let mine = of_pid(&first, pid);
        assert_eq!(mine.len(), 1, "pid {pid}: {mine:?}");
        let c = &mine[0];
        assert_eq!(c["state"], state, "{c}");
        assert_eq!(c["peer"], addr.as_str());
        assert_eq!(c["role"], "connector");
        // The server's side of it: addresses swapped.
        let other: Vec<_> = server_side
            .iter()
            .filter(|s| s["peer"] == c["local"])
            .collect();
        assert_eq!(other.len(), 1, "server side of {c}: {server_side:?}");
        assert_eq!(other[0]["local"], addr.as_str());
        assert_eq!(other[0]["role"], "acceptor");
        let want = if pid == half {
            "closed-by-peer"
        } else {
            "established"
        };
        assert_eq!(other[0]["state"], want);
    }
    let half_side = &of_pid(&first, half)[0];
    assert_eq!(half_side["bytes_sent"], 5);
    assert_eq!(of_pid(&first, idle)[0]["bytes_sent"], 0);

    // The slow stream's counts grow, on both sides.
    let sent0 = of_pid(&first, slow)[0]["bytes_sent"].as_u64().unwrap();
    let slow_local = of_pid(&first, slow)[0]["local"].clone();
    wait_for("the slow client's counts to grow", || {
        let v = ss(&dir, &[]);
        let sent = of_pid(&v, slow).first()?["bytes_sent"].as_u64()?;
        let received = of_pid(&v, server.pid())
            .into_iter()
            .find(|s| s["peer"] == slow_local)?["bytes_received"]
            .as_u64()?;
        (sent >= sent0 + 3000 && received >= sent0 + 2000).then_some(())
    });

    // -p: one process only.
    let only = ss(&dir, &["-p", &slow.to_string()]);
    assert_eq!(sockets(&only).len(), 1);

    // The summary counts the states and the connects.
    let out = cli(&["ss", "-s", "--json", "--dir", dir.to_str().unwrap()], &[]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["sockets"]["listening"], 1);
    assert_eq!(summary["counters"]["shm"], 3, "{summary}");
    assert_eq!(summary["counters"]["accepted_shm"], 3, "{summary}");

    // Gone (SIGKILL: no exit handler ran): never listed, files removed.
    drop(clients);
    drop(server);
    let v = ss(&dir, &[]);
    assert_eq!(sockets(&v).len(), 0, "{v}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("status"))
        .collect();
    assert!(left.is_empty(), "status files left: {left:?}");
}
