//! Emulated UDP sockets (issue 16, docs/design/udp-draft.md; stage 1: the
//! emulated mode, SHMNET_FALLBACK=never): a socket bound to a partition
//! address receives through target segments its senders map (`inbox`,
//! `deliver`, `links`) and sends into the target segments of the sockets
//! it sends to (`routes`). A destination no emulated socket holds goes
//! through the socket's own kernel UDP socket, whose datagrams are
//! received beside the emulated ones (`kernel`): it holds a port only
//! from a wildcard bind or its first such send.
//!
//! The application's fd number is an epoll instance from `socket()` on
//! (`kernel::Shell`, review H-A), so close/dup/poll/select/epoll act on a
//! real kernel object that never changes, whose readiness the receive
//! path keeps exact. Until the socket is emulated (`name`) it holds only
//! the application's own kernel UDP socket, and every call is that
//! socket's; naming adds the Inbox's members to the same instance. The
//! kernel socket also answers the socket options (a UDP socket's own
//! answers: SO_TYPE, SO_RCVBUF, ...) and is that second route.
#![forbid(unsafe_code)]

pub(crate) mod ancillary;
mod consumer;
mod deliver;
mod inbox;
mod kernel;
mod leftover;
mod links;
pub(crate) mod pristine;
mod routes;
pub(crate) mod segment;
pub(crate) mod unheld;

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use rustix::io::Errno;

use inbox::Inbox;
pub(crate) use inbox::Taken;
pub(crate) use kernel::any_live;
use kernel::Shell;
use routes::{Outcome, Routes};

use crate::platform::internal_fd::InternalFd;
use crate::platform::lock::Mutex;
use crate::platform::sys;
use crate::sockets::options_store::Options;

/// The largest UDP payload over IPv4 (65,535 - 20 - 8), and over IPv6.
pub(crate) const MAX_V4: usize = 65_507;
pub(crate) const MAX_V6: usize = 65_527;

const SHUT_RD: u8 = 1;
const SHUT_WR: u8 = 2;

pub(crate) struct Datagram {
    /// The application's fd's instance and kernel UDP socket (`kernel.rs`):
    /// the kernel socket answers getsockopt/setsockopt, and carries what no
    /// emulated socket is there for.
    shell: Arc<Shell>,
    /// Once emulated (bound to, or sending to, an emulated address).
    inbox: OnceLock<Inbox>,
    /// Went back to the kernel (`to_kernel`, decision 49): the Inbox is
    /// no more, and the socket is never emulated again.
    retired: std::sync::atomic::AtomicBool,
    /// Held while the socket is being named.
    naming: Mutex<()>,
    /// Met by poll/select/epoll (`make_eager`), and registered
    /// edge-triggered, before it was named: its Inbox starts so.
    eager: std::sync::atomic::AtomicBool,
    edge: std::sync::atomic::AtomicBool,
    /// The kernel socket was connected to the peer (for its errors).
    kernel_peer: Mutex<Option<SocketAddr>>,
    peer: Mutex<Option<SocketAddr>>,
    routes: Mutex<Routes>,
    /// SO_RCVTIMEO once asked (None inside: not asked yet).
    rcvtimeo: Mutex<Option<Option<std::time::Duration>>>,
    /// It sent since its last receive waited (so an answer may be near).
    sent: std::sync::atomic::AtomicBool,
    /// Whether a receive that awaits no answer spins (`spin`).
    consumer: consumer::ConsumerPace,
    /// Whether a receive or wait that awaits an answer spins: one that
    /// never comes (a sender that polls each tick, nobody answering) backs
    /// off as a consumer's trickle does.
    answers: consumer::ConsumerPace,
    /// O_NONBLOCK of the application's fd: 0 unknown, 1 no, 2 yes.
    nonblock: std::sync::atomic::AtomicU8,
    /// shutdown(2) so far (`SHUT_RD`, `SHUT_WR` bits).
    shut: std::sync::atomic::AtomicU8,
    /// Held while the kernel socket shares a port whose name another
    /// process holds (`mark_shared`).
    shared_mark: OnceLock<crate::platform::internal_fd::InternalFd>,
    /// The cmsgs its recvmsg makes (`ancillary::asked`) in the low 32
    /// bits, the fork generation they were asked in plus one above (0:
    /// not asked, again after each setsockopt; a fork asks again in both
    /// processes, as either may set an option on the shared socket).
    cmsgs: std::sync::atomic::AtomicU64,
    /// Its UDP_SEGMENT and SO_NO_CHECK (`segment::Gso::bits`), kept as
    /// `cmsgs` is (asked again after a setsockopt or a fork).
    gso: std::sync::atomic::AtomicU64,
    /// Connected through the kernel to a destination remembered as held
    /// by nobody (decision 63): when its next send asks again whether it
    /// is ours to carry (`monotonic_ms`; 0: never).
    recheck_ms: std::sync::atomic::AtomicU64,
    pub opts: Options,
}

impl Datagram {
    /// A UDP socket of ours, not emulated (yet): `kernel` is the
    /// application's kernel UDP socket (the library's copy), behind an
    /// epoll instance that `instance` gives for the application's fd.
    /// `v6`: of family AF_INET6; `bound`: the kernel socket holds a port;
    /// `nonblock`: the application's fd is O_NONBLOCK (None: not known).
    pub(crate) fn shell(
        kernel: OwnedFd,
        v6: bool,
        bound: bool,
        nonblock: Option<bool>,
        opts: Options,
    ) -> Result<Datagram, Errno> {
        Ok(Datagram {
            shell: Arc::new(Shell::new(kernel, v6, bound)?),
            inbox: OnceLock::new(),
            retired: std::sync::atomic::AtomicBool::new(false),
            naming: Mutex::new(()),
            eager: std::sync::atomic::AtomicBool::new(false),
            edge: std::sync::atomic::AtomicBool::new(false),
            kernel_peer: Mutex::new(None),
            peer: Mutex::new(None),
            routes: Mutex::new(Routes::default()),
            rcvtimeo: Mutex::new(None),
            sent: std::sync::atomic::AtomicBool::new(false),
            consumer: consumer::ConsumerPace::default(),
            answers: consumer::ConsumerPace::default(),
            nonblock: std::sync::atomic::AtomicU8::new(match nonblock {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            }),
            shut: std::sync::atomic::AtomicU8::new(0),
            shared_mark: OnceLock::new(),
            cmsgs: std::sync::atomic::AtomicU64::new(0),
            gso: std::sync::atomic::AtomicU64::new(0),
            recheck_ms: std::sync::atomic::AtomicU64::new(0),
            opts,
        })
    }

    /// A socket emulated at once (one the library did not make at
    /// `socket()`: inherited, passed, made by a raw system call): its
    /// shell, named `local` (`name`).
    pub(crate) fn bind(
        local: SocketAddr,
        kernel: OwnedFd,
        avoid: Option<u16>,
    ) -> Result<Datagram, Errno> {
        let d = Self::existing(kernel)?;
        d.name(local, avoid)?;
        Ok(d)
    }

    /// The shell of a kernel UDP socket the library did not make (or a
    /// pristine one, decision 64).
    pub(crate) fn existing(kernel: OwnedFd) -> Result<Datagram, Errno> {
        let opts = Options::snapshot(kernel.as_fd());
        let v6 = rustix::net::sockopt::socket_domain(&kernel)
            .is_ok_and(|d| d == rustix::net::AddressFamily::INET6);
        let bound = sys::local_name(kernel.as_fd()).is_some_and(|a| a.port() != 0);
        Self::shell(kernel, v6, bound, None, opts)
    }

    /// `bind` sharing `holder`'s name (`name_shared`).
    pub(crate) fn bind_shared(
        local: SocketAddr,
        kernel: OwnedFd,
        holder: &Datagram,
    ) -> Result<Datagram, Errno> {
        let d = Self::existing(kernel)?;
        d.name_shared(local, holder)?;
        Ok(d)
    }

    /// Emulated from now on: reserves `local` (port 0: an ephemeral one,
    /// never `avoid`) and builds the Inbox in the socket's own instance.
    /// EINVAL if it is emulated already.
    pub(crate) fn name(&self, local: SocketAddr, avoid: Option<u16>) -> Result<(), Errno> {
        let v6_only = local.is_ipv6()
            && local.ip().is_unspecified()
            && rustix::net::sockopt::ipv6_v6only(self.kernel()).unwrap_or(false);
        let (listener, local) = if v6_only {
            // IPv6's senders only (review H-B): a name IPv4's never dial.
            let name = routes::v6_only_any(local.port());
            let (listener, name) = crate::transport::link::reserve(name, avoid)?;
            (listener, SocketAddr::new(local.ip(), name.port()))
        } else {
            crate::transport::link::reserve(local, avoid)?
        };
        self.with_listener(listener, local)
    }

    /// Emulated, bound to the address `holder` holds (SO_REUSEADDR or
    /// SO_REUSEPORT on both, `calls::datagram::share`): it takes links from
    /// the same name (a copy of its listener), so senders reach one or
    /// the other, and it keeps the name held after `holder` closes.
    pub(crate) fn name_shared(&self, local: SocketAddr, holder: &Datagram) -> Result<(), Errno> {
        let inbox = holder.inbox().ok_or(Errno::ADDRINUSE)?;
        let listener = rustix::io::fcntl_dupfd_cloexec(inbox.listener(), 0)?;
        self.with_listener(listener, local)
    }

    fn with_listener(&self, listener: OwnedFd, local: SocketAddr) -> Result<(), Errno> {
        let _naming = self.naming.lock();
        if self.inbox.get().is_some() {
            return Err(Errno::INVAL);
        }
        let limit = rustix::net::sockopt::socket_recv_buffer_size(self.kernel())
            .map_or(212_992, |n| n.min(1 << 30) as u32);
        let inbox = Inbox::new(self.shell.clone(), InternalFd::new(listener), local, limit)?;
        // Its own senders find it from now on (`unheld`).
        unheld::forget(None, local.port());
        let inbox = self.inbox.get_or_init(|| inbox);
        // (SeqCst, with the stores in `make_eager` and
        // `set_edge_triggered`: one of the two sides sees the other.)
        use std::sync::atomic::Ordering::SeqCst;
        if self.edge.load(SeqCst) {
            inbox.set_edge_triggered();
        }
        if self.eager.load(SeqCst) {
            inbox.make_eager();
        }
        Ok(())
    }

    /// Whether the socket is emulated (named).
    pub(crate) fn emulated(&self) -> bool {
        self.inbox().is_some()
    }

    /// The Inbox, while the socket is emulated.
    fn inbox(&self) -> Option<&Inbox> {
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.inbox.get()
    }

    /// Decision 49, the emulated mode (no kernel port to go back to): a
    /// fork is about to share the socket, so what the receiving process
    /// has queued moves to the leftovers, which every holder reads first
    /// (a fork server's child takes the datagram its parent peeked at);
    /// later arrivals are still the receiving process's.
    pub(crate) fn share_queued(&self) {
        let Some(inbox) = self.inbox() else {
            return;
        };
        if inbox.queued_here() {
            let n = inbox.move_queued();
            log!(
                debug,
                "UDP {}: {n} queued datagrams shared before a fork",
                inbox.local
            );
        }
    }

    /// Whether it went back to the kernel (`to_kernel`): never emulated
    /// again.
    pub(crate) fn retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Decision 49: an emulated socket whose kernel socket holds its
    /// address (the default mode) goes back to the kernel before a fork
    /// shares it, so that every holder receives as from a kernel socket
    /// (one queue, each datagram to one of them): its name is let go
    /// (senders take the kernel route), its links and segments close, and
    /// what it had queued moves to the leftovers, read before the kernel
    /// socket's. True when it did.
    pub(crate) fn to_kernel(&self) -> bool {
        self.to_kernel_with(false)
    }

    /// As `to_kernel`, before an exec that takes the socket along (the
    /// default mode, decision 56): nothing is drained (leftovers do not
    /// go across exec); the senders send what they left in the rings
    /// through the kernel, whose socket the next image receives on.
    pub(crate) fn to_kernel_for_exec(&self) -> bool {
        self.to_kernel_with(true)
    }

    fn to_kernel_with(&self, exec: bool) -> bool {
        let Some(_naming) = self.naming.try_lock() else {
            return false; // being named this moment: stays as it is
        };
        let Some(inbox) = self.inbox() else {
            return false;
        };
        // A forked child (a vfork run as fork, whose exec takes a socket
        // the parent made inheritable in it; or a child forking again)
        // shares the listener and the segments with the receiving
        // process: shutting or marking them would take the socket from
        // under that process (review sigfork16: duplicates with python's
        // pass_fds=). It only puts its kernel socket on the fd.
        if !inbox.queued_here() {
            return false;
        }
        let held = self
            .shell
            .name()
            .is_some_and(|k| k.port() == inbox.local.port() && k.port() != 0);
        if !held || !self.shell.bound() {
            return false;
        }
        if !exec && !self.shell.leftover_writer() {
            return false;
        }
        let retired = if exec {
            inbox.retire_for_exec()
        } else {
            inbox.retire()
        };
        let Some(moved) = retired else {
            return false;
        };
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
        // A connected socket's kernel socket is connected only once a send
        // took the kernel's route: the fd it becomes keeps its peer, as the
        // kernel's would (sweep36: socat UDP-LISTEN EXEC's forked server
        // wrote into an unconnected socket, EDESTADDRREQ).
        if let Some(peer) = self.peer() {
            let mut kp = self.kernel_peer.lock();
            if *kp != Some(peer) {
                let to = sys::as_family(peer, self.shell.v6).unwrap_or(peer);
                match rustix::net::connect(self.kernel(), &to) {
                    Ok(()) => *kp = Some(peer),
                    Err(e) => log!(debug, "UDP {}: its peer {peer} not kept: {e}", inbox.local),
                }
            }
        }
        log!(
            debug,
            "UDP {}: back to the kernel before {} shares it ({moved} queued kept)",
            inbox.local,
            if exec { "an exec" } else { "a fork" }
        );
        true
    }

    /// Its address: the emulated name, else the kernel socket's (0.0.0.0:0
    /// or [::]:0 while unbound).
    pub(crate) fn local(&self) -> SocketAddr {
        match self.inbox() {
            Some(i) => i.local,
            None => self.shell.name().unwrap_or_else(|| {
                let ip: std::net::IpAddr = if self.shell.v6 {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                };
                SocketAddr::new(ip, 0)
            }),
        }
    }

    /// getsockname(2): `local`, but a wildcard-bound socket connected to a
    /// peer has the address the kernel's connect gives it.
    pub(crate) fn sockname(&self) -> SocketAddr {
        let local = self.local();
        let peer = *self.peer.lock();
        match peer {
            Some(p) if self.emulated() && local.ip().is_unspecified() => {
                self.connected_name(local, p)
            }
            _ => local,
        }
    }

    /// A wildcard-bound socket's address once connected to `peer`, as the
    /// kernel's connect gives it (review udpdef16, addrs.py): its kernel
    /// socket's if that is connected there, else the loopback address a
    /// datagram to a loopback peer comes from (`routes::claimed`: the
    /// kernel says 127.0.0.1, or ::ffff:127.0.0.1 on an IPv6 socket).
    fn connected_name(&self, local: SocketAddr, peer: SocketAddr) -> SocketAddr {
        if *self.kernel_peer.lock() == Some(peer) {
            if let Some(a) = self.shell.name() {
                return a;
            }
        }
        if !crate::transport::rendezvous::is_loopback(
            crate::transport::rendezvous::unmapped(peer).ip(),
        ) {
            return local;
        }
        let ip = match routes::claimed(local, peer).ip() {
            std::net::IpAddr::V4(v4) if self.shell.v6 => v4.to_ipv6_mapped().into(),
            ip => ip,
        };
        SocketAddr::new(ip, local.port())
    }

    /// Whether it is of family AF_INET6.
    pub(crate) fn is_v6(&self) -> bool {
        self.shell.v6
    }

    /// Whether the kernel socket holds a port.
    pub(crate) fn kernel_bound(&self) -> bool {
        self.shell.bound()
    }

    /// The kernel socket holds a port now (bound or connected through the
    /// kernel).
    pub(crate) fn kernel_is_bound(&self) {
        self.shell.is_bound();
    }

    /// The epoll instance the application's fd number refers to.
    pub(crate) fn instance(&self) -> BorrowedFd<'_> {
        self.shell.epoll.as_fd()
    }

    /// The kernel UDP socket that answers options.
    pub(crate) fn kernel(&self) -> BorrowedFd<'_> {
        self.shell.kernel()
    }

    /// The connected peer, if any.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        *self.peer.lock()
    }

    /// connect(2) through the kernel socket, of a socket not emulated: the
    /// kernel's answer (and its autobind, errors and filter).
    pub(crate) fn connect_kernel(&self, peer: Option<SocketAddr>) -> Result<(), Errno> {
        match peer {
            Some(p) => rustix::net::connect(self.kernel(), &p)?,
            None => rustix::net::connect_unspec(self.kernel())?,
        }
        if peer.is_some() {
            self.shell.is_bound();
        }
        *self.peer.lock() = peer;
        *self.kernel_peer.lock() = peer;
        Ok(())
    }

    /// Its next send after `ms` asks again whether its kernel peer is a
    /// preloaded receiver's (`recheck_due`).
    pub(crate) fn recheck_after(&self, ms: u64) {
        let at = crate::transport::parking::monotonic_ms() + ms;
        self.recheck_ms
            .store(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the time set by `recheck_after` has come (once: it is
    /// cleared; one load while none is set).
    pub(crate) fn recheck_due(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let at = self.recheck_ms.load(Relaxed);
        at != 0
            && crate::transport::parking::monotonic_ms() >= at
            && self
                .recheck_ms
                .compare_exchange(at, 0, Relaxed, Relaxed)
                .is_ok()
    }

    /// connect(2): `Some` sets the peer, `None` (AF_UNSPEC) dissolves it.
    pub(crate) fn connect(&self, peer: Option<SocketAddr>) {
        *self.peer.lock() = peer;
        let mut kp = self.kernel_peer.lock();
        if kp.is_some() && *kp != peer {
            // Its old peer's filter and errors go; a new peer's kernel
            // route connects it again at its first send.
            let _ = rustix::net::connect_unspec(self.kernel());
            *kp = None;
            // A port the kernel's connect took (an autobind) is let go at
            // the dissolve: taken again, so that plain senders still reach
            // the port the name holds (the kernel would take a new one at
            // the next send; getsockname still says the name's).
            if let Some(i) = self.inbox() {
                if sys::local_name(self.kernel()).is_none_or(|a| a.port() == 0) {
                    let _ = rustix::net::bind(self.kernel(), &i.local);
                }
            }
        }
    }

    /// Whether new senders' links are left to another socket sharing the
    /// name (`Inbox::set_deaf`).
    pub(crate) fn set_deaf(&self, deaf: bool) {
        if let Some(i) = self.inbox() {
            i.set_deaf(deaf);
        }
    }

    /// shutdown(2): as the kernel's UDP, it only marks the socket (the
    /// caller answers ENOTCONN when unconnected, which still marks it): a
    /// receive finds what is queued, then 0 bytes at once (a thread
    /// asleep in one wakes); a send after SHUT_WR fails with EPIPE.
    pub(crate) fn shutdown(&self, how: i32) {
        use std::sync::atomic::Ordering::Relaxed;
        let bits = match how {
            libc::SHUT_RD => SHUT_RD,
            libc::SHUT_WR => SHUT_WR,
            _ => SHUT_RD | SHUT_WR,
        };
        self.shut.fetch_or(bits, Relaxed);
        match self.inbox() {
            Some(i) if bits & SHUT_RD != 0 => i.shut_read(),
            Some(_) => {}
            // The kernel's own marks (a receive asleep in the instance
            // wakes: the kernel socket turns readable).
            None => {
                let how = match how {
                    libc::SHUT_RD => rustix::net::Shutdown::Read,
                    libc::SHUT_WR => rustix::net::Shutdown::Write,
                    _ => rustix::net::Shutdown::Both,
                };
                let _ = rustix::net::shutdown(self.kernel(), how);
            }
        }
    }

    /// SO_ERROR: the pending error, taken.
    pub(crate) fn take_error(&self) -> Option<Errno> {
        let e = self.inbox().and_then(Inbox::take_error).or_else(|| {
            if !self.kernel_bound() {
                return None;
            }
            let e = rustix::net::sockopt::socket_error(self.kernel())
                .ok()?
                .err()?;
            Some(e)
        });
        self.refused(e)
    }

    /// The kernel said nobody is at a destination it carried to
    /// (ECONNREFUSED): its route is asked again at the next send, so a
    /// receiver bound since is found at once.
    fn refused(&self, e: Option<Errno>) -> Option<Errno> {
        if e == Some(Errno::CONNREFUSED) {
            self.routes.lock().forget_kernel();
        }
        e
    }

    /// SO_RCVTIMEO, as the kernel socket keeps it (asked once, and again
    /// after a setsockopt: `refresh_limit`).
    fn rcvtimeo(&self) -> Option<std::time::Duration> {
        let mut t = self.rcvtimeo.lock();
        *t.get_or_insert_with(|| {
            rustix::net::sockopt::socket_timeout(self.kernel(), rustix::net::sockopt::Timeout::Recv)
                .ok()
                .flatten()
        })
    }

    /// SO_RCVBUF changed on the kernel socket: its stored value (doubled,
    /// capped, as the kernel keeps it) becomes the receive limit.
    pub(crate) fn refresh_limit(&self) {
        *self.rcvtimeo.lock() = None;
        let Some(inbox) = self.inbox() else {
            return;
        };
        if let Ok(n) = rustix::net::sockopt::socket_recv_buffer_size(self.kernel()) {
            inbox.set_limit(n.min(1 << 30) as u32);
        }
    }

    /// The largest datagram to `dest` (IPv4's limit for IPv4 or mapped).
    fn max_to(dest: SocketAddr) -> usize {
        match crate::transport::rendezvous::unmapped(dest) {
            SocketAddr::V4(_) => MAX_V4,
            SocketAddr::V6(_) => MAX_V6,
        }
    }

    /// Sends one datagram to `dest` (None: the connected peer). A
    /// destination nobody holds loses the datagram, and on a connected
    /// socket leaves ECONNREFUSED for its next call, as loopback's ICMP
    /// does.
    #[inline]
    pub(crate) fn send(
        &self,
        dest: Option<SocketAddr>,
        bufs: &[IoSlice<'_>],
    ) -> Result<usize, Errno> {
        self.send_from(dest, bufs, None, &[], None)
    }

    /// `send`, from `source` on a wildcard-bound socket (IP_PKTINFO's or
    /// IPV6_PKTINFO's choice, `calls::datagram::sendmsg_cmsgs`; the
    /// receiver checks it is loopback's, proved by the wildcard name); a
    /// send the kernel carries takes the cmsgs laid out in `control`;
    /// `gso`, a UDP_SEGMENT cmsg's size (None: the socket's option), cuts
    /// it into datagrams of that size (decision 80). (Inlined: the hot path, `send`, pays no call for the two arguments.)
    #[inline(always)]
    pub(crate) fn send_from(
        &self,
        dest: Option<SocketAddr>,
        bufs: &[IoSlice<'_>],
        source: Option<std::net::IpAddr>,
        control: &[u8],
        gso: Option<u16>,
    ) -> Result<usize, Errno> {
        let peer = self.peer();
        let Some(dest) = dest.or(peer) else {
            return Err(Errno::DESTADDRREQ);
        };
        if self.shut.load(std::sync::atomic::Ordering::Relaxed) & SHUT_WR != 0 {
            return Err(Errno::PIPE);
        }
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        let Some(inbox) = self.inbox() else {
            // Not emulated: the kernel's, to wherever it goes.
            return self.send_kernel(dest, peer, bufs, control);
        };
        if let Some(e) = inbox.take_error() {
            return Err(e);
        }
        if len > Self::max_to(dest) {
            return Err(Errno::MSGSIZE);
        }
        let gso = match gso {
            Some(size) => segment::Gso { size, ..self.gso() },
            None => self.gso(),
        };
        if gso.size != 0
            && gso.check(len, crate::transport::rendezvous::unmapped(dest).is_ipv6())?
        {
            return self.send_segments(inbox, dest, peer, bufs, source, control, gso.size);
        }
        let (outcome, untaken) = {
            let mut routes = self.routes.lock();
            let source = source.filter(|_| inbox.local.ip().is_unspecified());
            let outcome = routes.send(inbox, inbox.local, dest, bufs, source);
            (outcome, routes.has_untaken())
        };
        if untaken {
            self.send_untaken(peer);
        }
        let outcome = outcome?;
        self.sent.store(true, std::sync::atomic::Ordering::Relaxed);
        if matches!(outcome, Outcome::Kernel) {
            return self.send_kernel(dest, peer, bufs, control);
        }
        Ok(len)
    }

    /// A GSO send (decision 80): each segment a datagram of its own, in
    /// order, as loopback delivers the kernel's segments. A send whose
    /// first segment the kernel route takes is the kernel's GSO send;
    /// later segments it takes (the route changed meanwhile) go through
    /// the kernel socket one by one (each no longer than the segment
    /// size: one datagram there too).
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn send_segments(
        &self,
        inbox: &Inbox,
        dest: SocketAddr,
        peer: Option<SocketAddr>,
        bufs: &[IoSlice<'_>],
        source: Option<std::net::IpAddr>,
        control: &[u8],
        size: u16,
    ) -> Result<usize, Errno> {
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        let segments = segment::split(bufs, usize::from(size));
        let mut kernel = Vec::new();
        let untaken = {
            let mut routes = self.routes.lock();
            let source = source.filter(|_| inbox.local.ip().is_unspecified());
            for (i, seg) in segments.iter().enumerate() {
                match routes.send(inbox, inbox.local, dest, seg, source) {
                    // The kernel's route from the first: the whole send is
                    // the kernel's GSO (a UDP_GRO receiver gets it whole).
                    Ok(Outcome::Kernel) if i == 0 => {
                        drop(routes);
                        return self.send_kernel(dest, peer, bufs, control);
                    }
                    Ok(Outcome::Kernel) => kernel.push(i),
                    Ok(_) => {}
                    // (A later segment's error is lost, as a GSO skb's
                    // segments are dropped silently; the first's is the
                    // send's.)
                    Err(e) if i == 0 => return Err(e),
                    Err(_) => {}
                }
            }
            routes.has_untaken()
        };
        if untaken {
            self.send_untaken(peer);
        }
        self.sent.store(true, std::sync::atomic::Ordering::Relaxed);
        for &i in &kernel {
            let _ = self.send_kernel(dest, peer, &segments[i], control);
        }
        Ok(len)
    }

    /// What a link no receiver answered, or a ring whose receiver went
    /// across exec, left untaken (decision 56): through the kernel, before
    /// the datagram being sent. Out of line: the established path only
    /// tests a length (review sigfork16).
    #[cold]
    #[inline(never)]
    fn send_untaken(&self, peer: Option<SocketAddr>) {
        let untaken = self.routes.lock().take_untaken();
        for (to, payload) in &untaken {
            let _ = self.send_kernel(*to, peer, &[IoSlice::new(payload)], &[]);
        }
    }

    /// Sends through the kernel socket (review H2, H3): it takes a port
    /// first, our own if the kernel has it free, and a connected socket's
    /// kernel socket connects to the peer, so the kernel's errors
    /// (ECONNREFUSED) and filter are its own.
    fn send_kernel(
        &self,
        dest: SocketAddr,
        peer: Option<SocketAddr>,
        bufs: &[IoSlice<'_>],
        control: &[u8],
    ) -> Result<usize, Errno> {
        let kernel = self.kernel();
        if !self.kernel_bound() {
            if let Some(inbox) = self.inbox() {
                let local = inbox.local;
                let own = rustix::net::bind(kernel, &local);
                if own.is_err() && !local.ip().is_unspecified() {
                    let _ = rustix::net::bind(kernel, &SocketAddr::new(local.ip(), 0));
                }
                log!(debug, "UDP {local}: kernel route to {dest}");
            }
            // (Unnamed: the kernel binds it at this send.)
            self.shell.is_bound();
        }
        let dest = sys::as_family(dest, self.shell.v6).unwrap_or(dest);
        if peer.is_some_and(|p| same(p, dest)) {
            let mut kp = self.kernel_peer.lock();
            if kp.is_none() {
                rustix::net::connect(kernel, &dest)?;
                *kp = Some(dest);
            }
        }
        let sent = if control.is_empty() {
            kernel::send(kernel, dest, bufs)
        } else {
            // (The cmsgs shared memory took: IP_PKTINFO's source, ...)
            sys::sendmsg_control(kernel, bufs, dest, control).map_err(Errno::from_raw_os_error)
        };
        sent.map_err(|e| self.refused(Some(e)).unwrap_or(e))
    }

    /// Receives one datagram, waiting unless `nonblocking`: at most
    /// SO_RCVTIMEO (then EAGAIN); a signal ends the wait with EINTR unless
    /// its handler restarts calls (SA_RESTART) and there is no timeout, as
    /// the kernel's recvfrom.
    pub(crate) fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        nonblocking: bool,
    ) -> Result<Taken, Errno> {
        let only = self.peer();
        let mut deadline = None;
        // A blocking receive's first look skips the kernel socket (a
        // recvmsg that finds nothing, on every receive of a ping-pong in
        // the default mode, where it holds a port): the spin asks it
        // every 64th look, and the sleep's epoll instance holds it, so a
        // kernel datagram ends the spin or the sleep and the next look
        // takes it.
        let mut kernel_too = nonblocking;
        loop {
            let Some(inbox) = self.inbox() else {
                match self.recv_kernel(bufs, peek, only) {
                    Err(Errno::AGAIN) if !nonblocking => {}
                    r => return r,
                }
                let limit = *deadline
                    .get_or_insert_with(|| self.rcvtimeo().map(|t| std::time::Instant::now() + t));
                let ms = ms_left(limit)?;
                match sleep_outside(|| self.shell.wait(ms)) {
                    Ok(true) if !self.emulated() && !self.shell.ready() => {
                        // Readable for another process's Inbox (a parent
                        // that named the instance after it forked us).
                        nap_outside(std::time::Duration::from_millis(10));
                    }
                    Ok(_) => {}
                    Err(Errno::INTR) if limit.is_none() && crate::platform::cancel::restarts() => {}
                    Err(e) => return Err(e),
                }
                continue;
            };
            let kernel = std::mem::replace(&mut kernel_too, true);
            match inbox.try_recv(bufs, peek, only, nonblocking, kernel) {
                Err(Errno::AGAIN) if !nonblocking => {}
                Err(Errno::OPNOTSUPP) if !nonblocking => {
                    // A forked child while the receiving process keeps the
                    // socket: it waits until that one lets go (a daemon's
                    // parent about to exit), looking every 10 ms.
                    let limit = *deadline.get_or_insert_with(|| {
                        self.rcvtimeo().map(|t| std::time::Instant::now() + t)
                    });
                    if limit.is_some_and(|l| std::time::Instant::now() >= l) {
                        return Err(Errno::AGAIN);
                    }
                    nap_outside(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(e) => return Err(self.refused(Some(e)).unwrap_or(e)),
                r => return r,
            }
            if self.spin(inbox)? || inbox.prepare_sleep() {
                continue;
            }
            let limit = *deadline
                .get_or_insert_with(|| self.rcvtimeo().map(|t| std::time::Instant::now() + t));
            let ms = ms_left(limit)?;
            let woke = inbox.wait(ms);
            inbox.after_wake();
            match woke {
                Ok(_) => {}
                Err(Errno::INTR) if limit.is_none() && crate::platform::cancel::restarts() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Spins on the queue for up to SHMNET_SPIN_US before a receive
    /// sleeps (as a stream's does): true when something came. While it
    /// spins the socket's doorbell flag stays down (the *busy word* of a
    /// datagram socket: a lazy receiver raises it only to sleep, in
    /// `prepare_sleep`, and looks once more after raising it), so a sender
    /// publishes without a system call.
    ///
    /// Who spins, only while spinning can help (`wait::spin_helps`: no
    /// more runnable threads than CPUs, not preempted lately):
    /// - a socket that sent since it last received (awaiting an answer);
    /// - any other receive (a consumer): datagrams come in a stream, and
    ///   a sleep would cost the sender a BELL and this side a wake-up per
    ///   datagram; but only while its spins pay for themselves
    ///   (`ConsumerPace`: found a datagram within a quarter of the budget
    ///   on average), else it backs off 1 ms, doubling up to 32 ms while
    ///   its probes still wait long (a trickle, or an idle socket: its
    ///   receives sleep at once).
    ///
    /// A handler that runs while it spins (decision 48) ends the spin and,
    /// when nothing came, the receive with EINTR unless it restarts
    /// (SA_RESTART), as the kernel's.
    fn spin(&self, inbox: &Inbox) -> Result<bool, Errno> {
        use std::sync::atomic::Ordering::Relaxed;
        let us = crate::platform::config::get().map_or(0, |c| c.spin_us);
        if us == 0 {
            return Ok(false);
        }
        let now = now_ns();
        let answer = self.sent.swap(false, Relaxed) && self.answers.may_spin(now);
        let consumer = !answer && self.consumer.may_spin(now);
        if !(answer || consumer) {
            return Ok(false);
        }
        let watch = crate::platform::sys::handlers::Watch::begin();
        if !crate::sockets::wait::spin_helps() {
            // (A handler that ran while it looked at /proc.)
            if crate::platform::cancel::spin_interrupted(watch) {
                return Err(Errno::INTR);
            }
            return Ok(false);
        }
        let start = std::time::Instant::now();
        let limit = std::time::Duration::from_micros(u64::from(us));
        let mut round = 0u32;
        let found = loop {
            // The kernel socket (holding a port in the default mode) is
            // asked every 64th look: one poll, the others cost none.
            round = round.wrapping_add(1);
            if inbox.quick_ready(round.is_multiple_of(64)) {
                break true;
            }
            std::hint::spin_loop();
            // A handler that ran ends the spin (decision 48).
            if watch.signalled() || (round.is_multiple_of(8) && start.elapsed() >= limit) {
                break false;
            }
        };
        let budget = u64::from(us) * 1_000;
        if consumer {
            let waited = start.elapsed().as_nanos() as u64;
            self.consumer.spun(waited, budget, now_ns());
        } else {
            self.answer_spun(found, budget);
        }
        if !found && crate::platform::cancel::spin_interrupted(watch) {
            return Err(Errno::INTR);
        }
        Ok(found)
    }

    /// Whether a wait in poll, select or epoll_wait that covers this
    /// socket may spin for it, as a blocking receive would (`spin`): it
    /// sent since it last received (an answer may be near), or it is a
    /// consumer whose spins pay for themselves (`ConsumerPace`).
    pub(crate) fn wait_spin_wanted(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_ns();
        self.inbox().is_some()
            && ((self.sent.load(Relaxed) && self.answers.may_spin(now))
                || self.consumer.may_spin(now))
    }

    /// Such a wait begins to spin: the answer awaited is taken (as a
    /// receive's spin takes it) and the doorbell flag goes down
    /// (`Inbox::lower_for_spin`). Some(whether it spins as a consumer),
    /// to give back to `wait_spin_end`; None when it does not spin for
    /// this socket.
    pub(crate) fn wait_spin_begin(&self) -> Option<bool> {
        use std::sync::atomic::Ordering::Relaxed;
        let inbox = self.inbox()?;
        let now = now_ns();
        let answer = self.sent.swap(false, Relaxed) && self.answers.may_spin(now);
        let consumer = !answer && self.consumer.may_spin(now);
        if !(answer || consumer) || !inbox.lower_for_spin() {
            return None;
        }
        Some(consumer)
    }

    /// A look while the wait spins: a datagram (or an error, a shutdown's
    /// end) is there; the kernel socket asked when `kernel` (every 64th
    /// look, as a receive's spin does).
    pub(crate) fn wait_spin_ready(&self, kernel: bool) -> bool {
        self.inbox().is_some_and(|i| i.quick_ready(kernel))
    }

    /// The wait's spin ended after `waited` of a `budget`: a consumer's
    /// pace learns it, and readiness is exact again
    /// (`Inbox::raise_after_spin`). True when something is queued.
    pub(crate) fn wait_spin_end(
        &self,
        consumer: bool,
        waited: std::time::Duration,
        budget: std::time::Duration,
    ) -> bool {
        let queued = self.inbox().is_some_and(Inbox::raise_after_spin);
        let b = budget.as_nanos() as u64;
        if consumer {
            // A spin that another socket of the set ended found nothing
            // here: it counts the whole budget.
            let w = if queued { waited } else { budget };
            self.consumer.spun(w.as_nanos() as u64, b, now_ns());
        } else {
            self.answer_spun(queued, b);
        }
        queued
    }

    /// A spin for an answer ended: one that came, however late within the
    /// budget, counts as paying; spins that found none back off
    /// (`ConsumerPace`: a quarter of them lately, on average).
    fn answer_spun(&self, found: bool, budget_ns: u64) {
        self.answers
            .spun(if found { 0 } else { budget_ns }, budget_ns, now_ns());
    }

    /// Poll, select or epoll met the socket: readiness exact from now on.
    pub(crate) fn make_eager(&self) {
        self.eager.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(i) = self.inbox() {
            i.make_eager();
        }
    }

    /// A receive of a socket not emulated: the kernel socket's next
    /// datagram, EAGAIN when none (after a shutdown(SHUT_RD) with nothing
    /// queued, the kernel's 0 bytes).
    fn recv_kernel(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        only: Option<SocketAddr>,
    ) -> Result<Taken, Errno> {
        let got = match self.shell.take(bufs, peek, only) {
            Err(e) => return Err(self.refused(Some(e)).unwrap_or(e)),
            Ok(g) => g,
        };
        if let Some((got, from)) = got {
            return Ok(Taken { got, from });
        }
        if self.shut.load(std::sync::atomic::Ordering::Relaxed) & SHUT_RD != 0 {
            let got = shmnet_ring::dgram::Received {
                len: 0,
                copied: 0,
                slot: u32::MAX,
            };
            return Ok(Taken { got, from: None });
        }
        Err(Errno::AGAIN)
    }

    /// Whether a receive would find something now (a datagram, an error,
    /// a shutdown's end): what epoll reports beside EPOLLOUT.
    pub(crate) fn readable(&self) -> bool {
        match self.inbox() {
            Some(i) => i.readable(),
            None => {
                self.shell.ready()
                    || self.shut.load(std::sync::atomic::Ordering::Relaxed) & SHUT_RD != 0
            }
        }
    }

    /// `readable`, asked of a socket the kernel just reported readable,
    /// and whether it has a pending error to report (POLLERR: the kernel's
    /// ICMP error on a socket not emulated, review c5; with nothing
    /// queued, the kernel's poll reports POLLERR alone).
    /// One not emulated looks at its kernel socket: its instance may hold
    /// another process's Inbox (a forked process that named the shared
    /// instance, review c14), whose readiness is not ours to report; the
    /// wait then sleeps before it asks again (`wait::foreign_readiness`)
    /// rather than spin on a level-triggered report that stays.
    pub(crate) fn reported(&self) -> (bool, bool) {
        if let Some(i) = self.inbox() {
            return (i.readable(), false);
        }
        let ev = self.shell.revents();
        let shut = self.shut.load(std::sync::atomic::Ordering::Relaxed) & SHUT_RD != 0;
        let data = ev & libc::POLLIN != 0 || shut;
        let error = ev & libc::POLLERR != 0;
        if !data && !error {
            crate::sockets::wait::foreign_readiness();
        }
        (data, error)
    }

    /// It joined an epoll set edge-triggered (`Inbox::set_edge_triggered`).
    pub(crate) fn set_edge_triggered(&self) {
        self.edge.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(i) = self.inbox() {
            i.set_edge_triggered();
        }
    }

    /// Whether an edge the kernel reported stands for an arrival
    /// (`Inbox::edge_news`).
    pub(crate) fn edge_news(&self) -> bool {
        self.inbox().is_none_or(Inbox::edge_news)
    }

    /// An epoll_wait reported it: the next arrival is a new edge.
    pub(crate) fn rearm_edge(&self) {
        if let Some(i) = self.inbox() {
            i.rearm_edge();
        }
    }

    /// Whether the application's fd is non-blocking (its O_NONBLOCK,
    /// asked once and remembered until F_SETFL or FIONBIO).
    pub(crate) fn nonblocking(&self, fd: std::os::fd::RawFd) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match self.nonblock.load(Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let yes = rustix::fs::fcntl_getfl(crate::platform::sys::borrow_fd(fd))
                    .is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK));
                self.nonblock.store(if yes { 2 } else { 1 }, Relaxed);
                yes
            }
        }
    }

    /// The cmsgs the socket asked for (`ancillary::asked`), asked of its
    /// kernel socket once after each setsockopt.
    #[inline]
    fn cmsgs(&self) -> u32 {
        let key = self.cmsgs.load(std::sync::atomic::Ordering::Relaxed);
        if key >> 32 != Self::cmsgs_generation() {
            return self.ask_cmsgs();
        }
        key as u32
    }

    /// `cmsgs` not known yet: asked of the kernel socket (out of line: a
    /// receive pays one load and a compare).
    #[cold]
    #[inline(never)]
    fn ask_cmsgs(&self) -> u32 {
        let m = ancillary::asked(self.kernel(), self.is_v6());
        let key = Self::cmsgs_generation() << 32 | u64::from(m);
        self.cmsgs.store(key, std::sync::atomic::Ordering::Relaxed);
        m
    }

    /// The `cmsgs` key's tag: this fork generation plus one (never 0).
    fn cmsgs_generation() -> u64 {
        u64::from(crate::platform::fork::generation()) + 1
    }

    /// The source address a send to `dest` carries (`routes::claimed`).
    pub(crate) fn source_for(&self, dest: SocketAddr) -> SocketAddr {
        routes::claimed(self.local(), dest)
    }

    /// Its UDP_SEGMENT and SO_NO_CHECK, asked of its kernel socket once
    /// per setsockopt and fork (a send pays one load and a compare).
    #[inline]
    fn gso(&self) -> segment::Gso {
        let key = self.gso.load(std::sync::atomic::Ordering::Relaxed);
        if key >> 32 != Self::cmsgs_generation() {
            return self.ask_gso();
        }
        segment::Gso::from_bits(key as u32)
    }

    #[cold]
    #[inline(never)]
    fn ask_gso(&self) -> segment::Gso {
        let g = segment::Gso::of(self.kernel());
        let key = Self::cmsgs_generation() << 32 | u64::from(g.bits());
        self.gso.store(key, std::sync::atomic::Ordering::Relaxed);
        g
    }

    /// A setsockopt succeeded: the cmsgs asked (and UDP_SEGMENT) may
    /// have changed.
    pub(crate) fn forget_cmsgs(&self) {
        self.cmsgs.store(0, std::sync::atomic::Ordering::Relaxed);
        self.gso.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether it asked for a cmsg only the kernel makes (IP_RECVERR,
    /// SO_RXQ_OVFL, UDP_GRO, SO_TIMESTAMPING).
    pub(crate) fn asks_kernel_only(&self) -> bool {
        self.cmsgs() & ancillary::KERNEL_ONLY != 0
    }

    /// Whether it asked for any cmsg.
    pub(crate) fn asks_cmsgs(&self) -> bool {
        self.cmsgs() != 0
    }

    /// A recvmsg asking for cmsgs begins (the kernel's are kept if its
    /// socket gives the datagram).
    pub(crate) fn arm_cmsgs(&self) {
        if let Some(i) = self.inbox() {
            i.dests.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        ancillary::arm();
    }

    /// The cmsgs of the datagram `t` just received, into the caller's
    /// control buffer `buf`, as the kernel writes them: its bytes and
    /// MSG_CTRUNC. A kernel datagram's are the kernel's own; a shared-
    /// memory one's are made for the address its sender used (the
    /// socket's own, or loopback's for a wildcard one, when not known).
    pub(crate) fn fill_cmsgs(&self, t: &Taken, buf: &mut [u8]) -> (usize, bool) {
        let asked = self.cmsgs();
        ancillary::take(|kernel, dest| {
            let mut w = ancillary::Writer::new(buf);
            if let Some((bytes, cut)) = kernel {
                w.put_kernel(bytes, cut);
            } else if asked != 0 && t.from.is_some() {
                let to = dest.unwrap_or_else(|| {
                    let l = self.local();
                    if !l.ip().is_unspecified() {
                        return l;
                    }
                    let ip: std::net::IpAddr = match t.from.map(unmapped_v4) {
                        Some(true) => std::net::Ipv4Addr::LOCALHOST.into(),
                        _ => std::net::Ipv6Addr::LOCALHOST.into(),
                    };
                    SocketAddr::new(ip, l.port())
                });
                ancillary::build(&mut w, asked, to);
            }
            (w.len(), w.truncated)
        })
    }

    /// A recvmsg that armed the cmsgs (`arm_cmsgs`) failed.
    pub(crate) fn fill_cmsgs_none(&self) {
        ancillary::take(|_, _| ());
    }

    /// The application changed O_NONBLOCK: ask again next time.
    pub(crate) fn forget_nonblocking(&self) {
        self.nonblock.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// FIONREAD: the size of the next datagram (0 when none).
    pub(crate) fn next_len(&self) -> usize {
        match self.inbox() {
            Some(i) => i.next_len(),
            None if self.kernel_bound() => self.shell.next_len().unwrap_or(0),
            None => 0,
        }
    }

    /// At exit: adds the socket's datagram tally to the counters (not if
    /// a send holds the routes, as exit from a signal handler could), and
    /// its senders stop sending here (`Inbox::at_exit`).
    pub(crate) fn at_exit(&self) {
        if let Some(mut r) = self.routes.try_lock() {
            r.add_tally();
        }
        if let Some(i) = self.inbox.get() {
            i.at_exit();
        }
    }

    /// In a forked child: the locks reset; its routes are the parent's
    /// slots (one producer each), so it registers its own; it does not
    /// receive (the rings have one consumer).
    /// Its kernel socket is bound to `local`, whose name another process
    /// holds (SO_REUSEADDR or SO_REUSEPORT across processes): it holds the
    /// mark that sends preloaded senders through the kernel, which alone
    /// knows which socket of the port a datagram reaches (decision 50).
    /// One mark per port: a third socket finds it held.
    pub(crate) fn mark_shared(&self, local: SocketAddr) {
        if let Ok(fd) = crate::transport::link::mark(routes::shared_mark(local)) {
            let _ = self
                .shared_mark
                .set(crate::platform::internal_fd::InternalFd::new(fd));
        }
    }

    pub(crate) fn after_fork_child(&self) {
        self.peer.reset_after_fork();
        self.rcvtimeo.reset_after_fork();
        self.routes.reset_after_fork();
        self.routes.lock().clear();
        self.naming.reset_after_fork();
        if let Some(i) = self.inbox() {
            i.after_fork_child();
        }
        self.opts.reset_after_fork();
    }
}

/// Whether `a` is an IPv4 address (mapped or not).
fn unmapped_v4(a: SocketAddr) -> bool {
    crate::transport::rendezvous::unmapped(a).is_ipv4()
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    crate::transport::rendezvous::unmapped(a) == crate::transport::rendezvous::unmapped(b)
}

/// A receive's wait in milliseconds for poll/epoll until `limit` (-1: none);
/// EAGAIN once it passed, as SO_RCVTIMEO's end.
/// A blocking receive's kernel sleep: outside the library
/// (`guard::suspended`), so that a signal handler's calls are the
/// library's and a siglongjmp out of it (tftp's SIGALRM timeout) leaves
/// the thread outside, as a stream's sleep does; ended by pthread_cancel
/// (EINTR then). `sleep` holds no lock of ours and calls nothing hooked.
pub(super) fn sleep_outside(sleep: impl FnOnce() -> Result<bool, Errno>) -> Result<bool, Errno> {
    crate::platform::guard::suspended(|| crate::platform::cancel::sleep(sleep))
        .unwrap_or(Err(Errno::INTR))
}

/// A pause between looks, outside the library as `sleep_outside`.
fn nap_outside(d: std::time::Duration) {
    crate::platform::guard::suspended(|| std::thread::sleep(d));
}

fn ms_left(limit: Option<std::time::Instant>) -> Result<i32, Errno> {
    let Some(l) = limit else { return Ok(-1) };
    let left = l.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(Errno::AGAIN);
    }
    Ok(left.as_millis().clamp(1, i32::MAX as u128) as i32)
}

/// Monotonic nanoseconds (the vDSO's clock: no system call).
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}
