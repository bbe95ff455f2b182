//! Errors of the ring, and how they map to the errno a socket would give.

use std::fmt;

/// Why a ring operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// Nothing to read, or no room to write, right now (EAGAIN).
    WouldBlock,
    /// The other side closed its end: writing is pointless (EPIPE).
    Closed,
    /// The connection was reset by either side, or its shared memory was
    /// found corrupt earlier (ECONNRESET).
    Reset,
    /// A value read from shared memory broke an invariant. The connection has
    /// been marked reset; the string names the check that failed.
    Corrupt(&'static str),
    /// A blocking call reached its deadline (ETIMEDOUT).
    TimedOut,
    /// A blocking call's liveness probe reported the peer gone (ECONNRESET).
    PeerGone,
    /// A signal interrupted an interruptible wait (EINTR).
    Interrupted,
}

impl RingError {
    /// The errno a kernel TCP socket reports in the same situation.
    ///
    /// ```
    /// use shmnet_ring::RingError;
    ///
    /// assert_eq!(RingError::WouldBlock.errno(), libc::EAGAIN);
    /// assert_eq!(RingError::Corrupt("head out of range").errno(), libc::ECONNRESET);
    /// ```
    pub fn errno(self) -> i32 {
        match self {
            RingError::WouldBlock => rustix::io::Errno::AGAIN.raw_os_error(),
            RingError::Closed => rustix::io::Errno::PIPE.raw_os_error(),
            RingError::Reset | RingError::Corrupt(_) | RingError::PeerGone => {
                rustix::io::Errno::CONNRESET.raw_os_error()
            }
            RingError::TimedOut => rustix::io::Errno::TIMEDOUT.raw_os_error(),
            RingError::Interrupted => rustix::io::Errno::INTR.raw_os_error(),
        }
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::WouldBlock => f.write_str("ring would block"),
            RingError::Closed => f.write_str("peer closed its end"),
            RingError::Reset => f.write_str("connection reset"),
            RingError::Corrupt(what) => write!(f, "shared memory corrupt: {what}"),
            RingError::TimedOut => f.write_str("timed out"),
            RingError::PeerGone => f.write_str("peer process gone"),
            RingError::Interrupted => f.write_str("interrupted by a signal"),
        }
    }
}

impl std::error::Error for RingError {}

/// Why a connection segment could not be created or attached.
#[derive(Debug)]
pub enum AttachError {
    /// A system call failed (memfd_create, ftruncate, fcntl, fstat, mmap).
    Os(std::io::Error),
    /// The segment's header or geometry is not one this library accepts.
    Invalid(&'static str),
    /// The peer has not initialised its direction yet.
    NotReady,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::Os(e) => write!(f, "system call failed: {e}"),
            AttachError::Invalid(what) => write!(f, "invalid segment: {what}"),
            AttachError::NotReady => f.write_str("peer direction not initialised yet"),
        }
    }
}

impl std::error::Error for AttachError {}

impl From<std::io::Error> for AttachError {
    fn from(e: std::io::Error) -> Self {
        AttachError::Os(e)
    }
}

impl From<rustix::io::Errno> for AttachError {
    fn from(e: rustix::io::Errno) -> Self {
        AttachError::Os(e.into())
    }
}
