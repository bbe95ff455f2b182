//! Helpers for the shmnet CLI's tests: the built binary and library, the
//! real python3, private directories, processes killed on drop (`procs`),
//! `shmnet ss --json` and its entries (`ss`).
#![allow(dead_code)]

mod procs;
mod ss;

#[allow(unused_imports)]
pub use procs::{Background, Detached};
#[allow(unused_imports)]
pub use ss::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn shmnet() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shmnet"))
}

/// The libshmnet.so cargo built with the binary (`cargo test --workspace`
/// builds both into one profile directory: the cdylib in it or its deps/),
/// the newer of the two.
pub fn lib() -> PathBuf {
    let bin = shmnet().parent().unwrap();
    [bin.join("libshmnet.so"), bin.join("deps/libshmnet.so")]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.canonicalize().unwrap())
        .unwrap_or_else(|| {
            panic!(
                "libshmnet.so not found near {}: build the workspace (cargo test --workspace)",
                bin.display()
            )
        })
}

pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

/// A fresh directory, mode 0700, under cargo's per-target temp dir.
pub fn tmpdir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `shmnet run --dir DIR -- python3 SCRIPT ARGS...`, stdout piped.
/// Killed with all it forked when the test ends (see `procs`).
pub fn run_py(dir: &Path, script: &str, args: &[&str]) -> Background {
    Background::spawn(
        Command::new(shmnet())
            .env("SHMNET_LIB", lib())
            .arg("run")
            .arg("--dir")
            .arg(dir)
            .arg("--")
            .arg(python())
            .arg(helper(script))
            .args(args)
            .stdout(Stdio::piped()),
    )
}

/// Reads one line of a child's stdout.
pub fn first_line(b: &mut Background) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(b.take_stdout())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

/// The second word of a child's first line ("port 4242": the port).
pub fn first_line_word(b: &mut Background) -> String {
    first_line(b)
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no second word in the helper's first line"))
        .to_owned()
}

/// `shmnet ARGS...` with the built library.
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(shmnet());
    c.env("SHMNET_LIB", lib()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("shmnet")
}

/// Polls `f` until it gives Some, for up to 20 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child's stdout, line by line.
pub struct Lines(std::io::BufReader<std::process::ChildStdout>);

impl Lines {
    pub fn of(b: &mut Background) -> Lines {
        Lines(std::io::BufReader::new(b.take_stdout()))
    }

    /// The next line's words (panics at the end of the output).
    pub fn words(&mut self) -> Vec<String> {
        use std::io::BufRead;
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the helper's output ended");
        line.split_whitespace().map(str::to_owned).collect()
    }
}

/// The effective uid of this test process (from /proc: no unsafe).
pub fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The names of the status files in `dir`.
pub fn status_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("status-"))
        .collect()
}
