//! Test hosts: other users, network namespaces, private mount namespaces,
//! and the kernel's view from inside a namespace (interposer/tests/
//! isolation.rs, docs/security.md).
//!
//! Everything made here is removed by a `Drop` guard, also when the test
//! panics, and named `shmnet-t<pid>-<n>` so tests (and test binaries) can
//! run in parallel. Users and namespaces need root: `skip_unless_root`
//! prints a note and tells the test to return when it is not.
//!
//! Preloading through a wrapper program (`ip netns exec`, `unshare`): the
//! wrapper is *not* preloaded; the inner program is started as
//! `env LD_PRELOAD=<lib> program ...`, so only it carries the library
//! (SHMNET_* variables set on the returned `Command` reach it through the
//! wrapper, which ignores them).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{lib, python, KernelSocket, PRELUDE};

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    euid() == 0
}

/// True (after printing a note on stderr) when `test` cannot run because
/// it needs root for users or namespaces; CI runs as root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped: needs root (users, namespaces, mounts)");
    true
}

/// `shmnet-t<pid>-<n>`, unique in this process and across processes.
fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("shmnet-t{}-{n}", std::process::id())
}

/// Runs `program args`, panicking with its output unless it succeeds.
fn must(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes inherited SHMNET_* and LD_PRELOAD from `cmd`'s environment.
fn scrub(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHMNET_") || key == "LD_PRELOAD" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `wrapper... [env LD_PRELOAD=<lib>] program` with a scrubbed environment
/// and stdin from /dev/null; add the program's arguments with `arg(s)`.
fn wrapped(wrapper: &[&str], program: impl AsRef<OsStr>, preload: bool) -> Command {
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..]);
    if preload {
        let mut var = std::ffi::OsString::from("LD_PRELOAD=");
        var.push(lib());
        cmd.arg("env").arg(var);
    }
    cmd.arg(program);
    scrub(&mut cmd).stdin(Stdio::null());
    cmd
}

// ---------------------------------------------------------------------------
// Users

/// useradd/userdel take /etc/passwd's lock and give up at once if another
/// holds it: one at a time in this process, retried against others.
static ACCOUNTS: Mutex<()> = Mutex::new(());

fn accounts(program: &str, args: &[&str]) -> Result<(), String> {
    let _one = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new(program)
            .args(args)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Exit 10 (useradd) / 10 (userdel): cannot lock the password file.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(last)
}

/// A system user made for one test (`useradd --system`, no home, nologin,
/// its own group), deleted with `userdel` when dropped, together with its
/// default rendezvous directory `/tmp/shmnet-<uid>` (the uid may be given
/// to the next test's user).
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// Root only (see `skip_unless_root`).
    pub fn create() -> TestUser {
        let name = unique_name();
        accounts(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                &name,
            ],
        )
        .unwrap_or_else(|e| panic!("cannot create test user: {e}"));
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let (uid, gid) = passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name.as_str()))
                    .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
            })
            .unwrap_or_else(|| panic!("{name} is not in /etc/passwd after useradd"));
        let user = TestUser { name, uid, gid };
        user.remove_default_dir();
        user
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// `/tmp/shmnet-<uid>`: the library's default directory for this user.
    pub fn default_dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/shmnet-{}", self.uid))
    }

    fn remove_default_dir(&self) {
        let dir = self.default_dir();
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.uid() == self.uid) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        self.remove_default_dir();
        // -f: even if a process of it is still around (the test failed).
        if let Err(e) = accounts("userdel", &["-f", &self.name]) {
            eprintln!("host.rs: {e}");
        }
    }
}

/// Run `cmd` as `user`: uid, gid, and no supplementary groups (std clears
/// them when a root parent sets a uid), set between fork and exec, so the
/// program itself starts as the user and LD_PRELOAD still applies to it
/// (the kernel does not mark a plain setuid-then-exec as secure-execution).
pub fn as_user<'a>(cmd: &'a mut Command, user: &TestUser) -> &'a mut Command {
    cmd.uid(user.uid).gid(user.gid)
}

/// A python3 a test user can run: `common::python()` when every directory
/// on its way lets others through, else /usr/bin/python3 (a pyenv under
/// /root, mode 0700, is out of reach; a program that drops root mid-run
/// would also fail to import from there).
pub fn user_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let real = python().to_path_buf();
        let canon = real.canonicalize().unwrap_or_else(|_| real.clone());
        let reachable = canon
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
            && std::fs::metadata(&canon).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
        let lib_dir_ok = lib()
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
        assert!(
            lib_dir_ok,
            "test users cannot reach {}: a directory on the way is closed to others",
            lib().display()
        );
        if reachable {
            real
        } else {
            PathBuf::from("/usr/bin/python3")
        }
    })
}

/// Preloaded `user_python() -c PRELUDE+script args...` (as `common::py`).
pub fn user_py(script: &str, args: &[&str]) -> Command {
    let mut cmd = scrubbed(user_python());
    cmd.env("LD_PRELOAD", lib())
        .arg("-c")
        .arg(format!("{PRELUDE}{script}"))
        .args(args);
    cmd
}

/// `program` without the library (no LD_PRELOAD, no SHMNET_*), stdin from
/// /dev/null.
pub fn scrubbed(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    scrub(&mut cmd).stdin(Stdio::null());
    cmd
}

// ---------------------------------------------------------------------------
// Directories other users can reach

/// A fresh directory under /tmp (which every user can traverse, unlike
/// cargo's target directory under a home), root's, with `mode`; removed
/// with everything in it when dropped.
pub struct OpenDir {
    path: PathBuf,
}

impl OpenDir {
    pub fn new(tag: &str, mode: u32) -> OpenDir {
        let path = PathBuf::from(format!("/tmp/{}-{tag}", unique_name()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        OpenDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Make `path` a directory owned by `user` with `mode` (root makes it and
/// hands it over, as a user would make one in /tmp).
pub fn dir_of(path: &Path, user: &TestUser, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------
// Network namespaces

/// A network namespace (`ip netns add`, `lo` up), deleted when dropped
/// (with the veth end inside it; its processes must be gone by then).
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create() -> Netns {
        let name = unique_name();
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        must("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Two namespaces joined by one veth pair (`veth0` in each; made from
    /// inside A, its peer created directly in B: no link ever exists in the
    /// test's own namespace), with 10.211.`k`.1/24 in A and 10.211.`k`.2/24
    /// in B. Use a `k` of your own per test.
    pub fn pair_with_veth(k: u8) -> (Netns, Netns) {
        let (a, b) = (Netns::create(), Netns::create());
        must(
            "ip",
            &[
                "-n", &a.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                "netns", &b.name,
            ],
        );
        for (ns, host) in [(&a, 1), (&b, 2)] {
            let cidr = format!("{}/24", Netns::veth_addr(k, host));
            must(
                "ip",
                &["-n", &ns.name, "addr", "add", &cidr, "dev", "veth0"],
            );
            must("ip", &["-n", &ns.name, "link", "set", "veth0", "up"]);
        }
        (a, b)
    }

    /// 10.211.`k`.`host`.
    pub fn veth_addr(k: u8, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 211, k, host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`, not preloaded.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        wrapped(&["ip", "netns", "exec", &self.name], program, false)
    }

    /// `ip netns exec NAME env LD_PRELOAD=<lib> program`.
    pub fn preloaded(&self, program: impl AsRef<OsStr>) -> Command {
        wrapped(&["ip", "netns", "exec", &self.name], program, true)
    }

    /// Preloaded `python3 -c PRELUDE+script args...` in this namespace.
    pub fn py(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = self.preloaded(python());
        cmd.arg("-c").arg(format!("{PRELUDE}{script}")).args(args);
        cmd
    }

    /// Plain (not preloaded) `python3 -c script args...` in this namespace.
    pub fn plain_py(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = self.cmd(python());
        cmd.arg("-c").arg(script).args(args);
        cmd
    }

    /// Every TCP socket of this namespace, as its /proc/net/tcp{,6} say.
    pub fn kernel_tcp_sockets(&self) -> Vec<KernelSocket> {
        let out = self
            .cmd("cat")
            .args(["/proc/net/tcp", "/proc/net/tcp6"])
            .output()
            .expect("ip netns exec cat");
        assert!(
            out.status.success(),
            "reading /proc/net/tcp in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        parse_proc_net_tcp(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("host.rs: ip netns del {}: {out:?}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------
// Mount namespaces

/// `program` in a private mount namespace with a fresh tmpfs on /tmp (what
/// a container of a pod sees: the host's network namespace, its own
/// filesystem): `unshare --mount --propagation private sh -c 'mount -t
/// tmpfs none /tmp && exec "$@"' -- [env LD_PRELOAD=<lib>] program`.
/// unshare and sh are never preloaded; the pid of the returned command's
/// child is the program's (each wrapper execs the next).
pub fn private_tmp(program: impl AsRef<OsStr>, preload: bool) -> Command {
    assert!(
        !(preload && lib().starts_with("/tmp")),
        "{} is under /tmp, which a private tmpfs hides: build outside /tmp",
        lib().display()
    );
    wrapped(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs none /tmp && exec \"$@\"",
            "--",
        ],
        program,
        preload,
    )
}

// ---------------------------------------------------------------------------
// The kernel's view as text

pub use super::kernel::parse_proc_net_tcp;

/// Abstract Unix socket names (`@name`, as /proc/net/unix prints them)
/// bound by sockets that process `pid` holds, from /proc/PID/fd and the
/// /proc/net/unix of `pid`'s network namespace.
pub fn abstract_names_of(pid: u32) -> Vec<String> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            if let Some(ino) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(ino.to_string());
            }
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ino, path) = (f.get(6)?, f.get(7)?);
            (path.starts_with('@') && inodes.contains(*ino)).then(|| path.to_string())
        })
        .collect()
}
