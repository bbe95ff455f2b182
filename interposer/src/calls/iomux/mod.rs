//! The multiplexing calls: poll and ppoll (`poll`), select and pselect
//! (`select`), epoll_wait, epoll_pwait and epoll_pwait2 (`epoll`). Each is
//! a wait set over the one wait engine, `sockets::wait` (spin, then sleep
//! in the kernel); poll and select share the look at the rings (`rings`).
//! epoll_ctl stays with the sets' state in `sockets::readiness`: the
//! registrations carried over to a new object (`replay_carried`, which the
//! listener calls) go through it.
//!
//! Readiness: a lazy reader (`Connection::lazy`) keeps its flag down while
//! it is not waiting, so its ring can hold data with no doorbell byte
//! queued. poll and select therefore look at the rings first and raise the
//! flags, and only then ask the kernel; readability the kernel reports for
//! bytes of data already read is taken back (`Connection::really_readable`).
//! A reader of ours asleep taking doorbell bytes in another thread could
//! take the byte a poller waits for: the poller then sleeps in short slices
//! and looks at the rings between them (`Connection::add_waiter`).
//! Connections in an epoll set are eager, so the kernel's answer is exact,
//! except for data that came before they joined (`readiness::pending`,
//! reported by `epoll`).
#![forbid(unsafe_code)]

mod datagram_spin;

/// A wait or an epoll set takes `fd`'s file: one of the default mode's
/// UDP sockets still the kernel's own file is the kernel's for good
/// (decision 64); one another thread converts is waited for.
#[inline]
pub(crate) fn captured(fd: core::ffi::c_int) {
    crate::sockets::datagram::pristine::capture(fd);
}
pub(crate) mod epoll;
pub(crate) mod poll;
mod rings;
pub(crate) mod select;
