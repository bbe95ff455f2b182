//! `make install DESTDIR=... PREFIX=/usr` puts the library, the binary and
//! the man page in place; the installed `shmnet run` carries a pair over
//! shared memory with the installed library; `make uninstall` leaves no
//! file behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn make(target: &str, destdir: &Path) -> std::process::Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    Command::new("make")
        .arg("-C")
        .arg(repo)
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("INSTALL_LIB={}", lib().display()))
        .arg(format!("INSTALL_BIN={}", shmnet().display()))
        .output()
        .expect("make")
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_run_uninstall() {
    let dest = tmpdir("install");
    // A directory that was there before (empty): uninstall leaves it.
    std::fs::create_dir_all(dest.join("usr/share/man")).unwrap();
    let out = make("install", &dest);
    assert!(
        out.status.success(),
        "make install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let usr = dest.join("usr");
    let want = [
        usr.join("bin/shmnet"),
        usr.join("lib/libshmnet.so"),
        usr.join("share/man/man1/shmnet.1"),
        usr.join("share/shmnet/installed-dirs"),
    ];
    assert_eq!(files(&dest), want.to_vec());
    let made = std::fs::read_to_string(&want[3]).unwrap();
    assert_eq!(
        made,
        "/usr/bin\n/usr/lib\n/usr/share/man/man1\n/usr/share/shmnet\n"
    );
    let man = std::fs::read_to_string(&want[2]).unwrap();
    // One page: every subcommand's options in it, no page of ours named.
    for opt in [
        "shmnet run",
        "\\-\\-partitions",
        "\\-\\-fallback",
        "\\-\\-log",
        "shmnet ss",
        "\\-\\-json",
        "\\-\\-summary",
        "\\-\\-pid",
        "shmnet check",
        "\\-\\-pair",
        "\\-\\-lib",
    ] {
        assert!(man.contains(opt), "{opt} not in the man page");
    }
    for page in ["run", "ss", "status", "check", "help"] {
        let name = format!("shmnet\\-{page}");
        assert!(!man.contains(&name), "names {name}(1), not installed");
    }
    assert!(
        man.starts_with(".TH SHMNET 1"),
        "not roff: {}",
        &man[..80.min(man.len())]
    );
    assert!(man.contains("check"), "the man page lists the subcommands");

    // The installed binary finds the installed library (<prefix>/lib).
    let bin = &want[0];
    let version = Command::new(bin)
        .arg("--version")
        .env_remove("SHMNET_LIB")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        text.contains(&usr.join("lib/libshmnet.so").display().to_string()),
        "{text}"
    );

    // A pair over the emulated network, both sides run by the installed shmnet.
    let dir = tmpdir("install-run");
    let run = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.env_remove("SHMNET_LIB")
            .args([
                "run",
                "--fallback",
                "never",
                "--partitions",
                "127.77.0.0/16",
                "--dir",
            ])
            .arg(&dir)
            .arg("--")
            .arg(python())
            .args(args);
        c
    };
    let _server = Background::spawn(&mut run(&[
        "-c",
        "import socket\ns=socket.socket(); s.bind(('127.77.3.1', 7000)); s.listen(1)\nc,_=s.accept(); c.sendall(c.recv(100)[::-1])",
    ]));
    let got = wait_for("the installed pair to talk", || {
        let out = run(&[
            "-c",
            "import socket\nc=socket.create_connection(('127.77.3.1', 7000)); c.sendall(b'olleh'); print(c.recv(100).decode())",
        ])
        .output()
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    assert_eq!(got, "hello");

    let out = make("uninstall", &dest);
    assert!(
        out.status.success(),
        "make uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(&dest), Vec::<PathBuf>::new());
    // The directories install made are gone; the one that was there stays.
    let mut left: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dest.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            left.push(e.path());
            stack.push(e.path());
        }
    }
    left.sort();
    assert_eq!(
        left,
        vec![usr.clone(), usr.join("share"), usr.join("share/man")]
    );
}
