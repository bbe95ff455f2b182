//! Status files (docs/status.md) as processes that fork, sandbox
//! themselves and hand connections around see them: what the review of
//! issue 15 found on the library's side. The files are read here with a
//! small parser of their layout (entry state and pid), not with `shmnet ss`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{build_c, preloaded, Background, Net};

const HEADER_BYTES: usize = 256;
const ENTRY_BYTES: usize = 128;
const ENTRIES: usize = 1022;
const LISTENER: u32 = 2;
const CONNECTION: u32 = 3;

/// A status file as read here.
struct File {
    name: String,
    /// The creator's pid (header).
    creator: u32,
    mode: u32,
    /// (state, pid, flags, fd) of each entry in use.
    entries: Vec<(u32, u32, u32, u32)>,
}

const EXECING: u32 = 64;

fn files(dir: &Path) -> Vec<File> {
    use std::os::unix::fs::PermissionsExt;
    let mut all = Vec::new();
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if !name.starts_with("status-") {
            continue;
        }
        let mode = f.metadata().map_or(0, |m| m.permissions().mode() & 0o7777);
        let b = std::fs::read(f.path()).unwrap_or_default();
        if b.len() != HEADER_BYTES + ENTRIES * ENTRY_BYTES {
            continue;
        }
        let word = |off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().unwrap());
        let entries = (0..ENTRIES)
            .map(|i| HEADER_BYTES + i * ENTRY_BYTES)
            .filter(|&off| word(off) != 0)
            .map(|off| (word(off), word(off + 4), word(off + 20), word(off + 16)))
            .collect();
        all.push(File {
            name,
            creator: word(24),
            mode,
            entries,
        });
    }
    all
}

/// (state, pid) of every entry in use in the status files of `dir`
/// that a reader lists (not hidden for an exec).
fn entries(dir: &Path) -> Vec<(u32, u32)> {
    files(dir)
        .iter()
        .flat_map(|f| f.entries.iter())
        .filter(|e| e.2 & EXECING == 0)
        .map(|e| (e.0, e.1))
        .collect()
}

/// tests/helpers/py/status_family.py in `mode` on a fresh emulated network;
/// with its go file (created by the caller when done).
fn family(mode: &str) -> (Net, Background, std::path::PathBuf) {
    let net = Net::emulated(&format!("status-family-{mode}"));
    let go = net.shm_dir().with_file_name(format!("go-{mode}"));
    let _ = std::fs::remove_file(&go);
    let mut cmd = net.py_helper("status_family", &[&net.host_str(), &net.port_str(), mode]);
    cmd.arg(&go);
    let prog = Background::start(mode, &mut cmd, Duration::from_secs(60), true);
    (net, prog, go)
}

fn finish(mut prog: Background, go: &Path, what: &str) {
    std::fs::write(go, b"").unwrap();
    let err = prog.kill();
    assert!(!err.contains("libshmnet"), "{what}: {err}");
    let _ = std::fs::remove_file(go);
}

/// Review #1: a forked child that installs a seccomp filter with the raw
/// seccomp() call (unseen by the library) forbidding file work, then
/// writes to the connection it inherited, is not killed: its first data
/// call claims its status entry without a system call (its start time
/// was read in the fork handler; no file is made there). With its parent
/// alive the child is listed in the parent's file; "poll": it polls
/// the connection first, which claims (review #6: a child that only waits
/// on a connection it was handed is listed; "wait": the same without the
/// filter nor the write).
#[test]
fn sandboxed_forked_child_uses_its_connection_and_is_listed() {
    let exe = build_c("seccomp_fork_child", &["-O1", "-Wall"]);
    for mode in ["stay", "exit", "poll", "wait"] {
        let net = Net::emulated(&format!("status-seccomp-{mode}"));
        std::fs::create_dir_all(net.shm_dir()).unwrap();
        let go = net.shm_dir().with_file_name(format!("go-{mode}"));
        let _ = std::fs::remove_file(&go);
        let mut cmd = preloaded(&exe);
        net.env(&mut cmd)
            .args([&net.host_str(), &net.port_str(), mode])
            .arg(&go);
        let mut prog = Background::start(mode, &mut cmd, Duration::from_secs(30), true);
        let pid: u32 = prog.expect("child ok ")[9..].trim().parse().unwrap();
        if !prog.seen.iter().any(|l| l == "server got 200") {
            prog.expect("server got 200");
        }
        let listed = entries(&net.shm_dir()).contains(&(CONNECTION, pid));
        std::fs::write(&go, b"").unwrap();
        if mode != "exit" {
            let end = prog.expect("child ");
            assert_eq!(end, "child exit 0", "{mode}: {:?}", prog.seen);
            // (With its parent gone the child claims in the file the parent
            // removed at exit: a data call makes no file.)
            assert!(
                listed,
                "{mode}: child {pid} not in {:?}",
                entries(&net.shm_dir())
            );
        }
        let err = prog.kill();
        assert!(!err.contains("libshmnet"), "{mode}: {err}");
        let _ = std::fs::remove_file(&go);
    }
}

/// Review #10: a failed exec (ENOENT) showed nothing of the process again
/// (its file had been removed before the exec): its listener and
/// connection are listed after it.
#[test]
fn a_failed_exec_leaves_the_process_listed() {
    let (net, mut prog, go) = family("failexec");
    let pid: u32 = prog.expect("ready ")[6..].trim().parse().unwrap();
    let listed = entries(&net.shm_dir());
    finish(prog, &go, "failexec");
    assert!(
        listed.contains(&(LISTENER, pid)) && listed.contains(&(CONNECTION, pid)),
        "{pid}: {listed:?}"
    );
}

/// Review #12: under umask 0777 the directory the library makes is 0700
/// and the status file 0600 (they were 0000: unreadable by the user's own
/// `shmnet ss`).
#[test]
fn modes_do_not_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let (net, mut prog, go) = family("umask");
    prog.expect("ready");
    let dir_mode = std::fs::metadata(net.shm_dir()).map(|m| m.permissions().mode() & 0o7777);
    let modes: Vec<(String, u32)> = files(&net.shm_dir())
        .into_iter()
        .map(|f| (f.name, f.mode))
        .collect();
    finish(prog, &go, "umask");
    assert_eq!(dir_mode.ok(), Some(0o700));
    assert!(
        !modes.is_empty() && modes.iter().all(|(_, m)| *m == 0o600),
        "{modes:?}"
    );
}

/// Review #13: the eight names a process would take
/// (`status-<pid>-<start>[.1-7]`, public before its first socket) made
/// ahead by someone else: its file is published under another.
#[test]
fn names_made_ahead_do_not_keep_a_process_unlisted() {
    let (net, mut prog, go) = family("squat");
    let pid: u32 = prog.expect("pid ")[4..].trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(19))
        .unwrap()
        .to_string();
    std::fs::create_dir_all(net.shm_dir()).unwrap();
    for k in 0..8 {
        let name = match k {
            0 => format!("status-{pid}-{start}"),
            k => format!("status-{pid}-{start}.{k}"),
        };
        std::fs::write(net.shm_dir().join(name), b"taken").unwrap();
    }
    std::fs::write(go.with_extension("1"), b"").unwrap();
    prog.expect("ready");
    let listed = entries(&net.shm_dir());
    let _ = std::fs::remove_file(go.with_extension("1"));
    finish(prog, &go, "squat");
    assert!(listed.contains(&(LISTENER, pid)), "{pid}: {listed:?}");
}

/// Review #18: a process killed while it made its file left its private
/// `.status-<pid>-<time>.tmp`; the next sweep (a process family's first
/// file) removes one of a dead pid that is over a minute old.
#[test]
fn a_sweep_removes_private_names_of_dead_processes() {
    let net = Net::emulated("status-family-tmp");
    std::fs::create_dir_all(net.shm_dir()).unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let tmp = net.shm_dir().join(format!(".status-{dead_pid}-12345.tmp"));
    let young = net.shm_dir().join(format!(".status-{dead_pid}-12346.tmp"));
    for f in [&tmp, &young] {
        std::fs::write(f, vec![0u8; 4096]).unwrap();
    }
    let old = std::fs::File::options().write(true).open(&tmp).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    let go = net.shm_dir().with_file_name("go-tmp");
    let _ = std::fs::remove_file(&go);
    let mut cmd = net.py_helper(
        "status_family",
        &[&net.host_str(), &net.port_str(), "listen"],
    );
    cmd.arg(&go);
    let mut prog = Background::start("tmp", &mut cmd, Duration::from_secs(60), true);
    prog.expect("ready");
    finish(prog, &go, "tmp");
    assert!(!tmp.exists(), "{} left", tmp.display());
    assert!(young.exists(), "{} removed", young.display());
}

/// Review #3: a forked child whose inherited file is full (a parent, or
/// pre-forked workers together, holding its 1022 entries) makes a file of
/// its own where it makes a socket, and is listed there.
#[test]
fn a_forked_child_whose_inherited_file_is_full_makes_its_own() {
    let (net, mut prog, go) = family("fill");
    let child: u32 = prog.expect("child ")[6..].trim().parse().unwrap();
    if !prog.seen.iter().any(|l| l.starts_with("ready ")) {
        prog.expect("ready ");
    }
    let all = files(&net.shm_dir());
    finish(prog, &go, "fill");
    let own = all.iter().find(|f| f.creator == child);
    assert!(
        own.is_some_and(|f| f.entries.iter().any(|e| e.0 == CONNECTION && e.1 == child)),
        "child {child}: files {:?}",
        all.iter()
            .map(|f| (&f.name, f.creator, f.entries.len()))
            .collect::<Vec<_>>()
    );
}

/// Review #15: after dup2 to another number and close of the first, the
/// connection's fd is the number the process holds (it was the closed one).
#[test]
fn the_fd_shown_is_one_the_process_holds() {
    let (net, mut prog, go) = family("dup");
    let pid: u32 = prog.expect("ready ")[6..].trim().parse().unwrap();
    let all = files(&net.shm_dir());
    finish(prog, &go, "dup");
    let fds: Vec<u32> = all
        .iter()
        .flat_map(|f| f.entries.iter())
        .filter(|e| e.0 == CONNECTION && e.1 == pid && e.2 & 1 != 0)
        .map(|e| e.3)
        .collect();
    assert_eq!(fds, [10], "connector's fd");
}

/// Review #2: a forked child whose parent (its file's creator) was killed
/// (no exit handler: no closing mark) and whose file was then removed (a
/// sweep: no entry of a live process in it) made its later sockets in that
/// removed file, unseen; it makes a file of its own.
#[test]
fn a_child_of_a_killed_parent_makes_its_own_file() {
    let net = Net::emulated("status-family-orphan");
    let go = net.shm_dir().with_file_name("go-orphan");
    let _ = std::fs::remove_file(&go);
    let mut cmd = net.py_helper(
        "status_family",
        &[&net.host_str(), &net.port_str(), "orphan"],
    );
    cmd.arg(&go);
    // (Not a group: only the parent is killed, and reaped.)
    let mut prog = Background::start("orphan", &mut cmd, Duration::from_secs(60), false);
    let child: u32 = prog.expect("child ")[6..].trim().parse().unwrap();
    if !prog.seen.iter().any(|l| l.starts_with("ready ")) {
        prog.expect("ready ");
    }
    let parent_files: Vec<String> = files(&net.shm_dir()).into_iter().map(|f| f.name).collect();
    prog.kill9();
    for name in &parent_files {
        std::fs::remove_file(net.shm_dir().join(name)).unwrap();
    }
    std::fs::write(go.with_extension("1"), b"").unwrap();
    let connected = prog.expect_within("connected", Duration::from_secs(30));
    let all = files(&net.shm_dir());
    std::fs::write(&go, b"").unwrap();
    let _ = std::fs::remove_file(go.with_extension("1"));
    assert_eq!(connected, "connected");
    let own = all.iter().find(|f| f.creator == child);
    assert!(
        own.is_some_and(|f| f
            .entries
            .iter()
            .filter(|e| e.0 == CONNECTION && e.1 == child)
            .count()
            == 2),
        "child {child}: files {:?}",
        all.iter()
            .map(|f| (&f.name, f.creator, &f.entries))
            .collect::<Vec<_>>()
    );
    // The child looks for GO every 10 ms: killed here rather than left to
    // outlive the test holding its listener's name.
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    unsafe { libc::kill(child as libc::pid_t, libc::SIGKILL) };
    let _ = std::fs::remove_file(&go);
}
