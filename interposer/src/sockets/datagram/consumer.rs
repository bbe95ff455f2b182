//! Whether a receive that awaits no answer (a consumer of a stream of
//! datagrams) spins before it sleeps: only while its recent spins paid
//! for themselves, finding a datagram within a quarter of the budget on
//! average (a spin that itself found one that quickly never backs off:
//! a stream that resumes spins again at its first quick find). A steady trickle (one datagram every 40 us against a 50 us
//! budget) would otherwise keep a CPU busy to save one wake-up per
//! datagram; a flood finds its next datagram at once and keeps spinning.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The first back-off after a spin that did not pay (then doubled on each
/// further one, up to `MAX_SHIFT` doublings: 32 ms).
const BACKOFF_NS: u64 = 1_000_000;
const MAX_SHIFT: u32 = 5;

/// A socket's record of its consumer spins (relaxed: a hint, raced
/// harmlessly by receives in several threads).
#[derive(Default)]
pub(super) struct ConsumerPace {
    /// Moving average (weight 1/8) of how long a spin waited, in ns (a
    /// spin that found nothing counts its whole budget).
    waited_ns: AtomicU32,
    /// Until when (`now_ns`) consumer receives sleep at once.
    off_until: AtomicU64,
    /// Back-offs in a row (the next one lasts `BACKOFF_NS << shift`).
    shift: AtomicU32,
}

impl ConsumerPace {
    /// Whether a consumer receive may spin now (outside a back-off; a
    /// receive after one is the probe that may end the back-offs).
    pub(super) fn may_spin(&self, now_ns: u64) -> bool {
        now_ns >= self.off_until.load(Relaxed)
    }

    /// Records a spin of `budget_ns` that waited `waited_ns` (the budget
    /// when it found nothing) and, if it and spins lately waited more than
    /// a quarter of the budget (on average), backs off.
    pub(super) fn spun(&self, waited_ns: u64, budget_ns: u64, now_ns: u64) {
        let w = waited_ns.min(budget_ns).min(u64::from(u32::MAX));
        let avg = (7 * u64::from(self.waited_ns.load(Relaxed)) + w) / 8;
        self.waited_ns.store(avg as u32, Relaxed);
        if avg * 4 <= budget_ns || w * 4 <= budget_ns {
            self.shift.store(0, Relaxed);
            return;
        }
        let shift = self.shift.load(Relaxed);
        self.shift.store((shift + 1).min(MAX_SHIFT), Relaxed);
        self.off_until
            .store(now_ns + (BACKOFF_NS << shift), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 50_000;

    #[test]
    fn a_flood_keeps_spinning() {
        let p = ConsumerPace::default();
        for i in 0..100 {
            p.spun(500, B, i * 1_000);
            assert!(p.may_spin(i * 1_000 + 1));
        }
        // Two spins for nothing (its sender preempted) are forgiven.
        p.spun(B, B, 200_000);
        p.spun(B, B, 300_000);
        assert!(p.may_spin(300_001));
    }

    #[test]
    fn a_trickle_backs_off_longer_each_time() {
        let p = ConsumerPace::default();
        let mut now = 0;
        let mut offs = Vec::new();
        for _ in 0..8 {
            while !p.may_spin(now) {
                now += 1_000;
            }
            p.spun(40_000, B, now);
            let start = now;
            while !p.may_spin(now) {
                now += 1_000;
            }
            offs.push(now - start);
        }
        assert_eq!(offs[0], 0, "one slow spin alone is averaged");
        assert_eq!(offs[1], 0, "two too");
        assert!(offs.iter().any(|&o| o >= 1_000_000));
        assert_eq!(*offs.last().unwrap(), 32_000_000);
    }

    #[test]
    fn quick_finds_end_the_back_off() {
        let p = ConsumerPace::default();
        for t in 0..10 {
            p.spun(B, B, t);
        }
        assert!(!p.may_spin(10));
        let mut now = 100_000_000;
        for _ in 0..10 {
            assert!(p.may_spin(now));
            p.spun(100, B, now);
            now += 1_000;
        }
        assert!(p.may_spin(now));
    }
}
