//! Admission: the handshake on a rendezvous connection whose connect
//! message is there (who is asking, by the kernel's word; whether the
//! policy admits them; whether what they say of themselves is
//! plausible; then the segment), and the answer to an SO_REUSEPORT join.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::io::Errno;
use shmnet_ring::Segment;

use crate::platform::config::Config;
use crate::platform::policy::Peer;
use crate::platform::sys::as_family;
use crate::platform::{stats, sys};
use crate::sockets::conn::{Bell, Connection};
use crate::transport::handshake::{self, Kind};
use crate::transport::parking::{Scope, State};
use crate::transport::pool;
use crate::transport::rendezvous;

use super::{euid, reuses_port, Listener};

/// The outcome of a handshake on a connection whose message is there.
#[allow(clippy::large_enum_variant)] // one lives at a time, on the stack
pub(super) enum Step {
    Done(Connection),
    /// More is to come (a declined reuse offer is followed by a Connect).
    Pending(State),
    Dropped,
    /// The connector gave up waiting for our answer to its reuse offer and
    /// hung up: it dials again at once (see `pool`).
    Withdrawn,
    /// Untouched: taking its message needs fds the process does not have
    /// (the kernel's accept says EMFILE, or ENFILE, and leaves the
    /// connection queued).
    NoRoom(Errno),
    /// Lent to the ring's slot at the fd limit and not put back on a
    /// number (`pocket::Lost`): dropped; the caller's fd for it names
    /// nothing of ours and must be forgotten, not closed.
    Lost,
}

impl Listener {
    /// A `Kind::Join` (see `calls::listen::join_reuseport_group`): our
    /// rendezvous socket for a process of our own user binding our address
    /// with SO_REUSEPORT, if we were bound with it too; otherwise nothing
    /// (the joiner's bind says EADDRINUSE).
    fn answer_join(&self, conn: BorrowedFd<'_>, peer: &Peer, msg: &handshake::Message) {
        let ours = self.tcp.is_none()
            && peer.uid == self.owner
            && reuses_port(&self.opts)
            && rendezvous::unmapped(msg.addr) == rendezvous::unmapped(self.local);
        match self.local_rendezvous().filter(|_| ours) {
            Some(rv) => {
                let _ = handshake::send(conn, msg, Some(rv.as_fd()));
                log!(
                    debug,
                    "listen on {}: pid {} joined the SO_REUSEPORT group",
                    self.local,
                    peer.pid
                );
            }
            None => log!(
                debug,
                "listen on {}: a join from uid {} refused",
                self.local,
                peer.uid
            ),
        }
    }

    pub(super) fn dropped(&self, why: &str) {
        log!(
            debug,
            "accept on {}: dropping a rendezvous connection ({why})",
            self.local
        );
        stats::dropped_handshake();
    }

    /// Whether a default-mode connector's destination (which becomes the
    /// connection's local address) names this listener: its port, and its
    /// address, or one of the namespace's when bound to the wildcard.
    fn serves(&self, dest: SocketAddr) -> bool {
        if self.gateway {
            // Where the connector is going; the gateway checks its ranges.
            return !(self.v6only && rendezvous::unmapped(dest).is_ipv4());
        }
        if self.v6only && rendezvous::unmapped(dest).is_ipv4() {
            return false;
        }
        let (dest, local) = (rendezvous::unmapped(dest), rendezvous::unmapped(self.local));
        dest.port() == local.port()
            && if local.ip().is_unspecified() {
                crate::platform::netlink::is_local(dest.ip())
            } else {
                dest.ip() == local.ip()
            }
    }

    /// The handshake on a rendezvous connection whose message is there:
    /// who is asking (the kernel's word), whether they may, then the
    /// segment (seed 000 claims 82-83 b-f).
    ///
    /// `room`: an fd the caller holds to make room for the message's
    /// memfd (closed here, instead of looking for room).
    pub(super) fn handshake(
        &self,
        conn: &mut OwnedFd,
        scope: Scope,
        state: State,
        room: &mut Option<OwnedFd>,
    ) -> Step {
        let Some(config) = crate::platform::config::get() else {
            return Step::Dropped;
        };
        let Some(peer) = Peer::of(conn.as_fd(), &config.allow) else {
            self.dropped("no credentials");
            return Step::Dropped;
        };
        // Our euid is asked only if the listener's owner does not admit
        // the peer (a geteuid less per accept, in the common case).
        if !(config.allow.admits(self.owner, &peer) || config.allow.admits(euid(), &peer)) {
            self.refuse(&peer);
            return Step::Dropped;
        }
        // The message brings a memfd, which needs room of its own.
        match room.take() {
            // (close(2) alone: std's drop asks F_GETFD first under debug
            // assertions, a system call per accept in the ci build.)
            Some(fd) => sys::close_fd(fd),
            None => {
                if let Err(e) = sys::room_for_fd(conn.as_fd()) {
                    // The last free number: the connection lends it to its
                    // memfd from this thread's ring (decision 58).
                    // None: no fd came (none attached, or cut off), the
                    // usual path goes on (its peek says EMFILE if cut off).
                    if let Some(step) = self.lent_handshake(conn, scope, &peer, config, e) {
                        return step;
                    }
                }
            }
        }
        // The doorbell is `conn` itself, under the number the application
        // will get from accept.
        let bell = Bell::new(conn.as_fd(), Some(conn.as_raw_fd()));
        let conn = conn.as_fd();
        let (msg, memfd) = match handshake::try_recv(conn) {
            Ok(m) => m,
            // The number we made room with was taken meanwhile (another
            // thread opened an fd): the message and its memfd are still
            // queued (`try_recv`), for the next try.
            Err(e @ (Errno::MFILE | Errno::NFILE)) => return Step::NoRoom(e),
            Err(e) => {
                self.dropped(&format!("unreadable message: {e}"));
                return Step::Dropped;
            }
        };
        if msg.kind == Kind::Join {
            self.answer_join(conn, &peer, &msg);
            return Step::Dropped;
        }
        if let Err(why) = self.vet(&msg, scope, &peer, config) {
            return self.bad(&why);
        }
        let generation = crate::platform::fork::generation();
        let reused = match self.reuse(conn, &msg, &peer, state) {
            Ok(reused) => reused,
            Err(step) => return step,
        };
        let Some((local, peer_addr)) = self.addresses(&msg) else {
            return self.bad("address family differs");
        };
        let (seg, ticket) = match reused {
            Some(made) => made,
            None => match attach(memfd, &msg, &peer, generation) {
                Ok(made) => made,
                Err(why) => return self.bad(&why),
            },
        };
        let made = Connection::new(seg, local, peer_addr, bell, None, ticket);
        match made {
            Ok(c) => Step::Done(c),
            Err(e) => {
                log!(
                    warn,
                    "accept on {}: cannot set up the connection ({e})",
                    self.local
                );
                Step::Dropped
            }
        }
    }

    /// `handshake` at the fd limit (`room_for_fd` said `no_room`): the
    /// connection goes into this thread's io_uring slot, its number takes
    /// the memfd, which is mapped and closed, and the connection comes
    /// back on a number (`pocket`). None: no fd came with the message (a
    /// reuse offer, a join), the connection back on its number, for the
    /// usual path; NoRoom where there is no ring, as before.
    fn lent_handshake(
        &self,
        conn: &mut OwnedFd,
        scope: Scope,
        peer: &Peer,
        config: &Config,
        no_room: Errno,
    ) -> Option<Step> {
        use crate::platform::pocket::{self, Peeked};
        let mut bytes = [0u8; handshake::LEN];
        let (lent, n, memfd) = match pocket::lend_and_peek(conn, &mut bytes) {
            Ok(Peeked::Fd(lent, n, memfd)) => (lent, n, memfd),
            Ok(Peeked::Back) => return None,
            Err(None) => return Some(Step::NoRoom(no_room)),
            Err(Some(pocket::Lost)) => return Some(self.lost()),
        };
        let back = |lent: pocket::Lent, conn: &mut OwnedFd| lent.give_back(conn).is_ok();
        if n == 0 || n < handshake::LEN {
            // A part, or a hang-up: back to the usual path, which says so.
            drop(memfd);
            return if back(lent, conn) {
                None
            } else {
                Some(self.lost())
            };
        }
        let mut sink = [0u8; handshake::LEN];
        let consumed = lent.consume(&mut sink);
        let msg = match (consumed, handshake::Message::decode(&bytes)) {
            (Ok(got), Ok(msg)) if got == handshake::LEN && sink == bytes => msg,
            (consumed, _) => {
                drop(memfd);
                let step = self.bad(&format!("unreadable message ({consumed:?})"));
                return Some(if back(lent, conn) { step } else { self.lost() });
            }
        };
        let made = (|| {
            if msg.kind != Kind::Connect {
                return Err("shared memory with a message that takes none".to_string());
            }
            self.vet(&msg, scope, peer, config)?;
            let (local, peer_addr) = self.addresses(&msg).ok_or("address family differs")?;
            let generation = crate::platform::fork::generation();
            let (mut seg, ticket) = attach(Some(memfd), &msg, peer, generation)?;
            // (Mapped: the number goes back to the connection. Without a
            // kept memfd it reads as closed after exec, as any connection
            // accepted at the limit did.)
            if let Some(fd) = seg.take_fd() {
                sys::close_fd(fd);
            }
            Ok((seg, ticket, local, peer_addr))
        })();
        if !back(lent, conn) {
            return Some(self.lost());
        }
        let (seg, ticket, local, peer_addr) = match made {
            Ok(made) => made,
            Err(why) => return Some(self.bad(&why)),
        };
        let bell = Bell::new(conn.as_fd(), Some(conn.as_raw_fd()));
        log!(
            debug,
            "accept on {}: a connection at the fd limit, its memfd taken through io_uring",
            self.local
        );
        Some(
            match Connection::new(seg, local, peer_addr, bell, None, ticket) {
                Ok(c) => Step::Done(c),
                Err(e) => {
                    log!(
                        warn,
                        "accept on {}: cannot set up the connection ({e})",
                        self.local
                    );
                    Step::Dropped
                }
            },
        )
    }

    fn lost(&self) -> Step {
        log!(
            warn,
            "accept on {}: a connection taken at the fd limit found no number again; dropped",
            self.local
        );
        stats::dropped_handshake();
        Step::Lost
    }

    /// A connector whose message does not hold up (`why`): refused.
    fn bad(&self, why: &str) -> Step {
        log!(warn, "refusing a connection to {}: {why}", self.local);
        stats::dropped_handshake();
        Step::Dropped
    }

    /// A reuse offer the connector withdrew (it gave up and dialed again):
    /// this connection ends, since kernel TCP never shows an accept the
    /// client did not make.
    fn withdrawn(&self) -> Step {
        log!(
            debug,
            "accept on {}: the connector withdrew its reuse offer",
            self.local
        );
        Step::Withdrawn
    }

    /// Whether what the connector says of itself (its address, its source
    /// port) is plausible, and names this listener; Err says why not.
    fn vet(
        &self,
        msg: &handshake::Message,
        scope: Scope,
        peer: &Peer,
        config: &Config,
    ) -> Result<(), String> {
        let here = |f: &dyn Fn() -> bool| crate::platform::netlink::in_namespace(self.namespace, f);
        // `/proc/self` is the listener's namespace while the process has
        // not moved since it listened.
        let unmoved = self.namespace == crate::platform::netlink::namespace_epoch();
        if !here(&|| plausible_source(msg.addr, scope, peer, config, unmoved)) {
            return Err(format!("{} is not an address of the connector", msg.addr));
        }
        // A port below ip_unprivileged_port_start is root's, as on kernel
        // TCP (servers trust such source ports: rlogin-style checks) —
        // except the library's own ephemeral ones (32768-60999, whatever
        // the namespace's ip_local_port_range: a start raised into them
        // would refuse every connector).
        let port = msg.addr.port();
        let privileged =
            crate::transport::lookup::privileged_port(port) && !rendezvous::is_ephemeral(port);
        if port == 0 || (privileged && peer.uid != 0) {
            return Err(format!("source port {port} from uid {}", peer.uid));
        }
        if self.v6only && rendezvous::unmapped(msg.addr).is_ipv4() {
            return Err("an IPv4 peer on an IPV6_V6ONLY listener".into());
        }
        if self.tcp.is_some() && !here(&|| self.serves(msg.dest)) {
            return Err(format!("{} is not this listener's address", msg.dest));
        }
        Ok(())
    }

    /// A reuse offer (`Kind::Reuse`) answered: the pooled segment it names
    /// if this process keeps it, none for a `Connect`; Err is how the
    /// handshake stands when it goes no further now (never `Done`).
    #[allow(clippy::result_large_err)] // one lives at a time, on the stack
    fn reuse(
        &self,
        conn: BorrowedFd<'_>,
        msg: &handshake::Message,
        peer: &Peer,
        state: State,
    ) -> Result<Option<(Segment, Option<pool::Ticket>)>, Step> {
        match (msg.kind, state) {
            (Kind::Reuse, State::New) if msg.status > handshake::MAX_FILLER => {
                Err(self.bad("too much filler"))
            }
            // A non-blocking connector (`Offered`): no verdict byte when
            // claimed (it sees the claim word); the filler taken after the
            // answer, which wakes it writable.
            (Kind::Reuse, State::New) if msg.status > 0 => {
                let filler = msg.status as usize;
                match pool::claim(peer.pid, msg.key) {
                    pool::Claim::Taken(seg, ticket) => match handshake::take_filler(conn, filler) {
                        Ok(()) => Ok(Some((seg, Some(ticket)))),
                        Err(e) => Err(self.bad(&format!("filler not taken: {e}"))),
                    },
                    // The connector gave up on this connection and dialed
                    // again: declining would complete an accept nobody
                    // made (its end may still be open a moment, or in a
                    // forked child), which kernel TCP never shows.
                    pool::Claim::Withdrawn => Err(self.withdrawn()),
                    // Declined with a segment made here, so that the
                    // connection completes now: the connector reads the
                    // answer only when its application next calls, and
                    // a parked connection may be dropped before (a crowd
                    // beyond PARKED_MAX, PARK_PATIENCE).
                    pool::Claim::NotHere => match crate::sockets::conn::segment_for_declined(
                        crate::platform::config::get().map_or(0, |c| c.ring_bytes),
                    ) {
                        Ok(seg) => {
                            let sent = seg.fd().map(|memfd| {
                                handshake::send_with_fd(conn, &[handshake::DECLINED], memfd)
                            });
                            if !matches!(sent, Some(Ok(()))) {
                                return Err(Step::Withdrawn);
                            }
                            log!(
                                debug,
                                "accept on {}: a reuse offer declined; a new segment sent",
                                self.local
                            );
                            match handshake::take_filler(conn, filler) {
                                Ok(()) => Ok(Some((seg, None))),
                                Err(e) => Err(self.bad(&format!("filler not taken: {e}"))),
                            }
                        }
                        Err(_) => {
                            // (No segment: the connector sends one.)
                            if handshake::send_verdict(conn, handshake::DECLINED).is_err() {
                                return Err(Step::Withdrawn);
                            }
                            match handshake::take_filler(conn, filler) {
                                Ok(()) => Err(Step::Pending(State::Declined)),
                                Err(e) => Err(self.bad(&format!("filler not taken: {e}"))),
                            }
                        }
                    },
                }
            }
            (Kind::Reuse, State::New) => match pool::claim(peer.pid, msg.key) {
                pool::Claim::Withdrawn => Err(self.withdrawn()),
                pool::Claim::Taken(seg, ticket) => {
                    if handshake::send_verdict(conn, handshake::ACCEPTED).is_err() {
                        return Err(Step::Dropped);
                    }
                    Ok(Some((seg, Some(ticket))))
                }
                pool::Claim::NotHere => {
                    // Not one of ours (another process took the connection,
                    // or we no longer keep it): the connector sends a new
                    // one. One that gave up waiting withdrew its offer and
                    // hung up: routine (see `pool`).
                    if handshake::send_verdict(conn, handshake::DECLINED).is_err() {
                        log!(
                            debug,
                            "accept on {}: the connector withdrew its reuse offer",
                            self.local
                        );
                        return Err(Step::Withdrawn);
                    }
                    Err(Step::Pending(State::Declined))
                }
            },
            (Kind::Reuse, State::Declined) => Err(self.bad("a second reuse offer")),
            (Kind::Connect, _) => Ok(None),
            (Kind::Join, _) => Err(Step::Dropped), // answered above
        }
    }

    /// The connection's local and peer addresses, in the listener's
    /// family; None if the connector's cannot be.
    fn addresses(&self, msg: &handshake::Message) -> Option<(SocketAddr, SocketAddr)> {
        if self.tcp.is_some() || self.gateway {
            // A default-mode listener may be bound to the wildcard: the
            // connection's local address is the one the connector asked
            // for; an IPv6 one takes IPv4 connectors as IPv4-mapped. So
            // is a gateway's in either mode: where the program is going.
            let v6 = self.local.is_ipv6();
            match (as_family(msg.dest, v6), as_family(msg.addr, v6)) {
                (Some(l), Some(p)) => Some((l, p)),
                _ => None,
            }
        } else {
            // An IPv4 address and its IPv4-mapped form name one emulated
            // address (as one kernel socket): an IPv6 listener on
            // ::ffff:a.b.c.d sees IPv4 peers mapped, an IPv4 one sees
            // mapped peers as IPv4.
            let p = as_family(msg.addr, self.local.is_ipv6())?;
            Some((self.local, p))
        }
    }

    /// Whether the policy admits whoever connected `conn` (refused and
    /// counted if not: the caller drops it).
    pub(super) fn admits(&self, conn: BorrowedFd<'_>) -> bool {
        let Some(config) = crate::platform::config::get() else {
            return false;
        };
        let Some(peer) = Peer::of(conn, &config.allow) else {
            self.dropped("no credentials");
            return false;
        };
        if config.allow.admits(self.owner, &peer) || config.allow.admits(euid(), &peer) {
            return true;
        }
        self.refuse(&peer);
        false
    }

    fn refuse(&self, peer: &Peer) {
        stats::refused_policy();
        let first = !self.refusal_logged.swap(true, Ordering::Relaxed);
        if first {
            crate::platform::log::always(format_args!(
                "refusing a shared-memory connection to {} from uid {} (pid {}): this listener \
                 (uid {}) admits its own uid, root and SHMNET_ALLOW",
                self.local, peer.uid, peer.pid, self.owner
            ));
        } else {
            log!(
                debug,
                "refusing a connection to {} from uid {}",
                self.local,
                peer.uid
            );
        }
    }
}

/// Whether a connector could really have `addr` as its address, as the
/// kernel would let it: one of this namespace's (loopback included) when
/// it is in this namespace (it reached a name of our namespace, or its
/// `/proc/<pid>/ns/net` is ours); a partition address in the emulated mode
/// (the emulated network's addresses are nobody's); through SHMNET_DIR, an
/// address routed to the connector's namespace — so that a server's
/// address checks mean what they say. Any address from a connector of this
/// namespace that is uid 0 with CAP_NET_ADMIN, as its kernel would let it
/// send from one (IP_TRANSPARENT: a transparent proxy, such as the
/// gateway, presenting its client's address); root of another namespace
/// gets no more than anyone there (a loopback source cannot leave its
/// namespace: the kernel's EINVAL).
fn plausible_source(
    addr: SocketAddr,
    scope: Scope,
    peer: &Peer,
    config: &Config,
    here: bool,
) -> bool {
    use crate::platform::peer_ns;
    let ip = addr.ip();
    let ours = scope == Scope::Local || (here && peer_ns::shares_netns(peer.pid));
    let local = || rendezvous::is_loopback(ip) || crate::platform::netlink::is_local(ip);
    // (Its own address first: no capget for the common case.)
    if ours && local() {
        return true;
    }
    if ours && peer.uid == 0 && peer_ns::net_admin(peer.pid) {
        return true;
    }
    if config.fallback == crate::platform::config::Fallback::Never && config.is_partition_ip(ip) {
        return true;
    }
    match scope {
        Scope::Local => false,
        Scope::Host => {
            let route = match crate::platform::netlink::route(ip) {
                Ok(r) if r.kind == crate::platform::netlink::RouteKind::Unicast => r,
                _ => return false,
            };
            let link = crate::platform::netlink::link_netnsid(route.oif)
                .ok()
                .flatten();
            let theirs = match peer.pid {
                0 => None,
                pid => crate::platform::netlink::netnsid_of_pid(pid).ok().flatten(),
            };
            link.is_some() && link == theirs
        }
    }
}

/// A new connection's segment, from the memfd its message brought, and its
/// pool ticket; Err says why not.
fn attach(
    memfd: Option<OwnedFd>,
    msg: &handshake::Message,
    peer: &Peer,
    generation: u32,
) -> Result<(Segment, Option<pool::Ticket>), String> {
    let Some(memfd) = memfd else {
        return Err("no shared memory attached".into());
    };
    // (The cached pid: a getpid less per accept.)
    let seg = Segment::attach_as(memfd, crate::platform::fork::pid()).map_err(|e| e.to_string())?;
    let ticket = pool::Ticket {
        key: msg.key,
        generation,
        side: pool::Side::Acceptor { peer_pid: peer.pid },
    };
    Ok((seg, (peer.pid != 0).then_some(ticket)))
}
