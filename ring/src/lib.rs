//! The shared-memory transport of libshmnet: a connection segment holding two
//! circular buffers of data segments, each driven by a control segment with
//! head, tail, waiting flags and per-segment begin/end/length/next/last
//! fields — the data structure of the shared-memory network emulation claims
//! (seed 001 claim 1; seed 000 claims 85-88).
//!
//! - [`Segment`]: a sealed memfd, created by the connecting side and attached
//!   by the accepting side; each maps it and gets an [`Endpoint`].
//! - [`Producer`] / [`Consumer`]: non-blocking stream writes and reads,
//!   end-of-stream, reset, and blocking variants that spin then sleep on a
//!   shared futex ([`WaitPolicy`]); [`Doorbell`] is the hook through which a
//!   waiter in poll/epoll is woken.
//!
//! The peer may write anything into the shared pages at any time: every
//! value read from them is checked, and a violation is an error
//! ([`RingError::Corrupt`]) that resets the connection — never a panic or an
//! out-of-bounds access. No lock is ever shared with the peer; processes of
//! one side that share a connection after fork serialise on a lock of their
//! own side's line ([`SideGuard`]), which a dead holder cannot keep.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod channel;
mod data;
mod error;
mod heap;
pub mod layout;
#[cfg(not(loom))]
mod memfd;
#[cfg(not(loom))]
mod restrict;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod sidelock;
mod sync;
mod wait;

pub use channel::{Consumer, Probe, Producer, RoomWaiter, TakenCount, WaitKind};
pub use error::{AttachError, RingError};
pub use heap::heap_channel;
pub use layout::Geometry;
#[cfg(not(loom))]
pub use restrict::{set_syscalls_restricted, syscalls_restricted, yield_cpu};
#[cfg(not(loom))]
pub use segment::{Endpoint, Role, Segment};
#[cfg(not(loom))]
pub use sidelock::SideGuard;
pub use wait::{spin_until, Doorbell, WaitPolicy};
