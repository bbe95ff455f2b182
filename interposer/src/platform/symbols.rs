//! The one list of C functions the library hooks: each one's prototype,
//! the logic that handles it (in `calls`, or a socket module that owns a
//! call family) and what the export does after a pass-through. It is
//! expanded twice, by name: `platform::real` makes the table of real libc
//! functions from it, `abi::exports` the `#[no_mangle]` exports. The
//! handler paths are only tokens here; they are resolved where the
//! exports are made, at the top of the layers.
//!
//! Entry: `fn name(args) -> ret [= "libc_symbol"] => logic::fn [, owner fd]
//! [, fresh check] [, gate test];`
//! `; arg: ty, ...` after the fixed arguments marks a C variadic tail
//! (fcntl, ioctl, open: one argument; prctl: four): the export takes each
//! as a fixed register-sized argument, which is how x86_64 and aarch64 pass
//! them, and the real function is called as a variadic. `owner fd` names
//! the argument that may be an fd we own. `fresh check` marks a call that
//! creates fds: `check` (a function or closure over the arguments) gets the
//! real call's return value whenever the real function ran with the
//! caller's arguments (pass-through) and releases stale fd-table entries
//! for the fds it created (`sockets::stale::fresh`). `after f` runs
//! `f(result)` once the call is over, outside the library (the re-entry
//! guard released, errno kept): the standard streams follow fds 0-2
//! there (`abi::stdio`), since that may write through our own exports.

/// Calls `$then! { the list }`.
macro_rules! hooked_symbols {
    ($then:ident) => {
        $then! {
    // Endpoints.
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int => endpoint::socket,
        fresh |r| socket_made(r, domain, ty, protocol);
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int
        => endpoint::socketpair,
        // SAFETY: socketpair(2) succeeded, so it stored two fds at `sv`.
        fresh |r| unsafe { fresh_pair(r, sv) };
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int => decode::bind, owner fd;
    fn listen(fd: c_int, backlog: c_int) -> c_int => endpoint::listen, owner fd;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
        => decode::accept, owner fd, fresh fresh;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int
        => decode::accept4, owner fd, fresh fresh;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
        => decode::connect, owner fd;
    fn shutdown(fd: c_int, how: c_int) -> c_int => endpoint::shutdown, owner fd;
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
        => decode::getsockname, owner fd;
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
        => decode::getpeername, owner fd;

    // Stream data.
    fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t => decode::read, owner fd;
    fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t => decode::write, owner fd;
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t
        => decode::send, owner fd;
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t
        => decode::recv, owner fd;
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int,
              addr: *const sockaddr, addrlen: socklen_t) -> ssize_t => decode::sendto, owner fd;
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int,
                addr: *mut sockaddr, addrlen: *mut socklen_t) -> ssize_t
        => decode::recvfrom, owner fd;
    fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t => decode::readv, owner fd;
    fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t => decode::writev, owner fd;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t
        => decode::sendmsg, owner fd;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t
        => decode::recvmsg, owner fd;
    fn sendmmsg(fd: c_int, msgvec: *mut libc::mmsghdr, vlen: c_uint, flags: c_int) -> c_int
        => decode::sendmmsg, owner fd;
    fn recvmmsg(fd: c_int, msgvec: *mut libc::mmsghdr, vlen: c_uint, flags: c_int,
                timeout: *mut libc::timespec) -> c_int
        => decode::recvmmsg, owner fd;
    // _FORTIFY_SOURCE variants: without them fortified programs bypass us.
    fn __read_chk(fd: c_int, buf: *mut c_void, nbytes: size_t, buflen: size_t) -> ssize_t
        => decode::read_chk, owner fd;
    fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int)
        -> ssize_t => decode::recv_chk, owner fd;
    // sendfile from a file to an emulated socket must not reach the kernel
    // object behind the fd (the bytes would bypass the ring). glibc's
    // sendfile64 is the same function; a program imports one of the names.
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t
        => decode::sendfile, owner out_fd;
    fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t
        => decode::sendfile, owner out_fd;
    // Which connections an epoll set holds, and EPOLLET (`readiness`).
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int
        => decode::epoll_ctl, owner fd;
    // Waits look at the rings before the kernel, and spin (`calls::iomux`).
    fn poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int
        => decode::poll;
    fn __poll_chk(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: c_int, fdslen: size_t)
        -> c_int => decode::poll_chk;
    fn ppoll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: *const libc::timespec,
        mask: *const sigset_t) -> c_int => decode::ppoll;
    fn __ppoll_chk(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: *const libc::timespec,
        mask: *const sigset_t, fdslen: size_t) -> c_int => decode::ppoll_chk;
    fn select(nfds: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set,
        timeout: *mut libc::timeval) -> c_int => decode::select;
    fn pselect(nfds: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set,
        timeout: *const libc::timespec, mask: *const sigset_t) -> c_int => decode::pselect;
    fn epoll_wait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int)
        -> c_int => decode::epoll_wait;
    fn epoll_pwait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int,
        mask: *const sigset_t) -> c_int => decode::epoll_pwait;
    fn epoll_pwait2(epfd: c_int, events: *mut libc::epoll_event, max: c_int,
        timeout: *const libc::timespec, mask: *const sigset_t) -> c_int => decode::epoll_pwait2;
    // splice between a pipe and an emulated socket, either way (the kernel
    // object behind our fd must never see the bytes); either end may be
    // ours (called nested, e.g. from a signal handler: EIO, not libc's
    // splice reading doorbell bytes as data).
    fn splice(fd_in: c_int, off_in: *mut libc::loff_t, fd_out: c_int,
              off_out: *mut libc::loff_t, len: size_t, flags: c_uint) -> ssize_t
        => stream::splice,
        owner if fdtable::is_owned(fd_in) { fd_in } else { fd_out };
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int,
                      addr: *mut sockaddr, addrlen: *mut socklen_t) -> ssize_t
        => decode::recvfrom_chk, owner fd;

    // Options and modes.
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void,
                  len: *mut socklen_t) -> c_int => decode::getsockopt, owner fd;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void,
                  len: socklen_t) -> c_int => decode::setsockopt, owner fd;
    fn fcntl(fd: c_int, cmd: c_int; arg: c_ulong) -> c_int => options::fcntl, owner fd,
        fresh |r| fresh_if_dup(r, cmd), after |r| stdio::fcntl_done(r, cmd, STREAM_IO);
    // glibc's LFS name for the same function (nginx, redis, python import it).
    fn fcntl64(fd: c_int, cmd: c_int; arg: c_ulong) -> c_int => options::fcntl, owner fd,
        fresh |r| fresh_if_dup(r, cmd), after |r| stdio::fcntl_done(r, cmd, STREAM_IO);
    fn ioctl(fd: c_int, request: c_ulong; arg: c_ulong) -> c_int => decode::ioctl, owner fd;

    // Descriptors.
    fn close(fd: c_int) -> c_int => descriptor::close, owner fd;
    // A new fd 0, 1 or 2 may bring its standard stream over to the
    // connection, or back (`after`, `abi::stdio`).
    fn dup(fd: c_int) -> c_int => descriptor::dup, owner fd, fresh fresh,
        after |r| stdio::fd_changed(r, STREAM_IO);
    // dup2(fd, fd) returns fd and changes nothing: not a fresh fd.
    fn dup2(old: c_int, new: c_int) -> c_int => descriptor::dup2, owner old,
        fresh |r| if r != old { fresh(r) }, after |r| stdio::fd_changed(r, STREAM_IO);
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int => descriptor::dup3, owner old,
        fresh fresh, after |r| stdio::fd_changed(r, STREAM_IO);
    // What the program's fstat finds is noted for sendfile (`file_kinds`):
    // nginx fstats each file it opens just before it sends it. Only in a
    // process with sockets of ours (there is nothing to send into before).
    fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int => decode::fstat,
        // SAFETY: when fstat(2) returned 0 it filled `*buf`.
        fresh |r| unsafe { stat_returned(r, fd, buf) },
        gate !fdtable::table().is_empty();
    fn fstat64(fd: c_int, buf: *mut libc::stat64) -> c_int => decode::fstat,
        // SAFETY: as for fstat.
        fresh |r| unsafe { stat_returned(r, fd, buf) },
        gate !fdtable::table().is_empty();
    // What glibc before 2.33 compiled fstat into (node v20 imports
    // __fxstat64): a program built then calls these, not fstat.
    fn __fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int => decode::fxstat,
        // SAFETY: as for fstat.
        fresh |r| unsafe { stat_returned(r, fd, buf) },
        gate !fdtable::table().is_empty();
    fn __fxstat64(ver: c_int, fd: c_int, buf: *mut libc::stat64) -> c_int => decode::fxstat,
        // SAFETY: as for fstat.
        fresh |r| unsafe { stat_returned(r, fd, buf) },
        gate !fdtable::table().is_empty();
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int
        => descriptor::close_range;
    // glibc closes these past our close export (internal close_range,
    // __close_nocancel).
    fn closefrom(lowfd: c_int) -> () => descriptor::closefrom;
    fn fclose(stream: *mut FILE) -> c_int => fclose_stream;
    // C stdio on an fd of ours: a stream whose reads and writes come here
    // (glibc's own FILE writes with its internal `__write`: `abi::stdio`).
    // glibc has no fdopen64 (`_IO_fdopen`, its other name, is not hooked).
    fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE => fdopen_stream, owner fd;
    // libc's generic system call: only the descriptor calls above and the
    // mmsg calls are ours (libuv closes and sends with it), and only on an
    // fd of ours (or one that may become ours: sendmmsg): every other
    // call goes straight to libc (`gate`: jemalloc calls it while holding
    // its own lock, where our first-use initialisation would allocate).
    fn syscall(number: c_long; a: c_long, b: c_long, c: c_long, d: c_long, e: c_long,
        f: c_long) -> c_long => decode::syscall,
        fresh |r| {
            descriptor::fresh_from_syscall(r, number, a);
            if number == libc::SYS_seccomp {
                sandbox::seccomp_done(r, a as u32, b as core::ffi::c_ulong);
            }
        },
        gate descriptor::syscall_is_ours(number, a);

    // Calls that create fds: each checks the fd it got for a stale entry
    // (a number the kernel reused after a close we did not see). open and
    // openat are variadic (the mode); the *64 names are glibc aliases, the
    // __*_2 names what _FORTIFY_SOURCE compiles open/openat into.
    fn open(path: *const c_char, flags: c_int; mode: c_uint) -> c_int => descriptor::open,
        fresh fresh;
    fn open64(path: *const c_char, flags: c_int; mode: c_uint) -> c_int => descriptor::open,
        fresh fresh;
    fn openat(dir: c_int, path: *const c_char, flags: c_int; mode: c_uint) -> c_int
        => descriptor::openat, fresh fresh;
    fn openat64(dir: c_int, path: *const c_char, flags: c_int; mode: c_uint) -> c_int
        => descriptor::openat, fresh fresh;
    fn __open_2(path: *const c_char, flags: c_int) -> c_int => descriptor::open_2,
        fresh fresh;
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int => descriptor::open_2,
        fresh fresh;
    fn __openat_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int
        => descriptor::openat_2, fresh fresh;
    fn __openat64_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int
        => descriptor::openat_2, fresh fresh;
    fn creat(path: *const c_char, mode: mode_t) -> c_int => descriptor::creat, fresh fresh;
    fn creat64(path: *const c_char, mode: mode_t) -> c_int => descriptor::creat, fresh fresh;
    fn mkstemp(template: *mut c_char) -> c_int => descriptor::mkstemp, fresh fresh;
    fn mkstemp64(template: *mut c_char) -> c_int => descriptor::mkstemp, fresh fresh;
    fn mkostemp(template: *mut c_char, flags: c_int) -> c_int => descriptor::mkostemp,
        fresh fresh;
    fn mkostemp64(template: *mut c_char, flags: c_int) -> c_int => descriptor::mkostemp,
        fresh fresh;
    fn pipe(fds: *mut c_int) -> c_int => descriptor::pipe,
        // SAFETY: pipe(2) succeeded, so it stored two fds at `fds`.
        fresh |r| unsafe { fresh_pair(r, fds) };
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int => descriptor::pipe2,
        // SAFETY: pipe2(2) succeeded, so it stored two fds at `fds`.
        fresh |r| unsafe { fresh_pair(r, fds) };
    fn eventfd(initval: c_uint, flags: c_int) -> c_int => descriptor::eventfd, fresh fresh;
    fn epoll_create(size: c_int) -> c_int => descriptor::epoll_create, fresh fresh_epoll;
    fn epoll_create1(flags: c_int) -> c_int => descriptor::epoll_create1, fresh fresh_epoll;
    fn inotify_init() -> c_int => descriptor::inotify_init, fresh fresh;
    fn inotify_init1(flags: c_int) -> c_int => descriptor::inotify_init1, fresh fresh;
    fn memfd_create(name: *const c_char, flags: c_uint) -> c_int
        => descriptor::memfd_create, fresh fresh;
    fn timerfd_create(clock: c_int, flags: c_int) -> c_int => descriptor::timerfd_create,
        fresh fresh;
    fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int
        => descriptor::signalfd, fresh fresh;

    // Processes. vfork runs as fork: a vfork child shares our memory, so its
    // hooks would corrupt the parent's tables, and no function can wrap a
    // real vfork and return into the child (it would clobber the parent's
    // stack frame).
    fn vfork() -> pid_t = "fork" => process::vfork;
    // Namespaces: netlink sockets and /proc/sys/net answer for the network
    // namespace they were opened in.
    fn setns(fd: c_int, nstype: c_int) -> c_int => process::setns,
        fresh |r| process::moved_namespace(r, nstype == 0 || nstype & libc::CLONE_NEWNET != 0);
    fn unshare(flags: c_int) -> c_int => process::unshare,
        fresh |r| process::moved_namespace(r, flags & libc::CLONE_NEWNET != 0);
    // A change of user: a forked child still writing into its parent's
    // status file makes its own first, while it may still create files in
    // the directory (`status::before_user_change`).
    fn setuid(uid: libc::uid_t) -> c_int => process::setuid;
    fn seteuid(uid: libc::uid_t) -> c_int => process::setuid;
    fn setreuid(ruid: libc::uid_t, euid: libc::uid_t) -> c_int => process::setreuid;
    fn setresuid(ruid: libc::uid_t, euid: libc::uid_t, suid: libc::uid_t) -> c_int
        => process::setresuid;
    // PR_SET_SECCOMP: from then on the data path keeps to the calls a
    // sandbox allows (`sandbox`).
    fn prctl(option: c_int; a2: c_ulong, a3: c_ulong, a4: c_ulong, a5: c_ulong) -> c_int
        => decode::prctl, fresh |r| sandbox::prctl_done(r, option);
    // Running a program: connections whose fds go across exec get their
    // carriers first (`process::exec`). Each entry point, since glibc's
    // execl/execvp/system/popen/posix_spawn exec through its internal
    // execve; the variadic execl, execlp and execle are trampolines below.
    // (A return is a failure: the image's status entries are shown again.)
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char)
        -> c_int => decode::execve, fresh |_| process::exec_returned();
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int => decode::execv,
        fresh |_| process::exec_returned();
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int => decode::execvp,
        fresh |_| process::exec_returned();
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char)
        -> c_int => decode::execvpe, fresh |_| process::exec_returned();
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int
        => decode::fexecve, fresh |_| process::exec_returned();
    fn execveat(dirfd: c_int, path: *const c_char, argv: *const *const c_char,
        envp: *const *const c_char, flags: c_int) -> c_int => decode::execveat,
        fresh |_| process::exec_returned();
    fn posix_spawn(pid: *mut pid_t, path: *const c_char,
        actions: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t,
        argv: *const *mut c_char, envp: *const *mut c_char) -> c_int => process::posix_spawn;
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char,
        actions: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t,
        argv: *const *mut c_char, envp: *const *mut c_char) -> c_int => process::posix_spawn;
    fn system(command: *const c_char) -> c_int => process::system;
    fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE => process::popen;
    // RLIMIT_NOFILE places the library's own fds (`socket::nofile_limit`):
    // followed here rather than looked up for every fd. glibc's setrlimit
    // calls its internal prlimit64: each name is hooked.
    fn setrlimit(resource: c_uint, rlim: *const libc::rlimit) -> c_int => process::setrlimit,
        // SAFETY: setrlimit(2) succeeded, so `rlim` was valid to read.
        fresh |r| process::rlimit_set(0, resource, unsafe { soft_limit(r, rlim) });
    fn setrlimit64(resource: c_uint, rlim: *const libc::rlimit64) -> c_int
        => process::setrlimit,
        // SAFETY: as for setrlimit.
        fresh |r| process::rlimit_set(0, resource, unsafe { soft_limit(r, rlim) });
    fn prlimit(pid: pid_t, resource: c_uint, new: *const libc::rlimit, old: *mut libc::rlimit)
        -> c_int => process::prlimit,
        // (`new` may be `old` too, already overwritten with the old limit:
        // then the limit is looked up again when needed.)
        fresh |r| process::rlimit_set(
            if core::ptr::eq(new, old) { -1 } else { pid },
            resource,
            // SAFETY: prlimit(2) succeeded, so `new` was null or valid to
            // read.
            unsafe { soft_limit(r, new) },
        );
    fn prlimit64(pid: pid_t, resource: c_uint, new: *const libc::rlimit64,
        old: *mut libc::rlimit64) -> c_int => process::prlimit,
        fresh |r| process::rlimit_set(
            if core::ptr::eq(new, old) { -1 } else { pid },
            resource,
            // SAFETY: as for prlimit.
            unsafe { soft_limit(r, new) },
        );
        }
    };
}
