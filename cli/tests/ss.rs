//! `shmnet ss` on real processes: a preloaded server with an idle, a
//! slowly streaming and a half-closed client, each listed with its
//! addresses, state and growing byte counts; nothing listed, and no status
//! file left, once they are gone.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

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
    // (Each file, and each ring, is read at its own moment: wait for one
    // snapshot that has the half-close on both sides, and the 5 bytes
    // counted in the file read before the ring that said it.)
    let first = wait_for("7 sockets, the half-close seen on both sides", || {
        let v = ss(&dir, &[]);
        let all = sockets(&v);
        let server_side = of_pid(&v, server.pid());
        let half_side = of_pid(&v, half);
        (all.len() == 7
            && server_side.iter().any(|s| s["state"] == "closed-by-peer")
            && half_side
                .first()
                .is_some_and(|s| s["state"] == "half-closed" && s["bytes_sent"] == 5))
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

    // The summary counts the states and the connects: since the counters
    // file was made, and by each live process since it started; the
    // people's form says the same.
    let d = dir.to_str().unwrap();
    let out = cli(&["ss", "-s", "--json", "--dir", d], &[]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["processes"], 4, "{summary}");
    assert_eq!(summary["states"]["listening"], 1, "{summary}");
    assert_eq!(summary["states"]["established"], 4, "{summary}");
    assert_eq!(summary["not_listed"], 0, "{summary}");
    let counters = &summary["counters"];
    for k in ["since_made", "live"] {
        assert_eq!(counters[k]["shm"], 3, "{k}: {summary}");
        assert_eq!(counters[k]["accepted_shm"], 3, "{k}: {summary}");
        assert_eq!(counters[k]["fallback_no_listener"], 0, "{k}: {summary}");
    }
    let of = |pid: u32| {
        counters["by_process"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid}: {summary}"))["counters"]
            .clone()
    };
    assert_eq!(of(server.pid())["accepted_shm"], 3, "{summary}");
    for pid in [idle, slow, half] {
        assert_eq!(of(pid)["shm"], 1, "{summary}");
    }
    let text = String::from_utf8(cli(&["ss", "-s", "--dir", d], &[]).stdout).unwrap();
    assert!(
        text.contains(": 4 processes with emulated sockets"),
        "{text}"
    );
    assert!(
        text.contains("since the counters file was made: 3 over shared memory, 0 over kernel TCP"),
        "{text}"
    );
    assert!(
        text.contains("by the 4 live processes since they started: 3 over shared memory"),
        "{text}"
    );
    let server_row = text
        .lines()
        .find(|l| {
            l.trim_start().starts_with(&format!("{} ", server.pid())) && l.contains("accepted_shm")
        })
        .unwrap_or_else(|| panic!("no row of the server's counters: {text}"));
    assert!(server_row.contains("accepted_shm 3"), "{text}");
    // -p: that process's counters only.
    let one = cli(
        &["ss", "-s", "--json", "-p", &slow.to_string(), "--dir", d],
        &[],
    );
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one["processes"], 1, "{one}");
    assert_eq!(one["counters"]["live"]["shm"], 1, "{one}");
    assert_eq!(one["counters"]["since_made"]["shm"], 3, "{one}");

    // Gone (SIGKILL: no exit handler ran): never listed, files removed.
    drop(clients);
    drop(server);
    let v = ss(&dir, &[]);
    assert_eq!(sockets(&v).len(), 0, "{v}");
    let left = status_files(&dir);
    assert!(left.is_empty(), "status files left: {left:?}");
}

/// Pre-forked workers share a listener (nginx): each process that uses it
/// is listed with it, and a worker closing its copy leaves the others'
/// listed; the slot it freed, claimed again for its next socket, is not
/// taken over by another worker's accept.
#[test]
fn prefork_workers_each_list_what_they_use() {
    let dir = tmpdir("ss-workers");
    let mut sink = run_py(&dir, "server.py", &[]);
    let sink_port = first_line(&mut sink);
    let mut master = run_py(&dir, "workers.py", &[&sink_port]);
    let mut out = Lines::of(&mut master);
    let words = out.words();
    let (port, master_pid): (String, u32) = (words[1].clone(), words[2].parse().unwrap());
    let mut c1 = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut c1), "connected");
    let a: u32 = out.words()[1].parse().unwrap();
    let mut c2 = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut c2), "connected");
    let b: u32 = out.words()[1].parse().unwrap();

    let addr = format!("127.0.0.1:{port}");
    let v = wait_for("the workers' sockets", || {
        let v = ss(&dir, &[]);
        (connections(&v, b).len() == 1 && connections(&v, a).len() == 2).then_some(v)
    });
    // The master (which made it) and B (which accepts) list the listener;
    // A closed its copy.
    for pid in [master_pid, b] {
        let l = listening(&v, pid);
        assert_eq!(l.len(), 1, "pid {pid}: {v}");
        assert_eq!(l[0]["local"], addr.as_str());
    }
    assert!(listening(&v, a).is_empty(), "{v}");
    assert!(connections(&v, master_pid).is_empty(), "{v}");
    // A: the connection it accepted, and the one it made to the sink.
    let a_conns = connections(&v, a);
    let accepted: Vec<_> = a_conns.iter().filter(|s| s["role"] == "acceptor").collect();
    let made: Vec<_> = a_conns
        .iter()
        .filter(|s| s["role"] == "connector")
        .collect();
    assert_eq!((accepted.len(), made.len()), (1, 1), "{v}");
    assert_eq!(accepted[0]["local"], addr.as_str());
    assert_eq!(accepted[0]["peer"], of_pid(&v, c1.pid())[0]["local"]);
    assert_eq!(made[0]["peer"], format!("127.0.0.1:{sink_port}").as_str());
    // B: the second client's connection.
    let b_conn = &connections(&v, b)[0];
    assert_eq!(b_conn["role"], "acceptor");
    assert_eq!(b_conn["peer"], of_pid(&v, c2.pid())[0]["local"]);
    // Both sides of each connection are paired (the queues are known).
    for s in sockets(&v).iter().filter(|s| s["state"] != "listening") {
        assert_eq!(s["send_queue"], 0, "{s}");
        assert_eq!(s["state"], "established", "{s}");
    }
}

/// A fork-per-connection server (postgres, sshd): the child serving a
/// connection is listed with it and its own state; the parent's close of
/// its copy does not unlist it, and the child's flags do not land on the
/// parent's next connection.
#[test]
fn fork_per_connection_child_is_listed() {
    let dir = tmpdir("ss-forkserver");
    let mut server = run_py(&dir, "forkserver.py", &[]);
    let mut out = Lines::of(&mut server);
    let port = out.words()[1].clone();
    let mut c1 = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut c1), "connected");
    let mut c2 = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut c2), "connected");
    let child: u32 = out.words()[1].parse().unwrap();

    let v = wait_for("the child asleep in its read", || {
        let v = ss(&dir, &[]);
        connections(&v, child)
            .first()
            .is_some_and(|s| s["waiting"] == "read")
            .then_some(v)
    });
    let addr = format!("127.0.0.1:{port}");
    let mine = connections(&v, child);
    assert_eq!(mine.len(), 1, "{v}");
    assert!(listening(&v, child).is_empty(), "{v}");
    assert_eq!(mine[0]["state"], "half-closed");
    assert_eq!(mine[0]["local"], addr.as_str());
    assert_eq!(mine[0]["peer"], of_pid(&v, c1.pid())[0]["local"]);
    assert_eq!(of_pid(&v, c1.pid())[0]["state"], "closed-by-peer");
    // The parent: its listener and the second connection, untouched by the
    // child's flags; 1000 bytes sent and not read.
    assert_eq!(listening(&v, server.pid()).len(), 1, "{v}");
    let parent = connections(&v, server.pid());
    assert_eq!(parent.len(), 1, "{v}");
    assert_eq!(parent[0]["peer"], of_pid(&v, c2.pid())[0]["local"]);
    assert_eq!(parent[0]["state"], "established");
    assert_eq!(parent[0]["waiting"], Value::Null);
    assert_eq!(parent[0]["bytes_sent"], 1000);
    assert_eq!(parent[0]["send_queue"], 1000);
}

/// A daemon whose parent exited (with or without its exit handlers) is
/// listed with its listener (from its first accept) and connections; the
/// parent's exit and `shmnet ss` remove nothing it needs.
#[test]
fn daemon_is_listed_after_its_parent_exits() {
    for how in ["exit", "_exit"] {
        let dir = tmpdir("ss-daemon");
        let mut parent = run_py(&dir, "daemon.py", &[how]);
        let mut out = Lines::of(&mut parent);
        let port = out.words()[1].clone();
        let daemon: u32 = out.words()[1].parse().unwrap();
        let _daemon = Detached::new(&[daemon]);
        parent.wait_exit();
        // The parent is gone, and what it published with it; the daemon,
        // asleep in accept, lists the listener.
        wait_for("the daemon's listener alone", || {
            let v = ss(&dir, &[]);
            (sockets(&v).len() == 1 && listening(&v, daemon).len() == 1).then_some(())
        });
        let mut c = run_py(&dir, "client.py", &[&port, "idle"]);
        assert_eq!(first_line(&mut c), "connected");
        let v = wait_for("the daemon's sockets", || {
            let v = ss(&dir, &[]);
            (of_pid(&v, daemon).len() == 2).then_some(v)
        });
        let addr = format!("127.0.0.1:{port}");
        assert_eq!(
            listening(&v, daemon)[0]["local"],
            addr.as_str(),
            "{how}: {v}"
        );
        let conn = &connections(&v, daemon)[0];
        assert_eq!(conn["peer"], of_pid(&v, c.pid())[0]["local"], "{how}: {v}");
        assert_eq!(conn["send_queue"], 0, "{how}: {v}");
    }
}

/// After exec the byte counts go on from the ring's totals: the 1000
/// bytes the exec'd program sent and nobody read are in SEND-Q.
#[test]
fn counts_survive_exec() {
    let dir = tmpdir("ss-exec");
    let mut p = run_py(&dir, "execer.py", &["parent"]);
    let mut out = Lines::of(&mut p);
    let parent: u32 = out.words()[1].parse().unwrap();
    let child: u32 = out.words()[1].parse().unwrap();
    let v = wait_for("both ends", || {
        let v = ss(&dir, &[]);
        (connections(&v, child).len() == 1 && connections(&v, parent).len() == 1).then_some(v)
    });
    let c = &connections(&v, child)[0];
    assert_eq!(c["role"], "connector", "{v}");
    assert_eq!(c["bytes_sent"], 6000, "{v}");
    assert_eq!(c["send_queue"], 1000, "{v}");
    let a = &connections(&v, parent)[0];
    assert_eq!(a["role"], "acceptor", "{v}");
    assert_eq!(a["bytes_received"], 5000, "{v}");
    assert_eq!(a["recv_queue"], 1000, "{v}");
    assert_eq!(port(&c["local"]), port(&a["peer"]));
}

/// nginx as root: the first process makes the listener and exits once it
/// forked the daemon (removing its status file), and the daemon's workers
/// switch to nobody, who may not create files in root's directory. Each
/// worker makes its own file before it switches (the setuid hook), so the
/// workers are listed with the listener and the connection one accepted.
#[test]
fn nginx_workers_that_switch_user_are_listed() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(nginx) = nginx else {
        eprintln!("ss.rs: no nginx (scripts/install-deps.sh installs it); skipped");
        return;
    };
    if effective_uid() != 0 {
        eprintln!("ss.rs: not root: nginx's workers would not switch user; skipped");
        return;
    }
    let dir = tmpdir("ss-nginx");
    let prefix = tmpdir("ss-nginx-prefix");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon on;\nerror_log {p}/error.log warn;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {p}/body; \
             server {{ listen 127.0.0.1:{port}; root {p}; }} }}\n",
            p = prefix.display()
        ),
    )
    .unwrap();
    let started = Command::new(shmnet())
        .env("SHMNET_LIB", lib())
        .args(["run", "--dir", dir.to_str().unwrap(), "--", nginx, "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(&prefix)
        .status()
        .expect("nginx");
    assert!(started.success(), "nginx did not start");
    // The daemon (its master, which its workers' group is) left ours.
    let master: u32 = wait_for("nginx.pid", || {
        std::fs::read_to_string(prefix.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let _nginx = Detached::new(&[master]);
    let mut c = run_py(&dir, "client.py", &[&port.to_string(), "idle"]);
    assert_eq!(first_line(&mut c), "connected");
    let addr = format!("127.0.0.1:{port}");
    let v = wait_for("an nginx worker's connection", || {
        let v = ss(&dir, &[]);
        sockets(&v)
            .iter()
            .any(|s| {
                s["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("nginx: worker"))
                    && s["state"] == "established"
            })
            .then_some(v)
    });
    let client_local = of_pid(&v, c.pid())[0]["local"].clone();
    let worker = sockets(&v)
        .into_iter()
        .find(|s| s["state"] == "established" && s["peer"] == client_local)
        .unwrap_or_else(|| panic!("no worker's side of the connection: {v}"));
    assert_eq!(worker["local"], addr.as_str(), "{v}");
    let pid = worker["pid"].as_u64().unwrap() as u32;
    assert_eq!(listening(&v, pid).len(), 1, "the worker's listener: {v}");
}
