//! The spin of poll, select and epoll_wait over emulated UDP sockets
//! (decision 42): while the wait spins, each socket it covers that awaits
//! an answer or whose consumer spins pay (`Datagram::wait_spin_wanted`)
//! has its doorbell flag down, so its senders publish without a system
//! call, and the spin looks at its queue; when the spin ends, found or
//! not, readiness is made exact again (the flag up, a look at every head,
//! the eventfd written for what came), so the kernel's answer that
//! follows, and any other waiter's, is exact. A datagram found does not
//! answer by itself: the wait asks the kernel, which reports the socket
//! (its eventfd is written), so what is reported is the kernel's.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sockets::socket::Socket;

/// The datagram sockets a wait covers for reading, and the spin over them.
pub(super) struct DatagramSpin {
    sockets: Vec<Arc<Socket>>,
    /// Those whose flag the spin took down, and whether each spins as a
    /// consumer (`Datagram::wait_spin_begin`).
    lowered: Vec<(Arc<Socket>, bool)>,
    started: Option<Instant>,
    looks: u32,
}

impl DatagramSpin {
    pub(super) fn new(sockets: Vec<Arc<Socket>>) -> DatagramSpin {
        DatagramSpin {
            sockets,
            lowered: Vec::new(),
            started: None,
            looks: 0,
        }
    }

    /// Whether one of them wants the wait to spin.
    pub(super) fn wanted(&self) -> bool {
        self.sockets
            .iter()
            .any(|s| s.datagram().is_some_and(|d| d.wait_spin_wanted()))
    }

    /// A look while spinning (the first takes the flags down): true when
    /// one has a datagram.
    pub(super) fn ready(&mut self) -> bool {
        if self.sockets.is_empty() {
            return false;
        }
        if self.started.is_none() {
            self.started = Some(Instant::now());
            for s in &self.sockets {
                if let Some(consumer) = s.datagram().and_then(|d| d.wait_spin_begin()) {
                    self.lowered.push((s.clone(), consumer));
                }
            }
        }
        self.looks = self.looks.wrapping_add(1);
        let kernel = self.looks.is_multiple_of(64);
        self.lowered
            .iter()
            .any(|(s, _)| s.datagram().is_some_and(|d| d.wait_spin_ready(kernel)))
    }

    /// The spin ended: every flag it took down is up again, readiness
    /// exact (see the module docs).
    pub(super) fn over(&mut self) {
        let Some(start) = self.started.take() else {
            return;
        };
        let waited = start.elapsed();
        let budget = crate::platform::config::get()
            .map_or(Duration::ZERO, |c| Duration::from_micros(c.spin_us.into()));
        for (s, consumer) in self.lowered.drain(..) {
            if let Some(d) = s.datagram() {
                d.wait_spin_end(consumer, waited, budget);
            }
        }
    }
}

impl Drop for DatagramSpin {
    /// Never leaves a flag down (a wait that ended some other way).
    fn drop(&mut self) {
        self.over();
    }
}
