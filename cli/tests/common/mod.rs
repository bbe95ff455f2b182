//! Helpers for the shmnet CLI's tests: the built binary and library, the
//! real python3, private directories, processes killed on drop.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// A process killed (SIGKILL) and reaped on drop.
pub struct Background(pub Child);

impl Background {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shmnet run --dir DIR -- python3 SCRIPT ARGS...`, stdout piped.
pub fn run_py(dir: &Path, script: &str, args: &[&str]) -> Background {
    let child = Command::new(shmnet())
        .env("SHMNET_LIB", lib())
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .arg("--")
        .arg(python())
        .arg(helper(script))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("shmnet run");
    Background(child)
}

/// Reads one line of a child's stdout.
pub fn first_line(b: &mut Background) -> String {
    use std::io::BufRead;
    let out = b.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    line.trim().to_owned()
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
        Lines(std::io::BufReader::new(
            b.0.stdout.take().expect("piped stdout"),
        ))
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

/// Processes that are not our children (a server's forked workers, a
/// daemon), killed (SIGKILL) on drop.
#[derive(Default)]
pub struct Pids(pub Vec<u32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on a pid of a process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
