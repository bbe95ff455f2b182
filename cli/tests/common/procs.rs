//! The processes a test starts, and everything they fork, are killed and
//! reaped when the test ends: on drop (also on panic) and, if the test
//! binary itself is killed, by a watchdog.
//!
//! Each child starts a process group of its own; dropping its guard kills
//! the group (SIGKILL) and reaps it. The test binary is a child subreaper,
//! so the group's orphans (a server's forked workers, a sweep's 70
//! sleepers) are its children too and reaped here, not left to init. A
//! watchdog (python, in a group of its own so that ^C of the test run does
//! not reach it) holds the read end of a pipe only this binary writes: at
//! EOF (the binary exited or was killed) it kills the groups still
//! registered. A group's leader stays unreaped (a zombie) until its guard
//! is dropped, so its id cannot name another process's group meanwhile.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const WATCHDOG: &str = "\
import os, signal, sys
live = set()
for line in sys.stdin:
    op, pid = line.split()
    (live.add if op == '+' else live.discard)(int(pid))
for pid in live:
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass
";

fn watchdog() -> &'static Mutex<ChildStdin> {
    static W: OnceLock<Mutex<ChildStdin>> = OnceLock::new();
    W.get_or_init(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        // The pipe's write end is close-on-exec: no child keeps it open.
        // Never waited for: it ends after this binary (at the pipe's EOF).
        #[allow(clippy::zombie_processes)]
        let mut w = Command::new(super::python())
            .args(["-c", WATCHDOG])
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("the tests' watchdog (python3)");
        Mutex::new(w.stdin.take().expect("piped stdin"))
    })
}

fn watch(op: char, pid: u32) {
    let mut w = watchdog().lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(w, "{op} {pid}");
}

/// Kills process group `pgid` and reaps what of it are our children, until
/// none is left (10 s at most: a drop must not hang a test run).
fn kill_group(pgid: i32) {
    let start = Instant::now();
    loop {
        // SAFETY: kill(2) and waitpid(2) on a group this test started
        // (its leader, or a detached process's own group); no memory passed.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
            while libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            if libc::kill(-pgid, 0) != 0 {
                return;
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            eprintln!("tests: process group {pgid} still has members after SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child in a process group of its own: the group is killed (SIGKILL)
/// and reaped on drop.
pub struct Background(Child);

impl Background {
    pub fn spawn(cmd: &mut Command) -> Background {
        watchdog(); // the subreaper first: the child may fork at once
        let child = cmd.process_group(0).spawn().expect("spawn");
        watch('+', child.id());
        Background(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        self.0.stdout.take().expect("piped stdout")
    }

    /// Waits until the child exited, leaving it unreaped (its pid keeps
    /// naming its group until the drop).
    pub fn wait_exit(&self) {
        // SAFETY: waitid(2) with WNOWAIT on our own child, into a zeroed
        // siginfo_t we own.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            while libc::waitid(
                libc::P_PID,
                self.0.id(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            ) < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: kill(2) on our own child's group (its leader is not
        // reaped yet, so the id is still its group's).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
        kill_group(pgid);
        watch('-', pgid as u32);
    }
}

/// Processes that left our children's groups (a daemon after `setsid`,
/// nginx's master): each is the leader of its own group, which is killed
/// and reaped on drop.
#[derive(Default)]
pub struct Detached(Vec<u32>);

impl Detached {
    pub fn new(pids: &[u32]) -> Detached {
        let mut d = Detached::default();
        for &pid in pids {
            d.add(pid);
        }
        d
    }

    pub fn add(&mut self, pid: u32) {
        watch('+', pid);
        self.0.push(pid);
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on a process this test started (alive: the
            // test saw it; orphaned, it is our child, so unreaped until here).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            kill_group(pid as i32);
            // SAFETY: waitpid(2) on that process (ECHILD at once if it is
            // not our child or already reaped), no status wanted.
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
            watch('-', pid);
        }
    }
}
