//! The rendezvous directory, opened once and verified (stub: being written).
#![deny(unsafe_code)]
