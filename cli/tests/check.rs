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

fn detail(v: &Value, name: &str) -> String {
    verdict(v, name)["detail"].as_str().unwrap().to_owned()
}

/// Review #7: the pair line says shared memory only when the probe's
/// library counted a shared-memory connect.
#[test]
fn pair_over_kernel_tcp_is_never_called_shared_memory() {
    let dir = tmpdir("check-pair-tcp");
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = plain.local_addr().unwrap().to_string();
    // Emulated mode, the address outside the partitions: passed through.
    let env = [
        ("SHMNET_FALLBACK", "never"),
        ("SHMNET_PARTITIONS", "10.211.0.0/16"),
    ];
    let (code, v) = check(&dir, &["--pair", &addr], &env);
    assert_eq!(code, 1, "{v}");
    let p = detail(&v, "pair");
    assert!(
        p.contains("over kernel TCP") && p.contains("not in SHMNET_PARTITIONS"),
        "{p}"
    );
    // The library off (a bad setting): no shared-memory claim either.
    let env = [
        ("SHMNET_FALLBACK", "never"),
        ("SHMNET_PARTITIONS", "garbage"),
    ];
    let (code, v) = check(&dir, &["--pair", &addr], &env);
    assert_eq!(code, 1, "{v}");
    let p = detail(&v, "pair");
    assert!(p.contains("the library is off"), "{p}");
    assert!(!p.contains("shared memory"), "{p}");
    // Emulated mode against a plain listener: refused, and why.
    let (code, v) = check(&dir, &["--pair", &addr], &[("SHMNET_FALLBACK", "never")]);
    assert_eq!(code, 1, "{v}");
    assert!(
        detail(&v, "pair").contains("nothing preloaded listens"),
        "{v}"
    );
    // Emulated mode against a preloaded listener (of that mode too):
    // shared memory.
    let mut server = Background::spawn(
        std::process::Command::new(shmnet())
            .env("SHMNET_LIB", lib())
            .args(["run", "--fallback", "never", "--dir"])
            .arg(&dir)
            .arg("--")
            .arg(python())
            .arg(helper("server.py"))
            .stdout(std::process::Stdio::piped()),
    );
    let port = first_line(&mut server);
    let (code, v) = check(
        &dir,
        &["--pair", &format!("127.0.0.1:{port}")],
        &[("SHMNET_FALLBACK", "never")],
    );
    assert_eq!(code, 0, "{v}");
    assert!(detail(&v, "pair").contains("over shared memory"), "{v}");
}

/// Review #8: a relative directory fails with what to do; `shmnet run
/// --dir` makes it absolute (the library takes it: no complaint).
#[test]
fn relative_directories_fail_and_run_makes_them_absolute() {
    let base = tmpdir("check-rel");
    std::fs::create_dir(base.join("sd")).unwrap();
    std::fs::set_permissions(base.join("sd"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new(shmnet())
        .current_dir(&base)
        .env("SHMNET_LIB", lib())
        .args(["check", "--json", "--dir", "sd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = detail(&v, "directory");
    assert!(d.contains("not an absolute path"), "{d}");
    assert!(d.contains(base.join("sd").to_str().unwrap()), "{d}");
    let out = std::process::Command::new(shmnet())
        .current_dir(&base)
        .env("SHMNET_LIB", lib())
        .env("SHMNET_DIR", "sd")
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // run: the program sees an absolute SHMNET_DIR, the library says nothing.
    let out = std::process::Command::new(shmnet())
        .current_dir(&base)
        .env("SHMNET_LIB", lib())
        .args(["run", "--dir", "sd", "--"])
        .arg(python())
        .args([
            "-c",
            "import os, socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(os.environ['SHMNET_DIR'])",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        base.join("sd").to_str().unwrap()
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("libshmnet:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Review #11: a missing directory whose parent the user cannot write
/// cannot be created by the library: FAIL (as nobody, under a root 0755
/// parent; needs root to switch user).
#[test]
fn missing_directory_under_an_unwritable_parent_fails() {
    if effective_uid() != 0 {
        eprintln!("skipped: needs root (to run check as nobody)");
        return;
    }
    let parent = tmpdir("check-parent");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The path to it must be searchable by nobody.
    let mut p = parent.parent();
    while let Some(d) = p {
        let m = std::fs::metadata(d).unwrap().permissions().mode();
        if m & 0o001 == 0 {
            eprintln!("skipped: {} is not searchable by others", d.display());
            return;
        }
        p = d.parent();
    }
    let dir = parent.join("shmnet");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(shmnet())
        .env("SHMNET_LIB", lib())
        .args(["check", "--json", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{v}");
    let d = detail(&v, "directory");
    assert!(d.contains("not writable by you"), "{d}");
}

/// Review #19: a misspelt setting is a WARN naming the setting meant,
/// and is not shown as the configuration in force.
#[test]
fn misspelt_settings_are_warned_about() {
    let dir = tmpdir("check-typo");
    let (code, v) = check(
        &dir,
        &[],
        &[
            ("SHMNET_PARTITION", "10.211.0.0/16"),
            ("SHMNET_FALLBAK", "never"),
        ],
    );
    assert_eq!(code, 0, "{v}");
    let warns: Vec<String> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "warn")
        .map(|c| c["detail"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        warns
            .iter()
            .any(|w| w.contains("SHMNET_PARTITION is not a setting")
                && w.contains("did you mean SHMNET_PARTITIONS")),
        "{warns:?}"
    );
    assert!(
        warns
            .iter()
            .any(|w| w.contains("SHMNET_FALLBAK is not a setting")
                && w.contains("did you mean SHMNET_FALLBACK")),
        "{warns:?}"
    );
    let c = verdict(&v, "configuration");
    assert_eq!(c["verdict"], "ok");
    assert!(
        !c["detail"].as_str().unwrap().contains("SHMNET_FALLBAK"),
        "{c}"
    );
}
