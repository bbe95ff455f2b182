//! Helpers shared by the cross-process tests.
#![allow(dead_code)]

use shmnet_ring::{Endpoint, Geometry, Segment};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs `f` in a forked child and returns its pid. The child exits with
/// `f`'s code, or 101 if it panicked; it never returns into the harness.
pub fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `f` (ring operations, allocation through
    // glibc's fork-safe malloc) and then _exit; it never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: terminating the child without running the harness's atexit.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid` (at most `limit`), returning its exit code; kills it on timeout.
pub fn wait_child(pid: libc::pid_t, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -libc::WTERMSIG(status)
            };
        }
        if start.elapsed() > limit {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("child {pid} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A liveness probe for `pid`: false once it exited (reaps it).
pub fn alive(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
}

pub fn dup(fd: &impl AsFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

/// The connector's endpoint, once the acceptor has initialised its side.
pub fn connect_when_ready(seg: &Segment, limit: Duration) -> Endpoint {
    let start = Instant::now();
    loop {
        if let Ok(ep) = seg.endpoint() {
            return ep;
        }
        assert!(
            start.elapsed() < limit,
            "acceptor never initialised its direction"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn geo_default() -> Geometry {
    Geometry::for_ring_bytes(1 << 20).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift64), chunk after chunk.
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Self {
        Stream(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}
