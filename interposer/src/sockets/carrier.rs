//! A connection's carrier: what a program image leaves for the next one
//! across exec (see `calls::exec`). An unnamed datagram socket (one end of
//! a pair whose other end is closed once the message is in, so nobody else
//! can write to it) holding one queued message: the connection's identity
//! (role, addresses, the socket's cookie and inode) with the segment's
//! memfd attached. A connection makes one (`make_carrier`) when an exec
//! may follow while one of its application fds is inheritable
//! (`Connection::set_cloexec` says it wants one: `carrier_wanted`); the
//! exec'd library recognises it among its own fds and reads it with
//! MSG_PEEK (it stays for a further exec).
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType,
};
use shmnet_ring::Role;

use crate::platform::internal_fd::InternalFd;
use crate::platform::sys;

/// The cookie of the connection a carrier is for: an unnamed datagram
/// socket whose first queued message (peeked, without its fd) is a
/// carrier's. Everything it says is checked against the kernel's view of
/// the connection before use (`calls::exec`'s `reattach`).
pub(crate) fn carrier_cookie(
    sock: BorrowedFd<'_>,
    name: Option<rustix::net::SocketAddrAny>,
) -> Option<u64> {
    // (An unnamed address may not even parse as a Unix one.)
    let named = name
        .and_then(|a| SocketAddrUnix::try_from(a).ok())
        .is_some_and(|u| {
            u.path().is_some_and(|p| !p.to_bytes().is_empty())
                || u.abstract_name().is_some_and(|n| !n.is_empty())
        });
    if named {
        return None;
    }
    // Made by us or by root before the exec (a pair records its maker):
    // another user's pair is never taken for one, nor even peeked. Nor
    // is a socket whose owner set SO_PEEK_OFF (a peek would move it).
    if !sys::peer_cred(sock).is_some_and(|(pid, uid, _)| uid == 0 || same_user(uid, pid)) {
        return None;
    }
    if sys::peek_offset(sock) != Some(-1) {
        return None;
    }
    let mut bytes = [0u8; IDENTITY_LEN];
    let (n, _) = rustix::net::recv(sock, &mut bytes, RecvFlags::PEEK | RecvFlags::DONTWAIT).ok()?;
    if n != IDENTITY_LEN {
        return None;
    }
    Identity::decode(&bytes).map(|id| id.cookie)
}

/// Whether a pair's maker (uid and pid as SO_PEERCRED gives them) is our
/// own user. As the overflow uid (65534, nobody) of a user namespace we
/// cannot tell: every unmapped user looks like that; then only a pair
/// this very process made (before its exec) is ours. In the initial user
/// namespace every uid maps and 65534 is the real nobody: a server that
/// switched to nobody between fork and exec (CGI, inetd's `nobody`
/// services) hands its connections on as any other user does.
fn same_user(uid: u32, pid: u32) -> bool {
    let me = rustix::process::geteuid().as_raw();
    if uid != me {
        return false;
    }
    me != OVERFLOW_UID
        || pid == rustix::process::getpid().as_raw_nonzero().get() as u32
        || initial_user_ns()
}

/// The overflow uid: what an unmapped user reads as (Linux's default).
const OVERFLOW_UID: u32 = 65534;

/// Whether we are in the initial user namespace (its inode is a kernel
/// constant, PROC_USER_INIT_INO): nobody's uid there is nobody's.
fn initial_user_ns() -> bool {
    std::fs::read_link("/proc/self/ns/user").is_ok_and(|t| t.as_os_str() == "user:[4026531837]")
}

/// What a carrier's message says of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) role: Role,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    /// SO_COOKIE and inode of the connection's Unix socket.
    pub(crate) cookie: u64,
    pub(crate) inode: u64,
}

const MAGIC: &[u8; 8] = b"SHMNETX1";
const IDENTITY_LEN: usize = 64;

fn put_addr(b: &mut [u8], addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&ip.octets());
        }
    }
    b[17..19].copy_from_slice(&addr.port().to_le_bytes());
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_le_bytes([b[17], b[18]]);
    let ip: IpAddr = match b[0] {
        4 => <[u8; 4]>::try_from(&b[1..5]).ok()?.into(),
        6 => <[u8; 16]>::try_from(&b[1..17]).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

impl Identity {
    fn encode(&self) -> [u8; IDENTITY_LEN] {
        let mut b = [0u8; IDENTITY_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8] = match self.role {
            Role::Connector => 0,
            Role::Acceptor => 1,
        };
        put_addr(&mut b[9..28], self.local);
        put_addr(&mut b[28..47], self.peer);
        b[48..56].copy_from_slice(&self.cookie.to_le_bytes());
        b[56..64].copy_from_slice(&self.inode.to_le_bytes());
        b
    }

    fn decode(b: &[u8; IDENTITY_LEN]) -> Option<Identity> {
        if &b[..8] != MAGIC {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        Some(Identity {
            role: match b[8] {
                0 => Role::Connector,
                1 => Role::Acceptor,
                _ => return None,
            },
            local: get_addr(&b[9..28])?,
            peer: get_addr(&b[28..47])?,
            cookie: u64_at(48),
            inode: u64_at(56),
        })
    }
}

/// A connection may lack the carrier it wants (one of its fds became
/// inheritable since the last `calls::exec::before_exec`): spares a
/// process that forks often the walk over its sockets when nothing
/// changed.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Told by `Connection::set_cloexec`, under the connection's lock, when it
/// wants a carrier it does not have.
pub(crate) fn carrier_wanted() {
    PENDING.store(true, Ordering::Release);
}

/// Whether a connection wanted a carrier since the last call, the flag
/// cleared (see `calls::exec::before_exec`).
pub(crate) fn take_wanted() -> bool {
    PENDING.swap(false, Ordering::AcqRel)
}

/// A carrier for the connection on Unix socket `sock` (see the module
/// docs): close-on-exec until the caller says otherwise.
pub(crate) fn make_carrier(
    sock: BorrowedFd<'_>,
    memfd: BorrowedFd<'_>,
    role: Role,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<InternalFd, Errno> {
    let cookie = rustix::net::sockopt::socket_cookie(sock)?;
    let inode = rustix::fs::fstat(sock)?.st_ino as u64;
    // An unnamed pair, whose sending end is closed once the message is in:
    // nobody else can put a datagram in front of it (a named one could be
    // written to by any user who read its name in /proc/net/unix).
    let (carrier, sender) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let bytes = Identity {
        role,
        local,
        peer,
        cookie,
        inode,
    }
    .encode();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [memfd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Errno::NOBUFS);
    }
    // The message waits in the carrier's queue.
    let sent = rustix::net::sendmsg(
        &sender,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    drop(sender);
    if sent != bytes.len() {
        return Err(Errno::PROTO);
    }
    Ok(InternalFd::new(carrier))
}

/// Whether `fd` holds a carrier whole: its message and one of our segment
/// memfds (by name: an application's look-alike is left alone).
pub(crate) fn whole_carrier(fd: BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    read_carrier(fd).is_ok_and(|(_, memfd)| {
        std::fs::read_link(format!("/proc/self/fd/{}", memfd.as_raw_fd()))
            .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:shmnet-conn"))
    })
}

/// A carrier's message and memfd, left queued (MSG_PEEK) for a program
/// exec'd after this one.
pub(crate) fn read_carrier(carrier: BorrowedFd<'_>) -> Result<(Identity, OwnedFd), String> {
    let mut bytes = [0u8; IDENTITY_LEN];
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        carrier,
        &mut iov,
        &mut control,
        RecvFlags::PEEK | RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("its carrier is empty ({e})"))?;
    let mut memfd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                memfd.get_or_insert(fd);
            }
        }
    }
    let memfd = memfd.ok_or("its carrier holds no shared memory (no room for an fd?)")?;
    if got.bytes != IDENTITY_LEN
        || got
            .flags
            .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC)
    {
        return Err("its carrier's message is malformed".into());
    }
    let id = Identity::decode(&bytes).ok_or("its carrier's message is malformed")?;
    Ok((id, memfd))
}
