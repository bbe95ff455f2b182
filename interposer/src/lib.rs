//! libshmnet: an `LD_PRELOAD` socket interposer that carries TCP connections
//! between co-located processes through shared-memory rings.
//!
//! Five layers; every `use crate::` points down this list (the `layering`
//! test fails on one that points up):
//!
//! - `abi`: the `#[no_mangle]` exports, made from one symbol list, and
//!   `dispatch` (re-entry guard, errno, panics), the exec trampolines;
//! - `calls`: one module per call family (endpoint, listen, stream,
//!   options, descriptor, process, exec, iomux, sandbox): what each hooked
//!   call does;
//! - `sockets`: the emulated socket kinds (`socket`: connections and the
//!   options store; `listener`), the registry behind the fd table,
//!   readiness and the wait engine (`wait`), and what goes across exec
//!   (`carrier`) or a re-pointed fd (`carry`);
//! - `transport`: how two processes find each other and set a connection
//!   up: rendezvous, handshake, lookup, parking, the segment pool;
//! - `platform`: the process's services: system calls (`sys`), the real
//!   libc functions (`real`), locks, log, config, policy, counters, the
//!   fork generation, the library's own fds, netlink, the safe directory.
//!
//! `unsafe` is allowed in `abi` (exports, trampolines, argument decoding),
//! `platform::sys` (ABI contact: the caller's memory as typed handles,
//! sockaddrs, errno), `platform::real` (typed calls through dlsym'd
//! pointers), `platform::lock`, `platform::shared_lock`, and the shared files' mappings
//! (`platform::shared_file`, `platform::stats`, `platform::status`); the rest is `deny(unsafe_code)`, and `sockets`, `transport`
//! and `calls` forbid it.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Unit tests build the exports without `#[no_mangle]` (the test binary must
// not interpose its own libc calls), which leaves the hook chain unused.
#![cfg_attr(test, allow(dead_code))]

#[macro_use]
mod platform;
mod abi;
mod calls;
mod sockets;
mod transport;

#[cfg(test)]
mod layering;

pub use platform::{config, fdtable};
