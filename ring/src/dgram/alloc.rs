//! Allocation of partitions: a run of contiguous free partitions of one
//! segment group (claim 1's "plurality of contiguous partitions"), claimed
//! by CAS on each directory entry's `owner` word.
//!
//! The hint bitmaps only say where to look. A bit may be wrongly free (a
//! claim between its CAS and its `fetch_or`, or a dead sender's), which
//! costs a failed CAS, but never wrongly busy for longer than a free
//! (which would lose capacity): a sender sets bits only for a run it owns,
//! before it publishes it, and the receiver clears them right after it
//! stores the owners' 0. Not before: bits free over partitions still owned
//! made a claim during a free spend its tries on them and drop
//! (`Receiver::flush`, session 39). Senders never
//! repair hints; the receiver does (`repair.rs`), after a peer's writes. At most [`CANDIDATES`] runs are tried per group, so a
//! sender's time is bounded whatever the hints say.

use super::Shared;
use crate::sync::Ordering;

/// Runs tried per group before moving to the next group (or dropping).
pub(crate) const CANDIDATES: u32 = 8;

/// Bits `j` of `free` that start a run of `k` set bits (`j..j+k` all set
/// in `free`, inside the word).
pub(crate) fn run_starts(free: u64, k: u32) -> u64 {
    if k == 0 || k > 64 {
        return 0;
    }
    let (mut x, mut have) = (free, 1);
    while have < k {
        // x has bit j when j..j+have are set; shifting by at most `have`
        // joins two overlapping or touching windows into one.
        let step = (k - have).min(have);
        x &= x >> step;
        have += step;
    }
    x
}

/// The bits of a run of `span` partitions starting at bit `bit` of a word.
pub(crate) fn run_mask(bit: u32, span: u32) -> u64 {
    if span == 0 || bit + span > 64 {
        return 0;
    }
    let ones = if span == 64 {
        u64::MAX
    } else {
        (1u64 << span) - 1
    };
    ones << bit
}

/// Word `w`'s bits that name partitions of the group (the last word of a
/// group whose partition count is not a multiple of 64 is partly outside).
fn valid_bits(partitions: u32, w: usize) -> u64 {
    let left = partitions.saturating_sub(w as u32 * 64);
    if left >= 64 {
        u64::MAX
    } else {
        (1u64 << left) - 1
    }
}

/// Claims `span` contiguous partitions of group `g` for `tag`, looking
/// from hint word `*cursor` on; returns the first partition. `*cursor`
/// moves to the word that served, so a sender keeps to its own region
/// while it has room there.
pub(crate) fn claim(sh: &Shared, g: usize, span: u32, tag: u32, cursor: &mut usize) -> Option<u32> {
    let grp = *sh.geo().group(g)?;
    if span == 0 || span > grp.span_max {
        return None;
    }
    let words = sh.geo().hint_words(g);
    let mut tries = 0;
    for n in 0..words {
        let w = (*cursor + n) % words;
        // SYNC POINT: Relaxed: a hint orders nothing; the owner CAS below
        // is what takes (and orders) a partition.
        let busy = sh.hint(g, w).load(Ordering::Relaxed);
        let mut starts = run_starts(!busy & valid_bits(grp.partitions, w), span);
        while starts != 0 {
            if tries == CANDIDATES {
                return None;
            }
            tries += 1;
            let bit = starts.trailing_zeros();
            let first = w as u32 * 64 + bit;
            match take_run(sh, g, first, span, tag) {
                Ok(()) => {
                    // Before the publish (program order, then the head's
                    // Release): the receiver's clearing fetch_and comes
                    // after this in the word's modification order, so a
                    // bit is never left busy for a freed run.
                    // SYNC POINT: Release pairs with the receiver's repair
                    // (repair.rs), which loads the word with Acquire and
                    // then the owners: seeing our bit, it sees our CAS.
                    sh.hint(g, w)
                        .fetch_or(run_mask(bit, span), Ordering::Release);
                    *cursor = w;
                    return Some(first);
                }
                // Every start at or before the busy partition covers it.
                Err(busy_at) => {
                    let b = busy_at - w as u32 * 64;
                    starts &= !run_mask(0, b + 1);
                }
            }
        }
    }
    None
}

/// CASes `owner` from 0 to `tag` for each partition of the run, in order;
/// on a busy one, gives back those taken and returns its index.
fn take_run(sh: &Shared, g: usize, first: u32, span: u32, tag: u32) -> Result<(), u32> {
    for i in first..first + span {
        // SYNC POINT (a): Acquire pairs with the receiver's Release store
        // of 0 when it freed the partition, so its copy-out of the previous
        // datagram happens before our copy-in of the next.
        if sh
            .dir(g, i)
            .owner
            .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            for j in (first..i).rev() {
                // SYNC POINT: Release although we wrote nothing: our
                // Acquire CAS made the receiver's earlier reads happen
                // before it, and a plain store ends the receiver's release
                // sequence, so the next claimant must synchronise with us
                // to be ordered after those reads.
                sh.dir(g, j).owner.store(0, Ordering::Release);
            }
            return Err(i);
        }
    }
    Ok(())
}

/// Frees a run the receiver reclaims: the owners, then the hint bits, so
/// no bit is free while its partition is still owned (a claim meanwhile
/// would spend its tries on it, `Receiver::flush`).
pub(crate) fn free_run(sh: &Shared, g: usize, first: u32, span: u32) {
    for i in first..first + span {
        // SYNC POINT (a): Release: our copy-out of this run happens before
        // the next claimant's Acquire CAS, hence before its copy-in.
        sh.dir(g, i).owner.store(0, Ordering::Release);
    }
    let (w, bit) = ((first / 64) as usize, first % 64);
    sh.hint(g, w)
        .fetch_and(!run_mask(bit, span), Ordering::Relaxed);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn starts_of_runs() {
        assert_eq!(run_starts(0b1111, 1), 0b1111);
        assert_eq!(run_starts(0b1111, 2), 0b0111);
        assert_eq!(run_starts(0b1111, 4), 0b0001);
        assert_eq!(run_starts(0b1111, 5), 0);
        assert_eq!(run_starts(0b1101_1110, 3), 0b0000_0110);
        assert_eq!(run_starts(u64::MAX, 64), 1);
        assert_eq!(run_starts(u64::MAX, 32), (1u64 << 33) - 1);
        assert_eq!(run_starts(u64::MAX, 0), 0);
        assert_eq!(run_starts(u64::MAX, 65), 0);
    }

    #[test]
    fn masks() {
        assert_eq!(run_mask(0, 64), u64::MAX);
        assert_eq!(run_mask(1, 64), 0);
        assert_eq!(run_mask(60, 4), 0xf << 60);
        assert_eq!(run_mask(3, 0), 0);
        assert_eq!(valid_bits(100, 1), (1 << 36) - 1);
        assert_eq!(valid_bits(100, 2), 0);
        assert_eq!(valid_bits(512, 7), u64::MAX);
    }

    /// The brute-force definition agrees with the doubling.
    #[test]
    fn starts_match_brute_force() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let free = x & (x >> 3);
            for k in 1..=64u32 {
                let want = (0..64u32)
                    .filter(|&j| j + k <= 64 && (0..k).all(|i| free >> (j + i) & 1 == 1))
                    .fold(0u64, |m, j| m | 1 << j);
                assert_eq!(run_starts(free, k), want, "free {free:#x} k {k}");
            }
        }
    }
}
