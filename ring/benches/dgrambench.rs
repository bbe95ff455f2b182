//! One-way datagram rate between two threads: the datagram target segment
//! (one sender slot, the receiver busy-polling) next to a Unix datagram
//! socketpair and kernel UDP on 127.0.0.1, for 64-byte and 1472-byte
//! datagrams. Prints datagrams delivered per second (and the ring's drops,
//! which the sender retries after a yield). No assertions: a figure to
//! report.
//!
//! Run: `cargo bench -p shmnet-ring --bench dgrambench [-- --secs 2]`

use shmnet_ring::dgram::{heap_target, DgramGeometry, GroupGeometry, Receiver, Sent};
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Rate {
    delivered: u64,
    drops: u64,
    secs: f64,
}

/// A deep queue: one slot of 4,096 cells over 4,096 partitions of 2 KiB,
/// no byte limit, so that descheduling one thread (2 shared vCPUs) stalls
/// the other less often than stage 1's 128 cells do.
fn deep() -> DgramGeometry {
    let g = GroupGeometry {
        partition_bytes: 2048,
        partitions: 4096,
        span_max: 32,
    };
    DgramGeometry::new(&[g], 1, 4096).unwrap()
}

fn ring(size: usize, dur: Duration, memfd: bool, geo: DgramGeometry) -> Rate {
    let (mut rx, image) = if memfd {
        let rx = Receiver::create(geo).unwrap();
        let image = shmnet_ring::dgram::Image::attach(rx.fd().unwrap()).unwrap();
        (rx, image)
    } else {
        heap_target(geo)
    };
    if geo != DgramGeometry::stage1() {
        rx.set_limit(1 << 30);
    }
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        let buf = vec![0x5au8; size];
        let mut drops = 0u64;
        while !s2.load(Ordering::Relaxed) {
            match tx.send(&buf).unwrap() {
                Sent::Queued { .. } => {}
                _ => {
                    // Full: give the CPU away, as a kernel send to a full
                    // socket costs a system call (with 2 vCPUs a spinning
                    // sender starves the receiver).
                    drops += 1;
                    std::thread::yield_now();
                }
            }
        }
        drops
    });
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for _ in 0..256 {
            if rx.recv(&mut buf, false).is_ok() {
                n += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let drops = t.join().unwrap();
    Rate {
        delivered: n,
        drops,
        secs,
    }
}

/// One thread alternating send and receive: the protocol's own cost per
/// datagram, without another core's cache misses.
fn one_thread(size: usize, dur: Duration) -> Rate {
    let (mut rx, image) = heap_target(DgramGeometry::stage1());
    let mut tx = image.sender(rx.open_slot().unwrap()).unwrap();
    let (data, mut buf) = (vec![0x5au8; size], vec![0u8; 65_536]);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for _ in 0..1024 {
            tx.send(&data).unwrap();
            rx.recv(&mut buf, false).unwrap();
        }
        n += 1024;
    }
    Rate {
        delivered: n,
        drops: 0,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// A kernel datagram socket pair, the sender looping on send (errors,
/// such as ENOBUFS or a timed-out wait for room, counted as drops), the
/// receiver on a blocking recv with a short timeout.
fn kernel(size: usize, dur: Duration, unix: bool) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    type Io = Box<dyn Fn(&[u8]) -> std::io::Result<usize> + Send>;
    type In = Box<dyn Fn(&mut [u8]) -> std::io::Result<usize>>;
    let (send, recv): (Io, In) = if unix {
        let (a, b) = UnixDatagram::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        // A full socketpair blocks the sender: a timeout lets it see `stop`.
        a.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        (Box::new(move |d| a.send(d)), Box::new(move |d| b.recv(d)))
    } else {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(r.local_addr().unwrap()).unwrap();
        (Box::new(move |d| s.send(d)), Box::new(move |d| r.recv(d)))
    };
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        let buf = vec![0x5au8; size];
        let mut drops = 0u64;
        while !s2.load(Ordering::Relaxed) {
            if send(&buf).is_err() {
                drops += 1;
            }
        }
        drops
    });
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        if recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let drops = t.join().unwrap();
    Rate {
        delivered: n,
        drops,
        secs,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    let dur = Duration::from_secs_f64(secs);
    println!("| path | size | datagrams/s | MB/s | sender retries/drops |");
    println!("| --- | --- | --- | --- | --- |");
    let stage1 = DgramGeometry::stage1();
    for size in [64usize, 1472] {
        let rows = [
            ("dgram ring, one thread send+recv", one_thread(size, dur)),
            ("dgram ring (heap)", ring(size, dur, false, stage1)),
            ("dgram ring (memfd)", ring(size, dur, true, stage1)),
            (
                "dgram ring (memfd, deep queue)",
                ring(size, dur, true, deep()),
            ),
            ("Unix datagram socketpair", kernel(size, dur, true)),
            ("UDP 127.0.0.1", kernel(size, dur, false)),
        ];
        for (name, r) in rows {
            let rate = r.delivered as f64 / r.secs;
            println!(
                "| {name} | {size} B | {:.2} M | {:.0} | {} |",
                rate / 1e6,
                rate * size as f64 / 1e6,
                r.drops
            );
        }
    }
}
