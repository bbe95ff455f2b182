//! Two consumer handles of one direction (a connection shared after fork:
//! one process reads under the side lock, the other asks FIONREAD /
//! readable_now, which the interposer does without the side lock), an
//! honest producer: `available()` must never call the ring corrupt (which
//! resets the connection). Found by review: it did, in a quarter of the
//! connections.
#![cfg(not(loom))]
use shmnet_ring::{Geometry, RingError, Segment};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn run(
    geo: Geometry,
    wlen: usize,
    secs: u64,
) -> (u32, u64, std::collections::BTreeMap<&'static str, u32>) {
    let mut kinds = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut corrupt = 0u32;
    let mut conns = 0u64;
    while Instant::now() < deadline {
        conns += 1;
        let a = Segment::create(geo).unwrap();
        let b = Segment::attach(a.fd().unwrap().try_clone_to_owned().unwrap()).unwrap();
        let mut tx = a.producer().unwrap();
        let mut rx = b.consumer().unwrap();
        let rx2 = b.consumer().unwrap(); // the forked sibling's handle
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, s2) = (stop.clone(), stop.clone());
        let w = std::thread::spawn(move || {
            let data = vec![7u8; wlen];
            while !s1.load(Ordering::Relaxed) {
                match tx.write(&data) {
                    Ok(_) | Err(RingError::WouldBlock) => {}
                    Err(_) => break,
                }
            }
        });
        let r = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !s2.load(Ordering::Relaxed) {
                let _g = rx.lock_side();
                match rx.read(&mut buf) {
                    Ok(_) | Err(RingError::WouldBlock) => {}
                    Err(_) => break,
                }
            }
        });
        let t0 = Instant::now();
        let mut hit = false;
        while t0.elapsed() < Duration::from_millis(500) {
            match rx2.available() {
                Ok(_) => {}
                Err(RingError::Corrupt(what)) => {
                    *kinds.entry(what).or_insert(0) += 1;
                    hit = true;
                    break;
                }
                Err(e) => {
                    eprintln!("other error {e:?}");
                    break;
                }
            }
        }
        if hit {
            corrupt += 1;
        }
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        r.join().unwrap();
        if Instant::now() >= deadline {
            break;
        }
    }
    (corrupt, conns, kinds)
}

#[test]
fn a_look_beside_a_reading_sibling_never_resets_the_connection() {
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for (n, s, w) in [
        (32u32, 4096u32, 512usize),
        (32, 4096, 4096),
        (32, 65536, 1024),
    ] {
        let (c, k, kinds) = run(Geometry::new(n, s).unwrap(), w, secs);
        assert_eq!(
            c, 0,
            "N={n} S={s} write={w}: {c} of {k} connections reset by available(): {kinds:?}"
        );
    }
}
