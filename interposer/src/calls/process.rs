//! Process lifecycle: one-time initialisation, fork handlers, vfork.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use core::ffi::{c_char, c_int};

use libc::{pid_t, FILE};

use crate::platform::real::{self, Action};
use crate::platform::{config, sys};

static STARTED: AtomicBool = AtomicBool::new(false);

/// Whether first-use initialisation has begun (nothing is ours before).
#[inline]
pub(crate) fn started() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// First-use initialisation (also run by the constructor): panic hook,
/// configuration, fork handlers. Runs inside the re-entry guard. A thread
/// that finds it started by another goes on; everything it needs is lazy.
pub(crate) fn init() {
    if STARTED.load(Ordering::Acquire) || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    crate::platform::log::install_panic_hook();
    if let Some(config) = config::get() {
        // After an exec: sockets the previous program image emulated.
        crate::calls::exec::adopt(config);
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
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    VFORKING.store(tid, std::sync::atomic::Ordering::Relaxed);
    Action::Pass
}

/// The thread that called vfork, until the prepare handler reads it: its
/// child execs or exits, so only what goes across exec is shared with it
/// (`calls::datagram::before_fork`).
static VFORKING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Before fork, in the forking thread.
extern "C" fn prepare() {
    // A forked child usually execs (sshd, inetd, socat): connections with
    // an inheritable fd get their carriers here, so a child that execs
    // past our hooks (a raw system call) still takes them along. Inside
    // the guard, as a hook: fork() itself is not one (vfork's hook passes
    // it on after leaving the guard); not when fork was called from inside
    // the library.
    let entered = crate::platform::guard::enter("fork");
    let nested = entered.is_none();
    // Both processes hold every UDP socket still the kernel's own file:
    // the kernel's for good (decision 64).
    crate::sockets::datagram::pristine::capture_all();
    if let Some(_inside) = entered {
        let _ = std::panic::catch_unwind(crate::sockets::readiness::forking);
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let vforked = VFORKING
            .compare_exchange(
                tid,
                0,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok();
        let _ = std::panic::catch_unwind(|| crate::calls::datagram::before_fork(vforked));
        let _ = std::panic::catch_unwind(crate::calls::exec::before_exec);
        // Listeners' parking queues, made on first need, are made now so
        // that parent and child share them.
        let _ = std::panic::catch_unwind(share_parking_queues);
    }
    // The child must never need dlsym (its loader lock may be held by a
    // thread that does not exist in the child).
    real::resolve_all();
    // Hold the socket registry's lock across the fork, so that no thread is
    // in the middle of changing the registry when the process is copied. A
    // fork from a signal handler that interrupted the library (`nested`)
    // may be interrupting this thread's own hold of it: waited for a
    // bounded time only (review s34 udpshare16 #1: the handler waited for
    // ever on its own thread's read lock).
    crate::sockets::registry::before_fork(nested);
}

/// Before fork (the prepare handler, inside the guard): every listener's
/// parking queue is made now, so that parent and child share it — a queue
/// made later in one of them would hold connections the other, woken by
/// their shared epoll instance, cannot find. One that cannot be made (out
/// of fds) is tried again at the next fork; until then each process parks
/// in its own memory, and a connection parked by one waits for that one's
/// next accept or sweep.
fn share_parking_queues() {
    use crate::transport::parking::UNQUEUED;
    use std::sync::atomic::Ordering;
    if !UNQUEUED.swap(false, Ordering::AcqRel) {
        return;
    }
    let mut listeners = Vec::new();
    crate::sockets::registry::for_each_socket(|s| {
        if s.listener().is_some() {
            listeners.push(s.clone());
        }
    });
    for s in &listeners {
        if s.listener().is_some_and(|l| !l.share_queue()) {
            UNQUEUED.store(true, Ordering::Relaxed);
        }
    }
}

/// After fork, in the parent.
extern "C" fn parent() {
    crate::platform::fork::advance();
    crate::platform::status::after_fork();
    crate::sockets::registry::after_fork_parent();
    crate::sockets::carry::forked();
}

/// After fork, in the child (single-threaded from here).
extern "C" fn child() {
    // Bumps the fork generation, which marks every existing socket as
    // shared with the parent: neither process alone may then announce EOF
    // or remove a rendezvous name on close, and each direction of a
    // connection is serialised across the processes by its side lock in
    // the segment (`shmnet_ring::sidelock`). Then resets the registry's
    // lock and every socket's locks to unlocked: threads of the parent may
    // have held or waited on them at the fork, and they do not exist here.
    // Then each module's own process-private state: the registry, the
    // rendezvous blocks and kept segments, epoll sets, carried
    // registrations (the order they were always reset in), and the
    // status table's pid and start time last.
    crate::platform::fork::advance();
    crate::sockets::registry::after_fork_child();
    crate::transport::pool::after_fork_child();
    crate::sockets::readiness::after_fork_child();
    crate::sockets::carry::after_fork_child();
    crate::sockets::datagram::pristine::after_fork_child();
    crate::sockets::listener::early::after_fork_child();
    crate::sockets::quiet::after_fork_child();
    crate::platform::cancel::after_fork_child();
    // Last: it reads /proc, and the close of that fd goes through our
    // close hook, which locks the epoll sets; a parent thread in
    // epoll_wait held that lock at the fork until
    // `readiness::after_fork_child` (review rv-defer39 #1: the child hung
    // in its fork handler, 2 runs of 6).
    crate::platform::status::after_fork();
}

/// setns(2)/unshare(2): passed through; what the library learnt about the
/// network namespace is forgotten once the call succeeds (`moved_namespace`).
pub(crate) fn setns(_fd: libc::c_int, nstype: libc::c_int) -> Action<libc::c_int> {
    if nstype == 0 || nstype & libc::CLONE_NEWNET != 0 {
        crate::platform::netlink::keep_namespace();
    }
    Action::Pass
}

/// setuid and seteuid: before the user changes (`status::before_user_change`).
pub(crate) fn setuid(_uid: libc::uid_t) -> Action<c_int> {
    crate::platform::status::before_user_change();
    Action::Pass
}

pub(crate) fn setreuid(_ruid: libc::uid_t, _euid: libc::uid_t) -> Action<c_int> {
    crate::platform::status::before_user_change();
    Action::Pass
}

pub(crate) fn setresuid(_r: libc::uid_t, _e: libc::uid_t, _s: libc::uid_t) -> Action<c_int> {
    crate::platform::status::before_user_change();
    Action::Pass
}

pub(crate) fn unshare(flags: libc::c_int) -> Action<libc::c_int> {
    if flags & libc::CLONE_NEWNET != 0 {
        crate::platform::netlink::keep_namespace();
    }
    Action::Pass
}

/// After a successful setns or unshare that may have changed the network
/// namespace (setns with nstype 0 may, too).
pub(crate) fn moved_namespace(result: libc::c_int, may_be_net: bool) {
    if result == 0 && may_be_net {
        crate::platform::netlink::namespace_changed();
        crate::transport::lookup::namespace_changed();
    }
}

/// Every way of running a program (the exec family, posix_spawn, system,
/// popen; fork through its prepare handler): connections whose fds go
/// across exec get their carriers first (`exec::before_exec`). glibc's
/// system, popen and posix_spawn exec inside libc, past any exec hook, and
/// execl/execvp and the like call glibc's internal execve: so each entry
/// point is hooked. Then the real call, unchanged.
pub(crate) fn exec<R>() -> Action<R> {
    // The next image knows no UDP socket as pristine (decision 64).
    crate::sockets::datagram::pristine::capture_all();
    crate::calls::exec::before_exec();
    Action::Pass
}

/// The exec family proper (not posix_spawn, system, popen): this image's
/// published sockets are hidden (`platform::status`).
pub(crate) fn replacing_image() {
    crate::sockets::datagram::pristine::capture_all();
    crate::platform::status::before_exec();
    crate::calls::datagram::before_exec();
}

/// The exec family returned: it failed, this image goes on.
pub(crate) fn exec_returned() {
    crate::platform::status::exec_failed();
    crate::calls::datagram::exec_failed();
    crate::calls::plain_exec::failed();
}

/// execve, execvpe, execv, execvp, fexecve, execveat (decoded into the
/// new image's program and LD_PRELOAD): carriers, then, for an image
/// that will run without the library, our inheritable fds as it can use
/// them (`plain_exec`; after the carriers, which describe the fds as
/// they were).
pub(crate) fn exec_image(image: crate::calls::plain_exec::NewImage) -> Action<c_int> {
    replacing_image();
    let action = exec();
    crate::calls::plain_exec::before(&image);
    action
}

pub(crate) fn posix_spawn(
    _pid: *mut pid_t,
    _path: *const c_char,
    _actions: *const libc::posix_spawn_file_actions_t,
    _attr: *const libc::posix_spawnattr_t,
    _argv: *const *mut c_char,
    _envp: *const *mut c_char,
) -> Action<c_int> {
    exec()
}

pub(crate) fn system(_command: *const c_char) -> Action<c_int> {
    exec()
}

pub(crate) fn popen(_command: *const c_char, _mode: *const c_char) -> Action<*mut FILE> {
    exec()
}

/// setrlimit/setrlimit64/prlimit/prlimit64 pass through; RLIMIT_NOFILE,
/// which places the library's own fds, is followed afterwards
/// (`rlimit_set`).
pub(crate) fn setrlimit<T>(_resource: u32, _rlim: *const T) -> Action<c_int> {
    Action::Pass
}

pub(crate) fn prlimit<T>(
    _pid: pid_t,
    _resource: u32,
    _new: *const T,
    _old: *mut T,
) -> Action<c_int> {
    Action::Pass
}

/// After a call that set `resource` of process `pid` (0: this one; -1:
/// unknown, looked up again when needed) to a soft limit `soft` (None:
/// unlimited), read from the call's argument (outer None: it set nothing,
/// or failed).
pub(crate) fn rlimit_set(pid: pid_t, resource: u32, soft: Option<Option<u64>>) {
    let Some(soft) = soft else {
        return;
    };
    if resource != libc::RLIMIT_NOFILE {
        return;
    }
    // Another pid (maybe ours by number): looked up again when needed.
    let known = (pid == 0).then_some(soft);
    crate::platform::internal_fd::set_nofile_limit(known);
}
