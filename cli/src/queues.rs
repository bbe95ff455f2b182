//! A listener's accept backlog, asked of the kernel by socket inode: the
//! kernel TCP listener's from `/proc/PID/net/tcp{,6}` (a listening row's
//! rx_queue is its accept queue), a rendezvous' (a listening Unix socket)
//! from sock_diag (UNIX_DIAG_RQLEN), in the reader's network namespace.

use std::collections::HashMap;
use std::mem::size_of;

/// The accept queues of the TCP listeners of each network namespace, read
/// once per namespace (`/proc/PID/net/tcp{,6}` of a process in it; about
/// 1 ms each) however many listeners are looked up.
#[derive(Default)]
pub(crate) struct TcpBacklogs {
    /// By the namespace's inode: listener inode -> connections waiting.
    by_netns: HashMap<u64, HashMap<u64, u64>>,
}

impl TcpBacklogs {
    /// Connections waiting in the accept queue of the TCP listener `ino`
    /// of process `pid`.
    pub(crate) fn get(&mut self, pid: u32, ino: u64) -> Option<u64> {
        if ino == 0 {
            return None;
        }
        // A process whose namespace cannot be told is read on its own.
        let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map_or(u64::MAX - u64::from(pid), |m| {
                std::os::unix::fs::MetadataExt::ino(&m)
            });
        self.by_netns
            .entry(netns)
            .or_insert_with(|| listening_queues(pid))
            .get(&ino)
            .copied()
    }
}

/// Every listening row of `/proc/PID/net/tcp{,6}`: inode -> rx_queue (a
/// listening row's rx_queue is its accept queue).
fn listening_queues(pid: u32) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            // sl local rem st tx:rx tr:when retr uid timeout inode; st 0A:
            // listening
            if f.len() <= 9 || f[3] != "0A" {
                continue;
            }
            let (Ok(ino), Some(rx)) = (f[9].parse::<u64>(), f[4].split(':').nth(1)) else {
                continue;
            };
            if let Ok(rx) = u64::from_str_radix(rx, 16) {
                out.insert(ino, rx);
            }
        }
    }
    out
}

#[repr(C)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
struct UnixDiagReq {
    family: u8,
    protocol: u8,
    pad: u16,
    states: u32,
    ino: u32,
    show: u32,
    cookie: [u32; 2],
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;

/// Connections waiting on the listening Unix socket `ino` (in our network
/// namespace).
pub(crate) fn unix_backlog(ino: u64) -> Option<u64> {
    unix_diag(ino, UNIX_DIAG_RQLEN).map(u64::from)
}

const UNIX_DIAG_SHUTDOWN: u16 = 6;
/// `sk_shutdown`: this socket receives no more (the peer shut down
/// writing, or closed: a peer's release sets both bits on its peer).
const RCV_SHUTDOWN: u32 = 1;

/// Whether the connected Unix socket `ino` will receive no more: its peer
/// closed or exited (how a connection's doorbell socket, the application's
/// fd, learns that a peer killed without a word in the ring is gone).
pub(crate) fn unix_peer_gone(ino: u64) -> Option<bool> {
    unix_diag(ino, UNIX_DIAG_SHUTDOWN).map(|v| v & RCV_SHUTDOWN != 0)
}

/// Attribute `kind` (its first byte, or first u32 for a longer one) of the
/// unix_diag answer for socket `ino`.
fn unix_diag(ino: u64, kind: u16) -> Option<u32> {
    let ino = u32::try_from(ino).ok().filter(|&i| i != 0)?;
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return None;
    }
    let answer = ask(fd, ino, kind);
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(fd) };
    answer
}

fn ask(fd: i32, ino: u32, kind: u16) -> Option<u32> {
    #[repr(C)]
    struct Request {
        hdr: NlMsgHdr,
        req: UnixDiagReq,
    }
    let request = Request {
        hdr: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: libc::NLM_F_REQUEST as u16,
            seq: 1,
            pid: 0,
        },
        req: UnixDiagReq {
            family: libc::AF_UNIX as u8,
            protocol: 0,
            pad: 0,
            states: !0,
            ino,
            show: UDIAG_SHOW_RQLEN,
            cookie: [!0, !0],
        },
    };
    // SAFETY: sends size_of::<Request>() bytes of a live, initialised
    // repr(C) value.
    let sent = unsafe {
        libc::send(
            fd,
            (&request as *const Request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return None;
    }
    let mut buf = [0u8; 8192];
    // The answer arrives at once or not at all; don't hang on a quiet kernel.
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    // SAFETY: receives into our buffer, at most its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = usize::try_from(n).ok()?;
    parse_answer(buf.get(..n)?, ino, kind)
}

/// Attribute `want` of a unix_diag answer for `ino` (every length
/// checked): a u32, or a u8 widened.
fn parse_answer(b: &[u8], ino: u32, want: u16) -> Option<u32> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4])))
    };
    let len = u32_at(0)? as usize;
    if u16_at(4)? != SOCK_DIAG_BY_FAMILY || len > b.len() || len < 16 + 16 {
        return None;
    }
    // unix_diag_msg: family, type, state, pad, ino, cookie[2]
    if u32_at(16 + 4)? != ino {
        return None;
    }
    let mut at = 32;
    while at + 4 <= len {
        let alen = usize::from(u16_at(at)?);
        let kind = u16_at(at + 2)?;
        if alen < 4 || at + alen > len {
            return None;
        }
        if kind == want && alen >= 8 {
            return u32_at(at + 4);
        }
        if kind == want && alen >= 5 {
            return b.get(at + 4).map(|&v| u32::from(v));
        }
        at += (alen + 3) & !3;
    }
    None
}
