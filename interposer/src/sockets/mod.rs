//! The emulated sockets: the socket kinds (`socket`) and their state
//! (`conn`, `listener`, the options store `options_store`), the registry
//! behind the fd table, readiness for epoll, the wait engine that poll,
//! select and epoll share (`wait`), and what crosses exec (`carrier`) or a
//! re-pointed fd (`carry`), and fds given back when the application runs
//! out (`spare_fds`).
#![forbid(unsafe_code)]

pub(crate) mod carrier;
pub(crate) mod carry;
pub(crate) mod conn;
pub(crate) mod connecting;
pub(crate) mod datagram;
pub(crate) mod listener;
pub(crate) mod options_store;
pub(crate) mod quiet;
pub(crate) mod readiness;
pub(crate) mod refusal;
pub(crate) mod registry;
pub(crate) mod socket;
pub(crate) mod spare_fds;
pub(crate) mod stale;
pub(crate) mod wait;
