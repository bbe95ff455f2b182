//! libshmnet: an `LD_PRELOAD` socket interposer that carries TCP connections
//! between co-located processes through shared-memory rings.
//!
//! The hooks arrive with the interposer core; for now the library loads and
//! passes every call through untouched.
