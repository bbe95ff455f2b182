//! The emulated sockets: the socket kinds (`socket`) and their state
//! (`conn`, `listener`, the options store `options_store`), the registry
//! behind the fd table, readiness for epoll and the polling engine, and
//! what crosses exec (`inherit`, `carry`).

pub(crate) mod carry;
pub(crate) mod conn;
pub(crate) mod inherit;
pub(crate) mod listener;
pub(crate) mod options_store;
pub(crate) mod polling;
pub(crate) mod readiness;
pub(crate) mod registry;
pub(crate) mod socket;
pub(crate) mod stale;
