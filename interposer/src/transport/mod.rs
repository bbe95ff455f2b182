//! How two processes find each other and set a connection up: the
//! rendezvous names, the kernel lookup of the listener a connect reaches,
//! the handshake messages, parked connectors, and the pool of segments
//! kept for reuse between the same two processes.
#![forbid(unsafe_code)]

pub(crate) mod handshake;
pub(crate) mod link;
pub(crate) mod lookup;
pub(crate) mod parking;
pub(crate) mod pool;
pub(crate) mod rendezvous;
