//! The message vectors of sendmmsg and recvmmsg: each entry a msghdr (as
//! sendmsg's and recvmsg's) and the length the call stores for it.
#![allow(unsafe_code)]

use super::*;
use core::marker::PhantomData;

/// sendmmsg's or recvmmsg's `msgvec` of `vlen` entries.
#[derive(Clone, Copy)]
pub(crate) struct Mmsgs<'call> {
    v: *mut libc::mmsghdr,
    n: usize,
    _call: PhantomData<&'call mut libc::mmsghdr>,
}

impl<'call> Mmsgs<'call> {
    /// # Safety
    /// sendmmsg(2)/recvmmsg(2)'s contract: `v` valid for `n` entries, each
    /// a valid msghdr and a writable `msg_len`.
    pub(crate) unsafe fn new(
        _scope: &'call Scope,
        v: *mut libc::mmsghdr,
        n: usize,
    ) -> Mmsgs<'call> {
        Mmsgs {
            v,
            n,
            _call: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        if self.v.is_null() {
            0
        } else {
            self.n
        }
    }

    fn entry(&self, i: usize) -> *mut libc::mmsghdr {
        assert!(i < self.len());
        // SAFETY: i < n entries (asserted; the constructor's contract).
        unsafe { self.v.add(i) }
    }

    /// Entry `i`'s msghdr, as sendmsg's.
    pub(crate) fn sent(&self, i: usize) -> InMsg<'call> {
        let e = self.entry(i);
        // SAFETY: a valid entry (the constructor's contract) holds a valid
        // msghdr; the pointer is computed without a reference.
        unsafe { InMsg::new(&Scope::new(), core::ptr::addr_of!((*e).msg_hdr)) }.widen()
    }

    /// Entry `i`'s msghdr, as recvmsg's.
    pub(crate) fn received(&self, i: usize) -> OutMsg<'call> {
        let e = self.entry(i);
        // SAFETY: as `sent`.
        unsafe { OutMsg::new(&Scope::new(), core::ptr::addr_of_mut!((*e).msg_hdr)) }.widen()
    }

    /// Stores entry `i`'s byte count.
    pub(crate) fn set_len(&self, i: usize, n: usize) {
        let e = self.entry(i);
        // SAFETY: a valid entry's msg_len is writable (the contract).
        unsafe {
            core::ptr::write_unaligned(core::ptr::addr_of_mut!((*e).msg_len), n as libc::c_uint)
        };
    }
}
