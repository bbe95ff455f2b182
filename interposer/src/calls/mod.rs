//! What each hooked call does, one module per call family; each function
//! returns an `Action` for `abi::dispatch`.
//! No unsafe: the arguments come decoded into safe types by `abi`.
#![forbid(unsafe_code)]

pub(crate) mod datagram;
pub(crate) mod descriptor;
pub(crate) mod endpoint;
pub(crate) mod exec;
pub(crate) mod iomux;
pub(crate) mod listen;
pub(crate) mod options;
pub(crate) mod passing;
pub(crate) mod plain_exec;
pub(crate) mod process;
pub(crate) mod sandbox;
pub(crate) mod stream;
