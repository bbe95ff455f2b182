// Tests map the counters file by hand.
#![allow(unsafe_code)]

use super::*;
use crate::platform::safedir::Dir;
use std::path::PathBuf;
use std::time::Instant;

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn my_pid() -> u32 {
    std::process::id()
}

fn dir(name: &str) -> (PathBuf, Dir) {
    let base = std::env::temp_dir().join(format!("shmnet-stats-{name}-{}", my_pid()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = Dir::at(&base, euid()).unwrap();
    (base, dir)
}

fn leak(table: Table) -> &'static Table {
    Box::leak(Box::new(table))
}

fn counters(row: usize, t: &Table) -> Vec<u64> {
    (0..COUNTERS)
        .map(|i| t.counter(row, i).unwrap().load(Ordering::Relaxed))
        .collect()
}

fn pid_of(row: usize, t: &Table) -> u32 {
    t.pid_word(row).unwrap().load(Ordering::Relaxed)
}

/// A pid that is not running (a child that exited and was reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!alive(pid));
    pid
}

#[test]
fn layout_is_as_documented() {
    assert_eq!(FILE_BYTES, 33088);
    assert_eq!(Table::row_at(RETIRED), 64);
    assert_eq!(Table::row_at(UNATTRIBUTED), 192);
    assert_eq!(Table::row_at(FIRST_SLOT), 320);
    assert_eq!(Table::row_at(FIRST_SLOT + 255), 320 + 255 * 128);
    assert_eq!(
        NAMES[Outcome::Dir as usize],
        "fallback_dir",
        "connect outcomes come first, in enum order"
    );
    assert_eq!(NAMES[DROPPED_HANDSHAKES], "dropped_handshakes");
}

#[test]
fn created_once_then_shared() {
    let (base, dir) = dir("create");
    let a = Table::open(&dir).unwrap();
    let b = Table::open(&dir).unwrap();
    let path = base.join(format!("stats-{}", euid()));
    let meta = std::fs::symlink_metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.len(), meta.mode() & 0o7777),
        (FILE_BYTES as u64, 0o600)
    );
    let names: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [format!("stats-{}", euid())],
        "no temporary file left"
    );
    a.add(UNATTRIBUTED, 3, 5);
    assert_eq!(b.sum()[3], 5);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"SHMNETC1");
    assert_eq!(
        u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
        VERSION
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// A file made before `fallback_no_gateway` (its header says 9 counters;
/// the word is a reserved zero) is used as it is; one saying 15 is not.
#[test]
fn files_of_nine_counters_are_used_and_count_no_gateway() {
    let (base, dir) = dir("nine");
    let path = base.join(format!("stats-{}", euid()));
    let made = Table::open(&dir).unwrap();
    made.u32_at(H_COUNTERS).unwrap().store(9, Ordering::Relaxed);
    let t = leak(Table::open(&dir).unwrap());
    t.add(UNATTRIBUTED, Outcome::NoGateway as usize, 2);
    let bytes = std::fs::read(&path).unwrap();
    let word = 192 + 16 + 8 * 9;
    assert_eq!(
        u64::from_ne_bytes(bytes[word..word + 8].try_into().unwrap()),
        2
    );
    assert_eq!(NAMES[Outcome::NoGateway as usize], "fallback_no_gateway");
    made.u32_at(H_COUNTERS)
        .unwrap()
        .store(15, Ordering::Relaxed);
    assert_eq!(
        Table::open(&dir).err().map(|e| e.problem),
        Some(TableProblem::Header)
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// A new file's header says 9 counters (what a library from before
/// `fallback_no_gateway` requires), and its tenth word counts all the same.
#[test]
fn new_files_say_nine_counters_for_older_libraries() {
    let (base, dir) = dir("header9");
    let path = base.join(format!("stats-{}", euid()));
    let t = leak(Table::open(&dir).unwrap());
    t.add(UNATTRIBUTED, Outcome::NoGateway as usize, 3);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_ne_bytes(bytes[24..28].try_into().unwrap()), 9);
    let word = 192 + 16 + 8 * 9;
    assert_eq!(
        u64::from_ne_bytes(bytes[word..word + 8].try_into().unwrap()),
        3
    );
    // Headers of 10 (made between issue 17 and this) to 14 are used too.
    for n in [10, 14] {
        t.u32_at(H_COUNTERS).unwrap().store(n, Ordering::Relaxed);
        assert!(Table::open(&dir).is_ok(), "{n}");
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn foreign_files_are_refused() {
    let (base, dir) = dir("foreign");
    let path = base.join(format!("stats-{}", euid()));
    let problem = |dir: &Dir| Table::open(dir).err().map(|e| e.problem);
    // An old-format text file.
    std::fs::write(&path, "shm=1 fallback_no_listener=0\n").unwrap();
    assert_eq!(problem(&dir), Some(TableProblem::Size(29)));
    // The right size, no header.
    std::fs::write(&path, vec![0u8; FILE_BYTES]).unwrap();
    assert_eq!(problem(&dir), Some(TableProblem::Header));
    // Writable by others.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(
        problem(&dir),
        Some(TableProblem::NotOurs { mode: 0o666, .. })
    ));
    // A symlink planted in the directory is not followed.
    std::fs::remove_file(&path).unwrap();
    let target = base.with_extension("target");
    std::fs::write(&target, "x").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let e = Table::open(&dir).unwrap_err();
    assert_eq!(e.problem, TableProblem::Symlink);
    assert!(e.to_string().contains("is a symlink"), "{e}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
    std::fs::remove_file(&path).unwrap();
    if euid() == 0 {
        let t = Table::open(&dir).unwrap();
        drop(t);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert!(matches!(
            problem(&dir),
            Some(TableProblem::NotOurs { uid: 65534, .. })
        ));
    }
    let _ = std::fs::remove_file(&target);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn dead_process_slot_is_folded_into_retired() {
    let (base, dir) = dir("dead");
    let t = Table::open(&dir).unwrap();
    let dead = dead_pid();
    let row = t.claim_from(7, dead, 123);
    assert_eq!(row, FIRST_SLOT + 7);
    t.add(row, 0, 5);
    t.add(row, ACCEPTED_SHM, 2);
    let before = t.sum();
    let me = my_pid();
    let mine = t.claim_from(7, me, proc_start(me).unwrap());
    assert_eq!(mine, row, "the dead process's slot is reused");
    assert_eq!(pid_of(row, &t), me);
    assert_eq!(counters(row, &t), vec![0; COUNTERS]);
    assert_eq!(counters(RETIRED, &t)[0], 5);
    assert_eq!(counters(RETIRED, &t)[ACCEPTED_SHM], 2);
    assert_eq!(t.sum(), before, "nothing lost, nothing doubled");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn live_slots_are_kept_and_reused_pids_are_not() {
    let (base, dir) = dir("live");
    let t = Table::open(&dir).unwrap();
    let me = my_pid();
    let my_start = proc_start(me).unwrap();
    // Our own live process owns slot 20: the next claim goes past it.
    assert_eq!(t.claim_from(20, me, my_start), FIRST_SLOT + 20);
    t.add(FIRST_SLOT + 20, 1, 4);
    assert_eq!(t.claim_from(20, me, my_start), FIRST_SLOT + 21);
    // A slot recorded for our pid with another start time belonged to
    // an earlier process with this pid: it is taken over.
    let row = t.claim_from(40, me, my_start.wrapping_add(1));
    t.add(row, 2, 9);
    assert_eq!(t.claim_from(40, me, my_start), row);
    assert_eq!(counters(RETIRED, &t)[2], 9);
    assert_eq!(counters(FIRST_SLOT + 20, &t)[1], 4);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn full_probe_window_counts_unattributed() {
    let (base, dir) = dir("full");
    let t = Table::open(&dir).unwrap();
    let me = my_pid();
    let my_start = proc_start(me).unwrap();
    for k in 0..PROBES {
        assert_eq!(
            t.claim_from(250, me, my_start),
            FIRST_SLOT + (250 + k) % SLOTS
        );
    }
    assert_eq!(t.claim_from(250, me, my_start), UNATTRIBUTED);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn scribbled_pid_words_never_break_a_claim() {
    let (base, dir) = dir("scribble");
    let t = Table::open(&dir).unwrap();
    let words = [u32::MAX, CLAIMING, 1, PID_MASK, 0x7FFF_0000, CLAIMING | 1];
    for (k, w) in words.iter().enumerate() {
        t.pid_word(FIRST_SLOT + 100 + k)
            .unwrap()
            .store(*w, Ordering::Relaxed);
        t.start_word(FIRST_SLOT + 100 + k)
            .unwrap()
            .store(u64::MAX, Ordering::Relaxed);
    }
    let row = t.claim_from(100, my_pid(), 1);
    assert!((FIRST_SLOT..ROWS).contains(&row) || row == UNATTRIBUTED);
    // Dead (u32::MAX: pid 2^31-1 with the claim bit) is taken first.
    assert_eq!(row, FIRST_SLOT + 100);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn exact_under_concurrency() {
    let (base, dir) = dir("exact");
    let t = leak(Table::open(&dir).unwrap());
    let c = Counters::new(|| 0);
    let start = std::sync::Barrier::new(32);
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                start.wait();
                for _ in 0..1000 {
                    c.count(0, &|| Some(t));
                }
            });
        }
    });
    assert_eq!(c.process().totals()[0], 32_000);
    assert_eq!(t.sum()[0], 32_000);
    let row = c.process().place.load(Ordering::Relaxed) as usize;
    assert!(row >= FIRST_SLOT);
    assert_eq!(pid_of(row, t), my_pid());
    assert_eq!(counters(row, t)[0], 32_000);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn counts_wait_in_memory_until_the_file_is_there() {
    let (base, dir) = dir("pending");
    let c = Counters::new(|| 0);
    for _ in 0..5 {
        c.count(ACCEPTED_SHM, &|| None);
    }
    assert_eq!(c.process().totals()[ACCEPTED_SHM], 5);
    let t = leak(Table::open(&dir).unwrap());
    c.count(ACCEPTED_SHM, &|| Some(t));
    assert_eq!(t.sum()[ACCEPTED_SHM], 6);
    c.count(COUNTERS, &|| Some(t)); // out of range: ignored
    assert_eq!(t.sum().iter().sum::<u64>(), 6);
    let _ = std::fs::remove_dir_all(&base);
}

static GENERATION: AtomicU32 = AtomicU32::new(0);

#[test]
fn forked_child_counts_in_its_own_slot() {
    let (base, dir) = dir("fork");
    let t = leak(Table::open(&dir).unwrap());
    let c = Counters::new(|| GENERATION.load(Ordering::Relaxed));
    for _ in 0..3 {
        c.count(0, &|| Some(t));
    }
    let parent_row = c.process().place.load(Ordering::Relaxed) as usize;
    // SAFETY: the child only does atomics, small allocations and raw
    // syscalls, then _exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        GENERATION.fetch_add(1, Ordering::Relaxed); // the atfork handler's job
        c.count(0, &|| Some(t));
        c.count(0, &|| Some(t));
        // SAFETY: ends the forked child without running the parent's
        // destructors or test harness.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(status, 0);
    assert_eq!(counters(parent_row, t)[0], 3);
    let child_rows: Vec<usize> = (FIRST_SLOT..ROWS)
        .filter(|&r| pid_of(r, t) == child as u32)
        .collect();
    assert_eq!(child_rows.len(), 1);
    assert_eq!(counters(child_rows[0], t)[0], 2);
    assert_eq!(t.sum()[0], 5);
    // The parent, after the fork (generation bumped there too), keeps
    // its slot.
    GENERATION.fetch_add(1, Ordering::Relaxed);
    c.count(0, &|| Some(t));
    assert_eq!(counters(parent_row, t)[0], 4);
    GENERATION.fetch_sub(1, Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn parses_proc_stat() {
    let line = b"42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1 2 3";
    assert_eq!(parse_start(line), Some(987654));
    assert_eq!(parse_start(b"42 (x) S 1"), None);
    assert!(proc_start(my_pid()).is_some_and(|s| s > 0));
}

#[test]
fn a_count_costs_nanoseconds() {
    let (base, dir) = dir("cost");
    let t = leak(Table::open(&dir).unwrap());
    let c = Counters::new(|| 0);
    c.count(0, &|| Some(t));
    let n = 1_000_000u32;
    let began = Instant::now();
    for _ in 0..n {
        c.count(0, &|| Some(t));
    }
    let per = began.elapsed() / n;
    eprintln!("one count: {per:?}");
    assert!(per.as_nanos() < 1000, "{per:?} per count");
    let _ = std::fs::remove_dir_all(&base);
}
