//! The daemon: one TUN device per partition, the region between them, two
//! threads per partition (send: TUN -> region; receive: region -> TUN), and
//! a supervisor that publishes status and drops partitions whose namespace
//! went away.

use crate::counters::{add, Counters};
use crate::layout::{Geometry, BATCH, CACHE_LINE, MAX_BUF_BYTES, MIN_BUF_BYTES, PORT_GONE};
use crate::netns::{Netns, NsSpec};
use crate::packet::{addresses, addresses_of};
use crate::port::{PushError, RxPort, TxPort, ROOM_WAIT};
use crate::region::Region;
use crate::segment::Segment;
use crate::status::{self, PartitionStatus, Status};
use crate::tun::Tun;
use crate::vnet;
use crate::warden::{Warden, Watched};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One partition: a namespace and the addresses its device gets.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Where the device goes.
    pub netns: NsSpec,
    /// Host addresses with their prefix length (the prefix gives the
    /// on-link route; the switch forwards by host address).
    pub addrs: Vec<(IpAddr, u8)>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Config {
    /// Device name in every namespace.
    pub name: String,
    /// Device MTU (576..=65535).
    pub mtu: u32,
    /// Descriptors per queue (a power of two; 0: 256, or fewer where that
    /// would make a region over 1 GiB).
    pub slots: u32,
    /// Segmentation offload: virtio-net headers and 64 KiB super-packets.
    pub offload: bool,
    /// Device queues (lanes) per partition, each with its own pair of
    /// threads (1..=8).
    pub queues: u32,
    /// How long a receiver polls its queues, and a sender its device,
    /// after the last packet before sleeping.
    pub spin: Duration,
    /// The partitions (2..=16).
    pub partitions: Vec<Partition>,
    /// Where to publish counters (None: nowhere).
    pub status_file: Option<PathBuf>,
}

/// The most `--slots` left to its default makes a region.
const AUTO_REGION_BYTES: usize = 1 << 30;
/// Longest a thread sleeps without checking whether it should stop.
const SLICE: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs SIGINT/SIGTERM handlers that set the returned flag.
pub fn stop_on_signals() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // sigaction is zeroed (no flags, empty mask) before filling it.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, core::ptr::null_mut());
        }
    }
    &STOP
}

struct Running {
    netns: Netns,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    gone: bool,
}

/// Builds the NIC and forwards until `stop` is set; removes the devices
/// (closes them) and the status file before returning.
pub fn run(cfg: &Config, stop: &AtomicBool) -> io::Result<()> {
    run_with(cfg, stop, || {})
}

/// As [`run`]; `ready` is called once every device is up and forwarding.
pub fn run_with(cfg: &Config, stop: &AtomicBool, ready: impl FnOnce()) -> io::Result<()> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    if !(576..=65535).contains(&cfg.mtu) {
        return Err(bad(format!("MTU {} out of range 576..=65535", cfg.mtu)));
    }
    let vnet = if cfg.offload { vnet::LEN } else { 0 };
    let buf = if cfg.offload {
        MAX_BUF_BYTES
    } else {
        cfg.mtu.max(MIN_BUF_BYTES).div_ceil(CACHE_LINE as u32) * CACHE_LINE as u32
    };
    let parts = cfg.partitions.len() as u32;
    let slots = match cfg.slots {
        // 256 descriptors per queue (small packets need many), fewer when
        // that would make a region over 1 GiB (16 partitions with offload:
        // 32). Buffers are reused last-freed-first, so only as many as are
        // in flight at once are ever touched.
        0 => {
            let mut n = 256;
            while n > 16
                && !Geometry::new(parts, cfg.queues, n, buf)
                    .is_ok_and(|g| g.total_bytes() <= AUTO_REGION_BYTES)
            {
                n /= 2;
            }
            n
        }
        n => n,
    };
    let geo = Geometry::new(parts, cfg.queues, slots, buf).map_err(|e| bad(e.to_string()))?;
    let segment = Arc::new(Segment::new(
        cfg.partitions
            .iter()
            .map(|p| p.addrs.iter().map(|a| a.0).collect())
            .collect(),
    ));
    if let Some(path) = &cfg.status_file {
        // Before any device: a status file that cannot be written is
        // refused with why, not found out after "up" was printed (review
        // s28 #14).
        status::safe_dir(path)?;
        if let Ok(s) = status::read(path) {
            if s.pid != std::process::id() && status::writer_alive(&s) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is published by a running NIC (pid {}): give another --name or --status-file",
                        path.display(),
                        s.pid
                    ),
                ));
            }
        }
    }
    let mut namespaces = Vec::new();
    for p in &cfg.partitions {
        namespaces.push(Netns::open(&p.netns)?);
    }
    // Before any thread: it forks.
    let mut warden = Warden::spawn(
        cfg.partitions
            .iter()
            .zip(&namespaces)
            .map(|(p, ns)| Watched {
                spec: p.netns.clone(),
                id: ns.id(),
                addrs: p.addrs.iter().map(|a| a.0).collect(),
            })
            .collect(),
    )?;
    let fd = Region::create(geo)?;
    let supervisor = Region::attach(&fd)?;

    // Every device first: a failure leaves nothing behind (dropping the
    // Tuns removes them).
    let mut devices = Vec::new();
    let mut ifindex = Vec::new();
    for (p, ns) in cfg.partitions.iter().zip(namespaces) {
        let queues = ns
            .run_in(|| {
                // One fd per device queue (IFF_MULTI_QUEUE when more than one).
                let multi = cfg.queues > 1;
                let mut qs = vec![Arc::new(Tun::create(&cfg.name, cfg.offload, multi, true)?)];
                qs[0].configure(cfg.mtu, &p.addrs)?;
                for _ in 1..cfg.queues {
                    qs.push(Arc::new(Tun::create(&cfg.name, cfg.offload, multi, false)?));
                }
                Ok((qs, qs_index(&cfg.name)))
            })
            .map_err(|e| io::Error::new(e.kind(), format!("namespace {}: {e}", p.netns)))?;
        let (queues, index) = queues;
        ifindex.push(index);
        devices.push((ns, queues));
    }

    let mut running: Vec<Running> = Vec::new();
    for (me, (netns, queues)) in devices.into_iter().enumerate() {
        let mut r = Running {
            netns,
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
            threads: Vec::new(),
            gone: false,
        };
        let started = start(cfg, &fd, me, queues, vnet, &segment, &mut r);
        running.push(r);
        if let Err(e) = started {
            // Whatever started stops again; the devices close with `running`.
            for (p, r) in running.iter_mut().enumerate() {
                leave(&supervisor, p, r);
            }
            return Err(e);
        }
    }

    let publish = |running: &[Running]| match &cfg.status_file {
        Some(path) => status::write(path, &snapshot(cfg, geo, running))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        None => Ok(()),
    };
    // The first write must work before anything says "up".
    if let Err(e) = publish(&running) {
        for (p, r) in running.iter_mut().enumerate() {
            leave(&supervisor, p, r);
        }
        return Err(e);
    }
    eprintln!(
        "shmnet: nic: {} up in {} namespaces ({} MiB of region); SIGINT or SIGTERM removes it",
        cfg.name,
        running.len(),
        geo.total_bytes() >> 20
    );
    warden.arm(ifindex);
    ready();
    let mut last = Instant::now();
    let mut departed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(SLICE);
        warden.check();
        for (p, r) in running.iter_mut().enumerate() {
            if r.gone {
                continue;
            }
            if !r.netns.alive() {
                eprintln!(
                    "shmnet: nic: namespace {} went away; partition {p} dropped from the segment",
                    r.netns.spec()
                );
            } else if r.threads.iter().any(|t| t.is_finished()) {
                // Threads end only when told to, when their device went
                // away (`ip link del`), or by a panic. The partition
                // leaves whole rather than half-working.
                eprintln!(
                    "shmnet: nic: a forwarding thread of {} ended; partition {p} dropped from the segment",
                    r.netns.spec()
                );
            } else {
                continue;
            }
            leave(&supervisor, p, r);
            // Its own end of each connection too, while we can still go
            // in (a process may still run there: review s29 #4); its
            // device is closed, so the resets go nowhere.
            abort_own(cfg, r, p);
            // Our file of the namespace goes, so a deleted one is freed
            // (review s28 #6).
            r.netns.release();
            departed.push(p);
        }
        // A partition that left shows as gone at once, not up to a second
        // later.
        let left = !departed.is_empty();
        for p in departed.drain(..) {
            abort_towards(cfg, &running, p);
        }
        if left || last.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = publish(&running) {
                eprintln!("shmnet: nic: cannot write the status: {e}");
            }
            last = Instant::now();
        }
    }
    for (p, r) in running.iter_mut().enumerate() {
        if !r.gone {
            leave(&supervisor, p, r);
        }
    }
    if let Some(path) = &cfg.status_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Aborts the remaining partitions' TCP connections to partition
/// `gone`'s addresses: its namespace went away, so they would hang until
/// TCP's own timeouts, as behind a pulled cable (ECONNABORTED instead,
/// as when the daemon ends: `warden`).
fn abort_towards(cfg: &Config, running: &[Running], gone: usize) {
    let remote: Vec<IpAddr> = cfg.partitions[gone].addrs.iter().map(|a| a.0).collect();
    for (q, r) in running.iter().enumerate() {
        if r.gone {
            continue;
        }
        let local: Vec<IpAddr> = cfg.partitions[q].addrs.iter().map(|a| a.0).collect();
        abort_in(r, &local, &remote, &format!("to partition {gone}"));
    }
}

/// Aborts the TCP connections between `local` and `remote` in `r`'s
/// namespace, saying how many (`what`: which ones, for the message).
fn abort_in(r: &Running, local: &[IpAddr], remote: &[IpAddr], what: &str) {
    match r
        .netns
        .run_in(|| crate::sockdiag::abort_connections(local, remote))
    {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "shmnet: nic: {n} connection(s) in {} {what} aborted",
            r.netns.spec()
        ),
        Err(e) => eprintln!(
            "shmnet: nic: cannot abort the connections in {} {what}: {e}",
            r.netns.spec()
        ),
    }
}

/// Aborts partition `me`'s own TCP connections to the rest of the
/// segment, in its namespace (before we release it).
fn abort_own(cfg: &Config, r: &Running, me: usize) {
    let local: Vec<IpAddr> = cfg.partitions[me].addrs.iter().map(|a| a.0).collect();
    let remote: Vec<IpAddr> = cfg
        .partitions
        .iter()
        .enumerate()
        .filter(|(q, _)| *q != me)
        .flat_map(|(_, p)| p.addrs.iter().map(|a| a.0))
        .collect();
    abort_in(r, &local, &remote, &format!("(partition {me}, leaving)"));
}

/// The ifindex of device `name` in this thread's namespace (0: none).
fn qs_index(name: &str) -> u32 {
    std::ffi::CString::new(name).map_or(0, |c| {
        // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
}

/// Starts partition `me`'s send and receive threads (into `r.threads`).
fn start(
    cfg: &Config,
    fd: &rustix::fd::OwnedFd,
    me: usize,
    queues: Vec<Arc<Tun>>,
    vnet: usize,
    segment: &Arc<Segment>,
    r: &mut Running,
) -> io::Result<()> {
    // Each partition maps the region on its own, as a process would.
    let region = Arc::new(Region::attach(fd)?);
    let spin = cfg.spin;
    for (lane, tun) in queues.into_iter().enumerate() {
        let (region2, tun2, stop, counters, seg) = (
            region.clone(),
            tun.clone(),
            r.stop.clone(),
            r.counters.clone(),
            segment.clone(),
        );
        r.threads.push(
            std::thread::Builder::new()
                .name(format!("nic-tx-{me}.{lane}"))
                .spawn(move || {
                    let tx = TxPort::new(region2, me, lane);
                    send_loop(tx, &tun2, vnet, &seg, &counters, &stop, spin)
                })?,
        );
        let (region2, stop, counters, seg) = (
            region.clone(),
            r.stop.clone(),
            r.counters.clone(),
            segment.clone(),
        );
        r.threads.push(
            std::thread::Builder::new()
                .name(format!("nic-rx-{me}.{lane}"))
                .spawn(move || {
                    let rx = RxPort::new(region2, me, lane);
                    receive_loop(rx, &tun, vnet, &seg, &counters, &stop, spin)
                })?,
        );
    }
    Ok(())
}

/// Takes partition `p` off the segment: senders stop queueing for it, its
/// threads end and its device closes (so it disappears).
fn leave(region: &Region, p: usize, r: &mut Running) {
    for q in 0..region.geometry().queues as usize {
        region.port(p, q).state.store(PORT_GONE, Ordering::Relaxed);
    }
    r.stop.store(true, Ordering::Relaxed);
    for t in r.threads.drain(..) {
        let _ = t.join();
    }
    // The threads took the device's fds with them: it is gone. (The
    // caller releases the namespace.)
    r.gone = true;
}

fn snapshot(cfg: &Config, geo: Geometry, running: &[Running]) -> Status {
    Status {
        name: cfg.name.clone(),
        pid: std::process::id(),
        mtu: cfg.mtu,
        region_bytes: geo.total_bytes() as u64,
        partitions: cfg
            .partitions
            .iter()
            .zip(running)
            .map(|(p, r)| PartitionStatus {
                netns: p.netns.to_string(),
                addresses: p.addrs.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
                state: if r.gone { "gone" } else { "up" }.into(),
                counters: r.counters.snapshot(),
            })
            .collect(),
    }
}

/// TUN -> region: reads a batch of packets straight into buffers of our
/// pool, switches each by destination, checks its source, publishes once.
fn send_loop(
    mut tx: TxPort,
    tun: &Tun,
    vnet: usize,
    seg: &Segment,
    c: &Counters,
    stop: &AtomicBool,
    spin: Duration,
) {
    let me = tx.me();
    // Until `spin` after the last packet, poll the device without sleeping
    // (a reply often follows within microseconds); then block in poll(2).
    let mut busy = Instant::now() - spin;
    while !stop.load(Ordering::Relaxed) {
        if busy.elapsed() >= spin {
            match tun.wait_readable(SLICE.as_millis() as i32) {
                Some(true) => {}
                Some(false) => continue,
                None => {
                    // The device is gone: this thread ends, and the
                    // supervisor takes the partition off the segment.
                    eprintln!("shmnet: nic: partition {me}'s device went away");
                    return;
                }
            }
        }
        tx.reclaim_all();
        for _ in 0..BATCH {
            let Some(b) = tx.buffer() else { break };
            // SAFETY: b is a buffer of our own pool out of every queue:
            // capacity() bytes, no reference covers them.
            let n = match unsafe { tun.read_raw(b.as_mut_ptr(), b.capacity()) } {
                Ok(n) => n,
                Err(e) => {
                    tx.give_back(b);
                    if e.kind() != io::ErrorKind::WouldBlock
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        add(&c.tun_errors, 1);
                    }
                    break;
                }
            };
            busy = Instant::now();
            // A private copy of the IP header: the pool is shared memory.
            let mut hdr = [0u8; 40];
            let h = n.saturating_sub(vnet).min(hdr.len());
            // SAFETY: vnet + h <= n <= capacity() bytes of our buffer; a raw copy.
            unsafe {
                core::ptr::copy_nonoverlapping(b.as_mut_ptr().add(vnet), hdr.as_mut_ptr(), h)
            };
            let Some((src, dst)) = addresses_of(&hdr[..h], n.saturating_sub(vnet)) else {
                add(&c.drop_malformed, 1);
                tx.give_back(b);
                continue;
            };
            let d = match seg.owner(dst) {
                Some(d) if d != me => d,
                _ => {
                    add(&c.drop_no_route, 1);
                    tx.give_back(b);
                    continue;
                }
            };
            if !seg.owns(me, src) {
                add(&c.drop_spoofed, 1);
                tx.give_back(b);
                continue;
            }
            let timeouts = tx.room_timeouts();
            let res = tx.send(d, b, n, ROOM_WAIT);
            add(&c.stalls, tx.room_timeouts() - timeouts);
            match res {
                Ok(()) => {
                    add(&c.tx_packets, 1);
                    add(&c.tx_bytes, n as u64);
                }
                Err((why, b)) => {
                    tx.give_back(b);
                    add(
                        if why == PushError::Full {
                            &c.drop_full
                        } else {
                            &c.drop_peer_gone
                        },
                        1,
                    );
                }
            }
        }
        add(&c.doorbells, tx.publish());
    }
}

/// Region -> TUN: drains every queue to us (a batch per sender per round),
/// re-checks each packet on a private copy (its source must be its sender's,
/// its destination ours), spins briefly when idle, then sleeps on the bell.
fn receive_loop(
    mut rx: RxPort,
    tun: &Tun,
    vnet: usize,
    seg: &Segment,
    c: &Counters,
    stop: &AtomicBool,
    spin: Duration,
) {
    let me = rx.me();
    while !stop.load(Ordering::Relaxed) {
        let polled = rx.poll(BATCH, |s, pkt| {
            if !accepts(seg, s, me, pkt, vnet) {
                add(&c.drop_rejected, 1);
                return;
            }
            match tun.write(pkt) {
                Ok(_) => {
                    add(&c.rx_packets, 1);
                    add(&c.rx_bytes, pkt.len() as u64);
                }
                Err(_) => add(&c.tun_errors, 1),
            }
        });
        add(&c.drop_rejected, polled.rejected as u64);
        if polled.packets + polled.rejected > 0 {
            continue;
        }
        let t0 = Instant::now();
        while !rx.pending() && t0.elapsed() < spin {
            std::hint::spin_loop();
        }
        if !rx.pending() {
            add(&c.sleeps, 1);
            rx.sleep(SLICE);
        }
    }
}

/// The receiving port's check of a packet partition `from` queued for
/// partition `me` (on the receiver's private copy): well formed, its
/// source one of `from`'s addresses (anti-spoofing again, in case the
/// sender's check was skipped: the region is writable by every partition),
/// its destination one of ours.
pub(crate) fn accepts(seg: &Segment, from: usize, me: usize, pkt: &[u8], vnet: usize) -> bool {
    checked(pkt, vnet).is_some_and(|(src, dst)| seg.owns(from, src) && seg.owns(me, dst))
}

/// Source and destination of a packet from the region (after its
/// virtio-net header, checked too, when there is one), or None.
fn checked(pkt: &[u8], vnet: usize) -> Option<(IpAddr, IpAddr)> {
    let ip = pkt.get(vnet..)?;
    if vnet > 0 && !vnet::check(pkt, ip.first()? >> 4, ip.len()) {
        return None;
    }
    addresses(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[3] = 28;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    /// Review s28 #8: the receiving port's anti-spoofing had no test (the
    /// end-to-end one stops spoofed packets at the sending port first).
    #[test]
    fn receiver_refuses_spoofed_and_misdirected_packets() {
        let (a, b, c) = ([10, 211, 1, 1], [10, 211, 1, 2], [10, 211, 1, 3]);
        let seg = Segment::new(vec![vec![a.into()], vec![b.into()], vec![c.into()]]);
        assert!(accepts(&seg, 0, 1, &ipv4(a, b), 0));
        // From A's queue with C's source: spoofed.
        assert!(!accepts(&seg, 0, 1, &ipv4(c, b), 0));
        // From A's queue, for C, delivered to B: not ours.
        assert!(!accepts(&seg, 0, 1, &ipv4(a, c), 0));
        // A source nobody owns, and a malformed packet.
        assert!(!accepts(&seg, 0, 1, &ipv4([10, 211, 9, 9], b), 0));
        let mut short = ipv4(a, b);
        short[3] = 40;
        assert!(!accepts(&seg, 0, 1, &short, 0));
        // With a virtio-net header (all zero: no offload asked) in front.
        let mut v = vec![0u8; vnet::LEN];
        v.extend(ipv4(a, b));
        assert!(accepts(&seg, 0, 1, &v, vnet::LEN));
        let mut v = vec![0u8; vnet::LEN];
        v.extend(ipv4(c, b));
        assert!(!accepts(&seg, 0, 1, &v, vnet::LEN));
    }
}
