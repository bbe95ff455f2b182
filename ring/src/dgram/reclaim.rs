//! Slots: granted to a sender, closed when it is gone, reclaimed once
//! drained.
//!
//! The reclaim rule: a slot is closed only when its sender can no longer
//! write (its link hung up, which the kernel reports only after the
//! process died or closed it, or it said CLOSE). Its published datagrams
//! are still delivered, as the kernel delivers a dead sender's queued
//! datagrams. Once its ring is empty, every partition whose owner is its
//! tag (a run it claimed and never published, or claimed in part) is
//! freed, its in-flight charge given back, and its generation bumped, so a
//! new sender of the slot has a new tag. Nothing is ever taken back after a
//! timeout: a stopped sender that resumes finds its partitions still its
//! own, and no one else's datagram can be torn by it.

use super::alloc;
use super::layout::*;
use super::recv::Receiver;
use crate::sync::Ordering;

/// A slot granted to a sender: sent to it with the memfd (REG_OK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    /// The slot.
    pub slot: u32,
    /// Its generation (part of the owner tag).
    pub gen: u32,
}

impl Receiver {
    /// Grants a free slot, or None when all Q are in use (or closing).
    pub fn open_slot(&mut self) -> Option<SlotGrant> {
        let s = self.slots.iter().position(|s| s.state == SLOT_FREE)? as u32;
        let sl = self.sh.slot(s);
        for w in [
            &sl.sender.head,
            &sl.sender.pid,
            &sl.sender.closed,
            &sl.sender.inflight,
            &sl.sender.drops,
            &sl.receiver.tail,
        ] {
            w.store(0, Ordering::Relaxed);
        }
        let st = &mut self.slots[s as usize];
        st.tail = 0;
        st.quarantined = false;
        st.state = SLOT_OPEN;
        sl.receiver.gen.store(st.gen, Ordering::Relaxed);
        // SYNC POINT: Release: the zeroed lines happen before a sender
        // that learns of the grant through this word; across processes the
        // grant travels on the link (a system call), which orders them too.
        sl.receiver.state.store(SLOT_OPEN, Ordering::Release);
        Some(SlotGrant {
            slot: s,
            gen: st.gen,
        })
    }

    /// Closes slot `slot`: its sender is gone (dead or said CLOSE). Its
    /// published datagrams are still delivered; the slot is reclaimed once
    /// they are (at once if there are none, or its ring was corrupt).
    pub fn close_slot(&mut self, slot: u32) {
        let Some(st) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if st.state != SLOT_OPEN {
            return;
        }
        st.state = SLOT_CLOSING;
        let (tail, quarantined) = (st.tail, st.quarantined);
        let sl = self.sh.slot(slot);
        sl.receiver.state.store(SLOT_CLOSING, Ordering::Relaxed);
        if quarantined || sl.sender.head.load(Ordering::Acquire) == tail {
            self.reclaim(slot);
        } else {
            // A sender that died between its publish and its ready bit
            // would otherwise leave its datagrams (and the slot) stranded.
            self.sh
                .ready((slot / 64) as usize)
                .fetch_or(1 << (slot % 64), Ordering::Relaxed);
        }
    }

    /// How many slots are granted or closing.
    pub fn slots_in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.state != SLOT_FREE).count()
    }

    /// Frees what slot `s`'s gone sender left: every partition owned by
    /// its tag, its in-flight charge; bumps its generation.
    pub(crate) fn reclaim(&mut self, s: u32) {
        // Delivered runs of this slot still carry its tag: free them first,
        // or the sweep below would free them and a later flush free them
        // again under a new owner.
        self.flush();
        let sh = self.sh.clone();
        let st = self.slots[s as usize];
        let t = tag(s, st.gen);
        let mut freed = 0u64;
        for (g, grp) in sh.geo().groups().iter().enumerate() {
            for i in 0..grp.partitions {
                // Relaxed: the sender is gone (its writes happened before
                // the hang-up that told us); we only need the value.
                if sh.dir(g, i).owner.load(Ordering::Relaxed) == t {
                    alloc::free_run(&sh, g, i, 1);
                    freed += 1;
                }
            }
        }
        let line = &sh.slot(s).sender;
        let inflight = line.inflight.load(Ordering::Relaxed);
        sh.uncharge(inflight.min(MAX_DATAGRAM + CHARGE_OVERHEAD));
        line.inflight.store(0, Ordering::Relaxed);
        sh.ready((s / 64) as usize)
            .fetch_and(!(1u64 << (s % 64)), Ordering::Relaxed);
        let st = &mut self.slots[s as usize];
        st.gen = (st.gen + 1) & 0xffff;
        st.state = SLOT_FREE;
        st.quarantined = false;
        let r = &sh.slot(s).receiver;
        r.gen.store(st.gen, Ordering::Relaxed);
        r.state.store(SLOT_FREE, Ordering::Relaxed);
        self.stats.reclaimed += 1;
        self.stats.reclaimed_partitions += freed;
    }
}

impl Receiver {
    /// Partitions whose owner word is not 0 (claimed by a sender, queued,
    /// or left by one not yet reclaimed), after freeing those delivered:
    /// what a test of reclaim counts.
    pub fn partitions_in_use(&mut self) -> u32 {
        self.flush();
        let sh = &self.sh;
        let mut n = 0;
        for (g, grp) in sh.geo().groups().iter().enumerate() {
            for i in 0..grp.partitions {
                n += u32::from(sh.dir(g, i).owner.load(Ordering::Relaxed) != 0);
            }
        }
        n
    }
}
