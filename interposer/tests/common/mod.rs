//! Helpers for tests that run real programs with libshmnet.so preloaded.
//!
//! Every wait is bounded: a program still running at its deadline is killed
//! and the test fails with whatever it printed.
#![allow(dead_code)] // each test binary uses a subset

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Deadline for one program run.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Python lines every script starts with: fail unless the library is mapped.
pub const PRELUDE: &str = "import sys\n\
if not any('libshmnet' in l for l in open('/proc/self/maps')):\n    \
sys.exit('libshmnet.so is not loaded')\n";

/// The libshmnet.so cargo built with this test: target/<profile>/ or its
/// deps/ directory, whichever is newer.
pub fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let deps = exe.parent().expect("deps dir").to_path_buf();
        let candidates = [deps.join("libshmnet.so"), deps.join("../libshmnet.so")];
        candidates
            .iter()
            .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p.canonicalize().expect("canonical lib path"))
            .unwrap_or_else(|| panic!("libshmnet.so not found near {}", exe.display()))
    })
}

/// The real python3 interpreter (not a pyenv shim script, which would put
/// bash under the preload too).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed");
        assert!(out.status.success(), "python3 failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A fresh directory under cargo's per-target temp dir.
pub fn tmpdir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `program` with only our library preloaded and no inherited SHMNET_*.
pub fn preloaded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHMNET_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LD_PRELOAD", lib()).stdin(Stdio::null());
    cmd
}

/// Preloaded `python3 -c PRELUDE+script args...`.
pub fn py(script: &str, args: &[&str]) -> Command {
    let mut cmd = preloaded(python());
    cmd.arg("-c").arg(format!("{PRELUDE}{script}")).args(args);
    cmd
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run to completion within `TIMEOUT`, capturing output.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, TIMEOUT);
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!("{cmd:?} timed out\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
}

/// Run and require exit 0 and an empty stderr (pass-through adds nothing).
pub fn run_clean(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Wait for exit until `timeout`; on timeout kill, reap and return None.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A background program (a server) killed when dropped, whose stdout is
/// read line by line.
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Background {
    pub fn spawn(cmd: &mut Command) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(drain(child.stderr.take().unwrap()));
        Background {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, within `TIMEOUT`.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap());
                panic!("no line from background program ({e}); stderr:\n{stderr:?}");
            }
        }
    }

    /// Wait for a clean exit within `TIMEOUT`; returns stderr.
    pub fn finish(mut self) -> String {
        let status = wait_deadline(&mut self.child, TIMEOUT);
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "background program: {status:?}\nstderr:\n{stderr}"
        );
        stderr
    }

    /// Kill it now; returns its stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
