//! Byte copies into and out of a channel's data area.
//!
//! The data area is shared with a peer that may write it concurrently, so no
//! `&[u8]` over it is ever formed: bytes move only through raw-pointer copies.
//! Under loom every byte is a tracked cell instead, so the model checker
//! flags any read of data that the ring's atomics did not order after its
//! write.

/// What keeps a channel's memory mapped (a memfd mapping, or heap memory):
/// every handle that reaches into it holds one.
pub(crate) type Keep = std::sync::Arc<dyn Send + Sync>;

/// One channel's data area: `len` bytes, offsets checked by the caller
/// against its private geometry before every copy.
#[derive(Clone)]
pub(crate) struct DataArea {
    #[cfg(not(loom))]
    base: *mut u8,
    #[cfg(loom)]
    cells: *const loom::cell::UnsafeCell<u8>,
    len: usize,
    /// A shared mapping of a memfd: pages are given back with
    /// `MADV_REMOVE`, which frees them in the file (for every process that
    /// maps it). Heap memory (tests, models) is zeroed instead, which is
    /// what a reader of a released page would see.
    #[cfg(not(loom))]
    file: bool,
}

// SAFETY: DataArea is a pointer into a mapping kept alive by the owner of the
// Producer/Consumer holding it; copies are raw and never form references.
unsafe impl Send for DataArea {}

impl DataArea {
    /// # Safety
    /// `base..base+len` must stay mapped, readable and writable for the life
    /// of the returned value.
    #[cfg(not(loom))]
    pub(crate) unsafe fn new(base: *mut u8, len: usize) -> Self {
        DataArea {
            base,
            len,
            file: false,
        }
    }

    /// As `new`, for a shared mapping of a memfd (see `release`).
    ///
    /// # Safety
    /// As `new`; and `base..base+len` is part of a `MAP_SHARED` mapping
    /// of a memfd.
    #[cfg(not(loom))]
    pub(crate) unsafe fn new_file(base: *mut u8, len: usize) -> Self {
        DataArea {
            base,
            len,
            file: true,
        }
    }

    /// # Safety
    /// `cells` must point at `len` cells that outlive the returned value.
    #[cfg(loom)]
    pub(crate) unsafe fn new(cells: *const loom::cell::UnsafeCell<u8>, len: usize) -> Self {
        DataArea { cells, len }
    }

    /// A raw pointer to `len` bytes at `offset`, for a system call to write
    /// into (read/pread straight into the ring); None when out of bounds.
    #[cfg(not(loom))]
    pub(crate) fn raw_at(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // SAFETY: offset <= end <= self.len: inside the mapping.
        (end <= self.len).then(|| unsafe { self.base.add(offset) })
    }

    /// Copies `src` to `offset`. The caller guarantees `offset + src.len() <= len`;
    /// this is re-checked so a logic error cannot become an out-of-bounds write.
    #[inline]
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        let Some(end) = offset.checked_add(src.len()) else {
            return;
        };
        if end > self.len {
            return;
        }
        #[cfg(not(loom))]
        // SAFETY: offset..end is inside the mapping (checked above; the mapping
        // outlives self by construction). The peer may write the same bytes
        // concurrently, which only garbles data it sent to itself; a raw copy
        // forms no reference, so Rust's aliasing rules are not involved.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(offset), src.len());
        }
        #[cfg(loom)]
        for (i, b) in src.iter().enumerate() {
            // SAFETY: index is in bounds (checked above); the cells outlive self.
            unsafe { (*self.cells.add(offset + i)).with_mut(|p| *p = *b) };
        }
    }

    /// Whether `release` may run: not in a process that restricted its
    /// system calls (a seccomp filter would kill it for `madvise`).
    #[inline]
    pub(crate) fn can_release(&self) -> bool {
        #[cfg(not(loom))]
        {
            !self.file || !crate::restrict::syscalls_restricted()
        }
        #[cfg(loom)]
        true
    }

    /// Gives the memory of `offset..offset + len` back to the kernel: in a
    /// memfd mapping, the whole pages inside the range (`MADV_REMOVE`: the
    /// file's pages are freed, and read as zeros afterwards; the pages at
    /// the range's edges may hold bytes of neighbours, so stay); in heap
    /// memory, the bytes are zeroed. Returns the bytes given back. The
    /// caller guarantees no one may be reading the range (see
    /// `Placed::give_back`); a failing madvise gives back nothing.
    pub(crate) fn release(&self, offset: usize, len: usize) -> usize {
        let Some(end) = offset.checked_add(len) else {
            return 0;
        };
        if end > self.len || len == 0 || !self.can_release() {
            return 0;
        }
        #[cfg(not(loom))]
        {
            if !self.file {
                // SAFETY: offset..end is inside the area (checked above);
                // raw writes form no reference.
                unsafe { core::ptr::write_bytes(self.base.add(offset), 0, len) };
                return len;
            }
            let page = rustix::param::page_size();
            let from = (self.base as usize + offset).next_multiple_of(page);
            let to = (self.base as usize + end) / page * page;
            if to <= from {
                return 0;
            }
            // SAFETY: from..to is a page-aligned range inside our shared
            // mapping of the memfd (inside offset..end, checked above);
            // MADV_REMOVE only drops its pages, which then read as zeros.
            // No Rust reference covers the data area.
            match unsafe {
                rustix::mm::madvise(
                    from as *mut core::ffi::c_void,
                    to - from,
                    rustix::mm::Advice::LinuxRemove,
                )
            } {
                Ok(()) => to - from,
                Err(_) => 0,
            }
        }
        #[cfg(loom)]
        {
            for i in offset..end {
                // SAFETY: index is in bounds (checked above); the cells
                // outlive self. A write, so loom flags a reader of the
                // range that the protocol did not order before it.
                unsafe { (*self.cells.add(i)).with_mut(|p| *p = 0) };
            }
            len
        }
    }

    /// Copies `dst.len()` bytes from `offset` into `dst`; bounds as `copy_in`.
    #[inline]
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        let Some(end) = offset.checked_add(dst.len()) else {
            return;
        };
        if end > self.len {
            return;
        }
        #[cfg(not(loom))]
        // SAFETY: as in copy_in; `dst` is a distinct private buffer.
        unsafe {
            core::ptr::copy_nonoverlapping(self.base.add(offset), dst.as_mut_ptr(), dst.len());
        }
        #[cfg(loom)]
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: index is in bounds (checked above); the cells outlive self.
            *b = unsafe { (*self.cells.add(offset + i)).with(|p| *p) };
        }
    }
}
