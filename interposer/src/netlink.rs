//! Netlink queries of this network namespace (stub: being written).
#![deny(unsafe_code)]
