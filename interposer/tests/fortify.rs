//! A C program built with _FORTIFY_SOURCE imports `__read_chk`,
//! `__recv_chk`, `__recvfrom_chk` and `fcntl64`: the hooks must run for
//! those names and keep glibc's overflow check (abort when the length
//! exceeds the buffer).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use common::{build_c, preloaded, run, tmpdir};

#[test]
fn fortified_calls_are_hooked_and_checked() {
    let exe = build_c(
        "fortified",
        &["-O2", "-D_FORTIFY_SOURCE=2", "-D_FILE_OFFSET_BITS=64"],
    );
    let imports = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(&exe)
        .output();
    let imports = String::from_utf8_lossy(&imports.expect("nm (binutils)").stdout).into_owned();
    let wanted = [
        "__read_chk",
        "__recv_chk",
        "__recvfrom_chk",
        "fcntl64",
        "ioctl",
    ];
    for sym in wanted {
        assert!(
            imports.contains(sym),
            "compiler did not emit {sym}:\n{imports}"
        );
    }

    let log = tmpdir("fortify-log").join("trace.log");
    let out = run(preloaded(&exe).arg("4").envs([
        ("SHMNET_LOG", "trace"),
        ("SHMNET_LOG_FILE", log.to_str().unwrap()),
    ]));
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.stdout, "abcd efgh ijkl -1 EAGAIN 3\n");
    let trace = std::fs::read_to_string(&log).unwrap();
    for sym in wanted {
        assert!(
            trace.contains(&format!("] {sym}(")),
            "{sym} not hooked:\n{trace}"
        );
    }

    // nbytes > buflen: glibc's __chk_fail aborts, exactly as without us.
    let out = run(preloaded(&exe).arg("8"));
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", out.stderr);
    assert!(
        out.stderr.contains("buffer overflow detected"),
        "{}",
        out.stderr
    );
    let plain = run(Command::new(&exe).arg("8"));
    assert_eq!(plain.status.signal(), out.status.signal());
}
