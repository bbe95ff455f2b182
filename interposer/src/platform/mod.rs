//! The process's services, below every socket concept: system calls, the
//! real libc functions, locks, logging, configuration, policy, counters,
//! the fork generation, the library's own fds, netlink and the safe
//! directory.

#[macro_use]
pub(crate) mod log;
#[macro_use]
mod symbols;

pub(crate) mod cancel;
pub mod config;
pub mod fdtable;
pub(crate) mod file_kinds;
pub(crate) mod fork;
pub(crate) mod guard;
pub(crate) mod internal_fd;
pub(crate) mod lazysym;
pub(crate) mod lock;
pub(crate) mod netlink;
pub(crate) mod peer_ns;
pub(crate) mod pocket;
pub(crate) mod policy;
pub(crate) mod putoff;
pub(crate) mod real;
pub(crate) mod safedir;
pub(crate) mod sandbox;
pub(crate) mod seccomp_filter;
pub(crate) mod shared_file;
pub(crate) mod shared_lock;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod sys;
