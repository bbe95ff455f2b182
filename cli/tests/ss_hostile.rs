//! `shmnet ss` against what it did not expect: files that are no status
//! files (said, never followed or waited on), more forged entries than it
//! keeps (bounded; the caller's own files first), another user's counters
//! file (not summed), and the pairing of an IPv4 client with a dual-stack
//! listener (review #12, #14, #20, #16, #9).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use serde_json::Value;
use shmnet_status_layout as layout;

fn skipped(v: &Value) -> Vec<(String, String)> {
    v["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("no skipped list: {v}"))
        .iter()
        .map(|s| {
            (
                s["file"].as_str().unwrap().to_owned(),
                s["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A status file's header (docs/status.md, "Layout").
fn header(version: u32, pid: u32, start: u64) -> Vec<u8> {
    let mut b = vec![0u8; 131072];
    b[..8].copy_from_slice(&layout::MAGIC);
    for (at, v) in [(8, version), (12, 256), (16, 128), (20, 1022), (24, pid)] {
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    b[32..40].copy_from_slice(&start.to_ne_bytes());
    let pidns = std::fs::metadata("/proc/self/ns/pid").unwrap();
    b[40..48].copy_from_slice(&std::os::unix::fs::MetadataExt::ino(&pidns).to_ne_bytes());
    b
}

/// A process's start time (/proc/PID/stat field 22).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// A file of 1022 well-formed connection entries of `pid`.
fn forged(pid: u32, start: u64, n: u32) -> Vec<u8> {
    let mut b = header(layout::VERSION, pid, start);
    for i in 0..1022usize {
        let e = 256 + 128 * i;
        b[e..e + 4].copy_from_slice(&3u32.to_ne_bytes());
        b[e + 4..e + 8].copy_from_slice(&pid.to_ne_bytes());
        b[e + 8..e + 16].copy_from_slice(&start.to_ne_bytes());
        b[e + 16..e + 20].copy_from_slice(&(i as u32).to_ne_bytes());
        for (at, port) in [(layout::E_LOCAL, 80u32), (layout::E_PEER, 10000 + i as u32)] {
            b[e + at..e + at + 4].copy_from_slice(&(2 | port << 16).to_ne_bytes());
            b[e + at + 8..e + at + 12].copy_from_slice(&[127, 0, (n >> 8) as u8, n as u8]);
        }
    }
    b
}

#[test]
fn oddities_are_skipped_and_said() {
    let dir = tmpdir("hostile-odd");
    let d = |n: &str| dir.join(n);
    assert!(Command::new("mkfifo")
        .arg(d("status-1-1"))
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink("/dev/zero", d("status-2-2")).unwrap();
    std::fs::File::create(d("status-3-3"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    std::fs::create_dir(d("status-4-4")).unwrap();
    std::fs::write(d("status-5-5"), [0u8; 1000]).unwrap();
    // A FIFO with a writer (a read would wait for it to write).
    let _writer = Background::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec sleep 3600 > {}", d("status-1-1").display())),
    );
    let mut server = run_py(&dir, "server.py", &[]);
    let _port = first_line(&mut server);
    // (After the server's sweep, which may remove a file of pid 1.)
    std::fs::write(d("status-6-6"), header(layout::VERSION + 1, 1, 1)).unwrap();
    let v = ss(&dir, &[]);
    assert_eq!(listening(&v, server.pid()).len(), 1, "{v}");
    let s = skipped(&v);
    let why = |f: &str| {
        s.iter()
            .find(|(n, _)| n == f)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("{f} not said skipped: {s:?}"))
    };
    assert!(why("status-1-1").contains("FIFO"));
    assert!(why("status-2-2").contains("symbolic link"));
    assert!(why("status-3-3").contains("4294967296 bytes"));
    assert!(why("status-4-4").contains("directory"));
    assert!(why("status-5-5").contains("1000 bytes"));
    assert!(why("status-6-6").contains("version"));
    // People's form: the table on stdout, the skipped files on stderr.
    let out = cli(&["ss", "--dir", dir.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped status-1-1: a FIFO"), "{err}");
    assert!(err.contains("skipped status-3-3"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listening"), "{text}");
}

/// 70 files of 1022 forged entries: at most 65536 rows kept, the rest
/// said; the caller's own server listed whatever the forged files are
/// (as root, they are nobody's, read after the caller's).
#[test]
fn forged_entries_are_bounded() {
    let dir = tmpdir("hostile-many");
    let root = effective_uid() == 0;
    if root {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let mut server = run_py(&dir, "server.py", &[]);
    let port = first_line(&mut server);
    let mut client = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut client), "connected");
    let mut sleeper = Command::new("setpriv");
    if root {
        sleeper.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    let sleeper = Background::spawn(sleeper.args(["sleep", "3600"]));
    let pid = sleeper.pid();
    let start = wait_for("the sleeper's exec", || {
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
        cmd.starts_with("sleep").then(|| start_time(pid))
    });
    for n in 0..70u32 {
        let name = dir.join(format!("status-{pid}-{start}.{}", n + 1));
        std::fs::File::create(&name)
            .unwrap()
            .write_all(&forged(pid, start, n))
            .unwrap();
        std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)).unwrap();
        if root {
            std::os::unix::fs::chown(&name, Some(65534), Some(65534)).unwrap();
        }
    }
    let v = ss(&dir, &[]);
    let all = sockets(&v);
    assert_eq!(all.len(), 65536);
    let s = skipped(&v);
    assert!(
        s.iter().any(|(_, w)| w.contains("more entries not listed")),
        "{s:?}"
    );
    if root {
        assert_eq!(listening(&v, server.pid()).len(), 1);
        assert_eq!(connections(&v, client.pid()).len(), 1);
    }
}

/// Review #20: as root, a counters file of another user in a shared
/// directory is not summed, and no row of it is a live process's.
#[test]
fn another_users_counters_are_not_summed() {
    if effective_uid() != 0 {
        eprintln!("skipped: needs root (to write a file as another user)");
        return;
    }
    let dir = tmpdir("hostile-stats");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut b = vec![0u8; 33088];
    b[..8].copy_from_slice(b"SHMNETC1");
    for (at, v) in [
        (8, 1u32),
        (12, 64),
        (16, 128),
        (20, 256),
        (24, 9),
        (28, 65534),
    ] {
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    for row in 2..4 {
        let at = 64 + 128 * row;
        b[at..at + 4].copy_from_slice(&1u32.to_ne_bytes());
        b[at + 8..at + 16].copy_from_slice(&start_time(1).to_ne_bytes());
        for k in 0..9 {
            b[at + 16 + 8 * k..at + 24 + 8 * k]
                .copy_from_slice(&1_000_000_000_000u64.to_ne_bytes());
        }
    }
    let forged = dir.join("stats-65534");
    std::fs::write(&forged, &b).unwrap();
    std::os::unix::fs::chown(&forged, Some(65534), Some(65534)).unwrap();
    // Our own connects: one over shared memory.
    let mut server = run_py(&dir, "server.py", &[]);
    let port = first_line(&mut server);
    let mut client = run_py(&dir, "client.py", &[&port, "idle"]);
    assert_eq!(first_line(&mut client), "connected");
    let out = cli(&["ss", "-s", "--json", "--dir", dir.to_str().unwrap()], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["counters"];
    assert_eq!(c["files"], 1, "{v}");
    let shm = c["since_made"]["shm"].as_u64().unwrap();
    assert!((1..1000).contains(&shm), "{v}");
    assert!(
        c["by_process"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pid"] != 1),
        "{v}"
    );
}

/// Review #16: an IPv4 client of a dual-stack listener is ::ffff:a.b.c.d
/// at the server: the two sides pair (queues shown).
#[test]
fn ipv4_client_of_a_dual_stack_listener_pairs() {
    let dir = tmpdir("dual-stack");
    let mut server = run_py(&dir, "dual_stack_server.py", &[]);
    let port = first_line(&mut server);
    let mut client = run_py(&dir, "client.py", &[&port, "half"]);
    assert_eq!(first_line(&mut client), "connected");
    let v = wait_for("both sides, the 5 bytes read", || {
        let v = ss(&dir, &[]);
        let srv = connections(&v, server.pid());
        (srv.len() == 1 && srv[0]["bytes_received"] == 5).then_some(v)
    });
    let srv = &connections(&v, server.pid())[0];
    let cl = &connections(&v, client.pid())[0];
    assert!(
        srv["local"]
            .as_str()
            .unwrap()
            .starts_with("[::ffff:127.0.0.1]"),
        "{srv}"
    );
    assert!(
        cl["local"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{cl}"
    );
    for s in [srv, cl] {
        assert_eq!(s["send_queue"], 0, "{s}");
        assert_eq!(s["recv_queue"], 0, "{s}");
    }
    assert_eq!(srv["state"], "closed-by-peer");
}

/// Review #9: the overflow count is said to be one since the files were
/// made (the file does not say how many of those sockets are open).
#[test]
fn not_listed_is_said_to_count_since_start() {
    let dir = tmpdir("overflow-words");
    let mut server = run_py(&dir, "server.py", &[]);
    let _port = first_line(&mut server);
    let file = wait_for("the server's status file", || {
        status_files(&dir).into_iter().next()
    });
    // The header's overflow word (offset 48), as the library counts it.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(&file))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &5u32.to_ne_bytes(), 48).unwrap();
    let out = cli(&["ss", "--dir", dir.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("5 sockets") && text.contains("since start, closed ones included"),
        "{text}"
    );
    let out = cli(&["ss", "-s", "--dir", dir.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("not listed") && l.contains("since they were made")),
        "{text}"
    );
}
