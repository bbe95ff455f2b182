//! The caller's arguments that point into its memory, as typed handles.
//!
//! `abi` makes each handle from a hooked call's own arguments, under that
//! call's C contract (the constructors are `unsafe`, and say which
//! contract); the logic above then reads and writes through the handle
//! with safe methods, and only once it has decided the call is one of
//! ours (making a slice over a bad pointer that is passed through would
//! already be undefined behaviour). A handle lives for one call (`'call`):
//! it cannot be kept.
#![deny(unsafe_code)]

use core::marker::PhantomData;

use super::{clear_len, get_off, in_buf, in_iovecs, out_buf, out_iovecs, put_off};

mod buffers;
pub(crate) use buffers::*;
mod options;
pub(crate) use options::*;
mod addresses;
pub(crate) use mmsg::*;
mod mmsg;
pub(crate) use addresses::*;
mod waits;
pub(crate) use waits::*;
mod program;
pub(crate) use program::*;

/// One hooked call's frame: every handle borrows it, so none can outlive
/// the call that made it (`abi::decode` makes one per call).
pub(crate) struct Scope(PhantomData<*mut ()>);

impl Scope {
    pub(crate) fn new() -> Scope {
        Scope(PhantomData)
    }
}
