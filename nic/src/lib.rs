//! shmnet-nic: a shared-memory NIC between network namespaces (issue 18).
//!
//! Each partition (a network namespace) gets a TUN device; the wire between
//! them is one shared-memory region laid out after claims 96-100: every
//! partition places packets in buffers of its own pool and names them in
//! its output queues, the others poll those queues and are woken by a
//! doorbell only when they sleep. The region is hostile input: every
//! descriptor and every index read from it is checked. docs/nic.md has the
//! design, the layout and the safety argument.

pub mod counters;
pub mod engine;
mod futex;
pub mod layout;
pub mod netns;
pub mod packet;
pub mod port;
pub mod region;
pub mod segment;
pub mod sockdiag;
pub mod status;
pub mod tun;
pub mod vnet;
pub mod warden;

pub use engine::{run, run_with, stop_on_signals, Config, Partition};
