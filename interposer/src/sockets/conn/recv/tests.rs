//! `next_phase` and `End::result` on their own: no connection, no ring.

use super::*;

/// Runs `next_phase` to a phase, answering its questions (spin helps,
/// non-blocking, read recently); returns the phase and the questions in
/// the order they were asked. A question asked twice fails the test.
fn run(mut f: Facts, answers: (bool, bool, bool)) -> (Phase, Vec<Question>) {
    let mut asked = Vec::new();
    loop {
        match next_phase(&f) {
            Choice::Go(phase) => return (phase, asked),
            Choice::Ask(q) => {
                assert!(!asked.contains(&q), "{q:?} asked twice for {f:?}");
                asked.push(q);
                match q {
                    Question::SpinHelps => f.spin_helps = Some(answers.0),
                    Question::Nonblocking => f.nonblocking = Some(answers.1),
                    Question::ReadRecently => f.read_recently = Some(answers.2),
                }
            }
        }
    }
}

use Question::{Nonblocking, ReadRecently, SpinHelps};

/// Answers: spinning helps, the fd is blocking, the last read was recent.
const YES: (bool, bool, bool) = (true, false, true);

/// A read that got `total` bytes of `want`.
fn data(total: usize, want: usize) -> Facts {
    Facts {
        got_data: true,
        total,
        want,
        ..Facts::default()
    }
}

/// A blocking, lazy consumer keeping up with a stream read a small write.
fn streaming() -> Facts {
    Facts {
        streaming: true,
        lazy: true,
        spin_budget: true,
        ..data(100, 4096)
    }
}

/// A blocking, lazy reader with a spin budget found the ring empty.
fn empty() -> Facts {
    Facts {
        blocking: true,
        lazy: true,
        spin_budget: true,
        want: 4096,
        ..Facts::default()
    }
}

#[test]
fn a_read_returns_what_it_got() {
    assert_eq!(run(data(100, 4096), YES), (Phase::Done, vec![]));
    assert_eq!(run(data(4096, 4096), YES), (Phase::Done, vec![]));
}

#[test]
fn waitall_reads_until_the_buffer_is_full() {
    let f = Facts {
        waitall: true,
        ..data(100, 4096)
    };
    assert_eq!(run(f, YES), (Phase::Read, vec![]));
    let f = Facts {
        waitall: true,
        ..data(4096, 4096)
    };
    assert_eq!(run(f, YES), (Phase::Done, vec![]));
}

#[test]
fn a_streaming_consumer_gathers_once() {
    assert_eq!(
        run(streaming(), YES),
        (Phase::Gather, vec![SpinHelps, Nonblocking])
    );
    let f = Facts {
        gathered: true,
        ..streaming()
    };
    assert_eq!(run(f, YES), (Phase::Done, vec![]));
}

#[test]
fn gathering_needs_every_condition() {
    let no_gather = |f: Facts, asked: Vec<Question>| {
        assert_eq!(run(f, YES), (Phase::Done, asked), "{f:?}");
    };
    no_gather(
        Facts {
            streaming: false,
            ..streaming()
        },
        vec![],
    );
    no_gather(
        Facts {
            lazy: false,
            ..streaming()
        },
        vec![],
    );
    no_gather(
        Facts {
            total: GATHER_BELOW,
            want: 1 << 20,
            ..streaming()
        },
        vec![],
    );
    no_gather(
        Facts {
            total: 4096,
            ..streaming()
        },
        vec![],
    );
    // MSG_DONTWAIT: the fd's flag is never looked up.
    no_gather(
        Facts {
            dontwait: true,
            ..streaming()
        },
        vec![SpinHelps],
    );
    // MSG_WAITALL reads on instead.
    let f = Facts {
        waitall: true,
        ..streaming()
    };
    assert_eq!(run(f, YES), (Phase::Read, vec![]));
    // Spinning would not help; a non-blocking fd.
    assert_eq!(
        run(streaming(), (false, false, true)),
        (Phase::Done, vec![SpinHelps])
    );
    assert_eq!(
        run(streaming(), (true, true, true)),
        (Phase::Done, vec![SpinHelps, Nonblocking])
    );
}

#[test]
fn an_empty_ring_after_data_or_a_hang_up_ends_the_call() {
    let f = Facts {
        total: 10,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Done, vec![]));
    let f = Facts {
        hung_up: true,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Done, vec![]));
    // MSG_WAITALL waits for the rest.
    let f = Facts {
        total: 10,
        waitall: true,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Sleep, vec![]));
}

#[test]
fn a_reader_that_wrote_spins_once() {
    let f = Facts {
        replied: true,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Spin, vec![SpinHelps]));
    let f = Facts {
        replied: true,
        spun: true,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Sleep, vec![]));
    // No budget, a non-blocking call: no spin, nothing asked.
    let f = Facts {
        replied: true,
        spin_budget: false,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Sleep, vec![]));
    let f = Facts {
        replied: true,
        blocking: false,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Settle, vec![]));
    // Spinning would not help: sleep.
    assert_eq!(
        run(f_replied(), (false, false, true)),
        (Phase::Sleep, vec![SpinHelps])
    );
}

fn f_replied() -> Facts {
    Facts {
        replied: true,
        ..empty()
    }
}

#[test]
fn a_consumer_of_large_writes_watches_in_mid_stream() {
    let f = Facts {
        bulk: true,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Watch, vec![ReadRecently, SpinHelps]));
    // Not in mid-stream: spinning is not even asked about.
    assert_eq!(
        run(f, (true, false, false)),
        (Phase::Sleep, vec![ReadRecently])
    );
    let f = Facts {
        bulk: true,
        spun: true,
        ..empty()
    };
    assert_eq!(run(f, YES), (Phase::Sleep, vec![]));
    // Asked once whether spinning helps, for the spin and the watch.
    let f = Facts {
        bulk: true,
        replied: true,
        ..empty()
    };
    assert_eq!(
        run(f, (false, false, true)),
        (Phase::Sleep, vec![SpinHelps, ReadRecently])
    );
}

#[test]
fn lazy_blocking_readers_sleep_and_the_others_settle() {
    assert_eq!(run(empty(), YES), (Phase::Sleep, vec![]));
    let eager = Facts {
        lazy: false,
        ..empty()
    };
    assert_eq!(run(eager, YES), (Phase::Settle, vec![]));
    let nonblocking = Facts {
        blocking: false,
        ..empty()
    };
    assert_eq!(run(nonblocking, YES), (Phase::Settle, vec![]));
}

/// Every combination of the flags: the choice ends, asks nothing twice,
/// and keeps the rules that do not depend on the heuristics.
#[test]
fn every_combination_keeps_the_rules() {
    for bits in 0u32..(1 << 14) {
        let b = |i: u32| bits & (1 << i) != 0;
        let total = if b(0) {
            0
        } else if b(1) {
            100
        } else {
            GATHER_BELOW
        };
        let f = Facts {
            got_data: b(2),
            total: if b(2) { total.max(1) } else { total },
            want: if b(13) { total.max(1) } else { 4096 },
            waitall: b(3),
            dontwait: b(4),
            gathered: b(5),
            spun: b(6),
            hung_up: b(7),
            streaming: b(8),
            lazy: b(9),
            blocking: b(10),
            spin_budget: b(11),
            replied: b(12),
            bulk: !b(12),
            ..Facts::default()
        };
        for answers in [(false, false, false), YES, (true, true, true)] {
            let (phase, asked) = run(f, answers);
            if f.dontwait || f.waitall || f.gathered || !f.got_data {
                assert_ne!(phase, Phase::Gather, "{f:?}");
            }
            if f.dontwait {
                assert!(!asked.contains(&Nonblocking), "{f:?}");
            }
            if !f.blocking || f.spun || !f.spin_budget || f.got_data {
                assert!(!matches!(phase, Phase::Spin | Phase::Watch), "{f:?}");
            }
            if f.got_data {
                if done_after_data(f.total, f.want, f.waitall, f.streaming, f.gathered) {
                    assert_eq!(phase, Phase::Done, "the shortcut disagrees: {f:?}");
                }
                assert!(!matches!(phase, Phase::Settle | Phase::Sleep), "{f:?}");
                if !f.waitall && phase != Phase::Gather {
                    assert_eq!(phase, Phase::Done, "{f:?}");
                }
            } else {
                assert_ne!(phase, Phase::Read, "{f:?}");
                if f.hung_up || (f.total > 0 && !f.waitall) {
                    assert_eq!((phase, asked.len()), (Phase::Done, 0), "{f:?}");
                }
            }
            if phase == Phase::Sleep {
                assert!(f.blocking && f.lazy, "{f:?}");
            }
        }
    }
}

#[test]
fn the_partial_count_rule() {
    assert_eq!(End::Read.result(0), Ok(0));
    assert_eq!(End::Read.result(7), Ok(7));
    for e in [Errno::AGAIN, Errno::INTR, Errno::CONNRESET, Errno::IO] {
        assert_eq!(End::Short(e).result(0), Err(e));
        assert_eq!(End::Short(e).result(7), Ok(7));
        assert_eq!(End::Fail(e).result(0), Err(e));
        assert_eq!(End::Fail(e).result(7), Err(e));
    }
}

#[test]
fn reads_go_on_from_where_they_stopped() {
    let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
    let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    let mut lens = |skip| {
        with_rest_mut(&mut bufs, skip, |r| {
            r.iter().map(|s| s.len()).collect::<Vec<_>>()
        })
    };
    assert_eq!(lens(0), [4, 4]);
    assert_eq!(lens(3), [1, 4]);
    assert_eq!(lens(4), [4]);
    assert_eq!(lens(6), [2]);
    assert_eq!(lens(8), Vec::<usize>::new());
}

/// The shortcut (`done_after_data`) against `next_phase` at the edges of
/// its rule (sizes around `GATHER_BELOW` and the buffer's), with every
/// flag and every answer: where it says done, `next_phase` says `Done`;
/// where it does not, some case exists where `next_phase` would not.
#[test]
fn the_shortcut_agrees_with_next_phase_at_every_edge() {
    let totals = [
        1,
        2,
        100,
        GATHER_BELOW - 1,
        GATHER_BELOW,
        GATHER_BELOW + 1,
        70000,
    ];
    let wants = [
        1,
        2,
        100,
        101,
        GATHER_BELOW - 1,
        GATHER_BELOW,
        GATHER_BELOW + 1,
        70000,
        usize::MAX,
    ];
    let answers = [None, Some(false), Some(true)];
    for total in totals {
        for want in wants.into_iter().filter(|&w| w >= total) {
            for bits in 0u32..(1 << 10) {
                let b = |i: u32| bits & (1 << i) != 0;
                let f = Facts {
                    got_data: true,
                    total,
                    want,
                    waitall: b(0),
                    dontwait: b(1),
                    gathered: b(2),
                    spun: b(3),
                    hung_up: b(4),
                    streaming: b(5),
                    lazy: b(6),
                    blocking: b(7),
                    spin_budget: b(8),
                    replied: b(9),
                    bulk: !b(9),
                    ..Facts::default()
                };
                if !done_after_data(total, want, f.waitall, f.streaming, f.gathered) {
                    continue;
                }
                for spin_helps in answers {
                    for nonblocking in answers {
                        for read_recently in answers {
                            let f = Facts {
                                spin_helps,
                                nonblocking,
                                read_recently,
                                ..f
                            };
                            assert_eq!(next_phase(&f), Choice::Go(Phase::Done), "{f:?}");
                        }
                    }
                }
            }
            for bits in 0u32..8 {
                let (waitall, streaming, gathered) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
                if done_after_data(total, want, waitall, streaming, gathered) {
                    continue;
                }
                let f = Facts {
                    got_data: true,
                    total,
                    want,
                    waitall,
                    streaming,
                    gathered,
                    lazy: true,
                    spin_helps: Some(true),
                    nonblocking: Some(false),
                    ..Facts::default()
                };
                assert_ne!(next_phase(&f), Choice::Go(Phase::Done), "{f:?}");
            }
        }
    }
}
