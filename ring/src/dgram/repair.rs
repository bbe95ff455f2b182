//! Repair of the allocator's words after a peer wrote into them.
//!
//! Every sender of a target can write the directory and the hint bitmaps
//! (one mapping, one uid). An honest sender only ever stores its own tag
//! into a free entry and sets hint bits of a run it owns; a hostile or
//! broken one can leave owner tags no slot has, or hint bits busy over
//! free partitions, and senders would then find the target full for
//! good. So the receiver repairs: a pass frees every owner word whose tag
//! matches no live slot and clears the hint bits of free partitions. A
//! pass starts when senders report a drop for want of room, when a slot
//! is reclaimed, and once per idle period; it visits one hint word (at
//! most 64 entries) per receive or empty look, so no call does more than
//! that, whatever a peer writes.

use super::layout::*;
use super::recv::Receiver;
use crate::sync::Ordering;

impl Receiver {
    /// Starts a repair pass over every hint word (or restarts the one
    /// running).
    pub(crate) fn start_repair(&mut self) {
        let geo = self.sh.geo();
        self.repair.left = (0..geo.group_count()).map(|g| geo.hint_words(g)).sum();
    }

    /// One step of the running pass; starts one when senders dropped for
    /// want of room since the last look.
    pub(crate) fn repair_step(&mut self) {
        // Relaxed: a count that only says "look"; the step's own loads
        // and CASes decide what is repaired.
        let drops = self.sh.receiver_line().room_drops.load(Ordering::Relaxed);
        if drops != self.repair.room_drops {
            self.repair.room_drops = drops;
            if self.repair.left == 0 {
                self.start_repair();
            }
        }
        if self.repair.left == 0 {
            return;
        }
        self.repair.left -= 1;
        let geo = *self.sh.geo();
        let (mut g, mut w) = self.repair.at;
        if g >= geo.group_count() || w >= geo.hint_words(g) {
            (g, w) = (0, 0);
        }
        self.repair_word(g, w);
        self.repair.at = if w + 1 < geo.hint_words(g) {
            (g, w + 1)
        } else {
            ((g + 1) % geo.group_count(), 0)
        };
    }

    /// True when `t` is the tag of a slot granted or closing now.
    fn live_tag(&self, t: u32) -> bool {
        let s = (t >> 16).wrapping_sub(1);
        self.slots
            .get(s as usize)
            .is_some_and(|st| st.state != SLOT_FREE && tag(s, st.gen) == t)
    }

    /// Frees group `g`'s entries of hint word `w` whose owner is no live
    /// slot's tag, then clears the word's bits that were busy over free
    /// partitions.
    fn repair_word(&mut self, g: usize, w: usize) {
        let sh = self.sh.clone();
        let Some(grp) = sh.geo().group(g).copied() else {
            return;
        };
        let lo = w as u32 * 64;
        let hi = (lo + 64).min(grp.partitions);
        let hint = sh.hint(g, w);
        // SYNC POINT: Acquire pairs with a claimant's Release `fetch_or`
        // (alloc.rs): a busy bit we see set by an honest sender makes its
        // owner CAS visible to the loads below, so we never see its
        // partition free and clear its bit. (The receiver's frees are ours,
        // whole before a repair step, so no honest run is freed under our
        // feet.) Only a bit
        // a peer set over a free partition that a sender claims between
        // our loads can be cleared wrongly: that costs a failed CAS.
        let busy = hint.load(Ordering::Acquire);
        let mut free = 0u64;
        for i in lo..hi {
            let owner = &sh.dir(g, i).owner;
            let o = owner.load(Ordering::Relaxed);
            let bit = 1u64 << (i - lo);
            if o == 0 {
                free |= bit;
            } else if !self.live_tag(o) {
                // A CAS, not a store: if the peer stored 0 meanwhile and
                // an honest sender claimed the entry, it keeps it.
                // SYNC POINT (a): Release, as every free: the next
                // claimant's Acquire CAS is ordered after this (we read
                // nothing of the partition, so nothing more is needed).
                if owner
                    .compare_exchange(o, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    free |= bit;
                    self.stats.repaired_owners += 1;
                }
            }
        }
        // Only clears, and only bits seen busy: never a bit wrongly busy.
        let clear = busy & free;
        if clear != 0 {
            hint.fetch_and(!clear, Ordering::Relaxed);
            self.stats.repaired_hints += 1;
        }
    }
}
