//! Model checks of the ring protocol with loom: every interleaving (up to a
//! preemption bound) and every weak-memory outcome loom models.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p shmnet-ring --test loom --release`
//! (the Makefile's `test` target does this).
#![cfg(loom)]

use loom::thread;
use shmnet_ring::{heap_channel, Geometry, RingError, WaitKind, WaitPolicy};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn byte(i: usize) -> u8 {
    (i * 7 + 1) as u8
}

/// Data published by the producer is seen whole and in order by the
/// consumer, across a segment boundary; loom's cell tracking fails the model
/// if any byte is read without being ordered after its write.
#[test]
fn publish_consume_across_segments() {
    model(|| {
        let (mut p, mut c) = heap_channel(Geometry::new(2, 64).unwrap());
        let t = thread::spawn(move || {
            let a: Vec<u8> = (0..48).map(byte).collect();
            let b: Vec<u8> = (48..96).map(byte).collect();
            assert_eq!(p.write(&a).unwrap(), 48);
            assert_eq!(p.write(&b).unwrap(), 48);
            p.close();
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 40];
        let policy = WaitPolicy::blocking();
        loop {
            match c.read_blocking(&mut buf, &policy) {
                Ok(0) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) => panic!("read: {e}"),
            }
        }
        t.join().unwrap();
        assert_eq!(got, (0..96).map(byte).collect::<Vec<_>>());
    });
}

/// A writer that fills the ring sleeps on `writer_waiting` and is woken when
/// the reader frees a segment; a reader on an empty ring sleeps on
/// `reader_waiting` and is woken by the next publish. A lost wake-up would
/// leave a thread asleep forever, which loom reports as a deadlock.
#[test]
fn wait_and_wake_never_lose_a_wakeup() {
    model(|| {
        let (mut p, mut c) = heap_channel(Geometry::new(2, 64).unwrap());
        let policy = WaitPolicy::blocking();
        let pp = policy.clone();
        let t = thread::spawn(move || {
            // 192 bytes through a 128-byte ring: the writer must wait once.
            let data: Vec<u8> = (0..192).map(byte).collect();
            p.write_all(&data, &pp).unwrap();
            p.close();
        });
        let mut total = 0;
        let mut buf = [0u8; 128];
        loop {
            let k = c.read_blocking(&mut buf, &policy).unwrap();
            if k == 0 {
                break;
            }
            for (i, b) in buf[..k].iter().enumerate() {
                assert_eq!(*b, byte(total + i));
            }
            total += k;
        }
        assert_eq!(total, 192);
        t.join().unwrap();
    });
}

/// A reset from one side wakes the other side's sleeper.
#[test]
fn reset_wakes_a_sleeping_reader() {
    model(|| {
        let (p, mut c) = heap_channel(Geometry::new(2, 64).unwrap());
        let t = thread::spawn(move || p.reset());
        let r = c.read_blocking(&mut [0u8; 8], &WaitPolicy::blocking());
        assert_eq!(r, Err(RingError::Reset));
        t.join().unwrap();
    });
}

/// An abortive close (`abort`, a TCP RST) after data: the sleeping reader
/// wakes, reads every byte published before it, then `Reset` — never EOF
/// (a truncated stream must not look complete), never a byte lost. And a
/// writer whose reader aborted fails with `Reset`.
#[test]
fn abort_after_data_is_read_then_reset() {
    model(|| {
        let (mut p, mut c) = heap_channel(Geometry::new(2, 64).unwrap());
        let t = thread::spawn(move || {
            let a: Vec<u8> = (0..80).map(byte).collect();
            assert_eq!(p.write(&a).unwrap(), 80);
            p.abort();
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 48];
        let policy = WaitPolicy::blocking();
        let end = loop {
            match c.read_blocking(&mut buf, &policy) {
                Ok(0) => break Ok(0),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) => break Err(e),
            }
        };
        t.join().unwrap();
        assert_eq!(end, Err(RingError::Reset));
        assert_eq!(got, (0..80).map(byte).collect::<Vec<_>>());

        let (mut p, c) = heap_channel(Geometry::new(2, 64).unwrap());
        let t = thread::spawn(move || c.abort());
        let r = p.write_all(&[1u8; 200], &WaitPolicy::blocking());
        t.join().unwrap();
        assert_eq!(r, Err(RingError::Reset)); // 200 bytes never fit in 128
        assert_eq!(p.write(b"x"), Err(RingError::Reset));
    });
}

/// Counts its rings (a real one sends a byte on a socket).
struct CountingBell(std::sync::atomic::AtomicU32);

impl shmnet_ring::Doorbell for CountingBell {
    fn ring(&self) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }
}

/// A reader that takes its flag back (`disarm`, after a sleep) races a
/// producer that may have seen it up: a ring is counted exactly when it
/// is sent (the producer takes back the count of one it finds taken), and
/// the data is there for the reader's next look, rung or not.
#[test]
fn disarm_keeps_the_ring_count_exact() {
    model(|| {
        let (mut p, c) = heap_channel(Geometry::new(2, 64).unwrap());
        let bell = std::sync::Arc::new(CountingBell(std::sync::atomic::AtomicU32::new(0)));
        p.set_doorbell(bell.clone());
        c.arm(shmnet_ring::WaitKind::Doorbell);
        let t = thread::spawn(move || {
            p.write(b"x").unwrap();
            p
        });
        c.disarm(shmnet_ring::WaitKind::Doorbell);
        let _p = t.join().unwrap();
        let sent = bell.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(c.notify().doorbells_rung(), sent);
        assert!(sent <= 1);
        assert!(c.arm(shmnet_ring::WaitKind::Doorbell));
    });
}

/// Segments placed where free, under a reader: after a small-message
/// prelude (sequence numbers 0, 1, 2 in data segments 0, 1, 0), the
/// producer writes three segments in one call while the reader reads:
/// number 3 goes to data segment 1, then (a bulk write: the window grows)
/// 4 to 2 and 5 to 3, each word of `slots` changing. The reader
/// must find each where it was written: loom fails the model if it reads a
/// byte not ordered after its write, and the byte check if it reads the
/// wrong segment. Both sides run in spawned threads: loom explored
/// switches into the middle of the main thread's calls too sparsely to
/// catch a reader that loaded a segment's place before the `head` that
/// told of it.
#[test]
fn segments_placed_where_free_under_a_reader() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    // The one-thread prelude's 15 writes are many branch points.
    b.max_branches = 10_000;
    b.check(|| {
        let (mut p, mut c) = heap_channel(Geometry::new(4, 64).unwrap());
        // Prelude, one thread: three segments, each filled by five small
        // writes (not a bulk stream) and read at once.
        let mut buf = [0u8; 128];
        let mut sent = 0;
        for _ in 0..3 {
            for len in [16, 16, 16, 8, 8] {
                let data: Vec<u8> = (sent..sent + len).map(byte).collect();
                assert_eq!(p.write(&data).unwrap(), len);
                sent += len;
            }
            assert_eq!(c.read(&mut buf).unwrap(), 64);
        }
        assert_eq!((p.segments_touched(), p.window()), (2, 2));
        let t = thread::spawn(move || {
            let data: Vec<u8> = (192..384).map(byte).collect();
            p.write_all(&data, &WaitPolicy::blocking()).unwrap();
            p.close();
        });
        let r = thread::spawn(move || {
            let mut got = 192;
            let policy = WaitPolicy::blocking();
            loop {
                let k = c.read_blocking(&mut buf, &policy).unwrap();
                if k == 0 {
                    break;
                }
                for (i, b) in buf[..k].iter().enumerate() {
                    assert_eq!(*b, byte(got + i));
                }
                got += k;
            }
            got
        });
        assert_eq!(r.join().unwrap(), 384);
        t.join().unwrap();
    });
}

/// The interposer's deferral, reduced to the ring's calls (issue 14's wrk
/// read errors): the reader takes its flag down (`disarm`) while busy,
/// reads, and raises it again before it sleeps. A producer that saw the
/// flag up before the `disarm` is still inside its write while the reader
/// reads its data; if the reader raised the flag again without waiting for
/// that write to end, the producer's ring would go out for data already
/// read: a byte with nothing behind it, which makes a poller see the fd
/// readable with an empty ring. The reader therefore waits until the
/// producer is idle (not busy) after a read that emptied the ring, then
/// takes the rings counted so far; at the end every byte sent is taken
/// unless data is left to read.
#[test]
fn a_reader_that_lowered_its_flag_gets_no_ring_for_data_it_read() {
    use shmnet_ring::WaitKind;
    use std::sync::atomic::Ordering::SeqCst;
    model(|| {
        let (mut p, mut c) = heap_channel(Geometry::new(2, 64).unwrap());
        let bell = std::sync::Arc::new(CountingBell(std::sync::atomic::AtomicU32::new(0)));
        p.set_doorbell(bell.clone());
        let taken = c.notify().taken_count();
        // Raised for a sleep the reader's epoll_wait made earlier.
        c.arm(WaitKind::Doorbell);
        let t = thread::spawn(move || {
            p.write(b"x").unwrap();
            p
        });
        // Woke, busy: the flag goes down (`defer_again`).
        c.disarm(WaitKind::Doorbell);
        let mut buf = [0u8; 8];
        let got = c.read(&mut buf).unwrap_or(0);
        if got > 0 && c.available() == Ok(0) {
            // `tidy_after_read`: wait out a write in progress, whatever the
            // flag says, then take what was counted (its byte may still be
            // on its way: the producer goes idle before the send).
            while c.notify().producer_busy() {
                thread::yield_now();
            }
            let owed = c.notify().doorbells_rung().wrapping_sub(taken.get());
            taken.add(owed);
        }
        // Before the next sleep: the flag goes up again.
        let data_left = c.arm(WaitKind::Doorbell);
        let _p = t.join().unwrap();
        let sent = bell.0.load(SeqCst);
        assert_eq!(c.notify().doorbells_rung(), sent);
        let untaken = sent.wrapping_sub(taken.get());
        assert!(
            untaken == 0 || data_left || c.available() != Ok(0),
            "{untaken} doorbell byte(s) with nothing to read"
        );
    });
}

/// A trim gives back the pages of the segments the reader handed back
/// while the reader reads the next ones (decision 27): the give-back is a
/// write of zeros to the bytes under loom, so the model fails if any
/// segment the reader may still read is given back (a read not ordered
/// before the zeroing), and the reader checks every byte it gets.
#[test]
fn trim_gives_back_only_what_the_reader_handed_back() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let (mut p, mut c) = heap_channel(Geometry::new(4, 64).unwrap());
        // One bulk write over three segments (the window grows to 4), the
        // first of them read and handed back.
        let data: Vec<u8> = (0..192).map(byte).collect();
        assert_eq!(p.write(&data).unwrap(), 192);
        let mut buf = [0u8; 128];
        assert_eq!(c.read(&mut buf[..64]).unwrap(), 64);
        assert_eq!(p.window(), 4);
        let t = thread::spawn(move || {
            p.trim().unwrap();
            assert_eq!(p.window(), 2);
            let more: Vec<u8> = (192..256).map(byte).collect();
            p.write_all(&more, &WaitPolicy::blocking()).unwrap();
            p.close();
        });
        let mut got = 64;
        let policy = WaitPolicy::blocking();
        loop {
            let k = c.read_blocking(&mut buf, &policy).unwrap();
            if k == 0 {
                break;
            }
            for (i, b) in buf[..k].iter().enumerate() {
                assert_eq!(*b, byte(got + i));
            }
            got += k;
        }
        assert_eq!(got, 256);
        t.join().unwrap();
    });
}

// Doorbell counting against decision 34 (the producer idle before the
// doorbell's send); models from review s30 of branch ng14.

/// An edge-triggered reader with EDGE_BACKLOG bytes untaken and its flag
/// down raises its flag (arm, before a sleep) while the producer publishes:
/// every byte sent must be counted (else `owed` = rung - taken wraps).
#[test]
fn an_arm_racing_a_publish_at_the_edge_backlog_is_counted() {
    model(|| {
        let (mut p, c) = heap_channel(Geometry::new(2, 64).unwrap());
        let bell = Arc::new(CountingBell(AtomicU32::new(0)));
        p.set_doorbell(bell.clone());
        c.notify().set_edge_triggered();
        c.disarm(WaitKind::Doorbell);
        for _ in 0..4 {
            p.write(b"x").unwrap();
        }
        assert_eq!(bell.0.load(SeqCst), 4);
        assert_eq!(c.notify().doorbells_rung(), 4);
        let t = thread::spawn(move || {
            p.write(b"y").unwrap();
            p
        });
        c.arm(WaitKind::Doorbell);
        let _p = t.join().unwrap();
        let sent = bell.0.load(SeqCst);
        assert_eq!(c.notify().doorbells_rung(), sent, "a byte sent uncounted");
    });
}

/// A bell whose byte "arrives" in `queued` when sent (after the producer
/// went idle, decision 34), or that fails.
struct QueueBell {
    ok: bool,
    queued: loom::sync::atomic::AtomicU32,
}
impl shmnet_ring::Doorbell for QueueBell {
    fn ring(&self) -> bool {
        if self.ok {
            self.queued.fetch_add(1, SeqCst);
        }
        self.ok
    }
}

/// Settling after a read that emptied the ring, with the doorbell send
/// after the producer's idle: wait for idle, take `owed` (waiting for bytes
/// still on their way, re-reading the count as `take_owed` does). The wait
/// must end (a failed send is taken back) and nothing is left owed or
/// queued with an empty ring.
fn settle_model(ok: bool) {
    model(move || {
        let (mut p, mut c) = heap_channel(Geometry::new(2, 64).unwrap());
        let bell = Arc::new(QueueBell {
            ok,
            queued: loom::sync::atomic::AtomicU32::new(0),
        });
        p.set_doorbell(bell.clone());
        let taken = c.notify().taken_count();
        let t = thread::spawn(move || {
            p.write(b"x").unwrap();
            p
        });
        let mut buf = [0u8; 8];
        let mut socket_taken = 0u32;
        let got = loop {
            match c.read(&mut buf) {
                Ok(n) if n > 0 => break n,
                _ => thread::yield_now(),
            }
        };
        assert_eq!(got, 1);
        while c.notify().producer_busy() {
            thread::yield_now();
        }
        let mut owed = c.notify().doorbells_rung().wrapping_sub(taken.get());
        assert!(!c.arm(WaitKind::Doorbell));
        while owed > 0 {
            let avail = bell.queued.load(SeqCst) - socket_taken;
            let g = avail.min(owed);
            socket_taken += g;
            taken.add(g);
            owed = (owed - g).min(c.notify().doorbells_rung().wrapping_sub(taken.get()));
            if owed == 0 {
                break;
            }
            thread::yield_now();
        }
        let _p = t.join().unwrap();
        assert_eq!(c.notify().doorbells_rung(), bell.queued.load(SeqCst));
        assert_eq!(socket_taken, bell.queued.load(SeqCst), "byte left queued");
    });
}

#[test]
fn settling_waits_for_a_byte_sent_after_idle() {
    settle_model(true);
}

#[test]
fn settling_stops_waiting_for_a_send_that_failed_after_idle() {
    settle_model(false);
}

/// The "kernel" of the sleep-naming model: bytes sent on either
/// connection's doorbell, and a sleep until one is there (an epoll set
/// holding both connections' fds).
#[derive(Default)]
struct Kernel {
    bytes: loom::sync::Mutex<u32>,
    woken: loom::sync::Condvar,
}

/// One connection's doorbell in the producer process: rings a sleep of the
/// reader only if the producer's last ring did not wake that sleep already
/// (the interposer's `Bell::ring_sleep`; `last` is shared by the producer
/// thread's doorbells).
struct SleepBell {
    kernel: Arc<Kernel>,
    last: Arc<loom::sync::Mutex<u64>>,
}

impl shmnet_ring::Doorbell for SleepBell {
    fn ring(&self) -> bool {
        *self.kernel.bytes.lock().unwrap() += 1;
        self.kernel.woken.notify_all();
        true
    }

    fn ring_sleep(&self, sleep: u64) -> bool {
        if *self.last.lock().unwrap() == sleep {
            return false;
        }
        let sent = self.ring();
        *self.last.lock().unwrap() = sleep;
        sent
    }
}

/// Decision 41: an epoll waiter raises the flags of two connections for
/// one sleep, named; the producer writes one byte to each and rings that
/// sleep once (the second ring is left out while the first woke it). The
/// waiter, woken, looks at both rings: it lowers A's flag (deferred again)
/// and keeps B's up (idle: off the list, as `defer_again` leaves it). With
/// `rename`, it raises B's flag again without the sleep's name and looks
/// at its ring (`Connection::defer_again`); later it looks at B only when
/// B's doorbell rang (the kernel reports its fd). Every byte must be read
/// and no sleep left without a wake-up: loom reports a waiter asleep
/// forever as a deadlock. Without `rename`, B's flag keeps the old sleep's
/// name, its ring is left out again, and the waiter sleeps forever.
fn named_sleep_model(rename: bool) {
    model(move || {
        let kernel = Arc::new(Kernel::default());
        let last = Arc::new(loom::sync::Mutex::new(0u64));
        let (mut pa, mut ca) = heap_channel(Geometry::new(2, 64).unwrap());
        let (mut pb, mut cb) = heap_channel(Geometry::new(2, 64).unwrap());
        for p in [&mut pa, &mut pb] {
            p.set_doorbell(Arc::new(SleepBell {
                kernel: kernel.clone(),
                last: last.clone(),
            }));
        }
        let t = thread::spawn(move || {
            pa.write(b"a").unwrap();
            pb.write(b"b").unwrap();
            (pa, pb)
        });
        let mut buf = [0u8; 8];
        let mut got = 0;
        let mut taken = 0u32;
        let mut b_rung = 0;
        // Fresh channels count as waiting: a deferred reader that has read
        // has its flags down.
        ca.disarm(WaitKind::Doorbell);
        cb.disarm(WaitKind::Doorbell);
        for sleep in 1u64.. {
            if got == 2 {
                break;
            }
            let ready_a = ca.arm_for_sleep(WaitKind::Doorbell, sleep);
            let ready_b = sleep == 1 && cb.arm_for_sleep(WaitKind::Doorbell, sleep);
            if !ready_a && !ready_b {
                let mut bytes = kernel.bytes.lock().unwrap();
                while *bytes == taken {
                    bytes = kernel.woken.wait(bytes).unwrap();
                }
                taken = *bytes;
            }
            ca.disarm(WaitKind::Doorbell);
            got += ca.read(&mut buf).unwrap_or(0);
            let rung = cb.notify().doorbells_rung();
            let look_b =
                ready_b || rung != b_rung || (sleep == 1 && rename && cb.arm(WaitKind::Doorbell));
            b_rung = rung;
            if look_b {
                got += cb.read(&mut buf).unwrap_or(0);
            }
        }
        let _p = t.join().unwrap();
        // The bytes sent are the rings counted (a ring left out counts none).
        assert_eq!(
            *kernel.bytes.lock().unwrap(),
            ca.notify().doorbells_rung() + cb.notify().doorbells_rung()
        );
    });
}

#[test]
fn a_named_sleep_rung_once_loses_no_wakeup() {
    named_sleep_model(true);
}

#[test]
#[should_panic]
fn a_flag_kept_up_with_an_old_sleeps_name_loses_a_wakeup() {
    named_sleep_model(false);
}

/// The "kernel" of the set-change model: doorbell bytes sent on A and on
/// B, whether A's fd is still in the epoll set, and the waker (decision
/// 43: an always-readable fd another thread adds to the set).
#[derive(Default)]
struct Epoll {
    a: u32,
    b: u32,
    a_in: bool,
    waker: bool,
}

#[derive(Default)]
struct EpollKernel {
    set: loom::sync::Mutex<Epoll>,
    woken: loom::sync::Condvar,
}

/// A or B's doorbell (`b`: B's), leaving out a ring for a sleep the
/// producer's last ring woke (as `SleepBell`).
struct MemberBell {
    kernel: Arc<EpollKernel>,
    last: Arc<loom::sync::Mutex<u64>>,
    b: bool,
}

impl shmnet_ring::Doorbell for MemberBell {
    fn ring(&self) -> bool {
        let mut s = self.kernel.set.lock().unwrap();
        if self.b {
            s.b += 1;
        } else {
            s.a += 1;
        }
        self.kernel.woken.notify_all();
        true
    }

    fn ring_sleep(&self, sleep: u64) -> bool {
        if *self.last.lock().unwrap() == sleep {
            return false;
        }
        let sent = self.ring();
        *self.last.lock().unwrap() = sleep;
        sent
    }
}

/// The set's table (the interposer's lock): A still a member, and the
/// waiter between `before_sleep` and `after_sleep`.
#[derive(Default)]
struct Table {
    a_gone: bool,
    asleep: bool,
}

/// Decision 44: an epoll waiter sleeps on {A, B} with both flags raised
/// for its named sleep; the producer writes A then B (B's ring left out
/// when A's woke the sleep); another thread takes A out of the set
/// (EPOLL_CTL_DEL: the kernel forgets A's fd, then the table, whose
/// `leave` raises A's flag unnamed) and then, with `wake`, adds the waker
/// if the waiter is asleep (`Set::stir`). The waiter must get B's byte:
/// without the wake it may sleep forever (A's ring woke nobody, B's was
/// left out), which loom reports as a deadlock.
fn set_change_model(wake: bool) {
    model(move || {
        let kernel = Arc::new(EpollKernel::default());
        kernel.set.lock().unwrap().a_in = true;
        let table = Arc::new(loom::sync::Mutex::new(Table::default()));
        let last = Arc::new(loom::sync::Mutex::new(0u64));
        let (mut pa, ca) = heap_channel(Geometry::new(2, 64).unwrap());
        let (mut pb, mut cb) = heap_channel(Geometry::new(2, 64).unwrap());
        for (p, b) in [(&mut pa, false), (&mut pb, true)] {
            p.set_doorbell(Arc::new(MemberBell {
                kernel: kernel.clone(),
                last: last.clone(),
                b,
            }));
        }
        // Deferred members: flags down while the waiter is busy.
        ca.disarm(WaitKind::Doorbell);
        cb.disarm(WaitKind::Doorbell);
        let ca = Arc::new(loom::sync::Mutex::new(ca));
        let producer = thread::spawn(move || {
            pa.write(b"a").unwrap();
            pb.write(b"b").unwrap();
            (pa, pb)
        });
        let changer = {
            let (kernel, table, ca) = (kernel.clone(), table.clone(), ca.clone());
            thread::spawn(move || {
                kernel.set.lock().unwrap().a_in = false;
                {
                    let mut t = table.lock().unwrap();
                    t.a_gone = true;
                    ca.lock().unwrap().arm(WaitKind::Doorbell);
                }
                let t = table.lock().unwrap();
                if wake && t.asleep {
                    kernel.set.lock().unwrap().waker = true;
                    kernel.woken.notify_all();
                }
            })
        };
        let mut buf = [0u8; 8];
        let (mut ta, mut tb) = (0u32, 0u32);
        let mut got_b = 0;
        for sleep in 1u64.. {
            if got_b == 1 {
                break;
            }
            let ready = {
                let mut t = table.lock().unwrap();
                t.asleep = true;
                let ra = !t.a_gone && ca.lock().unwrap().arm_for_sleep(WaitKind::Doorbell, sleep);
                let rb = cb.arm_for_sleep(WaitKind::Doorbell, sleep);
                ra || rb
            };
            if !ready {
                let mut s = kernel.set.lock().unwrap();
                while !(s.a_in && s.a > ta) && s.b == tb && !s.waker {
                    s = kernel.woken.wait(s).unwrap();
                }
                s.waker = false;
                (ta, tb) = (s.a, s.b);
            }
            let a_member = {
                let mut t = table.lock().unwrap();
                t.asleep = false;
                !t.a_gone
            };
            // After the sleep: every member raised is looked at.
            cb.disarm(WaitKind::Doorbell);
            got_b += cb.read(&mut buf).unwrap_or(0);
            if a_member {
                let mut ca = ca.lock().unwrap();
                ca.disarm(WaitKind::Doorbell);
                let _ = ca.read(&mut buf);
            }
        }
        changer.join().unwrap();
        let _p = producer.join().unwrap();
    });
}

#[test]
fn a_set_changed_by_another_thread_wakes_its_named_sleep() {
    set_change_model(true);
}

#[test]
#[should_panic]
fn a_set_changed_by_another_thread_without_a_wake_loses_a_named_sleep() {
    set_change_model(false);
}
