//! Ring vs Unix socketpair vs TCP loopback, between two processes, in one
//! run: 64-byte ping-pong round trips and streaming throughput. Prints a
//! markdown table of medians (and ratios). `--demo` runs a short version.
//!
//! Run: `make bench` (or `make demo`).

use shmnet_ring::{Endpoint, Geometry, RingError, Segment, WaitPolicy};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    RingSpin,
    RingBlock,
    /// The default wait policy: spin up to 50 us, then sleep.
    Ring,
    Unix,
    Tcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RingSpin => "ring (spinning)",
            Kind::RingBlock => "ring (blocking, spin 0)",
            Kind::Ring => "ring (spin 50 us, then sleep)",
            Kind::Unix => "Unix socketpair",
            Kind::Tcp => "TCP loopback",
        }
    }
}

/// A ring endpoint as a blocking byte stream.
struct RingIo {
    ep: Endpoint,
    policy: WaitPolicy,
}

fn io_err(e: RingError) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

impl Read for RingIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.ep.rx.read_blocking(buf, &self.policy).map_err(io_err)
    }
}

impl Write for RingIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.ep.tx.write(buf) {
                Err(RingError::WouldBlock) => {
                    self.ep.tx.wait_writable(&self.policy).map_err(io_err)?
                }
                r => return r.map_err(io_err),
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RingIo {
    fn drop(&mut self) {
        self.ep.tx.close();
    }
}

fn fork(f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: single-threaded benchmark; the child runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        f();
        // SAFETY: end the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: libc::pid_t) {
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

/// Connects a pair of `kind` endpoints across a fork: `child` runs in the
/// child with its end, the parent's end is returned with the child's pid.
fn connected(
    kind: Kind,
    child: impl FnOnce(Box<dyn ReadWrite>),
) -> (Box<dyn ReadWrite>, libc::pid_t) {
    match kind {
        Kind::RingSpin | Kind::RingBlock | Kind::Ring => {
            let policy = match kind {
                Kind::RingSpin => WaitPolicy {
                    spin: Duration::from_secs(1),
                    ..WaitPolicy::default()
                },
                Kind::RingBlock => WaitPolicy::blocking(),
                _ => WaitPolicy::default(),
            };
            let geo = Geometry::for_ring_bytes(RING_BYTES.load(Ordering::Relaxed) as u64).unwrap();
            let seg = Segment::create(geo).unwrap();
            let fd = seg.fd().unwrap().try_clone_to_owned().unwrap();
            let p2 = policy.clone();
            let pid = fork(move || {
                let s = Segment::attach(fd).unwrap();
                child(Box::new(RingIo {
                    ep: s.endpoint().unwrap(),
                    policy: p2,
                }));
            });
            let ep = loop {
                if let Ok(ep) = seg.endpoint() {
                    break ep;
                }
                std::thread::yield_now();
            };
            (Box::new(RingIo { ep, policy }), pid)
        }
        Kind::Unix => {
            let (a, b) = UnixStream::pair().unwrap();
            let pid = fork(move || child(Box::new(b)));
            (Box::new(a), pid)
        }
        Kind::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let pid = fork(move || {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                child(Box::new(s));
            });
            let (s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            (Box::new(s), pid)
        }
    }
}

/// Ring size per direction for the ring transports (the sizes table varies it).
static RING_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1 << 20);

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Mean round trip of `size`-byte ping-pong over `iters` exchanges.
fn pingpong(kind: Kind, size: usize, iters: usize) -> Duration {
    let (mut io, pid) = connected(kind, move |mut io| {
        let mut buf = vec![0u8; size];
        for _ in 0..iters + 100 {
            io.read_exact(&mut buf).unwrap();
            io.write_all(&buf).unwrap();
        }
    });
    let mut buf = vec![7u8; size];
    for _ in 0..100 {
        io.write_all(&buf).unwrap();
        io.read_exact(&mut buf).unwrap();
    }
    let t = Instant::now();
    for _ in 0..iters {
        io.write_all(&buf).unwrap();
        io.read_exact(&mut buf).unwrap();
    }
    let d = t.elapsed() / iters as u32;
    drop(io);
    reap(pid);
    d
}

/// The physical floor: two processes flipping one shared atomic word.
fn raw_floor(iters: usize) -> Duration {
    // SAFETY: a fresh anonymous shared page, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the page is zeroed, aligned and shared; AtomicU32 accepts any bits.
    let word = unsafe { &*(p as *const AtomicU32) };
    let total = iters as u32 + 100;
    let pid = fork(|| {
        for i in 0..total {
            while word.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            word.store(2 * i + 2, Ordering::Release);
        }
    });
    let mut start = Instant::now();
    for i in 0..total {
        if i == 100 {
            start = Instant::now();
        }
        word.store(2 * i + 1, Ordering::Release);
        while word.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let d = start.elapsed() / iters as u32;
    reap(pid);
    // SAFETY: our own mapping, no longer used (the child exited).
    unsafe { libc::munmap(p, 4096) };
    d
}

/// Streams `total` bytes in `write`-byte writes; returns bytes per second.
fn stream(kind: Kind, write: usize, total: usize) -> f64 {
    let (mut io, pid) = connected(kind, move |mut io| {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            got += io.read(&mut buf).unwrap();
        }
        io.write_all(&[1]).unwrap();
    });
    let buf = vec![5u8; write];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        let k = write.min(total - sent);
        io.write_all(&buf[..k]).unwrap();
        sent += k;
    }
    io.read_exact(&mut [0u8; 1]).unwrap();
    let secs = t.elapsed().as_secs_f64();
    drop(io);
    reap(pid);
    total as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let demo = has("--demo");
    // `--pairs`: only the one-thread 64-byte write + read loop.
    if has("--pairs") {
        pairs(1);
        return;
    }
    // `--opens` runs only the cost of segment openings (one thread).
    if has("--opens") {
        openings(if demo { 10 } else { 1 });
        return;
    }
    // `--rtt` or `--stream` runs only that part.
    let (rtt_on, stream_on) = match (has("--rtt"), has("--stream")) {
        (false, false) => (true, true),
        x => x,
    };
    let runs = if demo { 1 } else { 5 };
    let scale = if demo { 10 } else { 1 };
    if rtt_on {
        round_trips(runs, scale);
    }
    if stream_on {
        streaming(runs, scale, has("--ring-only"));
        ring_sizes(runs, scale);
    }
}

/// The cost of opening segments while most of the ring is in use (the
/// reader lags by half the ring): one thread writes a segment at a time
/// until the ring is full, then reads half, over and over; a heap channel,
/// so only the ring's own work is timed. 4096 segments of 64 bytes is the
/// geometry a hostile connector would pick to make a producer that scanned
/// the segments in use at each opening (as it did before decision 27) do
/// the most work per byte.
fn openings(scale: usize) {
    println!("\n## Segment openings, half the ring in use (one thread, heap channel)\n");
    println!("| N x S | MB/s | ns per segment opened |");
    println!("|---|---:|---:|");
    for (n, s, total) in [
        (4096u32, 64u32, 64usize << 20),
        (256, 64, 64 << 20),
        (4096, 4096, 1 << 30),
        (32, 65536, 2 << 30),
    ] {
        let (mut p, mut c) = shmnet_ring::heap_channel(Geometry::new(n, s).unwrap());
        let chunk = vec![1u8; s as usize];
        let mut buf = vec![0u8; (n as usize * s as usize) / 2];
        let total = total / scale;
        let mut moved = 0usize;
        let t = Instant::now();
        while moved < total {
            while p.write(&chunk).is_ok() {}
            let mut got = 0;
            while got < buf.len() {
                match c.read(&mut buf[got..]) {
                    Ok(k) => got += k,
                    Err(_) => break,
                }
            }
            moved += got;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "| {n} x {s} B | {:.0} | {:.0} |",
            moved as f64 / secs / 1e6,
            secs * 1e9 / (moved / s as usize) as f64
        );
    }
    pairs(scale);
}

/// The write path itself, on one thread: a 64-byte write and its read,
/// over and over (a segment opens every 1024), on the default ring.
fn pairs(scale: usize) {
    let (mut p, mut c) = shmnet_ring::heap_channel(Geometry::for_ring_bytes(2 << 20).unwrap());
    let (msg, mut buf) = ([7u8; 64], [0u8; 64]);
    let iters = 20_000_000 / scale;
    let t = Instant::now();
    for _ in 0..iters {
        p.write(&msg).unwrap();
        c.read(&mut buf).unwrap();
    }
    println!(
        "\n64-byte write + read, one thread, 32 x 64 KiB: {:.1} ns per pair",
        t.elapsed().as_secs_f64() * 1e9 / iters as f64
    );
}

/// Streaming throughput by ring size: the evidence for SHMNET_RING_BYTES'
/// default.
fn ring_sizes(runs: usize, scale: usize) {
    println!(
        "\n## Ring size per direction vs streaming throughput (ring, {runs} run(s), median)\n"
    );
    println!("| ring bytes | 1 KiB writes GB/s | 64 KiB writes GB/s |");
    println!("|---:|---:|---:|");
    for ring in [256usize << 10, 1 << 20, 4 << 20] {
        RING_BYTES.store(ring, Ordering::Relaxed);
        let bw = |write: usize| {
            median(
                (0..runs)
                    .map(|_| stream(Kind::Ring, write, (1 << 30) / scale))
                    .collect(),
            )
        };
        println!(
            "| {} KiB | {:.2} | {:.2} |",
            ring >> 10,
            bw(1024) / 1e9,
            bw(65536) / 1e9
        );
    }
    RING_BYTES.store(1 << 20, Ordering::Relaxed);
}

fn round_trips(runs: usize, scale: usize) {
    let rtt =
        |f: &dyn Fn() -> Duration| median((0..runs).map(|_| f().as_secs_f64() * 1e6).collect());
    println!("\n## 64-byte ping-pong round trip, two processes ({runs} run(s), median)\n");
    println!("| transport | RTT (us) | vs floor | vs TCP loopback |");
    println!("|---|---:|---:|---:|");
    let floor = rtt(&|| raw_floor(200_000 / scale));
    let mut rows = vec![("raw shared-memory atomic (floor)".to_string(), floor)];
    for (k, iters) in [
        (Kind::RingSpin, 200_000),
        (Kind::RingBlock, 10_000),
        (Kind::Unix, 10_000),
        (Kind::Tcp, 10_000),
    ] {
        rows.push((
            k.name().to_string(),
            rtt(&|| pingpong(k, 64, iters / scale)),
        ));
    }
    let tcp = rows.last().unwrap().1;
    for (name, us) in &rows {
        println!(
            "| {name} | {us:.2} | {:.1}x | {:.1}x faster |",
            us / floor,
            tcp / us
        );
    }
}

/// Streaming table; `ring_only` skips the sockets (for profiling the ring).
fn streaming(runs: usize, scale: usize, ring_only: bool) {
    println!("\n## Streaming throughput, two processes ({runs} run(s), median)\n");
    println!("| write size | ring GB/s | Unix GB/s | TCP GB/s | ring writes/s | ring vs TCP |");
    println!("|---:|---:|---:|---:|---:|---:|");
    // Sockets get less data at small writes so a run stays short; each
    // figure is a rate, so the totals need not match.
    for (write, ring_total, sock_total) in [
        (64usize, 256usize << 20, 32usize << 20),
        (1024, 1 << 30, 256 << 20),
        (65536, 2 << 30, 1 << 30),
    ] {
        let bw = |k: Kind, total: usize| {
            median((0..runs).map(|_| stream(k, write, total / scale)).collect())
        };
        let ring = bw(Kind::Ring, ring_total);
        let (unix, tcp) = if ring_only {
            (f64::NAN, f64::NAN)
        } else {
            (bw(Kind::Unix, sock_total), bw(Kind::Tcp, sock_total))
        };
        println!(
            "| {write} B | {:.2} | {:.2} | {:.2} | {:.1} M | {:.1}x |",
            ring / 1e9,
            unix / 1e9,
            tcp / 1e9,
            ring / write as f64 / 1e6,
            ring / tcp
        );
    }
    println!("\n(streaming uses the default wait policy: spin up to 50 us, then futex; 1 MiB ring of 16 x 64 KiB segments)");
}
