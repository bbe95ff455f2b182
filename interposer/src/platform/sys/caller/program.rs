//! prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)'s filter program.
#![allow(unsafe_code)]

use super::*;
use core::marker::PhantomData;

/// The `struct sock_fprog` a process is about to install.
pub(crate) struct SeccompProg<'call> {
    prog: *const u8,
    _call: PhantomData<&'call [u8]>,
}

impl SeccompProg<'_> {
    /// # Safety
    /// prctl(2)'s contract for PR_SET_SECCOMP with SECCOMP_MODE_FILTER:
    /// `prog` points at a `struct sock_fprog` whose `filter` points at its
    /// `len` instructions (a bad pointer is EFAULT where the kernel can
    /// check, as `user_copy` says).
    pub(crate) unsafe fn new<'call>(_scope: &'call Scope, prog: *const u8) -> SeccompProg<'call> {
        SeccompProg {
            prog,
            _call: PhantomData,
        }
    }

    /// The program's instructions, 8 bytes each as in memory; None when
    /// they cannot be read or there are none or too many (BPF_MAXINSNS: the
    /// kernel refuses the program then).
    pub(crate) fn instructions(&self) -> Option<Vec<[u8; 8]>> {
        // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        let mut head = [0u8; 16];
        // SAFETY: the constructor's contract.
        unsafe { crate::platform::sys::user_read(self.prog, &mut head) }.ok()?;
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        if len == 0 || len > 4096 {
            return None;
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&head[8..16]);
        let filter = usize::from_ne_bytes(at) as *const u8;
        let mut raw = vec![0u8; len * 8];
        // SAFETY: the constructor's contract (`filter` holds `len`
        // instructions of 8 bytes).
        unsafe { crate::platform::sys::user_read(filter, &mut raw) }.ok()?;
        Some(
            raw.chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    b
                })
                .collect(),
        )
    }
}
