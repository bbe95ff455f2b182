//! Which fds name a file sendfile may read from (a regular file or a block
//! device, as the kernel's sendfile requires), as an fstat through us
//! found: sendfile into an emulated connection then makes no fstat of its
//! own. nginx fstats each file it opens just before it sends it, and that
//! fstat was the one system call per request the library made where a
//! Unix socket's sendfile makes none (docs/benchmarks.md, "nginx 1 KiB:
//! sendfile without its own fstat").
//!
//! One lock-free byte per fd below `fdtable::CAPACITY` (64 KiB of zeroed
//! .bss, touched only where used): safe in a signal handler and a forked
//! child, as the fd table is. An entry is only ever a hint that an fstat
//! was made: every hooked call that closes or creates an fd forgets its
//! number (`close`, `close_range`, `closefrom`, `fclose`, and
//! `sockets::stale::fresh` for open, dup2, socket, eventfd...), so an
//! entry can outlive its file only where the fd table's entries can (a
//! close and a new fd both past the library, fdtable.rs "Stale entries").
//! The file's size is not kept: it may change after the fstat.
#![forbid(unsafe_code)]

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, Ordering};

use super::fdtable::CAPACITY;

static MAPPABLE: [AtomicBool; CAPACITY] = [const { AtomicBool::new(false) }; CAPACITY];

fn slot(fd: c_int) -> Option<&'static AtomicBool> {
    usize::try_from(fd).ok().and_then(|i| MAPPABLE.get(i))
}

/// An fstat of `fd` through us succeeded with `mode`.
pub(crate) fn stat_found(fd: c_int, mode: u32) {
    let kind = mode & libc::S_IFMT;
    if let Some(s) = slot(fd) {
        s.store(
            kind == libc::S_IFREG || kind == libc::S_IFBLK,
            Ordering::Relaxed,
        );
    }
}

/// Whether the last fstat through us of what `fd` names now found a
/// regular file or a block device.
pub(crate) fn mappable(fd: c_int) -> bool {
    slot(fd).is_some_and(|s| s.load(Ordering::Relaxed))
}

/// `fd` was closed, or names a new file.
pub(crate) fn forget(fd: c_int) {
    if let Some(s) = slot(fd) {
        s.store(false, Ordering::Relaxed);
    }
}

/// `forget` for every fd from `first` to `last` (close_range, closefrom).
pub(crate) fn forget_range(first: c_int, last: c_int) {
    let Ok(first) = usize::try_from(first) else {
        return;
    };
    let last = usize::try_from(last).map_or(0, |l| l.min(CAPACITY - 1));
    for s in MAPPABLE.get(first..=last).unwrap_or(&[]) {
        s.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_block_devices_only_until_forgotten() {
        stat_found(6001, libc::S_IFREG | 0o644);
        stat_found(6002, libc::S_IFBLK | 0o660);
        stat_found(6003, libc::S_IFCHR | 0o666);
        stat_found(6004, libc::S_IFIFO | 0o600);
        assert!(mappable(6001) && mappable(6002));
        assert!(!mappable(6003) && !mappable(6004));
        forget(6001);
        assert!(!mappable(6001));
        stat_found(6001, libc::S_IFREG);
        forget_range(6000, 6001);
        assert!(!mappable(6001) && mappable(6002));
        forget_range(6002, c_int::MAX);
        assert!(!mappable(6002));
        assert!(!mappable(-1) && !mappable(c_int::MAX));
        stat_found(-1, libc::S_IFREG);
        forget_range(-5, 3);
    }
}
