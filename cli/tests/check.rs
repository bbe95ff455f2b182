//! `shmnet check`: a good setup passes (exit 0); a directory of another
//! user, one writable by others, and a bad SHMNET_PARTITIONS each fail
//! (exit 1) with a line saying what to fix; `--pair` tells shared memory
//! from kernel TCP and says why.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::Value;

fn check(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut args = vec!["check", "--json", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cli(&args, env);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn verdict<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {v}"))
}

#[test]
fn good_setup_passes() {
    let dir = tmpdir("check-good");
    let (code, v) = check(&dir, &[], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(verdict(&v, "library")["verdict"], "ok");
    let lib = verdict(&v, "library")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        lib.contains(env!("CARGO_PKG_VERSION")) && lib.contains("build-id"),
        "{lib}"
    );
    assert_eq!(verdict(&v, "configuration")["verdict"], "ok");
    assert_eq!(verdict(&v, "directory")["verdict"], "ok");
    // People's output: one aligned line per check.
    let out = cli(&["check", "--dir", dir.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("directory") && l.contains("ok")),
        "{text}"
    );
}

#[test]
fn unsafe_directories_fail() {
    let dir = tmpdir("check-modes");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, v) = check(&dir, &[], &[]);
    assert_eq!(code, 1, "{v}");
    let d = verdict(&v, "directory");
    assert_eq!(d["verdict"], "fail");
    assert!(d["detail"].as_str().unwrap().contains("chmod 0700"), "{d}");

    // Owned by another user (as root: chown to nobody).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let dir = tmpdir("check-owner");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let (code, v) = check(&dir, &[], &[]);
        assert_eq!(code, 1, "{v}");
        let d = verdict(&v, "directory");
        assert_eq!(d["verdict"], "fail");
        assert!(
            d["detail"].as_str().unwrap().contains("owned by uid 65534"),
            "{d}"
        );
        std::fs::remove_dir(&dir).unwrap();
    }
}

#[test]
fn bad_partitions_fail() {
    let dir = tmpdir("check-config");
    let (code, v) = check(&dir, &[], &[("SHMNET_PARTITIONS", "127.0.0.0/33")]);
    assert_eq!(code, 1, "{v}");
    let c = verdict(&v, "configuration");
    assert_eq!(c["verdict"], "fail");
    assert!(
        c["detail"].as_str().unwrap().contains("SHMNET_PARTITIONS"),
        "{c}"
    );
}

#[test]
fn pair_says_how_the_connect_went() {
    let dir = tmpdir("check-pair");
    let mut server = run_py(&dir, "server.py", &[]);
    let port = first_line(&mut server);
    let (code, v) = check(&dir, &["--pair", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(code, 0, "{v}");
    let p = verdict(&v, "pair");
    assert!(
        p["detail"].as_str().unwrap().contains("over shared memory"),
        "{p}"
    );

    // A plain (not preloaded) listener: kernel TCP, and why.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = plain.local_addr().unwrap().to_string();
    let (code, v) = check(&dir, &["--pair", &addr], &[]);
    assert_eq!(code, 1, "{v}");
    let p = verdict(&v, "pair");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("no shared-memory listener"),
        "{p}"
    );
}
