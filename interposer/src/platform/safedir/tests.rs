use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn base(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shmnet-safedir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    euid() == 0
}

#[test]
fn missing_directory_is_created_0700_but_not_its_parents() {
    let b = base("create");
    let path = b.join("shm");
    let dir = Dir::at(&path, euid()).unwrap();
    assert_eq!(mode(&path), 0o700);
    assert_eq!(dir.euid(), euid());
    assert_eq!(dir.path(), path);
    let deep = b.join("a/b/shm");
    let e = Dir::at(&deep, euid()).unwrap_err();
    assert!(e.to_string().contains("cannot be created"), "{e}");
    assert!(!b.join("a").exists());
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn existing_0755_is_accepted_and_left_alone() {
    let b = base("0755");
    let path = b.join("shm");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o755);
    Dir::at(&path, euid()).unwrap();
    assert_eq!(mode(&path), 0o755);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn world_writable_needs_the_sticky_bit() {
    let b = base("0777");
    let path = b.join("shm");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o777);
    let refusal = Dir::at(&path, euid()).unwrap_err();
    assert_eq!(refusal.problem(), Problem::Writable(0o777));
    assert_eq!(refusal.errno(), Errno::ACCESS);
    let line = refusal.to_string();
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(
        line.contains("writable by others") && line.contains("chmod 0700"),
        "{line}"
    );
    assert_eq!(mode(&path), 0o777, "never chmod-ed");
    chmod(&path, 0o770);
    assert_eq!(
        Dir::at(&path, euid()).unwrap_err().problem(),
        Problem::Writable(0o770)
    );
    chmod(&path, 0o1777);
    Dir::at(&path, euid()).unwrap();
    assert_eq!(mode(&path), 0o1777);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn symlink_and_file_are_refused() {
    let b = base("symlink");
    let real = b.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = b.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let refusal = Dir::at(&link, euid()).unwrap_err();
    assert_eq!(refusal.problem(), Problem::Symlink);
    assert_eq!(refusal.errno(), Errno::ACCESS);
    assert!(refusal.to_string().contains("is a symlink"), "{refusal}");
    // A dangling one is not followed to create its target either.
    let dangling = b.join("dangling");
    std::os::unix::fs::symlink(b.join("nowhere"), &dangling).unwrap();
    assert_eq!(
        Dir::at(&dangling, euid()).unwrap_err().problem(),
        Problem::Symlink
    );
    assert!(!b.join("nowhere").exists());
    let file = b.join("file");
    std::fs::write(&file, "x").unwrap();
    let refusal = Dir::at(&file, euid()).unwrap_err();
    assert_eq!(refusal.problem(), Problem::NotDir);
    assert_eq!(refusal.errno(), Errno::NOTDIR);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn owner_must_be_the_euid_or_root() {
    let b = base("owner");
    let path = b.join("shm");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o700);
    let me = euid();
    if me != 0 {
        // Ours, seen by another uid: refused. (Root-owned: see below.)
        let refusal = Dir::at(&path, me + 1).unwrap_err();
        assert_eq!(refusal.problem(), Problem::Owner(me));
    } else {
        // Root's directory is accepted for any uid.
        Dir::at(&path, 1000).unwrap();
        rustix::fs::chown(&path, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
        let refusal = Dir::at(&path, 0).unwrap_err();
        assert_eq!(refusal.problem(), Problem::Owner(65534));
        assert_eq!(refusal.errno(), Errno::ACCESS);
        let line = refusal.to_string();
        assert!(
            line.contains("is owned by uid 65534, not by you (uid 0) or root")
                && line.contains(&path.display().to_string()),
            "{line}"
        );
        // Nor is it chmod-ed or chown-ed back.
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o700));
    }
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn cache_reopens_a_removed_directory_and_refuses_a_foreign_one() {
    let b = base("cache");
    let path = b.join("shm");
    let cache = Cache::new();
    let me = euid();
    let locate = |_: u32| Ok(path.clone());
    let first = cache.get(me, &locate).unwrap();
    assert!(Arc::ptr_eq(&first, &cache.get(me, &locate).unwrap()));
    // Still in place: refresh keeps it.
    cache.refresh();
    assert!(Arc::ptr_eq(&first, &cache.get(me, &locate).unwrap()));
    // Removed (a /tmp cleaner): the next get opens it again.
    std::fs::remove_dir(&path).unwrap();
    assert!(Arc::ptr_eq(&first, &cache.get(me, &locate).unwrap()));
    cache.refresh();
    let second = cache.get(me, &locate).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(path.is_dir());
    // Renamed away and replaced: refresh notices too.
    std::fs::rename(&path, b.join("moved")).unwrap();
    std::fs::create_dir(&path).unwrap();
    cache.refresh();
    let third = cache.get(me, &locate).unwrap();
    assert!(!Arc::ptr_eq(&second, &third));
    if me == 0 {
        // Removed and recreated by another user: refused.
        std::fs::remove_dir(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        rustix::fs::chown(&path, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
        cache.refresh();
        assert_eq!(cache.get(me, &locate).unwrap_err(), Errno::ACCESS);
        // Fixed: looked at again only after a second.
        std::fs::remove_dir(&path).unwrap();
        assert_eq!(cache.get(me, &locate).unwrap_err(), Errno::ACCESS);
        std::thread::sleep(RETRY + Duration::from_millis(50));
        cache.get(me, &locate).unwrap();
    }
    // Another euid: another directory (one root creates is accepted).
    let other = cache.get(me + 1, &|_| Ok(b.join("other")));
    assert_eq!(other.is_ok(), me == 0);
    drop((first, second, third));
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn running_out_of_fds_is_not_remembered() {
    let b = base("emfile");
    let path = b.join("shm");
    let cache = Cache::new();
    let me = euid();
    assert_eq!(
        cache.get(me, &|_| Err(Errno::MFILE)).unwrap_err(),
        Errno::MFILE
    );
    // At once, not a second later: the process's fds, not the directory.
    cache.get(me, &|_| Ok(path.clone())).unwrap();
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn open_never_follows_a_planted_symlink() {
    let b = base("open");
    let dir = Dir::at(&b.join("shm"), euid()).unwrap();
    let target = b.join("target");
    std::fs::write(&target, "secret").unwrap();
    std::os::unix::fs::symlink(&target, b.join("shm/stats-0")).unwrap();
    assert_eq!(
        dir.open("stats-0", OFlags::RDWR, Mode::empty())
            .unwrap_err(),
        Errno::LOOP
    );
    assert_eq!(
        dir.open("stats-0", OFlags::RDWR | OFlags::CREATE, Mode::RUSR)
            .unwrap_err(),
        Errno::LOOP
    );
    // stat describes the link itself; unlink removes the link.
    let st = dir.stat("stats-0").unwrap();
    assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
    dir.unlink("stats-0").unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret");
    // Names are single components.
    for bad in ["", ".", "..", "a/b", "../target"] {
        assert_eq!(
            dir.open(bad, OFlags::RDONLY, Mode::empty()).unwrap_err(),
            Errno::INVAL
        );
    }
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn socket_paths_go_through_the_descriptor() {
    let b = base("sock");
    let path = b.join("shm");
    let dir = Dir::at(&path, euid()).unwrap();
    let name = dir.socket_path("tcp4-127.77.0.1-8080").unwrap();
    let text = name.to_str().unwrap();
    assert!(text.starts_with("/proc/self/fd/") && text.ends_with("/tcp4-127.77.0.1-8080"));
    let listener = std::os::unix::net::UnixListener::bind(&name).unwrap();
    // Renaming the path does not redirect the name.
    std::fs::rename(&path, b.join("moved")).unwrap();
    std::fs::create_dir(&path).unwrap();
    let _client = std::os::unix::net::UnixStream::connect(&name).unwrap();
    listener.accept().unwrap();
    assert!(b.join("moved/tcp4-127.77.0.1-8080").exists());
    assert_eq!(
        dir.socket_path(&"x".repeat(100)).unwrap_err(),
        Errno::NAMETOOLONG
    );
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn publish_does_not_replace() {
    let b = base("publish");
    let dir = Dir::at(&b.join("shm"), euid()).unwrap();
    for name in ["a", "b"] {
        dir.open(
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::RUSR,
        )
        .unwrap();
    }
    assert_eq!(dir.publish("a", "b").unwrap_err(), Errno::EXIST);
    dir.publish("a", "c").unwrap();
    assert!(dir.stat("a").is_err() && dir.stat("c").is_ok());
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn one_line_per_distinct_problem() {
    let seen: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    let fresh: Vec<bool> = [1, 1, 2, 1, 3, 4, 5, 2]
        .iter()
        .map(|i| first_time(&seen, format_args!("problem {i}")))
        .collect();
    assert_eq!(fresh, [true, false, true, false, true, true, false, false]);
}

/// Out of fds the descriptor is given back; the next operation opens the
/// path again, and takes it only if it is the directory verified, with an
/// owner and mode `Dir::at` accepts: one put in its place, or the same one
/// made writable by others, is ENOENT (callers then look again).
#[test]
fn a_given_back_descriptor_is_opened_again_only_for_the_same_directory() {
    let b = base("giveback");
    let path = b.join("shm");
    let dir = Dir::at(&path, euid()).unwrap();
    std::fs::write(path.join("f"), b"x").unwrap();
    assert!(dir.give_back());
    assert!(!dir.give_back(), "nothing held any more");
    assert!(dir.stat("f").is_ok(), "opened again");
    // A socket path holds the descriptor it names while it lives.
    let name = dir.socket_path("s").unwrap();
    assert!(dir.give_back());
    let _listener = std::os::unix::net::UnixListener::bind(&name).unwrap();
    drop(name);
    assert!(path.join("s").exists());
    assert!(dir.stat("s").is_ok(), "opened again");
    // The same directory made writable by others (not sticky) meanwhile:
    // refused as `Dir::at` refuses it.
    assert!(dir.give_back());
    chmod(&path, 0o777);
    assert_eq!(dir.stat("f").unwrap_err(), Errno::NOENT);
    chmod(&path, 0o700);
    assert!(dir.stat("f").is_ok(), "opened again once it is as verified");
    assert!(dir.give_back());
    std::fs::rename(&path, b.join("moved")).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert_eq!(dir.stat("f").unwrap_err(), Errno::NOENT);
    assert!(!dir.still_in_place());
    let _ = std::fs::remove_dir_all(&b);
}
