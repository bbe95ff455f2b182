//! The interposer's future receive loop in miniature, between two
//! processes: each side owns a target segment, registers with the other
//! over a Unix stream link (REG, then REG_OK with the memfd as
//! SCM_RIGHTS), and echoes datagrams of sizes 0..65,507 back and forth.
//! A side with nothing to receive raises its doorbell flag and sleeps in
//! poll(2) on the link; the sender that takes the flag writes a BELL
//! frame. A lost wake-up would hang a side (the test's limit catches it).
#![cfg(not(loom))]

mod common;
use common::*;
use shmnet_ring::dgram::frame::Frame;
use shmnet_ring::dgram::{DgramGeometry, Image, Receiver, RecvError, Sender, Sent, SlotGrant};
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const SIZES: [usize; 6] = [0, 1, 64, 1472, 8192, 65_507];
const ROUNDS: u32 = 3000;

/// Sends `bytes` on the link, with `fd` attached as SCM_RIGHTS if given.
fn send_frame(link: RawFd, f: Frame<'_>, fd: Option<BorrowedFd<'_>>) {
    let mut bytes = Vec::new();
    f.encode(&mut bytes);
    let mut space = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives
    // the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let iov = [IoSlice::new(&bytes)];
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = space.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
        // SAFETY: msg_control holds CMSG_SPACE(4) bytes, so the first
        // header and its 4-byte payload are inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            libc::CMSG_DATA(c)
                .cast::<i32>()
                .write_unaligned(fd.as_raw_fd());
        }
    }
    // SAFETY: msg is filled in above; a plain blocking sendmsg.
    let n = unsafe { libc::sendmsg(link, &msg, libc::MSG_NOSIGNAL) };
    assert_eq!(n, bytes.len() as isize, "sendmsg");
}

/// Reads what the link has (blocking for at least one byte) into `pending`,
/// and the fd attached, if any.
fn read_link(link: RawFd, pending: &mut Vec<u8>) -> Option<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut space = [0u64; 8];
    // SAFETY: as in send_frame.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut iov = [IoSliceMut::new(&mut buf)];
    msg.msg_iov = iov.as_mut_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::recvmsg(link, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n > 0, "link closed or failed");
    let mut passed = None;
    // SAFETY: walking the control buffer the kernel filled in.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS {
            let fd = libc::CMSG_DATA(c).cast::<i32>().read_unaligned();
            passed = Some(OwnedFd::from_raw_fd(fd));
        }
    }
    pending.extend_from_slice(&buf[..n as usize]);
    passed
}

/// One side: its own target segment, its sender into the peer's.
struct Side {
    rx: Receiver,
    tx: Option<Sender>,
    link: OwnedFd,
    pending: Vec<u8>,
    me: SocketAddr,
    peer: SocketAddr,
    /// BELL frames received (the peer's doorbell rings).
    bells: u32,
    sleeps: u32,
}

impl Side {
    fn new(link: OwnedFd, me: &str, peer: &str) -> Side {
        let rx = Receiver::create(DgramGeometry::stage1()).unwrap();
        rx.set_limit(1 << 20);
        Side {
            rx,
            tx: None,
            link,
            pending: Vec::new(),
            me: me.parse().unwrap(),
            peer: peer.parse().unwrap(),
            bells: 0,
            sleeps: 0,
        }
    }

    /// Registers with the peer and answers its registration.
    fn register(&mut self) {
        let fd = self.link.as_raw_fd();
        send_frame(
            fd,
            Frame::Reg {
                source: self.me,
                dest: self.peer,
                cookie: 0,
            },
            None,
        );
        let limit = Instant::now() + Duration::from_secs(30);
        while self.tx.is_none() || self.rx.slots_in_use() == 0 {
            assert!(Instant::now() < limit, "registration timed out");
            let got = read_link(fd, &mut self.pending);
            let mut memfd = got;
            self.take_frames(&mut memfd);
        }
    }

    /// Handles the whole frames in `pending`.
    fn take_frames(&mut self, memfd: &mut Option<OwnedFd>) {
        let mut at = 0;
        while let Some((f, n)) = Frame::decode(&self.pending[at..]).unwrap() {
            match f {
                Frame::Reg { source, dest, .. } => {
                    assert_eq!((source, dest), (self.peer, self.me));
                    let g = self.rx.open_slot().unwrap();
                    send_frame(
                        self.link.as_raw_fd(),
                        Frame::RegOk {
                            slot: g.slot,
                            gen: g.gen,
                        },
                        self.rx.fd(),
                    );
                }
                Frame::RegOk { slot, gen } => {
                    let fd = memfd.take().expect("REG_OK without its memfd");
                    let image = Image::attach(fd.as_fd()).unwrap();
                    self.tx = Some(image.sender(SlotGrant { slot, gen }).unwrap());
                }
                Frame::Bell => self.bells += 1,
                other => panic!("unexpected frame {other:?}"),
            }
            at += n;
        }
        self.pending.drain(..at);
    }

    /// Sends one datagram; rings the peer's doorbell if we took its flag.
    fn send(&mut self, d: &[u8]) {
        let tx = self.tx.as_mut().unwrap();
        match tx.send(d).unwrap() {
            Sent::Queued { ring } => {
                if ring {
                    send_frame(self.link.as_raw_fd(), Frame::Bell, None);
                }
            }
            other => panic!("ping-pong never fills the queue: {other:?}"),
        }
    }

    /// Receives one datagram, sleeping in poll(2) on the link while none
    /// is there.
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            match self.rx.recv(buf, false) {
                Ok(r) => return r.len,
                Err(RecvError::Empty) => {}
                Err(e) => panic!("{e}"),
            }
            if self.rx.arm() {
                self.rx.disarm();
                continue;
            }
            self.sleeps += 1;
            let mut p = libc::pollfd {
                fd: self.link.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, 10_000) };
            assert!(r == 1, "no doorbell within 10 s: a lost wake-up");
            self.rx.disarm();
            let mut none = read_link(self.link.as_raw_fd(), &mut self.pending);
            assert!(none.is_none());
            self.take_frames(&mut none);
            assert!(Instant::now() < limit, "receive timed out");
        }
    }
}

fn datagram(round: u32) -> Vec<u8> {
    let n = SIZES[round as usize % SIZES.len()];
    let mut d = vec![0u8; n];
    Stream::new(u64::from(round) + 1).fill(&mut d);
    d
}

#[test]
fn echo_between_processes_woken_by_doorbells() {
    let mut fds = [0; 2];
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair into a 2-int array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    let server = fork_child(move || {
        // SAFETY: the child owns its copy of fds[1]; fds[0] is the
        // parent's end, closed here.
        let b = unsafe {
            libc::close(fds[0]);
            OwnedFd::from_raw_fd(fds[1])
        };
        let mut s = Side::new(b, "127.0.0.1:53", "127.0.0.1:40000");
        s.register();
        let mut buf = vec![0u8; 65_536];
        for _ in 0..ROUNDS {
            let n = s.recv(&mut buf);
            s.send(&buf[..n]);
        }
        0
    });
    // SAFETY: our copy of the child's end is closed; fds[0] is ours.
    let a = unsafe {
        libc::close(fds[1]);
        OwnedFd::from_raw_fd(fds[0])
    };
    let mut c = Side::new(a, "127.0.0.1:40000", "127.0.0.1:53");
    c.register();
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    for round in 0..ROUNDS {
        let d = datagram(round);
        c.send(&d);
        let n = c.recv(&mut buf);
        assert_eq!(&buf[..n], &d[..], "round {round}");
    }
    let rtt = start.elapsed() / ROUNDS;
    assert_eq!(wait_child(server, Duration::from_secs(60)), 0);
    // Every sleep was ended by a doorbell, none was lost, and the
    // segments are all free again.
    assert!(
        c.bells >= c.sleeps,
        "{} bells for {} sleeps",
        c.bells,
        c.sleeps
    );
    assert_eq!(c.rx.partitions_in_use(), 0);
    eprintln!(
        "dgram link echo: {ROUNDS} rounds, mean round trip {rtt:?} (sleeping in poll), {} sleeps, {} bells",
        c.sleeps, c.bells
    );
}
