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
const CONNECTION: u32 = 3;

/// (state, pid) of every entry in use in the status files of `dir`.
fn entries(dir: &Path) -> Vec<(u32, u32)> {
    let mut all = Vec::new();
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !f.file_name().to_string_lossy().starts_with("status-") {
            continue;
        }
        let Ok(b) = std::fs::read(f.path()) else {
            continue;
        };
        if b.len() != HEADER_BYTES + ENTRIES * ENTRY_BYTES {
            continue;
        }
        let word = |off: usize| u32::from_ne_bytes(b[off..off + 4].try_into().unwrap());
        for i in 0..ENTRIES {
            let off = HEADER_BYTES + i * ENTRY_BYTES;
            if word(off) != 0 {
                all.push((word(off), word(off + 4)));
            }
        }
    }
    all
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
