//! Early data and the connection window (decision 33; found by the review
//! of early data, s29/review-early): streams whose early bytes B cannot
//! deliver yet (their onward connect hangs: the destination's accept
//! queue is full, SYNs dropped) hold B's connection window; unbounded,
//! 400 of them with 64 KiB each stalled a 1 MiB upload on a connection of
//! the same link until B gave up on them (10 s, 504). With the link's room
//! for early data (early::room, a quarter of the window) the upload
//! completes while they are still opening: asserted by order (no 504 yet
//! in A's log when it completes), not by time.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{count_crc, sink, Gateway, Pair, B_SERVICE, PEER};

fn ask(ns: &str, port: u16, data: &[u8]) -> (Duration, std::io::Result<Vec<u8>>) {
    let t = Instant::now();
    let r = (|| {
        let mut s = Pair::inside(ns, || TcpStream::connect((B_SERVICE, port)))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(data)?;
        s.shutdown(Shutdown::Write)?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)?;
        Ok(back)
    })();
    (t.elapsed(), r)
}

#[test]
fn opening_streams_leave_the_link_to_carrying_ones() {
    if !common::root() {
        eprintln!("opening_streams_leave_the_link_to_carrying_ones: skipped (needs root)");
        return;
    }
    let (n, bytes) = (400, 64 << 10);
    let pair = Pair::new("earlyroom");
    pair.certs();
    let good = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, 9502)).unwrap());
    std::thread::spawn(move || sink(good));
    // Blackhole: backlog 0, never accepted; one connection fills the queue.
    let hole = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, 9501)).unwrap());
    // SAFETY: a valid listening socket; listen() again only resets its backlog.
    assert_eq!(unsafe { libc::listen(hole.as_raw_fd(), 0) }, 0);
    let _filler = Pair::inside(&pair.b, || TcpStream::connect((B_SERVICE, 9501)).unwrap());
    let mut args = vec!["--peer-listen", PEER, "--serve", "10.211.2.2/32"];
    let id = pair.identity("b");
    args.extend(id.iter().map(String::as_str));
    let mut b = Gateway::start(&pair.b, &pair.dir, "gw-b", &args);
    b.wait_for("peers: listening");
    let status = pair.file("a.json");
    let mut a = pair.gateway_a(
        "a",
        "0.0.0.0:9501",
        &["--listen", "0.0.0.0:9502", "--status-file", &status],
        &[],
    );
    a.wait_for("links established: 1");

    let data: Vec<u8> = (0..(1usize << 20))
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    let (t0, r0) = ask(&pair.a, 9502, &data);
    eprintln!("baseline 1 MiB echo: {t0:?} ok={}", r0.is_ok());
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("rss before: A {} KiB, B {} KiB", a.rss_kib(), b.rss_kib());

    // A connection already past its 200 before the opening ones come.
    let mut est = Pair::inside(&pair.a, || TcpStream::connect((B_SERVICE, 9502)).unwrap());
    est.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    est.write_all(&data[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let payload = vec![7u8; bytes];
    let t = Instant::now();
    let held: Vec<TcpStream> = Pair::inside(&pair.a, || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect((B_SERVICE, 9501)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.write_all(&payload);
                s
            })
            .collect()
    });
    eprintln!(
        "{n} blackhole connections x {bytes} bytes opened in {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "rss with {n} opening: A {} KiB, B {} KiB",
        a.rss_kib(),
        b.rss_kib()
    );
    let t2 = Instant::now();
    est.write_all(&data[1..]).unwrap();
    est.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let r2 = est.read_to_end(&mut back);
    eprintln!(
        "REVIEW 1 MiB on a connection established before them: {:?} ok={:?} back={} (ended {:?} after the opening connections)",
        t2.elapsed(), r2.is_ok(), back.len(), t.elapsed()
    );
    // Before any of the opening streams was given up (B's 504 after its
    // 10 s connect timeout): they were still open while this carried.
    let log = a.log_text();
    assert_eq!(
        log.matches("504").count(),
        0,
        "the upload waited for the opening streams to end:\n{log}"
    );
    r2.expect("1 MiB on the established connection");
    let want = count_crc(&data);
    assert_eq!(back, want, "length and crc32 of the 1 MiB upload");
    let (_, r1) = ask(&pair.a, 9502, &data);
    assert_eq!(r1.expect("a new connection's 1 MiB"), want);
    drop(held);
    drop(hole);
}
