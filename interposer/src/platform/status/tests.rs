use super::*;

#[test]
fn layout_fits_the_file() {
    assert_eq!(FILE_BYTES, 131_072);
    const { assert!(E_OPENED_S + 8 <= ENTRY_BYTES) };
    const { assert!(E_SENT / 64 != E_RECEIVED / 64) };
    assert_eq!(Table::entry_at(ENTRIES + 5), Table::entry_at(ENTRIES - 1));
}

#[test]
fn pid_is_cached_per_fork_generation() {
    let pid = std::process::id();
    assert_eq!(my_pid(), pid);
    assert_eq!(my_pid(), pid);
    assert!(my_start(true).is_some_and(|s| s > 0));
    assert_eq!(my_start(false), my_start(true));
}
