//! Helpers for tests that run real programs with libshmnet.so preloaded.
//!
//! Every wait is bounded: a program still running at its deadline is killed
//! and the test fails with whatever it printed.
#![allow(dead_code, unused_imports)] // each test binary uses a subset

pub mod host;
pub mod kernel;
pub mod net;
pub mod stats;
pub mod udp;

pub use kernel::{kernel_tcp_sockets, KernelSocket, ESTABLISHED, LISTEN, TIME_WAIT};
pub use net::{emulated_c, emulated_script, Net};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
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

/// A thread reading `r` to its end, lossily as UTF-8.
pub fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
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

/// Run to completion within `TIMEOUT`; require exit 0 and return stdout
/// (`what`, the status and both outputs are shown on failure).
pub fn stdout_of(what: &str, cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
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

// ---------------------------------------------------------------------------
// Helper programs: tests/helpers/{c,py,java,conf}

/// tests/helpers/`rel`.
pub fn helper(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(rel)
}

/// tests/helpers/c/`name`.c (`name` may have a folder: "readiness/poll")
/// compiled with `cc FLAGS -I<its folder> -o EXE SRC`, once per test
/// binary and set of flags.
pub fn build_c(name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let key = format!("{name} {flags:?}");
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(exe) = built.get(&key) {
        return exe.clone();
    }
    let src = helper(&format!("c/{name}.c"));
    let base = name.rsplit('/').next().unwrap_or(name);
    let exe = tmpdir(&format!("cc-{base}")).join(base);
    let out = Command::new("cc")
        .args(flags)
        .arg("-I")
        .arg(src.parent().expect("source folder"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed: scripts/install-deps.sh installs gcc");
    assert!(
        out.status.success(),
        "cc {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(key, exe.clone());
    exe
}

/// Preloaded `python3 tests/helpers/py/NAME args...` (the script is run
/// from its file, so it is not given `PRELUDE`).
pub fn py_file(name: &str, args: &[&str]) -> Command {
    let mut cmd = preloaded(python());
    cmd.arg(helper(&format!("py/{name}"))).args(args);
    cmd
}

// ---------------------------------------------------------------------------
// Background programs

/// Send `sig` to process group `pgid`.
pub fn kill_group(pgid: u32, sig: libc::c_int) {
    let pgid = libc::pid_t::try_from(pgid).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and has no memory-safety
    // preconditions; callers only name a group whose leader they have not
    // reaped yet, so the id cannot have been reused.
    unsafe { libc::kill(-pgid, sig) };
}

/// Wait until `leader` has exited (a zombie: its process-group id stays
/// reserved until it is reaped) or `deadline` passes, SIGKILL whatever is
/// left of its group, and reap it. None: it was still running at the
/// deadline.
pub fn reap_group(leader: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let pid = leader.id();
    let mut exited = false;
    while !exited && Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
        let state = state.rsplit_once(") ").map_or("", |(_, rest)| rest);
        exited = state.starts_with('Z') || state.is_empty();
        if !exited {
            thread::sleep(Duration::from_millis(10));
        }
    }
    kill_group(pid, libc::SIGKILL);
    let status = leader.wait().expect("wait");
    exited.then_some(status)
}

/// A running program (a server, a client): stdout read line by line (every
/// line kept in `seen`), stderr collected, stdin kept when the command
/// pipes it (for `go`). Killed (SIGKILL; its whole process group when
/// started with `group`) and reaped when dropped. `timeout` bounds every
/// wait that takes none.
pub struct Background {
    pub name: String,
    child: Child,
    group: bool,
    reaped: bool,
    timeout: Duration,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    pub seen: Vec<String>,
}

impl Background {
    /// `cmd` as "background program", with `TIMEOUT`.
    pub fn spawn(cmd: &mut Command) -> Background {
        Background::start("background program", cmd, TIMEOUT, false)
    }

    /// `cmd` with stdout and stderr piped; in its own process group if
    /// `group`.
    pub fn start(name: &str, cmd: &mut Command, timeout: Duration, group: bool) -> Background {
        if group {
            cmd.process_group(0);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} {cmd:?}: {e}"));
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
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            group,
            reaped: false,
            timeout,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// SIGKILL it (its group, leader not reaped yet) and reap it, unless
    /// already reaped; its exit status when reaped now.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        if self.group {
            kill_group(self.child.id(), libc::SIGKILL);
        } else {
            let _ = self.child.kill();
        }
        self.reaped = true;
        self.child.wait().ok()
    }

    /// Kill it now; returns its stderr.
    pub fn kill(&mut self) -> String {
        self.kill9();
        self.take_stderr()
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Kill it, read what is left of its stdout.
    fn kill_and_drain(&mut self) -> Option<ExitStatus> {
        let status = self.kill9();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        status
    }

    /// Kill it and fail the test with everything it said.
    pub fn fail(&mut self, msg: &str) -> ! {
        let status = self.kill_and_drain();
        let stderr = self.take_stderr();
        panic!(
            "{}: {msg}\nexit: {status:?}\nstdout:\n{}\nstderr:\n{stderr}",
            self.name,
            self.seen.join("\n")
        );
    }

    /// The next stdout line, within `timeout`.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(self.timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(e) => self.fail(&format!("no line ({e})")),
        }
    }

    /// The next line starting with `prefix` (others are kept in `seen`),
    /// within `timeout`.
    pub fn expect_within(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {prefix:?} line within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("exited before saying {prefix:?}"))
                }
            }
        }
    }

    /// `expect_within` its `timeout`.
    pub fn expect(&mut self, prefix: &str) -> String {
        self.expect_within(prefix, self.timeout)
    }

    /// Let it past its current `pause`.
    pub fn go(&mut self) {
        let ok = self
            .stdin
            .as_mut()
            .is_some_and(|s| s.write_all(b"go\n").and_then(|()| s.flush()).is_ok());
        if !ok {
            self.fail("cannot write go to its stdin");
        }
    }

    /// Close its stdin, read stdout to its end and reap it within its
    /// `timeout` (at least 1 s for the reaping); a group's leftovers are
    /// SIGKILLed. Err: what missed the deadline (it is then killed).
    fn wait_exit(&mut self) -> Result<ExitStatus, &'static str> {
        self.stdin.take();
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill9();
                    return Err("did not finish in time");
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_secs(1));
        let status = if self.group {
            reap_group(&mut self.child, Instant::now() + left)
        } else {
            wait_deadline(&mut self.child, left)
        };
        self.reaped = true;
        status.ok_or("did not exit in time")
    }

    /// Wait for a successful exit within its `timeout`; returns its stderr.
    pub fn finish(&mut self) -> String {
        match self.wait_exit() {
            Ok(status) if status.success() => self.take_stderr(),
            Ok(status) => self.fail(&format!("failed: {status}")),
            Err(msg) => self.fail(msg),
        }
    }

    /// `finish`, and nothing on stderr (no libshmnet line, no traceback).
    pub fn finish_clean(&mut self) {
        let stderr = self.finish();
        assert!(
            stderr.is_empty(),
            "{} stderr:\n{stderr}\nstdout:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }

    /// Read stdout to its end and reap it within its `timeout`: its exit
    /// status (None: killed at the deadline) and stderr.
    pub fn finish_status(&mut self) -> (Option<ExitStatus>, String) {
        let status = self.wait_exit().ok();
        (status, self.take_stderr())
    }

    /// `finish_status`, then a description of what went wrong: None for
    /// exit 0 with nothing on stderr (no libshmnet line, no traceback).
    pub fn finish_problem(&mut self) -> Option<String> {
        match self.finish_status() {
            (Some(s), stderr) if s.success() && stderr.is_empty() => None,
            (status, stderr) => Some(self.describe(status, &stderr)),
        }
    }

    /// Its name, `status`, everything it printed and `stderr`.
    pub fn describe(&self, status: Option<ExitStatus>, stderr: &str) -> String {
        let status = status.map_or(
            format!("still running after {:?}, killed", self.timeout),
            |s| s.to_string(),
        );
        format!(
            "{}: {status}\nstdout:\n{}\nstderr:\n{stderr}",
            self.name,
            self.seen.join("\n")
        )
    }

    /// Kill it (if still running) and describe it, for a failure report.
    pub fn kill_and_describe(&mut self) -> String {
        let status = if self.reaped {
            None
        } else {
            self.child.try_wait().ok().flatten()
        };
        self.kill_and_drain();
        let stderr = self.take_stderr();
        self.describe(status, &stderr)
    }

    /// Lines seen so far that start with `prefix`, split into words.
    pub fn lines_with(&self, prefix: &str) -> Vec<Vec<String>> {
        self.seen
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A program a test needs is missing: as root (CI, where
/// scripts/install-deps.sh has run) that is a failure — a silent skip
/// would hide a missing install step; otherwise the test is skipped with
/// a line saying so.
pub fn missing_program(test: &str, what: &str) {
    if host::is_root() {
        panic!("{test}: {what} is not installed (scripts/install-deps.sh installs it)");
    }
    eprintln!("{test}: skipped: {what} is not installed (scripts/install-deps.sh installs it)");
}

/// A pseudo-random file of `len` bytes (xorshift64*), readable by all.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    use std::os::unix::fs::PermissionsExt;
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        data.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// sha256 of each file, by sha256sum(1) (not preloaded).
pub fn sha256_files(files: &[PathBuf]) -> Vec<String> {
    let out = Command::new("sha256sum")
        .args(files)
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sha256sum (coreutils)");
    assert!(
        out.status.success(),
        "sha256sum: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let sums: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(sums.len(), files.len(), "sha256sum output:\n{text}");
    sums
}

// ---------------------------------------------------------------------------
// Programs and their processes

/// The nginx binary (/usr/sbin is not on every user's PATH).
pub fn nginx_bin() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path
        .into_iter()
        .chain(["/usr/sbin/nginx", "/usr/local/sbin/nginx"].map(PathBuf::from))
        .find(|p| p.is_file())
        .expect("nginx is not installed: scripts/install-deps.sh installs it")
}

fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    Some(line[field.len()..].trim().to_string())
}

/// Children of `parent` (from /proc/PID/status PPid), with their real uid.
pub fn children_of(parent: u32) -> Vec<(u32, u32)> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if proc_status_field(pid, "PPid:").and_then(|p| p.parse().ok()) == Some(parent) {
            let uid = proc_status_field(pid, "Uid:")
                .and_then(|u| u.split_whitespace().next()?.parse().ok())
                .unwrap_or(u32::MAX);
            kids.push((pid, uid));
        }
    }
    kids.sort_unstable();
    kids
}
