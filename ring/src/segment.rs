//! A connection segment: one sealed memfd holding both directions of a
//! connection (header, two control segments, two circular buffers).
//!
//! The connecting side creates it and initialises its own direction (claim
//! 83 c'); the accepting side attaches to the fd it received, validates
//! everything, and initialises the other direction (claim 82 d-f).

use crate::channel::{Channel, ChannelParts, Consumer, Producer};
use crate::data::DataArea;
use crate::layout::{
    ChannelControl, Geometry, SegmentBegin, SegmentControl, SegmentHeader, SegmentSlot, CLAIMED,
    LAYOUT_VERSION, MAGIC, OFFERED, WITHDRAWN,
};
use crate::memfd;
use crate::sync::{AtomicU32, Ordering};
use crate::wait::Parker;
use crate::{AttachError, Doorbell};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

/// Which end of the connection a process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Created the segment; transmits on channel 0.
    Connector,
    /// Attached to it; transmits on channel 1.
    Acceptor,
}

struct Mapping {
    raw: memmap2::MmapRaw,
}

/// A mapped connection segment: a sealed memfd holding both directions of
/// one connection.
///
/// The connecting side [`create`](Self::create)s it and hands the memfd to
/// the accepting side (SCM_RIGHTS), which [`attach`](Self::attach)es to it;
/// each side then takes its [`Endpoint`]. The acceptor checks everything it
/// maps: a segment from a hostile peer is refused, or, once attached, can
/// only reset the connection.
///
/// # Example
///
/// ```
/// use shmnet_ring::{AttachError, Geometry, Role, Segment};
///
/// let connector = Segment::create(Geometry::new(4, 4096)?)?;
/// // The connector may queue data before the acceptor answered...
/// connector.producer()?.write(b"early")?;
/// // ...but has nothing to read from yet.
/// assert!(matches!(connector.consumer(), Err(AttachError::NotReady)));
///
/// let acceptor = Segment::attach(connector.fd().unwrap().try_clone_to_owned()?)?;
/// assert_eq!(acceptor.role(), Role::Acceptor);
/// assert!(connector.is_connected());
/// let mut buf = [0u8; 8];
/// let n = acceptor.endpoint()?.rx.read(&mut buf)?;
/// assert_eq!(&buf[..n], b"early");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Segment {
    map: Arc<Mapping>,
    /// The memfd: the mapping does not need it, but a process that goes
    /// on to exec hands it to the program it runs (see `reattach`), so it
    /// is kept until taken (`take_fd`).
    fd: Option<OwnedFd>,
    geo: Geometry,
    role: Role,
    /// The memfd's inode number, if the attach's checks read it (0 if
    /// not): spares the caller an fstat of its own.
    ino: u64,
}

/// One side's pair of halves: `tx` writes to the peer, `rx` reads from it
/// (see [`Segment::endpoint`]).
pub struct Endpoint {
    /// Writes to the peer.
    pub tx: Producer,
    /// Reads what the peer wrote.
    pub rx: Consumer,
}

impl Endpoint {
    /// Installs the doorbell that wakes the peer (both halves use it).
    pub fn set_doorbell(&mut self, d: Arc<dyn Doorbell>) {
        self.tx.set_doorbell(d.clone());
        self.rx.set_doorbell(d);
    }

    /// Declares the connection reset; both sides see ECONNRESET.
    pub fn reset(&self) {
        self.tx.reset();
    }
}

impl Segment {
    /// Creates a segment and initialises the connector's direction.
    pub fn create(geo: Geometry) -> Result<Segment, AttachError> {
        let total = geo.total_bytes();
        let fd = memfd::create_sealed("shmnet-conn", total as u64)?;
        let raw = memfd::map(&fd, total, false)?;
        let seg = Segment {
            map: Arc::new(Mapping { raw }),
            fd: Some(fd),
            geo,
            role: Role::Connector,
            ino: 0,
        };
        let h = seg.header();
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.segment_count.store(geo.segment_count, Ordering::Relaxed);
        h.segment_bytes.store(geo.segment_bytes, Ordering::Relaxed);
        h.total_bytes.store(total as u64, Ordering::Relaxed);
        h.reset.store(0, Ordering::Relaxed);
        h.claim.store(0, Ordering::Relaxed);
        seg.channel(0).initialise();
        // SYNC POINT: the version is written last, with Release; `attach`
        // loads it with Acquire first, so it sees every field above.
        h.version.store(LAYOUT_VERSION, Ordering::Release);
        Ok(seg)
    }

    /// Attaches to a peer's segment: checks seals, size, magic, version and
    /// geometry, then initialises the acceptor's direction.
    pub fn attach(fd: OwnedFd) -> Result<Segment, AttachError> {
        Self::attach_as(fd, rustix::process::getpid().as_raw_nonzero().get() as u32)
    }

    /// As [`attach`](Self::attach), the acceptor's pid given by a caller
    /// that has it cached (a getpid less per accepted connection).
    pub fn attach_as(fd: OwnedFd, pid: u32) -> Result<Segment, AttachError> {
        let (geo, raw, ino) = Self::check_and_map(&fd)?;
        let seg = Segment {
            map: Arc::new(Mapping { raw }),
            fd: Some(fd),
            geo,
            role: Role::Acceptor,
            ino,
        };
        if seg.header().version.load(Ordering::Acquire) != LAYOUT_VERSION {
            return Err(AttachError::Invalid("layout version mismatch"));
        }
        let ch0 = seg.channel(0);
        if !ch0.is_ready() {
            return Err(AttachError::NotReady);
        }
        ch0.check_links().map_err(AttachError::Invalid)?;
        seg.header().acceptor_pid.store(pid, Ordering::Relaxed);
        seg.channel(1).initialise();
        Ok(seg)
    }

    /// The checks every attach makes of a peer's memfd (seals, size,
    /// magic, version, geometry), then its mapping.
    fn check_and_map(fd: &OwnedFd) -> Result<(Geometry, memmap2::MmapRaw, u64), AttachError> {
        let (size, ino) = memfd::sealed_stat(fd.as_fd())?;
        if size < core::mem::size_of::<SegmentHeader>() as u64 {
            return Err(AttachError::Invalid("segment smaller than its header"));
        }
        // The header is read with one pread, not through a probe mapping:
        // a map, a page fault and an unmap less per accepted connection.
        // The peer may still change it; the checked geometry is our copy,
        // and the mapped header is checked again by the caller.
        let hdr = memfd::read_header(fd.as_fd())?;
        if hdr.version != LAYOUT_VERSION {
            return Err(AttachError::Invalid("layout version mismatch"));
        }
        if hdr.magic != MAGIC {
            return Err(AttachError::Invalid("bad magic"));
        }
        let geo =
            Geometry::new(hdr.segment_count, hdr.segment_bytes).map_err(AttachError::Invalid)?;
        let total = geo.total_bytes();
        if hdr.total_bytes != total as u64 || size != total as u64 {
            return Err(AttachError::Invalid("size does not match geometry"));
        }
        Ok((geo, memfd::map(fd, total, false)?, ino))
    }

    /// Maps again, as `role`, a segment this side was using before: a
    /// program exec'd with a connection goes on where the previous program
    /// image left it. Nothing is initialised; everything `attach` checks is
    /// checked again (the peer may have rewritten any of it), and our own
    /// direction must be initialised already, the peer's too for an
    /// acceptor (a connector's may come later, as after connect).
    pub fn reattach(fd: OwnedFd, role: Role) -> Result<Segment, AttachError> {
        let (geo, raw, ino) = Self::check_and_map(&fd)?;
        let seg = Segment {
            map: Arc::new(Mapping { raw }),
            fd: Some(fd),
            geo,
            role,
            ino,
        };
        if seg.header().version.load(Ordering::Acquire) != LAYOUT_VERSION {
            return Err(AttachError::Invalid("layout version mismatch"));
        }
        let tx = seg.channel(seg.tx_channel());
        if !tx.is_ready() {
            return Err(AttachError::Invalid("our direction was never initialised"));
        }
        tx.check_links().map_err(AttachError::Invalid)?;
        let rx = seg.channel(1 - seg.tx_channel());
        if rx.is_ready() {
            rx.check_links().map_err(AttachError::Invalid)?;
        } else if role == Role::Acceptor {
            return Err(AttachError::Invalid(
                "the connector's direction is not ready",
            ));
        }
        Ok(seg)
    }

    /// Another handle on the same mapping (without the memfd): what a pool
    /// keeps of a segment whose connection is being dropped.
    pub fn share(&self) -> Segment {
        Segment {
            map: self.map.clone(),
            fd: None,
            geo: self.geo,
            role: self.role,
            ino: self.ino,
        }
    }

    /// True when this handle is the only one left in this process: no
    /// producer, consumer or doorbell count of an earlier connection still
    /// reaches the mapping.
    pub fn is_sole_handle(&self) -> bool {
        Arc::strong_count(&self.map) == 1
    }

    /// Records that this side's connection on the segment is gone (its
    /// halves closed): the peer may re-initialise it for a new connection
    /// between the same two processes.
    pub fn release(&self) {
        // SYNC POINT: Release: our last ring updates happen before the
        // peer's re-initialisation, which loads the flag with Acquire.
        self.header().released[self.role as usize].store(1, Ordering::Release);
    }

    /// Takes back [`release`](Self::release): this side no longer keeps
    /// the segment (its pool evicted it), so the peer does not offer it
    /// again — an offer of it would only be declined.
    pub fn unkeep(&self) {
        self.header().released[self.role as usize].store(0, Ordering::Release);
    }

    /// Whether the peer's connection on the segment is gone (see
    /// [`release`](Self::release)). Written by the peer: a lie only spoils
    /// connections between the two of us.
    pub fn peer_released(&self) -> bool {
        self.header().released[1 - self.role as usize].load(Ordering::Acquire) != 0
    }

    /// The memfd's inode number, if an attach read it (it fstat'ed the
    /// memfd for its checks): the caller need not again.
    pub fn inode(&self) -> Option<u64> {
        (self.ino != 0).then_some(self.ino)
    }

    /// The pid the acceptor wrote on attach (a hint from shared memory).
    pub fn acceptor_pid(&self) -> u32 {
        self.header().acceptor_pid.load(Ordering::Relaxed)
    }

    /// Whether at most the first data segment of each direction was ever
    /// written (few resident pages): worth keeping for reuse. A hint from
    /// shared memory, only used to decide whether to keep the segment.
    pub fn lightly_used(&self) -> bool {
        (0..2).all(|c| {
            let ctl: NonNull<ChannelControl> = self.at(self.geo.channel_offset(c));
            // SAFETY: inside the mapping, SharedLayout type.
            unsafe { ctl.as_ref() }
                .producer
                .head
                .load(Ordering::Relaxed)
                == 0
        })
    }

    /// Connector: re-initialises our direction of a segment whose last
    /// connection (with the same acceptor process) is gone on both sides,
    /// and marks it offered. Fails unless this is the only handle here and
    /// the peer released it.
    pub fn offer(&self) -> Result<(), AttachError> {
        if self.role != Role::Connector || !self.is_sole_handle() || !self.peer_released() {
            return Err(AttachError::NotReady);
        }
        let h = self.header();
        h.released[0].store(0, Ordering::Relaxed);
        h.reset.store(0, Ordering::Relaxed);
        self.unready(0);
        // The acceptor's direction too: until `claim` initialises it again,
        // the previous connection's unread bytes must not be readable here.
        self.unready(1);
        self.channel(0).initialise();
        // SYNC POINT: Release after the initialisation; the acceptor's CAS
        // in `claim` acquires it.
        h.claim.store(OFFERED, Ordering::Release);
        Ok(())
    }

    /// Connector: withdraws an offer the acceptor has not answered. False
    /// when the acceptor claimed it first (it is then ours to use).
    pub fn withdraw(&self) -> bool {
        self.header()
            .claim
            .compare_exchange(OFFERED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Acceptor: whether the connector withdrew its offer (`withdraw`):
    /// it gave up on the connection that carried it.
    pub fn withdrawn(&self) -> bool {
        self.header().claim.load(Ordering::Acquire) == WITHDRAWN
    }

    /// Connector: whether the acceptor claimed our offer (its CAS in
    /// [`claim`](Self::claim) won). A non-blocking connect looks here
    /// instead of waiting for a verdict byte.
    pub fn claimed(&self) -> bool {
        self.header().claim.load(Ordering::Acquire) == CLAIMED
    }

    /// Acceptor: takes a segment the connector offered again (see
    /// [`offer`](Self::offer)), checks its direction and re-initialises
    /// ours. Fails if the offer was withdrawn, this process still uses the
    /// segment, or the connector's direction is not sound.
    pub fn claim(&self) -> Result<(), AttachError> {
        if self.role != Role::Acceptor || !self.is_sole_handle() {
            return Err(AttachError::NotReady);
        }
        let h = self.header();
        if h.claim
            .compare_exchange(OFFERED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(AttachError::Invalid("offer withdrawn"));
        }
        let ch0 = self.channel(0);
        if !ch0.is_ready() {
            return Err(AttachError::NotReady);
        }
        ch0.check_links().map_err(AttachError::Invalid)?;
        h.released[1].store(0, Ordering::Relaxed);
        self.unready(1);
        self.channel(1).initialise();
        Ok(())
    }

    /// Clears channel `c`'s ready word before it is initialised again.
    fn unready(&self, c: usize) {
        let ctl: NonNull<ChannelControl> = self.at(self.geo.channel_offset(c));
        // SAFETY: inside the mapping, SharedLayout type.
        unsafe { ctl.as_ref() }
            .wait
            .ready
            .store(0, Ordering::Relaxed);
    }

    /// The memfd, to hand to the peer (SCM_RIGHTS), until
    /// [`forget_fd`](Self::forget_fd) or [`take_fd`](Self::take_fd).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Closes the memfd once the peer has its copy: the mapping stays, and a
    /// process with many connections does not spend an fd on each.
    pub fn forget_fd(&mut self) {
        self.fd = None;
    }

    /// Takes the memfd (to keep it elsewhere: see [`reattach`](Self::reattach)).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// Gives back a memfd taken with [`take_fd`](Self::take_fd) from this
    /// segment (a kept segment handed out again).
    pub fn set_fd(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
    }

    /// The segment's geometry (this side's checked copy).
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Which end of the connection this handle is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This side's halves. The connector must wait until the acceptor has
    /// initialised its direction ("connected"), else `NotReady`.
    pub fn endpoint(&self) -> Result<Endpoint, AttachError> {
        Ok(Endpoint {
            tx: self.producer()?,
            rx: self.consumer()?,
        })
    }

    /// This side's writing half alone: usable as soon as this side's
    /// direction is initialised (a connector may queue data before the
    /// acceptor has answered, as TCP queues data before accept).
    pub fn producer(&self) -> Result<Producer, AttachError> {
        let ch = self.channel(self.tx_channel());
        if !ch.is_ready() {
            return Err(AttachError::NotReady);
        }
        Ok(Producer::new(ch))
    }

    /// This side's reading half alone: usable once the peer's direction is
    /// initialised (for a connector: after the acceptor said "connected").
    pub fn consumer(&self) -> Result<Consumer, AttachError> {
        let ch = self.channel(1 - self.tx_channel());
        if !ch.is_ready() {
            return Err(AttachError::NotReady);
        }
        Ok(Consumer::new(ch))
    }

    fn tx_channel(&self) -> usize {
        match self.role {
            Role::Connector => 0,
            Role::Acceptor => 1,
        }
    }

    /// Bytes written into this side's direction and bytes read from the
    /// peer's since they were initialised (0 for one not yet): a lenient
    /// lock-free snapshot of shared words, for statistics.
    pub fn totals(&self) -> (u64, u64) {
        let total = |i: usize, written: bool| {
            let ch = self.channel(i);
            match (ch.is_ready(), written) {
                (false, _) => 0,
                (true, true) => ch.written_total(),
                (true, false) => ch.consumed_total(),
            }
        };
        let tx = self.tx_channel();
        (total(tx, true), total(1 - tx, false))
    }

    /// True when both directions are initialised.
    pub fn is_connected(&self) -> bool {
        self.channel(0).is_ready() && self.channel(1).is_ready()
    }

    /// Whether either side declared the connection reset.
    pub fn is_reset(&self) -> bool {
        self.header().reset.load(Ordering::Acquire) != 0
    }

    fn base(&self) -> *mut u8 {
        self.map.raw.as_mut_ptr()
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: offset 0 of a mapping of geo.total_bytes() >= 64 bytes,
        // page-aligned; SharedLayout type; lives as long as self.
        unsafe { &*self.base().cast::<SegmentHeader>() }
    }

    fn at<T>(&self, off: usize) -> NonNull<T> {
        debug_assert!(off + core::mem::size_of::<T>() <= self.geo.total_bytes());
        // SAFETY: every offset passed comes from self.geo, whose layout keeps
        // it inside the mapping; the mapping base is non-null.
        unsafe { NonNull::new_unchecked(self.base().add(off).cast::<T>()) }
    }

    fn channel(&self, c: usize) -> Channel {
        let geo = self.geo;
        let ctl: NonNull<ChannelControl> = self.at(geo.channel_offset(c));
        let sib: NonNull<ChannelControl> = self.at(geo.channel_offset(1 - c));
        // SAFETY: `wait` is a field of the ChannelControl at `sib`.
        let sib_wait =
            unsafe { NonNull::new_unchecked(core::ptr::addr_of_mut!((*sib.as_ptr()).wait)) };
        let reset: NonNull<AtomicU32> =
            // SAFETY: `reset` is a field of the header at offset 0.
            unsafe { NonNull::new_unchecked(core::ptr::addr_of_mut!((*self.base().cast::<SegmentHeader>()).reset)) };
        let segs: NonNull<SegmentControl> = self.at(geo.segment_control_offset(c));
        let begins: NonNull<SegmentBegin> = self.at(geo.segment_begin_offset(c));
        let slots: NonNull<SegmentSlot> = self.at(geo.segment_slot_offset(c));
        // SAFETY: the data area of channel c lies inside the mapping, which
        // `keep` below keeps alive as long as the channel.
        let data = unsafe {
            DataArea::new_file(
                self.at::<u8>(geo.data_offset(c)).as_ptr(),
                geo.channel_bytes(),
            )
        };
        let keep: Arc<dyn Send + Sync> = self.map.clone();
        // SAFETY: all pointers are inside the mapping that `keep` holds.
        unsafe {
            Channel::new(ChannelParts {
                ctl,
                segs,
                begins,
                slots,
                reset,
                sibling: Some(sib_wait),
                data,
                geo,
                parker: Arc::new(Parker::default()),
                keep,
            })
        }
    }
}
