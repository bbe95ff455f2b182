//! The shared-memory transport of libshmnet: a connection segment holding two
//! circular buffers of data segments, each driven by a control segment with
//! head, tail, waiting flags and per-segment begin/end/length/next/last
//! fields — the data structure of the shared-memory network emulation claims
//! (seed 001 claim 1; seed 000 claims 85-88).
//!
//! # Where things are
//!
//! - [`Segment`]: a sealed memfd, created by the connecting side and attached
//!   by the accepting side; each maps it and gets an [`Endpoint`], a pair of
//!   halves. [`heap_channel`] makes one direction in heap memory instead
//!   (tests, models, the examples below).
//! - [`Producer`] / [`Consumer`]: one direction's stream protocol —
//!   non-blocking writes and reads, peeks, positions, end-of-stream, reset —
//!   and blocking variants that spin then sleep on a shared futex
//!   ([`WaitPolicy`]). [`RoomWaiter`] and [`Probe`] wait for room and look
//!   for data without holding a half.
//! - [`Doorbell`] is the hook through which a waiter in poll/epoll is woken
//!   instead; the bookkeeping that makes its signals exact (ring counts,
//!   filler, the producer's busy marker) is in [`notify`].
//! - [`SideGuard`]: the lock between processes that share one side after
//!   fork. [`layout`]: the shared memory, word by word.
//! - [`dgram`]: datagrams (issue 16): many senders to one receiver through
//!   the receiver's target segment of fixed-size partitions (seed 004).
//!
//! The peer may write anything into the shared pages at any time: every
//! value read from them is checked, and a violation is an error
//! ([`RingError::Corrupt`]) that resets the connection — never a panic or an
//! out-of-bounds access. No lock is ever shared with the peer; processes of
//! one side that share a connection after fork serialise on a lock of their
//! own side's line ([`SideGuard`]), which a dead holder cannot keep.
//!
//! # Example
//!
//! ```
//! use shmnet_ring::{Geometry, Segment, WaitPolicy};
//!
//! // The connecting side creates the segment and sends its memfd to the
//! // accepting side (SCM_RIGHTS); here both sides are in one process.
//! let geo = Geometry::for_ring_bytes(64 << 10)?;
//! let connector = Segment::create(geo)?;
//! let fd = connector.fd().unwrap().try_clone_to_owned()?;
//! let acceptor = Segment::attach(fd)?;
//!
//! let mut a = connector.endpoint()?;
//! let mut b = acceptor.endpoint()?;
//! a.tx.write_all(b"hello", &WaitPolicy::default())?;
//! let mut buf = [0u8; 16];
//! let n = b.rx.read_blocking(&mut buf, &WaitPolicy::default())?;
//! assert_eq!(&buf[..n], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod channel;
mod data;
pub mod dgram;
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

pub use channel::notify;
#[cfg(not(loom))]
pub use channel::Space;
pub use channel::{Consumer, Probe, Producer, RoomWaiter, WaitKind};
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
