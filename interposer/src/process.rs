//! Process lifecycle: one-time initialisation, fork handlers, vfork.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use libc::pid_t;

use crate::hooks::{self, real, Action};
use crate::{config, sys};

static STARTED: AtomicBool = AtomicBool::new(false);

/// First-use initialisation (also run by the constructor): panic hook,
/// configuration, fork handlers. Runs inside the re-entry guard. A thread
/// that finds it started by another goes on; everything it needs is lazy.
pub(crate) fn init() {
    if STARTED.load(Ordering::Acquire) || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    hooks::install_panic_hook();
    if let Some(config) = config::get() {
        // Under a seccomp filter already (exec'd into one): the sandboxed
        // data path from the start.
        crate::sandbox::detect();
        // After an exec: sockets the previous program image emulated.
        crate::inherit::adopt(config);
    }
    let rc = sys::register_atfork(prepare, parent, child);
    if rc != 0 {
        log!(
            warn,
            "pthread_atfork failed (errno {rc}); fork safety not guaranteed"
        );
    }
}

/// vfork is exported as fork (the table's `vfork` entry resolves libc's
/// `fork`). A vfork child shares the parent's memory, so hooks it runs
/// (python's child calls close_range and dup2 before exec) would edit the
/// parent's fd table and state; with fork they edit the child's copy. The
/// cost is copying page tables; callers of vfork already restrict the child
/// to async-signal-safe calls, which a fork child requires too.
pub(crate) fn vfork() -> Action<pid_t> {
    log!(debug, "vfork() runs as fork()");
    Action::Pass
}

/// Before fork, in the forking thread.
extern "C" fn prepare() {
    // The child must never need dlsym (its loader lock may be held by a
    // thread that does not exist in the child).
    real::resolve_all();
    // Hold the socket registry's lock across the fork, so that no thread is
    // in the middle of changing the registry when the process is copied.
    crate::registry::before_fork();
}

/// After fork, in the parent.
extern "C" fn parent() {
    crate::registry::after_fork_parent();
}

/// After fork, in the child (single-threaded from here).
extern "C" fn child() {
    // Bumps the fork generation, which marks every existing socket as
    // shared with the parent: neither process alone may then announce EOF
    // or remove a rendezvous name on close. (Using one connection from both
    // processes at once is not serialised yet.) Then resets the registry's
    // lock and every socket's locks to unlocked: threads of the parent may
    // have held or waited on them at the fork, and they do not exist here.
    crate::registry::after_fork_child();
}

/// setns(2)/unshare(2): passed through; what the library learnt about the
/// network namespace is forgotten once the call succeeds (`moved_namespace`).
pub(crate) fn setns(_fd: libc::c_int, nstype: libc::c_int) -> Action<libc::c_int> {
    if nstype == 0 || nstype & libc::CLONE_NEWNET != 0 {
        crate::netlink::keep_namespace();
    }
    Action::Pass
}

pub(crate) fn unshare(flags: libc::c_int) -> Action<libc::c_int> {
    if flags & libc::CLONE_NEWNET != 0 {
        crate::netlink::keep_namespace();
    }
    Action::Pass
}

/// After a successful setns or unshare that may have changed the network
/// namespace (setns with nstype 0 may, too).
pub(crate) fn moved_namespace(result: libc::c_int, may_be_net: bool) {
    if result == 0 && may_be_net {
        crate::netlink::namespace_changed();
        crate::lookup::namespace_changed();
        crate::rendezvous::namespace_changed();
    }
}
