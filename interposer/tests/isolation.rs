//! Shared memory never reaches further than the kernel would, and no
//! setup, peer or limit stalls, kills or locks out the program the library
//! is loaded into (docs/security.md): other users, network, pid and mount
//! namespaces, a replaced or foreign rendezvous directory, hostile local
//! programs at the rendezvous, descriptor and file-size limits, logging
//! that cannot block; plus the acceleration that must work across
//! namespace borders (a veth pair; containers of one pod). A test's doc
//! names the defect of docs/security.md it is the regression for.
//!
//! Every test runs real programs with the built library preloaded: the
//! python helpers in tests/helpers/py/iso_*.py (`iso_net.py`: servers and clients
//! that check every byte with sha256 or an echo; `iso_raw.py`: a hostile
//! program that is never preloaded; `iso_accept.py`: an epoll server) and
//! tests/helpers/c/iso_limits.c. Where a test says shared memory carried the bytes
//! it proves it: the counters (`common::stats`), or no ESTABLISHED kernel
//! TCP socket on the port (in every namespace involved) while a transfer
//! is paused half-way — or, in the emulated mode, no kernel socket at all.
//!
//! Users and namespaces are made by the test (`common::host`: removed when
//! the test ends, also on failure) and need root; without it a test prints
//! a note and passes. Addresses: in the test's own network namespace only
//! 127.0.0.1 (kernel-picked ports) and the emulated network's addresses
//! and ports the harness hands out (`Net::emulated`); 10.211.k.x only
//! inside namespaces the test created.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::host::{
    abstract_names_of, as_user, dir_of, euid, private_tmp, scrubbed, skip_unless_root, user_py,
    user_python, Netns, OpenDir, TestUser,
};
use common::kernel::{KernelWatch, Scope};
use common::net::EMULATED;
use common::{
    build_c, children_of, drain, emulated_script, kernel_tcp_sockets, nginx_bin, preloaded, py,
    python, run, tmpdir, wait_deadline, Background, KernelSocket, Net, PRELUDE,
};

const NET: &str = include_str!("helpers/py/iso_net.py");
const RAW: &str = include_str!("helpers/py/iso_raw.py");
const ACCEPT: &str = include_str!("helpers/py/iso_accept.py");

/// Deadline for an expected line, or for a helper to finish.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Helpers

fn start(name: &str, cmd: &mut Command) -> Background {
    Background::start(name, cmd, WAIT, false)
}

/// `start`, with stdin kept for `go`.
fn start_piped(name: &str, cmd: &mut Command) -> Background {
    Background::start(name, cmd.stdin(Stdio::piped()), WAIT, false)
}

/// The `port P pid PID` line of a listener: (P, PID).
fn port_pid(srv: &mut Background) -> (u16, u32) {
    let line = srv.expect("port ");
    let w: Vec<&str> = line.split_whitespace().collect();
    match (
        w.get(1).and_then(|p| p.parse().ok()),
        w.get(3).and_then(|p| p.parse().ok()),
    ) {
        (Some(port), Some(pid)) => (port, pid),
        _ => srv.fail(&format!("bad port line {line:?}")),
    }
}

/// The emulated network: `SHMNET_FALLBACK=never` on `partitions`.
fn emulated<'a>(cmd: &'a mut Command, partitions: &str, dir: &Path) -> &'a mut Command {
    cmd.env("SHMNET_FALLBACK", "never")
        .env("SHMNET_PARTITIONS", partitions)
        .env("SHMNET_DIR", dir)
}

/// The default mode with an explicit directory.
fn default_mode<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.env("SHMNET_DIR", dir)
}

/// The counters in `dir` (docs/counters.md), `common::stats::read`.
fn stats(dir: &Path) -> HashMap<String, u64> {
    common::stats::read(dir)
}

fn count(s: &HashMap<String, u64>, key: &str) -> u64 {
    s.get(key).copied().unwrap_or(0)
}

/// Lines of `stderr` the library printed.
fn libshmnet_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("libshmnet:"))
        .collect()
}

/// The sockets among `all` in state ESTABLISHED on `port` (either end).
fn established(all: &[KernelSocket], port: u16) -> Vec<String> {
    Scope::Established { host: None, port }.found_in(all)
}

/// The words of `line`.
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// Runs `cmd` to completion (common::run) and requires exit 0; its stdout
/// and stderr.
fn run_ok(what: &str, cmd: &mut Command) -> (String, String) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    (out.stdout, out.stderr)
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Names in `dir` (none if it does not exist), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Plain (never preloaded) python running iso_raw.py.
fn raw(args: &[&str]) -> Command {
    let mut cmd = scrubbed(python());
    cmd.arg("-c").arg(RAW).args(args);
    cmd
}

/// The default-mode rendezvous of the one listener of process `pid`
/// (`@shmnet.5/tcp/c<cookie>`, docs/security.md), its hints left out.
fn cookie_rendezvous_of(pid: u32) -> String {
    let names: Vec<String> = abstract_names_of(pid)
        .into_iter()
        .filter(|n| n.starts_with("@shmnet.5/tcp/c") && !n.contains("/allow/"))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "the rendezvous names of pid {pid}: {names:?}"
    );
    names.into_iter().next().unwrap()
}

/// The rendezvous a hostile program would connect to: `abstract` names
/// (`@...`, docs/security.md) first, then `old_path`, the socket file a
/// library from before docs/security.md used (so the test shows the defect
/// on that library too, instead of failing to find its rendezvous).
fn rendezvous_candidates(abstract_names: &[String], old_path: &Path) -> Vec<String> {
    let mut v = abstract_names.to_vec();
    v.push(old_path.to_string_lossy().into_owned());
    v
}

/// iso_raw.py `squat` as `user` (plain python): a listener at `path` and
/// each symlink `link -> target`; up when it said `listening`.
fn squatter(user: &TestUser, path: &Path, links: &[(PathBuf, &Path)]) -> Background {
    let mut cmd = scrubbed(user_python());
    cmd.arg("-c").arg(RAW).arg("squat").arg(path);
    for (link, target) in links {
        cmd.arg(link).arg(target);
    }
    as_user(&mut cmd, user);
    let mut s = start_piped("squatter (another user)", &mut cmd);
    s.expect("listening");
    s
}

/// How many connections the squatter got (it exits).
fn squatter_count(s: &mut Background) -> u64 {
    s.go();
    let line = s.expect("accepted ");
    s.finish();
    words(&line)[1].parse().unwrap()
}

// ---------------------------------------------------------------------------
// The rendezvous directory replaced while programs run

/// Regression for defect 1 of docs/security.md (emulated network, host-scope rendezvous): a
/// directory removed and recreated by another user must not be followed.
///
/// In a namespace of its own (10.211.1.1 is on no interface there: a
/// non-local partition address, whose rendezvous lives in SHMNET_DIR), a
/// root echo server and a root client that connects once. The directory is
/// then removed and made again by a test user (mode 0755), who binds a
/// listener at the library's socket name in it and plants `stats-0` and
/// `stats-<client pid>` as symlinks to a root-owned file. The client's next
/// connect must fail with ECONNREFUSED and one `libshmnet:` line naming
/// the directory, never reach the user's listener; the planted file keeps
/// its bytes; the connection made before keeps working.
#[test]
fn replaced_directory_is_refused_emulated() {
    if skip_unless_root("replaced_directory_is_refused_emulated") {
        return;
    }
    let user = TestUser::create();
    let ns = Netns::create();
    let base = OpenDir::new("swap", 0o755);
    let shm = base.join("shm");
    let (host, port) = ("10.211.1.1", "18101");
    let partitions = "10.211.1.0/24";

    let mut srv = start(
        "echo server",
        emulated(&mut ns.py(NET, &["echo", host, port]), partitions, &shm),
    );
    port_pid(&mut srv);
    let steps = [
        "session",
        host,
        port,
        "pid",
        "connect:a",
        "exchange:a:100000",
        "pause:swap",
        "connect:b",
        "exchange:b:100000",
        "exchange:a:100000",
    ];
    let mut cli = start_piped(
        "client",
        emulated(&mut ns.py(NET, &steps), partitions, &shm),
    );
    let cli_pid = words(&cli.expect("pid "))[1].clone();
    assert_eq!(cli.expect("connect a"), "connect a ok");
    assert_eq!(cli.expect("exchange a"), "exchange a ok");
    cli.expect("swap");

    let victims = tmpdir("iso-victim");
    let victim = victims.join("precious");
    std::fs::write(&victim, "root's bytes\n").unwrap();
    let _ = std::fs::remove_dir_all(&shm);
    dir_of(&shm, &user, 0o755);
    let squat_path = shm.join(format!("tcp4-{host}-{port}"));
    let links = [
        (shm.join("stats-0"), victim.as_path()),
        (shm.join(format!("stats-{cli_pid}")), victim.as_path()),
    ];
    let mut squat = squatter(&user, &squat_path, &links);

    cli.go();
    let b = cli.expect("connect b");
    let xb = cli.expect("exchange b");
    let xa = cli.expect("exchange a");
    let stderr = cli.finish();
    // Give a connection that did go to the squatter time to show.
    thread::sleep(Duration::from_millis(500));
    let stolen = squatter_count(&mut squat);
    let victim_now = std::fs::read_to_string(&victim).unwrap_or_default();
    let lines = libshmnet_lines(&stderr);
    let shm_text = shm.to_string_lossy();
    assert!(
        stolen == 0
            && b == "connect b ECONNREFUSED"
            && xa == "exchange a ok"
            && victim_now == "root's bytes\n"
            && lines.iter().any(|l| l.contains(shm_text.as_ref())),
        "after the directory was replaced by another user's:\n\
         connections the other user's listener got: {stolen} (want 0)\n\
         {b} (want ECONNREFUSED), {xb}\n\
         {xa} (the connection made before: want ok)\n\
         planted stats file target now holds {victim_now:?} (want \"root's bytes\\n\")\n\
         client stderr (want a libshmnet: line naming {shm_text}):\n{stderr}"
    );
    srv.kill();
}

/// Defect 1 in the default mode: the client's connects after the directory
/// was replaced (a user's listener at the old rendezvous name
/// `tcp4-127.0.0.1-P`, planted stats symlinks) reach the real server, over
/// shared memory or kernel TCP, never the user's listener; the planted file
/// keeps its bytes.
#[test]
fn replaced_directory_is_not_followed_default_mode() {
    if skip_unless_root("replaced_directory_is_not_followed_default_mode") {
        return;
    }
    let user = TestUser::create();
    let base = OpenDir::new("swap-default", 0o755);
    let shm = base.join("shm");
    let mut srv = start(
        "echo server",
        default_mode(&mut py(NET, &["echo", "127.0.0.1", "0"]), &shm),
    );
    let (port, _) = port_pid(&mut srv);
    let p = port.to_string();
    let steps = [
        "session",
        "127.0.0.1",
        &p,
        "pid",
        "connect:a",
        "exchange:a:100000",
        "pause:swap",
        "connect:b",
        "exchange:b:100000",
        "exchange:a:100000",
    ];
    let mut cli = start_piped("client", default_mode(&mut py(NET, &steps), &shm));
    let cli_pid = words(&cli.expect("pid "))[1].clone();
    assert_eq!(cli.expect("connect a"), "connect a ok");
    assert_eq!(cli.expect("exchange a"), "exchange a ok");
    cli.expect("swap");

    let victims = tmpdir("iso-victim-default");
    let victim = victims.join("precious");
    std::fs::write(&victim, "root's bytes\n").unwrap();
    let _ = std::fs::remove_dir_all(&shm);
    dir_of(&shm, &user, 0o755);
    let links = [
        (shm.join("stats-0"), victim.as_path()),
        (shm.join(format!("stats-{cli_pid}")), victim.as_path()),
    ];
    let mut squat = squatter(&user, &shm.join(format!("tcp4-127.0.0.1-{port}")), &links);

    cli.go();
    let b = cli.expect("connect b");
    let xb = cli.expect("exchange b");
    let xa = cli.expect("exchange a");
    let stderr = cli.finish();
    thread::sleep(Duration::from_millis(500));
    let stolen = squatter_count(&mut squat);
    let victim_now = std::fs::read_to_string(&victim).unwrap_or_default();
    assert!(
        stolen == 0
            && b == "connect b ok"
            && xb == "exchange b ok"
            && xa == "exchange a ok"
            && victim_now == "root's bytes\n",
        "after the directory was replaced by another user's:\n\
         connections the other user's listener got: {stolen} (want 0)\n\
         {b}, {xb} (want ok: the real server)\n{xa} (want ok)\n\
         planted stats file target now holds {victim_now:?}\nclient stderr:\n{stderr}"
    );
    srv.kill();
}

// ---------------------------------------------------------------------------
// Network namespaces

/// Defect 2, default mode: three network namespaces sharing one
/// SHMNET_DIR. Servers in A and B on the same 127.0.0.1 port answer "A" and
/// "B"; each namespace's client reaches its own (both over shared memory:
/// 2 connections counted `shm`), and a client in C, where nothing listens,
/// gets ECONNREFUSED as the kernel says.
#[test]
fn loopback_stays_in_its_network_namespace_default_mode() {
    if skip_unless_root("loopback_stays_in_its_network_namespace_default_mode") {
        return;
    }
    let (a, b, c) = (Netns::create(), Netns::create(), Netns::create());
    let shm = tmpdir("iso-netns-default").join("shm");
    let mut srv_a = start(
        "server in A",
        default_mode(
            &mut a.py(NET, &["server", "127.0.0.1", "0", "0", "A"]),
            &shm,
        ),
    );
    let (port, _) = port_pid(&mut srv_a);
    let p = port.to_string();
    let mut srv_b = start(
        "server in B",
        default_mode(&mut b.py(NET, &["server", "127.0.0.1", &p, "0", "B"]), &shm),
    );
    port_pid(&mut srv_b);
    let mut got = Vec::new();
    for ns in [&a, &b, &c] {
        let mut cmd = ns.py(NET, &["client", "127.0.0.1", &p, "100000"]);
        let (out, _) = run_ok("client", default_mode(&mut cmd, &shm));
        got.push(out.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    }
    assert_eq!(
        got,
        ["ok A", "ok B", "error ECONNREFUSED"],
        "clients in A, B and C (no server there)"
    );
    let s = stats(&shm);
    assert_eq!(
        count(&s, "shm"),
        2,
        "A's and B's clients over shared memory: {s:?}"
    );
    srv_a.kill();
    srv_b.kill();
}

/// Defect 2, emulated mode (`Net::emulated`, no kernel listener anywhere):
/// servers in A and B bind the same address:port (each namespace has its
/// own), each namespace's client reaches its own, C's is refused.
#[test]
fn loopback_stays_in_its_network_namespace_emulated() {
    if skip_unless_root("loopback_stays_in_its_network_namespace_emulated") {
        return;
    }
    let (a, b, c) = (Netns::create(), Netns::create(), Netns::create());
    let shm = tmpdir("iso-netns-emulated").join("shm");
    let net = Net::emulated("iso-netns-emu");
    let (host, port) = (net.host_str(), net.port_str());
    let (host, port, parts) = (host.as_str(), port.as_str(), net.partitions.as_str());
    let mut srv_a = start(
        "server in A",
        emulated(
            &mut a.py(NET, &["server", host, port, "0", "A"]),
            parts,
            &shm,
        ),
    );
    port_pid(&mut srv_a);
    let mut srv_b = start(
        "server in B",
        emulated(
            &mut b.py(NET, &["server", host, port, "0", "B"]),
            parts,
            &shm,
        ),
    );
    port_pid(&mut srv_b);
    let mut got = Vec::new();
    for ns in [&a, &b, &c] {
        let mut cmd = ns.py(NET, &["client", host, port, "100000"]);
        let (out, _) = run_ok("client", emulated(&mut cmd, parts, &shm));
        got.push(out.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    }
    assert_eq!(
        got,
        ["ok A", "ok B", "error ECONNREFUSED"],
        "clients in A, B and C (no server there)"
    );
    srv_a.kill();
    srv_b.kill();
}

// ---------------------------------------------------------------------------
// Users and privilege drops

/// Defect 3, emulated mode: a server started as root that switches to a
/// test user before it makes its socket (mariadbd --user) listens on
/// the test's emulated address; a root client (SHMNET_ALLOW naming the user: a connector
/// admits the listener only if it is its own uid, root or allowed) and a
/// client running as the user exchange checksummed data with it. Everyone
/// shares one SHMNET_DIR that root owns with mode 1777 (like /tmp).
#[test]
fn server_dropping_privileges_before_bind_emulated() {
    if skip_unless_root("server_dropping_privileges_before_bind_emulated") {
        return;
    }
    let u = TestUser::create();
    let shared = OpenDir::new("drop", 0o1777);
    let net = Net::emulated("iso-drop-emu");
    let (host, port) = (net.host_str(), net.port_str());
    let (host, port, parts) = (host.as_str(), port.as_str(), net.partitions.as_str());
    let proof = KernelWatch::new(Scope::Emulated {
        host: host.parse().unwrap(),
        len: 32,
        port: Some(net.port),
    });
    let drop = format!("{}:{}", u.uid(), u.gid());
    let mut srv = start(
        "server (root, then the user)",
        emulated(
            &mut user_py(NET, &["--drop", &drop, "server", host, port, "0", "U"]),
            parts,
            shared.path(),
        ),
    );
    port_pid(&mut srv);
    let mut root_client = py(NET, &["client", host, port, "300000"]);
    emulated(&mut root_client, parts, shared.path()).env("SHMNET_ALLOW", u.name());
    let mut user_client = user_py(NET, &["client", host, port, "300000"]);
    emulated(&mut user_client, parts, shared.path());
    as_user(&mut user_client, &u);
    for (who, cmd) in [("root", &mut root_client), ("the user", &mut user_client)] {
        let (out, _) = run_ok(who, cmd);
        assert!(out.starts_with("ok U "), "client as {who}: {out}");
    }
    proof.assert_none("emulated server");
    srv.kill();
}

/// Defect 3, default mode: the same server on 127.0.0.1 (a kernel port),
/// with the user's default SHMNET_DIR (/tmp/shmnet-<uid>); a root client
/// (its own explicit directory, SHMNET_ALLOW naming the user) is carried
/// by shared memory: no ESTABLISHED kernel connection while its transfer
/// is paused, `shm` 1 in its directory, `accepted_shm` 1 in the server's,
/// which the library made sane (the user's, a directory, not writable by
/// others).
#[test]
fn server_dropping_privileges_before_bind_default_mode() {
    if skip_unless_root("server_dropping_privileges_before_bind_default_mode") {
        return;
    }
    let u = TestUser::create();
    let cdir = tmpdir("iso-drop-default").join("shm");
    let drop = format!("{}:{}", u.uid(), u.gid());
    let mut cmd = user_py(
        NET,
        &["--drop", &drop, "server", "127.0.0.1", "0", "0", "U"],
    );
    cmd.env_remove("XDG_RUNTIME_DIR");
    let mut srv = start("server (root, then the user)", &mut cmd);
    let (port, _) = port_pid(&mut srv);
    let p = port.to_string();
    let mut cmd = py(NET, &["client", "127.0.0.1", &p, "8388608", "pause"]);
    default_mode(&mut cmd, &cdir).env("SHMNET_ALLOW", u.name());
    let mut cli = start_piped("root client", &mut cmd);
    cli.expect("in-flight");
    let tcp = established(&kernel_tcp_sockets(), port);
    cli.go();
    let ok = cli.expect("ok ");
    cli.finish_clean();
    assert!(ok.starts_with("ok U "), "{ok}");
    let s = stats(&cdir);
    assert!(
        tcp.is_empty() && count(&s, "shm") == 1,
        "root client to the user's server: kernel TCP connections during the transfer: \
         {tcp:?}; client counters: {s:?} (want shm=1)"
    );
    let sdir = u.default_dir();
    let meta = std::fs::symlink_metadata(&sdir)
        .unwrap_or_else(|e| panic!("the server's default directory {}: {e}", sdir.display()));
    assert!(
        meta.is_dir() && meta.uid() == u.uid() && meta.mode() & 0o022 == 0,
        "{}: dir {} uid {} mode {:o}",
        sdir.display(),
        meta.is_dir(),
        meta.uid(),
        meta.mode()
    );
    let ss = stats(&sdir);
    assert_eq!(count(&ss, "accepted_shm"), 1, "server counters: {ss:?}");
    srv.kill();
}

/// Policy, default mode: a server of user U, a client of user V (each with
/// its own SHMNET_DIR). Without SHMNET_ALLOW the client uses kernel TCP
/// (`fallback_policy` 1, bytes intact); with SHMNET_ALLOW=V on the server
/// and SHMNET_ALLOW=U on the client they meet over shared memory (no
/// ESTABLISHED kernel connection during a paused transfer, `shm` 1).
#[test]
fn other_users_fall_back_unless_allowed_default_mode() {
    if skip_unless_root("other_users_fall_back_unless_allowed_default_mode") {
        return;
    }
    let (u, v) = (TestUser::create(), TestUser::create());
    let base = OpenDir::new("policy", 0o755);
    let (udir, vdir) = (base.join("u"), base.join("v"));
    dir_of(&udir, &u, 0o700);
    dir_of(&vdir, &v, 0o700);

    let server = |allow: Option<&str>| {
        let mut cmd = user_py(NET, &["server", "127.0.0.1", "0", "0", "U"]);
        default_mode(&mut cmd, &udir);
        if let Some(a) = allow {
            cmd.env("SHMNET_ALLOW", a);
        }
        as_user(&mut cmd, &u);
        let mut srv = start("server (user U)", &mut cmd);
        let (port, _) = port_pid(&mut srv);
        (srv, port)
    };
    let client = |port: u16, allow: Option<&str>| {
        let p = port.to_string();
        let mut cmd = user_py(NET, &["client", "127.0.0.1", &p, "8388608", "pause"]);
        default_mode(&mut cmd, &vdir);
        if let Some(a) = allow {
            cmd.env("SHMNET_ALLOW", a);
        }
        as_user(&mut cmd, &v);
        let mut cli = start_piped("client (user V)", &mut cmd);
        cli.expect("in-flight");
        let tcp = established(&kernel_tcp_sockets(), port);
        cli.go();
        let ok = cli.expect("ok ");
        cli.finish_clean();
        assert!(ok.starts_with("ok U "), "{ok}");
        tcp
    };

    let (mut srv, port) = server(None);
    let tcp = client(port, None);
    let s = stats(&vdir);
    assert!(
        !tcp.is_empty() && count(&s, "fallback_policy") == 1 && count(&s, "shm") == 0,
        "V to U without SHMNET_ALLOW: kernel TCP connections during the transfer: {tcp:?} \
         (want one); client counters {s:?} (want fallback_policy=1, shm=0)"
    );
    srv.kill();

    let (mut srv, port) = server(Some(v.name()));
    let tcp = client(port, Some(u.name()));
    let s = stats(&vdir);
    assert!(
        tcp.is_empty() && count(&s, "shm") == 1,
        "V to U, each allowing the other: kernel TCP connections during the transfer: \
         {tcp:?}; client counters {s:?} (want shm=1)"
    );
    srv.kill();
}

/// Policy, emulated mode (hosts 2 and 3 of the test's emulated /24): without SHMNET_ALLOW a client
/// of another user is refused (ECONNREFUSED and a `libshmnet:` line), with
/// it on both sides it gets through.
#[test]
fn other_users_are_refused_unless_allowed_emulated() {
    if skip_unless_root("other_users_are_refused_unless_allowed_emulated") {
        return;
    }
    let (u, v) = (TestUser::create(), TestUser::create());
    let base = OpenDir::new("policy-emu", 0o755);
    let (udir, vdir) = (base.join("u"), base.join("v"));
    dir_of(&udir, &u, 0o700);
    dir_of(&vdir, &v, 0o700);
    let net = Net::emulated("iso-policy-emu");
    let parts = net.partitions.as_str();
    let (h2, h3, port) = (net.ip(2).to_string(), net.ip(3).to_string(), net.port_str());
    let mut results = Vec::new();
    for (host, port, allow) in [
        (h2.as_str(), port.as_str(), false),
        (h3.as_str(), port.as_str(), true),
    ] {
        let mut cmd = user_py(NET, &["server", host, port, "0", "U"]);
        emulated(&mut cmd, parts, &udir);
        if allow {
            cmd.env("SHMNET_ALLOW", v.name());
        }
        as_user(&mut cmd, &u);
        let mut srv = start("server (user U)", &mut cmd);
        port_pid(&mut srv);
        let mut cmd = user_py(NET, &["client", host, port, "300000"]);
        emulated(&mut cmd, parts, &vdir);
        if allow {
            cmd.env("SHMNET_ALLOW", u.name());
        }
        as_user(&mut cmd, &v);
        let (out, err) = run_ok("client (user V)", &mut cmd);
        results.push((out, err));
        srv.kill();
    }
    let (out0, err0) = &results[0];
    let (out1, err1) = &results[1];
    assert!(
        out0.trim() == "error ECONNREFUSED"
            && !libshmnet_lines(err0).is_empty()
            && out1.starts_with("ok U "),
        "V to U without SHMNET_ALLOW (want ECONNREFUSED and a libshmnet: line): {out0}{err0}\n\
         V to U, each allowing the other (want ok U): {out1}{err1}"
    );
}

/// A policy hint counts only if the listener's user bound it (found by
/// review): root's listener admits nobody else; user W binds the hint that
/// would admit everyone next to its name; V's client (default settings)
/// must still use kernel TCP (`fallback_policy`), not try shared memory
/// and be reset by the listener after connect returned.
#[test]
fn forged_policy_hint_is_ignored_default_mode() {
    if skip_unless_root("forged_policy_hint_is_ignored_default_mode") {
        return;
    }
    let (v, w) = (TestUser::create(), TestUser::create());
    let base = OpenDir::new("forged-hint", 0o755);
    let vdir = base.join("v");
    dir_of(&vdir, &v, 0o700);
    let mut cmd = py(NET, &["server", "127.0.0.1", "0", "0", "R"]);
    default_mode(&mut cmd, &base.join("root"));
    let mut srv = start("root's server", &mut cmd);
    let (port, pid) = port_pid(&mut srv);
    let name = cookie_rendezvous_of(pid);
    let hint = format!("{}/allow/any", &name[1..]);
    let forge = "import socket, sys, time\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
        s.bind(b'\\0' + sys.argv[1].encode())\n\
        print('bound', flush=True)\n\
        time.sleep(60)\n";
    let mut cmd = scrubbed(user_python());
    cmd.args(["-c", forge, &hint]);
    as_user(&mut cmd, &w);
    let mut forger = start("W's forged hint", &mut cmd);
    forger.expect("bound");
    let mut cmd = user_py(NET, &["client", "127.0.0.1", &port.to_string(), "300000"]);
    default_mode(&mut cmd, &vdir);
    as_user(&mut cmd, &v);
    let (out, err) = run_ok("client (user V)", &mut cmd);
    let s = stats(&vdir);
    assert!(
        out.starts_with("ok R ") && count(&s, "fallback_policy") == 1,
        "V's client with a forged hint in place: {out}{err}\ncounters {s:?} \
         (want ok R over kernel TCP, fallback_policy=1)"
    );
    forger.kill();
    srv.kill();
}

/// Emulated privileged ports need root as the connector sees it (found by
/// review): user W, root in a user namespace of its own (`unshare -Ur`,
/// same network namespace), binds port 80 of its emulated address; root's client must be
/// refused (ECONNREFUSED and a `libshmnet:` line). Before, W's full set of
/// capabilities in its own namespace passed the check.
#[test]
fn user_namespace_root_cannot_hold_a_privileged_emulated_port() {
    if skip_unless_root("user_namespace_root_cannot_hold_a_privileged_emulated_port") {
        return;
    }
    let w = TestUser::create();
    let net = Net::emulated("iso-userns80");
    let (parts, host) = (net.partitions.as_str(), net.host_str());
    let dir = OpenDir::new("userns80", 0o1777);
    let mut cmd = scrubbed("unshare");
    cmd.args(["-Ur", "--"])
        .arg("env")
        .arg(format!("LD_PRELOAD={}", common::lib().display()))
        .arg(user_python())
        .args([
            "-c",
            &format!("{PRELUDE}{NET}"),
            "server",
            &host,
            "80",
            "0",
            "W",
        ]);
    emulated(&mut cmd, parts, dir.path());
    as_user(&mut cmd, &w);
    let mut srv = start("W's server, root of its own user namespace", &mut cmd);
    port_pid(&mut srv);
    let mut cmd = py(NET, &["client", &host, "80", "1000"]);
    emulated(&mut cmd, parts, dir.path());
    let out = run(&mut cmd);
    assert!(
        out.stdout.trim() == "error ECONNREFUSED" && !libshmnet_lines(&out.stderr).is_empty(),
        "root's client to W's port 80 (want ECONNREFUSED and a libshmnet: line): {}{}",
        out.stdout,
        out.stderr
    );
    srv.kill();
}

/// A server in a pid namespace of its own (a container's), a client in the
/// host's, one network namespace: the kernel reports the peer's pid as 0,
/// which used to make every connection fail (reset, or ECONNREFUSED in
/// the emulated mode). Both modes must work.
#[test]
fn peer_in_another_pid_namespace() {
    if skip_unless_root("peer_in_another_pid_namespace") {
        return;
    }
    let dir = tmpdir("iso-pidns");
    let net = Net::emulated("iso-pidns-emu");
    let emu_host = net.host_str();
    for (host, emu) in [("127.0.0.1", false), (emu_host.as_str(), true)] {
        let mut cmd = scrubbed("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", "--"])
            .arg("env")
            .arg(format!("LD_PRELOAD={}", common::lib().display()))
            .arg(python())
            .args([
                "-c",
                &format!("{PRELUDE}{NET}"),
                "server",
                host,
                "0",
                "0",
                "P",
            ]);
        if emu {
            emulated(&mut cmd, &net.partitions, &dir);
        } else {
            default_mode(&mut cmd, &dir);
        }
        let mut srv = start("server in its own pid namespace", &mut cmd);
        let (port, _) = port_pid(&mut srv);
        let mut cmd = py(NET, &["client", host, &port.to_string(), "300000"]);
        if emu {
            emulated(&mut cmd, &net.partitions, &dir);
        } else {
            default_mode(&mut cmd, &dir);
        }
        let out = run(&mut cmd);
        assert!(
            out.stdout.starts_with("ok P "),
            "client (emulated: {emu}): {}{}",
            out.stdout,
            out.stderr
        );
        srv.kill();
    }
    let s = stats(&dir);
    assert!(count(&s, "shm") >= 2, "counters {s:?} (want shm for both)");
}

/// A connector the policy admits still cannot claim what the kernel would
/// not give it (found by review): a privileged source port (servers trust
/// those) or a destination other than the listener's own address (it
/// becomes the connection's local address). Each forged message is
/// refused with a `libshmnet:` line naming it; a real client is served.
#[test]
fn forged_source_port_and_destination_are_refused() {
    if skip_unless_root("forged_source_port_and_destination_are_refused") {
        return;
    }
    // A user of its own: root may have any source port.
    let u = TestUser::create();
    let base = OpenDir::new("forged-addr", 0o755);
    let dir = base.join("u");
    dir_of(&dir, &u, 0o700);
    let mut cmd = user_py(NET, &["server", "127.0.0.1", "0", "1", "F"]);
    default_mode(&mut cmd, &dir).env("SHMNET_LOG", "warn");
    let mut srv = start("server", as_user(&mut cmd, &u));
    let (port, pid) = port_pid(&mut srv);
    let names = [cookie_rendezvous_of(pid)];
    for (src, dest) in [(22, port), (40000, port.wrapping_add(1))] {
        let mut cmd = scrubbed(user_python());
        cmd.arg("-c")
            .arg(RAW)
            .args(["forge", &src.to_string(), &dest.to_string(), &names[0]]);
        let (out, _) = run_ok("forger", as_user(&mut cmd, &u));
        assert_eq!(out.trim(), "forged closed");
    }
    let mut cmd = user_py(NET, &["client", "127.0.0.1", &port.to_string(), "100000"]);
    default_mode(&mut cmd, &dir);
    let (out, err) = run_ok("client", as_user(&mut cmd, &u));
    assert!(out.starts_with("ok F "), "{out}{err}");
    let err = srv.kill();
    let lines = libshmnet_lines(&err);
    assert!(
        lines.iter().any(|l| l.contains("source port 22 "))
            && lines
                .iter()
                .any(|l| l.contains("is not this listener's address")),
        "server's stderr:\n{err}"
    );
}

/// An epoll registration made before bind and listen (emulated) is
/// carried onto the listener once (found by review): the bound socket's
/// object, which the library keeps, stayed registered under the same
/// number, so each connection was reported twice and the application's
/// EPOLL_CTL_DEL could not remove it.
#[test]
fn registration_before_bind_is_carried_once_emulated() {
    let script = r#"
import socket, select, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT)
s.bind((host, port))
s.listen(8)
a = ep.poll(0.2)
ep.unregister(s.fileno())
b = ep.poll(0.2)
c = socket.socket()
c.connect((host, port))
ep.register(s.fileno(), select.EPOLLIN)
d = ep.poll(1)
print(len(a), len(b), len(d))
"#;
    let dir = tmpdir("iso-carry-once");
    let net = Net::emulated("iso-carry-once");
    let mut cmd = preloaded(python());
    cmd.args(["-c", script, &net.host_str(), &net.port_str()]);
    let (out, err) = run_ok(
        "epoll before bind",
        emulated(&mut cmd, &net.partitions, &dir),
    );
    assert_eq!(
        out.trim(),
        "0 0 1",
        "events after listen, after DEL, after connect: {err}"
    );
}

/// A process that moves to another network namespace (unshare, as
/// container tools do) keeps meeting its peers there over shared memory
/// (found by review): the library's cached netlink sockets answered for
/// the old namespace, so listeners of the new one were not found (kernel
/// TCP, `fallback_no_listener`). One process: a round trip on 127.0.0.1,
/// unshare(CLONE_NEWNET), another round trip in the new namespace.
#[test]
fn moving_to_another_network_namespace_keeps_shared_memory() {
    if skip_unless_root("moving_to_another_network_namespace_keeps_shared_memory") {
        return;
    }
    let script = r#"
import ctypes, fcntl, hashlib, os, socket, struct, sys, threading
def serve(s):
    c, _ = s.accept()
    h = hashlib.sha256()
    while (b := c.recv(65536)):
        h.update(b)
    c.sendall(h.hexdigest().encode())
    c.close()
def roundtrip():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    t = threading.Thread(target=serve, args=(s,))
    t.start()
    c = socket.create_connection(s.getsockname())
    d = os.urandom(100000)
    c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    r = b""
    while (b := c.recv(100)):
        r += b
    t.join()
    return r.decode() == hashlib.sha256(d).hexdigest()
a = roundtrip()
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x40000000) != 0:
    sys.exit(f"unshare: errno {ctypes.get_errno()}")
# lo up (SIOCSIFFLAGS; no subprocess: a fork would hide the defect)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(u, 0x8914, struct.pack("16sh", b"lo", 0x1 | 0x8 | 0x40))
print(a, roundtrip(), flush=True)
"#;
    let dir = tmpdir("iso-unshare");
    let mut cmd = preloaded(python());
    cmd.args(["-c", script]);
    let (out, err) = run_ok("unsharing process", default_mode(&mut cmd, &dir));
    assert_eq!(out.trim(), "True True", "{err}");
    let s = stats(&dir);
    assert_eq!(
        (count(&s, "shm"), count(&s, "accepted_shm")),
        (2, 2),
        "counters {s:?}"
    );
}

/// Defect 3 with nginx: a master started as root with `user U;` workers,
/// as a reverse proxy on the emulated network (host 1 of the test's /24) in front of
/// an upstream python http.server run as root with SHMNET_ALLOW=U
/// (host 2); a preloaded root curl gets HTTP 200 and the file's
/// bytes (the workers, user U, connect to root's upstream: a 502 before).
#[test]
fn nginx_workers_of_another_user_reach_an_emulated_upstream() {
    if skip_unless_root("nginx_workers_of_another_user_reach_an_emulated_upstream") {
        return;
    }
    let u = TestUser::create();
    let shared = OpenDir::new("nginx", 0o1777);
    let base = OpenDir::new("nginx-prefix", 0o755);
    let shm = shared.path();
    let net = Net::emulated("iso-nginx-emu");
    let parts = net.partitions.as_str();
    // nginx on host 1 of the test's /24, its upstream on host 2.
    let (front, upstream, port) = (net.ip(1), net.ip(2), net.port);
    let prefix = base.join("nginx");
    let www = base.join("www");
    for d in [&prefix, &www, &prefix.join("tmp")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = www.join("f.bin");
    common::write_random_file(&file, 3 << 20, 152);
    let want = sha256_of(&file);

    let mut up = preloaded(python());
    emulated(&mut up, parts, shm)
        .env("SHMNET_ALLOW", u.name())
        .env("PYTHONUNBUFFERED", "1")
        .args(["-m", "http.server", "--bind"])
        .args([upstream.to_string(), port.to_string()])
        .current_dir(&www);
    let mut up = start("upstream http.server (root)", &mut up);
    up.expect("Serving HTTP");

    let conf = format!(
        "user {0} {0};\nworker_processes 2;\ndaemon off;\nmaster_process on;\npid nginx.pid;\n\
         error_log stderr warn;\nevents {{ worker_connections 256; }}\n\
         http {{ access_log off; default_type application/octet-stream;\n\
         client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;\n\
         uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
         server {{ listen {front}:{port};\n\
         location / {{ proxy_pass http://{upstream}:{port}; proxy_max_temp_file_size 0; }} }} }}\n",
        u.name()
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let mut cmd = preloaded(nginx_bin());
    emulated(&mut cmd, parts, shm)
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .args(["-c", "nginx.conf", "-e", "stderr"]);
    let mut nginx = Background::start("nginx", &mut cmd, WAIT, true);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let master = std::fs::read_to_string(prefix.join("nginx.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let workers = master.map(children_of).unwrap_or_default();
        if workers.len() == 2 && workers.iter().all(|w| w.1 == u.uid()) {
            break;
        }
        if Instant::now() > deadline {
            nginx.fail(&format!(
                "no 2 workers of uid {} within 20 s: {workers:?}",
                u.uid()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }

    let got = base.join("got.bin");
    let mut code = String::new();
    for _ in 0..10 {
        let mut curl = preloaded("curl");
        emulated(&mut curl, parts, shm)
            .args(["-sS", "--max-time", "30", "-w", "%{http_code}", "-o"])
            .arg(&got)
            .arg(format!("http://{front}:{port}/f.bin"));
        let out = run(&mut curl);
        code = out.stdout.trim().to_string();
        if code != "000" {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let sum = sha256_of(&got);
    if code != "200" || sum != want {
        let log = nginx.kill();
        panic!(
            "curl -> nginx (workers: user {}) -> root's upstream: HTTP {code}, sha256 {sum} \
             (want 200, {want})\nnginx stderr:\n{log}\nupstream stderr:\n{}",
            u.name(),
            up.kill()
        );
    }
    let log = nginx.kill();
    assert!(
        !log.contains("[alert]") && !log.contains("[emerg]") && !log.contains("[crit]"),
        "nginx: {log}"
    );
    up.kill();
}

// ---------------------------------------------------------------------------
// The directory's mode and owner are the operator's

/// Defect 4: an existing SHMNET_DIR (root's, mode 0755) is used as it is:
/// a default-mode pair connects through it and its mode stays 0755.
#[test]
fn existing_directory_is_not_chmodded() {
    let shm = tmpdir("iso-keepmode").join("shm");
    std::fs::create_dir(&shm).unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut srv = start(
        "server",
        default_mode(&mut py(NET, &["server", "127.0.0.1", "0", "1", "S"]), &shm),
    );
    let (port, _) = port_pid(&mut srv);
    let p = port.to_string();
    let (out, _) = run_ok(
        "client",
        default_mode(&mut py(NET, &["client", "127.0.0.1", &p, "300000"]), &shm),
    );
    assert!(out.starts_with("ok S "), "{out}");
    srv.expect("done 1");
    srv.finish_clean();
    let mode = std::fs::metadata(&shm).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "SHMNET_DIR's mode was changed");
    let s = stats(&shm);
    assert_eq!(
        (count(&s, "shm"), count(&s, "accepted_shm")),
        (1, 1),
        "{s:?}"
    );
}

/// One process: a loopback listener and three connections to it, each
/// checked by sha256. Prints `ok 3`.
const LOOPBACK_SELF: &str = r#"
import hashlib, os, socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
port = srv.getsockname()[1]
def serve():
    for _ in range(3):
        c, _ = srv.accept()
        h = hashlib.sha256()
        while (b := c.recv(65536)):
            h.update(b)
        c.sendall(h.hexdigest().encode()); c.close()
threading.Thread(target=serve, daemon=True).start()
ok = 0
for i in range(3):
    data = os.urandom(300000)
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(data); c.shutdown(socket.SHUT_WR)
    got = b""
    while (b := c.recv(100)):
        got += b
    ok += got.decode() == hashlib.sha256(data).hexdigest()
print("ok", ok)
"#;

/// Defect 4: a SHMNET_DIR owned by another user (a test user's, 0700) is
/// refused by a root program with exactly one `libshmnet:` line naming it;
/// the program's loopback connections still work, and the directory is
/// left as it was.
#[test]
fn directory_of_another_user_is_refused_with_one_line() {
    if skip_unless_root("directory_of_another_user_is_refused_with_one_line") {
        return;
    }
    let u = TestUser::create();
    let base = OpenDir::new("foreign", 0o755);
    let shm = base.join("shm");
    dir_of(&shm, &u, 0o700);
    let (out, err) = run_ok(
        "loopback program",
        default_mode(&mut py(LOOPBACK_SELF, &[]), &shm),
    );
    assert_eq!(out.trim(), "ok 3", "{err}");
    let lines = libshmnet_lines(&err);
    let name = shm.to_string_lossy();
    assert!(
        lines.len() == 1 && lines[0].contains(name.as_ref()),
        "want exactly one libshmnet: line naming {name}; stderr:\n{err}"
    );
    let meta = std::fs::metadata(&shm).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (u.uid(), 0o700),
        "the directory was changed"
    );
}

// ---------------------------------------------------------------------------
// Accept never waits for a connector

/// `server` mode of iso_net.py in the emulated or default mode; with its
/// rendezvous candidates for iso_raw.py.
struct Target {
    srv: Background,
    host: String,
    port: u16,
    shm: PathBuf,
    names: Vec<String>,
}

fn accept_target(name: &str, emu: bool, script: &str) -> Target {
    let shm = tmpdir(name).join("shm");
    // Emulated: the test's own address and port (`Net::emulated`).
    let (host, port) = if emu {
        let net = Net::emulated(name);
        (net.host_str(), net.port)
    } else {
        ("127.0.0.1".to_string(), 0)
    };
    let host = host.as_str();
    let p = port.to_string();
    let mut cmd = if script == "accept" {
        py(ACCEPT, &[host, &p])
    } else {
        py(NET, &["server", host, &p, "0", "T"])
    };
    if emu {
        emulated(&mut cmd, EMULATED, &shm);
    } else {
        default_mode(&mut cmd, &shm);
    }
    let mut srv = if script == "accept" {
        start_piped("server", &mut cmd)
    } else {
        start("server", &mut cmd)
    };
    let (port, pid) = port_pid(&mut srv);
    let abstract_names = if emu {
        vec![format!("@shmnet.5/tcp/{host}:{port}")]
    } else {
        abstract_names_of(pid)
            .into_iter()
            .filter(|n| n.starts_with("@shmnet.5/tcp/c") && !n.contains("/allow/"))
            .collect()
    };
    let names = rendezvous_candidates(&abstract_names, &shm.join(format!("tcp4-{host}-{port}")));
    Target {
        srv,
        host: host.to_string(),
        port,
        shm,
        names,
    }
}

impl Target {
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if self.host == "127.0.0.1" {
            default_mode(cmd, &self.shm)
        } else {
            emulated(cmd, EMULATED, &self.shm)
        }
    }

    fn raw(&self, mode: &str, n: usize) -> Command {
        let n = n.to_string();
        let mut args = vec![mode, n.as_str()];
        args.extend(self.names.iter().map(String::as_str));
        raw(&args)
    }

    /// A preloaded client of the `server` mode: seconds from connect to
    /// the checked answer.
    fn client_seconds(&self) -> f64 {
        let p = self.port.to_string();
        let mut cmd = py(NET, &["client", &self.host, &p, "100000"]);
        let (out, err) = run_ok("preloaded client", self.env(&mut cmd));
        let w = words(&out);
        assert!(w.len() == 3 && w[0] == "ok", "client: {out}\n{err}");
        w[2].parse().unwrap()
    }
}

/// 5 rendezvous connections that never send, then a preloaded client: it
/// is served within 5 s (each idle connection used to hold accept 2 s),
/// then 20 connections of 60 garbage bytes are dropped at once, the server
/// keeps serving, and counts them `dropped_handshakes`.
fn idle_and_garbage(mut t: Target) {
    let mut idle = start_piped("idle rendezvous connections", &mut t.raw("idle", 5));
    idle.expect("connected 5");
    let secs = t.client_seconds();
    assert!(
        secs < 5.0,
        "a client behind 5 idle rendezvous connections took {secs:.1} s (want < 5)"
    );
    let (out, _) = run_ok("garbage", &mut t.raw("garbage", 20));
    let w = words(&out);
    assert_eq!(
        w.last().map(String::as_str),
        Some("20"),
        "garbage connections the listener closed within 10 s: {out}"
    );
    let secs = t.client_seconds();
    assert!(secs < 5.0, "a client after the garbage took {secs:.1} s");
    idle.go();
    idle.finish();
    let s = stats(&t.shm);
    assert!(
        count(&s, "dropped_handshakes") >= 20,
        "server counters after 20 garbage connections: {s:?}"
    );
    t.srv.kill();
}

/// Defect 5a/5c, emulated.
#[test]
fn idle_and_garbage_rendezvous_do_not_stall_accept_emulated() {
    let t = accept_target("iso-idle-emu", true, "server");
    idle_and_garbage(t);
}

/// Defect 5d: the same against a default-mode dual listener on 127.0.0.1,
/// its rendezvous name found in /proc/net/unix (`@shmnet.5/tcp/c<cookie>`
/// held by the server process).
#[test]
fn idle_and_garbage_rendezvous_do_not_stall_accept_default_mode() {
    let t = accept_target("iso-idle-default", false, "server");
    idle_and_garbage(t);
}

/// `report readable=R fds=F ...` of iso_accept.py: (R, F, the line).
fn report(srv: &mut Background) -> (u32, usize, String) {
    srv.go();
    let line = srv.expect("report ");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (field("readable=") as u32, field("fds=") as usize, line)
}

/// 50 rendezvous connections that send 10 bytes of a 60-byte message and
/// hang up, against an epoll server: afterwards its listener is not
/// readable once accept said EAGAIN, it holds no more descriptors than
/// before (a few of slack), a preloaded client still gets through, and the
/// 50 are counted `dropped_handshakes`.
fn half_written(mut t: Target) {
    let (_, fds0, line0) = report(&mut t.srv);
    let (out, _) = run_ok("half-written handshakes", &mut t.raw("partial", 50));
    assert!(out.starts_with("partial 50 "), "{out}");
    let mut last = (1, usize::MAX, String::new());
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(200));
        last = report(&mut t.srv);
        if last.0 == 0 && last.1 <= fds0 + 3 {
            break;
        }
    }
    assert!(
        last.0 == 0 && last.1 <= fds0 + 3,
        "after 50 half-written handshakes: {}\n(before: {line0}; want readable=0 and at most \
         3 more fds)",
        last.2
    );
    let p = t.port.to_string();
    let steps = [
        "session",
        t.host.as_str(),
        &p,
        "connect:a",
        "exchange:a:100000",
    ];
    let mut cmd = py(NET, &steps);
    let (out, _) = run_ok("preloaded client", t.env(&mut cmd));
    assert_eq!(out, "connect a ok\nexchange a ok\n");
    let s = stats(&t.shm);
    assert!(
        count(&s, "dropped_handshakes") >= 50,
        "server counters after 50 half-written handshakes: {s:?}"
    );
    t.srv.kill();
}

/// Defect 5b, emulated.
#[test]
fn half_written_handshakes_leave_no_readable_listener_emulated() {
    half_written(accept_target("iso-half-emu", true, "accept"));
}

/// Defect 5b in the default mode (where the issue saw it: a dual listener
/// readable forever, one fd leaked per attempt).
#[test]
fn half_written_handshakes_leave_no_readable_listener_default_mode() {
    half_written(accept_target("iso-half-default", false, "accept"));
}

// ---------------------------------------------------------------------------
// Limits

fn limits_exe() -> PathBuf {
    build_c("iso_limits", &["-O2", "-Wall"])
}

/// An echo server (iso_net.py) set up by `env`; its port.
fn echo_server(
    env: impl FnOnce(&mut Command) -> &mut Command,
    host: &str,
    port: &str,
) -> (Background, u16) {
    let mut cmd = py(NET, &["echo", host, port]);
    let mut srv = start("echo server", env(&mut cmd));
    let (port, _) = port_pid(&mut srv);
    (srv, port)
}

/// Defect 6, RLIMIT_FSIZE 4096 in the default mode: the C client is not
/// killed by SIGXFSZ; its connection goes over kernel TCP
/// (`fallback_resources` 1) with every byte intact. A warm-up connection
/// first, so the counters exist before the limited client runs.
#[test]
fn small_file_size_limit_falls_back_default_mode() {
    let exe = limits_exe();
    let shm = tmpdir("iso-fsize-default").join("shm");
    let (mut srv, port) = echo_server(|c| default_mode(c, &shm), "127.0.0.1", "0");
    let p = port.to_string();
    let steps = ["session", "127.0.0.1", &p, "connect:w", "exchange:w:1000"];
    let (out, _) = run_ok("warm-up", default_mode(&mut py(NET, &steps), &shm));
    assert_eq!(out, "connect w ok\nexchange w ok\n");
    let out = run(default_mode(
        preloaded(&exe).args(["fsize", "127.0.0.1", &p]),
        &shm,
    ));
    assert!(
        out.status.success() && out.stdout == "ok\n",
        "client with RLIMIT_FSIZE 4096: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let s = stats(&shm);
    assert_eq!(
        (count(&s, "shm"), count(&s, "fallback_resources")),
        (1, 1),
        "{s:?}"
    );
    srv.kill();
}

/// A log file at RLIMIT_FSIZE (found by review): the log line that would
/// cross it is dropped, not written (SIGXFSZ would kill the program).
#[test]
fn log_file_at_the_file_size_limit_does_not_kill() {
    let exe = limits_exe();
    let dir = tmpdir("iso-fsize-log");
    let shm = dir.join("shm");
    let log = dir.join("full.log");
    std::fs::write(&log, vec![b'.'; 4096]).unwrap();
    let (mut srv, port) = echo_server(|c| default_mode(c, &shm), "127.0.0.1", "0");
    let mut cmd = preloaded(&exe);
    cmd.args(["fsize", "127.0.0.1", &port.to_string()])
        .env("SHMNET_LOG", "debug")
        .env("SHMNET_LOG_FILE", &log);
    let out = run(default_mode(&mut cmd, &shm));
    assert!(
        out.status.success() && out.stdout == "ok\n",
        "client with RLIMIT_FSIZE 4096 and a full log file: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let text = std::fs::read(&log).unwrap();
    assert!(text.ends_with(b"\n"), "the log ends with a whole line");
    srv.kill();
}

/// Defect 6, RLIMIT_FSIZE 4096 in the emulated mode:
/// connect fails with ENOBUFS and a `libshmnet:` line; the program lives on.
#[test]
fn small_file_size_limit_is_enobufs_emulated() {
    let exe = limits_exe();
    let shm = tmpdir("iso-fsize-emu").join("shm");
    let net = Net::emulated("iso-fsize-emu");
    let (host, port) = (net.host_str(), net.port_str());
    let parts = net.partitions.as_str();
    let (mut srv, _) = echo_server(|c| emulated(c, parts, &shm), &host, &port);
    let out = run(emulated(
        preloaded(&exe).args(["fsize", &host, &port]),
        parts,
        &shm,
    ));
    assert!(
        out.status.success()
            && out.stdout == "error ENOBUFS\n"
            && !libshmnet_lines(&out.stderr).is_empty(),
        "client with RLIMIT_FSIZE 4096: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    srv.kill();
}

/// Defect 6, RLIMIT_NOFILE lowered from 4096 to 64 after a first connect:
/// all 11 connections (the first used again after the change) go over
/// shared memory (`shm` 11) and carry their bytes. The library keeps the
/// limit it saw: the setrlimit hook tells it of the change.
#[test]
fn lowered_fd_limit_keeps_shared_memory() {
    lowered_fd_limit("nofile");
}

/// The same, the limit lowered past the hooks (a raw prlimit64): the
/// first move of a library fd to the old floor fails with EINVAL and the
/// limit is looked up again.
#[test]
fn fd_limit_lowered_past_the_hooks_keeps_shared_memory() {
    lowered_fd_limit("nofile_raw");
}

fn lowered_fd_limit(mode: &str) {
    let exe = limits_exe();
    let shm = tmpdir(&format!("iso-{mode}")).join("shm");
    let (mut srv, port) = echo_server(|c| default_mode(c, &shm), "127.0.0.1", "0");
    let p = port.to_string();
    let out = run(default_mode(
        preloaded(&exe).args([mode, "127.0.0.1", &p]),
        &shm,
    ));
    assert!(
        out.status.success() && out.stdout == "ok 11\n",
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let s = stats(&shm);
    assert_eq!(count(&s, "shm"), 11, "{s:?}");
    srv.kill();
}

/// Defect 6, no descriptor left at connect (emulated): EMFILE
/// as the kernel says it; with a few fds freed the next connect works.
#[test]
fn out_of_fds_is_emfile_emulated() {
    let exe = limits_exe();
    let shm = tmpdir("iso-emfile").join("shm");
    let net = Net::emulated("iso-emfile");
    let (host, port) = (net.host_str(), net.port_str());
    let parts = net.partitions.as_str();
    let (mut srv, _) = echo_server(|c| emulated(c, parts, &shm), &host, &port);
    let out = run(emulated(
        preloaded(&exe).args(["emfile", &host, &port]),
        parts,
        &shm,
    ));
    assert!(
        out.status.success() && out.stdout == "connect EMFILE\nafter ok\n",
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    srv.kill();
}

/// A server out of fds, then with one (room for the rendezvous
/// connection, none for its memfd), then none again (found by review):
/// each accept says EMFILE and the listener stays readable while the
/// connection waits, as the kernel's does; with fds freed, the next accept
/// returns it, bytes intact. Before, the memfd was dropped by the kernel
/// and the connection lost; a parked connection's wake-up could be lost
/// and a blocking accept then waited forever.
/// FULL_SERVER's steps as they should go: EMFILE with no fd free, the
/// listener readable all along; with one fd free (`close`) the accept
/// completes as kernel TCP's does where the library's io_uring pocket can
/// lend the connection's number to its memfd (decision 58), or says EMFILE
/// until 16 are freed where io_uring is refused (one fd more: the memfd's
/// room, docs/compatibility.md).
fn out_of_fds_as_expected(seen: &str) -> bool {
    seen.ends_with("none r EMFILE\nclose r ok\ndone")
        || seen.ends_with(
            "none r EMFILE\nclose r EMFILE\nnone r EMFILE\nopen r EMFILE\n\
             none r EMFILE\nfree r ok\ndone",
        )
}

const FULL_SERVER: &str = r#"
import socket, sys, os, resource, select, hashlib
host = sys.argv[1]
l = socket.socket()
l.bind((host, 0))
l.listen(8)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
spare = []
try:
    while True:
        spare.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("port", l.getsockname()[1], "pid", os.getpid(), flush=True)
for step in ["none", "close", "none", "open", "none", "free"]:
    if step == "close":
        os.close(spare.pop())
    elif step == "open":
        spare.append(os.open("/dev/null", os.O_RDONLY))
    elif step == "free":
        for _ in range(16):
            os.close(spare.pop())
    r, _, _ = select.select([l], [], [], 60)
    try:
        c, _ = l.accept()
        print(step, "r" if r else "-", "ok", flush=True)
        break
    except OSError as e:
        print(step, "r" if r else "-", "EMFILE" if e.errno == 24 else e.errno, flush=True)
h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
c.sendall(h.hexdigest().encode())
c.close()
print("done", flush=True)
"#;

/// A listener shared by two processes (fork): A parks a connection whose
/// message has not arrived; B has no fd left when it arrives. B's accept
/// says EMFILE (found by review: EAGAIN, and the event that would have
/// woken A was consumed, so A never saw the connection).
const SIBLINGS: &str = r#"
import os, resource, select, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
s.setblocking(False)
print("port", s.getsockname()[1], "pid", os.getpid(), flush=True)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    spare = []
    try:
        while True:
            spare.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print("B full", flush=True)
    ready, _, _ = select.select([s], [], [], 10)
    try:
        s.accept()
        print("B ok", flush=True)
    except OSError as e:
        print("B", "readable" if ready else "-", "EMFILE" if e.errno == 24 else e.errno, flush=True)
    os._exit(0)
sys.stdin.readline()
try:
    s.accept()
    print("A ok", flush=True)
except BlockingIOError:
    print("A parked", flush=True)
os.write(w, b"x")
os.waitpid(pid, 0)
print("done", flush=True)
"#;

#[test]
fn forked_sibling_without_fds_says_emfile() {
    let dir = tmpdir("iso-siblings");
    let mut cmd = py(SIBLINGS, &[]);
    let mut srv = start_piped("forked server", default_mode(&mut cmd, &dir));
    let (port, pid) = port_pid(&mut srv);
    let name = cookie_rendezvous_of(pid);
    let p = port.to_string();
    let mut raw_cmd = raw(&["forge-later", "40000", &p, &name]);
    let mut forger = start_piped("forger", raw_cmd.stdin(Stdio::piped()));
    forger.expect("connected");
    srv.go();
    assert_eq!(srv.expect("A "), "A parked");
    srv.expect("B full");
    forger.go();
    assert_eq!(srv.expect("B "), "B readable EMFILE");
    srv.expect("done");
    forger.kill();
}

/// The same on the emulated network across namespaces (found by review):
/// a listener whose rendezvous is in SHMNET_DIR said EAGAIN when out of
/// fds, while poll said readable (an event loop spun). Server in A on
/// 10.211.14.1, client in B; then a client whose connect message is late
/// (`late_client`: this test failed 1 run in 5 under load, `close r
/// EMFILE`, see `late_message_at_the_fd_limit`).
#[test]
fn accept_without_fds_is_emfile_across_namespaces() {
    if skip_unless_root("accept_without_fds_is_emfile_across_namespaces") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(14);
    let shm = tmpdir("iso-accept-emfile-ns").join("shm");
    let ip = Netns::veth_addr(14, 1).to_string();
    for late in [false, true] {
        if late && !have_strace() {
            continue;
        }
        let mut cmd = a.preloaded(python());
        cmd.args(["-c", FULL_SERVER, &ip]);
        emulated(&mut cmd, "10.211.0.0/16", &shm);
        let mut srv = start("server in A, out of fds", &mut cmd);
        let (port, _) = port_pid(&mut srv);
        let mut cmd = if late {
            late_client(b.cmd("strace"), &ip, port)
        } else {
            let mut cmd = b.preloaded(python());
            cmd.args(["-c", HASH_CLIENT, &ip, &port.to_string()]);
            cmd
        };
        emulated(&mut cmd, "10.211.0.0/16", &shm);
        let out = run(&mut cmd);
        srv.expect("done");
        let seen = srv.seen.join("\n");
        assert!(
            out_of_fds_as_expected(&seen),
            "server (message late: {late}):\n{seen}"
        );
        assert!(
            out.status.success() && out.stdout.trim() == "ok",
            "client in B (message late: {late}): {}\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        srv.kill();
    }
}

/// Three parked connections whose messages arrive while the server has one
/// fd left (found by review). In the parking queue (a listener of a
/// process that forked: argument "fork"), accept says EMFILE and all three
/// wait; once fds are freed each is looked at (here refused: the forged
/// messages bring no segment). Before, every parked one was taken off the
/// queue with room for one: the kernel dropped the others, their
/// connectors were reset and nothing said so. Held in memory (no fork:
/// no queue), each has its fd already and is looked at at once: refused,
/// and accept says EAGAIN.
const PARK_THREE: &str = r#"
import os, resource, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
s.setblocking(False)
if sys.argv[1:] == ["fork"]:
    if os.fork() == 0:
        os._exit(0)
    os.wait()
print("port", s.getsockname()[1], "pid", os.getpid(), flush=True)
sys.stdin.readline()
try:
    s.accept()
    print("accepted?!", flush=True)
except BlockingIOError:
    print("parked", flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
spare = []
try:
    while True:
        spare.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
os.close(spare.pop())
print("full", flush=True)
sys.stdin.readline()
time.sleep(0.2)
try:
    s.accept()
    print("accept ok?!", flush=True)
except OSError as e:
    print("accept", "EMFILE" if e.errno == 24 else e.errno, flush=True)
for _ in range(16):
    os.close(spare.pop())
try:
    s.accept()
except BlockingIOError:
    pass
print("done", flush=True)
"#;

#[test]
fn parked_connections_wait_while_fds_run_out() {
    for (args, expect) in [(&["fork"][..], "accept EMFILE"), (&[][..], "accept 11")] {
        let dir = tmpdir("iso-park-three");
        let mut cmd = py(PARK_THREE, args);
        default_mode(&mut cmd, &dir).env("SHMNET_LOG", "warn");
        let mut srv = start_piped("server", &mut cmd);
        let (port, pid) = port_pid(&mut srv);
        let name = cookie_rendezvous_of(pid);
        let p = port.to_string();
        let mut forgers: Vec<Background> = (0..3)
            .map(|_| {
                let mut cmd = raw(&["forge-later", "40000", &p, &name]);
                let mut f = start_piped("forger", cmd.stdin(Stdio::piped()));
                f.expect("connected");
                f
            })
            .collect();
        srv.go();
        assert_eq!(srv.expect("parked"), "parked");
        srv.expect("full");
        for f in &mut forgers {
            f.go();
        }
        srv.go();
        assert_eq!(srv.expect("accept"), expect, "{args:?}");
        srv.expect("done");
        for f in &mut forgers {
            assert_eq!(f.expect("forged"), "forged closed");
        }
        let err = srv.kill();
        let refused = libshmnet_lines(&err)
            .iter()
            .filter(|l| l.contains("no shared memory attached"))
            .count();
        assert_eq!(refused, 3, "{args:?}: server's stderr:\n{err}");
    }
}

/// accept tries the kernel listener first and says EMFILE after its look
/// consumed a parked connection's event (found by review): the parked one
/// was never looked at again (the listener not readable for it). Here the
/// parked connection (a forged message, refused once looked at) must be
/// looked at once fds are free.
const KERNEL_FIRST_EMFILE: &str = r#"
import os, resource, select, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
s.setblocking(False)
print("port", s.getsockname()[1], "pid", os.getpid(), flush=True)
sys.stdin.readline()
try:
    s.accept()
except BlockingIOError:
    print("parked", flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
spare = []
try:
    while True:
        spare.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("full", flush=True)
sys.stdin.readline()
time.sleep(0.3)
try:
    s.accept()
except OSError as e:
    print("accept", e.errno, flush=True)
for _ in range(16):
    os.close(spare.pop())
kept = []
for _ in range(4):
    if select.select([s], [], [], 1)[0]:
        try:
            kept.append(s.accept())
        except BlockingIOError:
            pass
print("done", flush=True)
time.sleep(1)
"#;

#[test]
fn parked_connection_is_looked_at_after_a_kernel_emfile() {
    let dir = tmpdir("iso-kernel-emfile");
    let mut cmd = py(KERNEL_FIRST_EMFILE, &[]);
    let mut srv = start_piped("server", default_mode(&mut cmd, &dir));
    let (port, pid) = port_pid(&mut srv);
    let name = cookie_rendezvous_of(pid);
    let p = port.to_string();
    let mut raw_cmd = raw(&["forge-later", "40000", &p, &name]);
    let mut forger = start_piped("forger", raw_cmd.stdin(Stdio::piped()));
    forger.expect("connected");
    srv.go();
    srv.expect("parked");
    srv.expect("full");
    let _kernel = std::net::TcpStream::connect(("127.0.0.1", port)).expect("kernel connect");
    forger.go();
    srv.go();
    assert_eq!(srv.expect("accept"), "accept 24");
    srv.expect("done");
    assert_eq!(forger.expect("forged"), "forged closed");
    srv.kill();
}

const HASH_CLIENT: &str = r#"
import socket, sys, hashlib, os
data = os.urandom(300000)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    b = s.recv(100)
    if not b:
        break
    got += b
print("ok" if got.decode() == hashlib.sha256(data).hexdigest() else "bad " + got.decode())
"#;

#[test]
fn accept_without_fds_for_the_handshake_is_emfile() {
    let dir = tmpdir("iso-accept-emfile");
    let net = Net::emulated("iso-accept-emfile-emu");
    let emu_host = net.host_str();
    for (host, emu) in [("127.0.0.1", false), (emu_host.as_str(), true)] {
        let mode = |cmd: &mut Command| {
            if emu {
                emulated(cmd, &net.partitions, &dir);
            } else {
                default_mode(cmd, &dir);
            }
        };
        let mut cmd = preloaded(python());
        cmd.args(["-c", FULL_SERVER, host]);
        mode(&mut cmd);
        let mut srv = start("server out of fds", &mut cmd);
        let (port, _) = port_pid(&mut srv);
        let mut cmd = preloaded(python());
        cmd.args(["-c", HASH_CLIENT, host, &port.to_string()]);
        mode(&mut cmd);
        let (out, err) = run_ok("client", &mut cmd);
        assert_eq!(out.trim(), "ok", "client (emulated: {emu}): {err}");
        srv.expect("done");
        let seen = srv.seen.join("\n");
        assert!(
            out_of_fds_as_expected(&seen),
            "server (emulated: {emu}):\n{seen}"
        );
        srv.kill();
    }
    let s = stats(&dir);
    assert!(count(&s, "shm") >= 2, "counters {s:?} (want shm for both)");
}

/// A server with one fd free accepts a connection whose connect message is
/// late (emulated across namespaces under load: isolation.rs
/// `accept_without_fds_is_emfile_across_namespaces` failed 1 run in 5).
/// The accept took the connection on the free number and held it while
/// the message was late; a second look at the rendezvous then said EMFILE
/// (the kernel's accept4 asks for a number before it looks at its queue),
/// and accept returned that: a blocking accept said EMFILE and the next
/// one, with no fd freed, returned the connection. Kernel TCP's listener
/// queues a connection only once it is established: its blocking accept
/// waits, a non-blocking one says EAGAIN, and the connection comes with
/// the one fd once it is there.
const LATE_SERVER: &str = r#"
import errno, hashlib, os, resource, select, socket, sys
host, mode = sys.argv[1], sys.argv[2]
l = socket.socket()
l.bind((host, 0))
l.listen(8)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
spare = []
try:
    while True:
        spare.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("port", l.getsockname()[1], "pid", os.getpid(), flush=True)
select.select([l], [], [], 60)
os.close(spare.pop())
def accept(what):
    try:
        c, _ = l.accept()
        print(what, "ok", flush=True)
        return c
    except OSError as e:
        print(what, errno.errorcode.get(e.errno, e.errno), flush=True)
if mode == "nonblocking":
    l.setblocking(False)
    c = accept("first")
    if c is None:
        r, _, _ = select.select([l], [], [], 60)
        c = accept("then " + ("r" if r else "-"))
        if c is None:
            sys.exit(1)
    c.setblocking(True)
else:
    c = accept("accept")
    if c is None:
        sys.exit(1)
h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
c.sendall(h.hexdigest().encode())
c.close()
print("done", flush=True)
"#;

/// `LATE_SERVER`'s client: HASH_CLIENT run by `strace` (a command, in a
/// namespace or not), its connect message (the first sendmsg) held 1 s
/// after its connect queued the connection (under `PARK_PATIENCE`, 2 s,
/// past which a silent one may be dropped). The server's accept comes in
/// that time: a non-blocking one proves it, a message already there would
/// be accepted at once.
fn late_client(mut strace: Command, host: &str, port: u16) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHMNET_") {
            strace.env_remove(key);
        }
    }
    strace
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=sendmsg"])
        .args(["-e", "inject=sendmsg:delay_enter=1000000:when=1"])
        .arg("-E")
        .arg(format!("LD_PRELOAD={}", common::lib().display()))
        .arg(python())
        .args(["-c", HASH_CLIENT, host, &port.to_string()])
        .stdin(Stdio::null());
    strace
}

/// Whether strace is there (tests that need it say they skip).
fn have_strace() -> bool {
    let there = Command::new("strace").arg("-V").output().is_ok();
    if !there {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"skipped: no strace\n");
    }
    there
}

#[test]
fn late_message_at_the_fd_limit() {
    if !have_strace() {
        return;
    }
    let dir = tmpdir("iso-late-emfile");
    let net = Net::emulated("iso-late-emfile-emu");
    let emu_host = net.host_str();
    for (host, emu) in [("127.0.0.1", false), (emu_host.as_str(), true)] {
        let mode = |cmd: &mut Command| {
            if emu {
                emulated(cmd, &net.partitions, &dir);
            } else {
                default_mode(cmd, &dir);
            }
        };
        for (accept, expect) in [
            ("blocking", "accept ok\ndone"),
            ("nonblocking", "first EAGAIN\nthen r ok\ndone"),
        ] {
            let mut cmd = preloaded(python());
            cmd.args(["-c", LATE_SERVER, host, accept]);
            mode(&mut cmd);
            let mut srv = start("server with one fd", &mut cmd);
            let (port, _) = port_pid(&mut srv);
            let mut cmd = late_client(Command::new("strace"), host, port);
            mode(&mut cmd);
            let out = run(&mut cmd);
            srv.expect("done");
            let seen = srv.seen[1..].join("\n");
            assert_eq!(seen, expect, "server (emulated: {emu}, {accept})");
            assert!(
                out.status.success() && out.stdout.trim() == "ok",
                "client (emulated: {emu}, {accept}): {}\n{}\n{}",
                out.status,
                out.stdout,
                out.stderr
            );
            srv.kill();
        }
    }
    let s = stats(&dir);
    assert_eq!(count(&s, "shm"), 4, "counters {s:?}");
}

// ---------------------------------------------------------------------------
// Logging never blocks

/// SHMNET_LOG_FILE naming a symlink another user planted is not followed (found by review: root's program appended its
/// lines to the file the link pointed at): one `libshmnet:` line says
/// why, the program runs. A link of the program's own user is followed.
#[test]
fn log_file_symlink_of_another_user_is_not_followed() {
    if skip_unless_root("log_file_symlink_of_another_user_is_not_followed") {
        return;
    }
    let w = TestUser::create();
    let shared = OpenDir::new("log-link", 0o1777);
    let target = shared.path().join("roots-file");
    std::fs::write(&target, "root's\n").unwrap();
    // In a directory of W's (the kernel's protected_symlinks covers only
    // sticky world-writable ones).
    let wdir = shared.path().join("w");
    dir_of(&wdir, &w, 0o755);
    let theirs = wdir.join("theirs.log");
    let mut ln = Command::new("ln");
    ln.arg("-s").arg(&target).arg(&theirs);
    let st = as_user(&mut ln, &w).status().expect("ln");
    assert!(st.success());
    let mine = shared.path().join("mine.log");
    std::os::unix::fs::symlink(&target, &mine).unwrap();
    for (link, followed) in [(&theirs, false), (&mine, true)] {
        let mut cmd = preloaded(python());
        cmd.args(["-c", "print(1)"])
            .env("SHMNET_LOG", "debug")
            .env("SHMNET_LOG_FILE", link);
        let out = run(&mut cmd);
        let grew = std::fs::read_to_string(&target).unwrap() != "root's\n";
        assert!(
            out.status.success() && out.stdout == "1\n" && grew == followed,
            "link {link:?} (followed: {followed}, target grew: {grew}): {}\n{}",
            out.stdout,
            out.stderr
        );
        if !followed {
            assert!(
                libshmnet_lines(&out.stderr)
                    .iter()
                    .any(|l| l.contains("SHMNET_LOG_FILE")),
                "{}",
                out.stderr
            );
        }
    }
}

/// Defect 7: SHMNET_LOG_FILE naming a FIFO nobody reads. `python3 -c
/// 'print(1)'` finishes (within 10 s: it used to hang before main) with
/// logging off, and with SHMNET_LOG=debug, where one `libshmnet:` line
/// says why the log file is not used.
#[test]
fn fifo_log_file_without_reader_does_not_hang() {
    let dir = tmpdir("iso-fifo");
    let fifo = dir.join("log.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    for level in [None, Some("debug")] {
        let mut cmd = preloaded(python());
        cmd.args(["-c", "print(1)"]).env("SHMNET_LOG_FILE", &fifo);
        if let Some(l) = level {
            cmd.env("SHMNET_LOG", l);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        let status = wait_deadline(&mut child, Duration::from_secs(10));
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        assert!(
            status.is_some_and(|s| s.success()) && out == "1\n",
            "SHMNET_LOG={level:?}, SHMNET_LOG_FILE a FIFO without reader: {} \nstdout:\n{out}\n\
             stderr:\n{err}",
            status.map_or("still running after 10 s (killed)".to_string(), |s| s
                .to_string())
        );
        if level.is_some() {
            let name = fifo.to_string_lossy();
            assert!(
                libshmnet_lines(&err)
                    .iter()
                    .any(|l| l.contains(name.as_ref()) || l.contains("SHMNET_LOG_FILE")),
                "want a libshmnet: line about the log file; stderr:\n{err}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A bounded directory and exact counters

/// Defect 8: 100 short-lived preloaded clients of one server leave at most
/// 3 entries in SHMNET_DIR (no file per process), and the counters are
/// exact: `shm` 100, `accepted_shm` 100.
#[test]
fn directory_stays_bounded_and_counters_exact() {
    let shm = tmpdir("iso-bounded").join("shm");
    let mut srv = start(
        "server",
        default_mode(
            &mut py(NET, &["server", "127.0.0.1", "0", "100", "S"]),
            &shm,
        ),
    );
    let (port, _) = port_pid(&mut srv);
    let p = port.to_string();
    for batch in 0..10 {
        let mut clients: Vec<Background> = (0..10)
            .map(|i| {
                let mut cmd = py(NET, &["client", "127.0.0.1", &p, "1000"]);
                start(
                    &format!("client {}", batch * 10 + i),
                    default_mode(&mut cmd, &shm),
                )
            })
            .collect();
        for c in &mut clients {
            c.expect("ok S ");
            c.finish_clean();
        }
    }
    srv.expect("done 100");
    let during = entries(&shm);
    srv.finish_clean();
    let after = entries(&shm);
    let s = stats(&shm);
    assert!(
        during.len() <= 3 && after.len() <= 3,
        "SHMNET_DIR after 100 client processes: {} entries {:?}; after the server exited: {:?}",
        during.len(),
        &during[..during.len().min(10)],
        after
    );
    assert_eq!(
        (count(&s, "shm"), count(&s, "accepted_shm")),
        (100, 100),
        "{s:?}"
    );
}

/// Defect 8: 32 threads of one process connecting at the same moment are
/// counted exactly (`shm` 32 per round; three rounds, three processes).
#[test]
fn concurrent_connects_are_counted_exactly() {
    let shm = tmpdir("iso-burst").join("shm");
    let (mut srv, port) = echo_server(|c| default_mode(c, &shm), "127.0.0.1", "0");
    let p = port.to_string();
    for round in 1..=3u64 {
        let (out, _) = run_ok(
            "32 threads",
            default_mode(&mut py(NET, &["burst", "127.0.0.1", &p, "32"]), &shm),
        );
        assert_eq!(out, "burst ok 32\n");
        let s = stats(&shm);
        assert_eq!(
            (count(&s, "shm"), count(&s, "accepted_shm")),
            (32 * round, 32 * round),
            "after round {round}: {s:?}"
        );
    }
    srv.kill();
}

/// Defect 8, emulated: a listener killed with SIGKILL, and
/// a client that exited with its connection open, leave nothing in
/// SHMNET_DIR but the per-user counters, and the address can be bound again
/// at once by a new preloaded server that then serves.
#[test]
fn killed_listener_leaves_nothing_behind_emulated() {
    let shm = tmpdir("iso-killed").join("shm");
    let net = Net::emulated("iso-killed-emu");
    let (host, port) = (net.host_str(), net.port_str());
    let (host, port, parts) = (host.as_str(), port.as_str(), net.partitions.as_str());
    let (mut srv, _) = echo_server(|c| emulated(c, parts, &shm), host, port);
    let steps = [
        "session",
        host,
        port,
        "connect:a",
        "exchange:a:1000",
        "pause:hold",
    ];
    let mut cli = start_piped("client", emulated(&mut py(NET, &steps), parts, &shm));
    assert_eq!(cli.expect("connect a"), "connect a ok");
    assert_eq!(cli.expect("exchange a"), "exchange a ok");
    cli.expect("hold");
    srv.kill9();
    cli.go();
    cli.finish();
    let left: Vec<String> = entries(&shm)
        .into_iter()
        .filter(|n| *n != format!("stats-{}", euid()))
        .collect();
    assert!(
        left.is_empty(),
        "left in SHMNET_DIR by a killed listener and an exited client: {left:?}"
    );
    let (mut again, _) = echo_server(|c| emulated(c, parts, &shm), host, port);
    let steps = ["session", host, port, "connect:a", "exchange:a:100000"];
    let (out, _) = run_ok("client", emulated(&mut py(NET, &steps), parts, &shm));
    assert_eq!(out, "connect a ok\nexchange a ok\n");
    again.kill();
}

// ---------------------------------------------------------------------------
// Two namespaces joined by a veth pair

/// Namespaces A (10.211.9.1) and B (10.211.9.2) joined by a veth pair,
/// the default mode with SHMNET_PARTITIONS=10.211.0.0/16 and one
/// SHMNET_DIR: a preloaded server in A (bound to 10.211.9.1, then to
/// 0.0.0.0) sends a 16 MiB file; a preloaded client in B gets it over
/// shared memory (no ESTABLISHED kernel connection on the port in A or B
/// while it is paused, `shm` counted), a plain client in B over the veth
/// (a kernel connection exists meanwhile); both byte-exact.
#[test]
fn veth_namespaces_meet_over_shared_memory() {
    if skip_unless_root("veth_namespaces_meet_over_shared_memory") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(9);
    let dir = tmpdir("iso-veth");
    let shm = dir.join("shm");
    let file = dir.join("16m.bin");
    common::write_random_file(&file, 16 << 20, 9);
    let want = format!("got {} {}", 16 << 20, sha256_of(&file));
    let env = |cmd: &mut Command| {
        cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
            .env("SHMNET_DIR", &shm);
    };
    let server_ip = Netns::veth_addr(9, 1).to_string();
    let mut n_shm = 0;
    for (bind, port) in [(server_ip.as_str(), "18209"), ("0.0.0.0", "18210")] {
        let f = file.to_str().unwrap();
        let mut cmd = a.py(NET, &["files", bind, port, f, "2"]);
        env(&mut cmd);
        let mut srv = start(&format!("server in A on {bind}"), &mut cmd);
        port_pid(&mut srv);
        let port_n: u16 = port.parse().unwrap();
        for pre in [true, false] {
            let args = ["fetch", server_ip.as_str(), port, "pause"];
            let mut cmd = if pre {
                let mut cmd = b.py(NET, &args);
                env(&mut cmd);
                cmd
            } else {
                b.plain_py(NET, &args)
            };
            let who = if pre {
                "preloaded client in B"
            } else {
                "plain client in B"
            };
            let mut cli = start_piped(who, &mut cmd);
            cli.expect("in-flight");
            let mut tcp = established(&a.kernel_tcp_sockets(), port_n);
            tcp.extend(established(&b.kernel_tcp_sockets(), port_n));
            cli.go();
            let got = cli.expect("got ");
            cli.finish_clean();
            assert_eq!(got, want, "{who}, server on {bind}: the file differs");
            if pre {
                n_shm += 1;
                let s = stats(&shm);
                assert!(
                    tcp.is_empty() && count(&s, "shm") == n_shm,
                    "{who}, server on {bind}: kernel TCP connections during the transfer \
                     {tcp:?}; counters {s:?} (want shm={n_shm})"
                );
            } else {
                assert!(
                    !tcp.is_empty(),
                    "{who}, server on {bind}: no kernel TCP connection during its transfer"
                );
            }
        }
        srv.expect("sent 2");
        srv.finish_clean();
    }
}

/// Across namespaces, other users (found by trying real programs): a
/// listener in A of user U that allows V serves V's client in B over shared
/// memory (V names U too: across namespaces the kernel cannot vouch for the
/// listener, so a connector trusts only users it names), and W's falls
/// back to kernel TCP. Before, the socket file in SHMNET_DIR was 0755, so V
/// got EACCES and fell back too (counted `fallback_refused`). All share one
/// root-owned sticky directory.
#[test]
fn veth_namespaces_other_users_meet_when_allowed() {
    if skip_unless_root("veth_namespaces_other_users_meet_when_allowed") {
        return;
    }
    let (u, v, w) = (TestUser::create(), TestUser::create(), TestUser::create());
    let (a, b) = Netns::pair_with_veth(10);
    let shared = OpenDir::new("veth-users", 0o1777);
    let ip = Netns::veth_addr(10, 1).to_string();
    let drop = |user: &TestUser| format!("{}:{}", user.uid(), user.gid());
    let env = |cmd: &mut Command| {
        cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
            .env("SHMNET_DIR", shared.path());
    };
    let mut cmd = a.py(NET, &["--drop", &drop(&u), "server", &ip, "0", "0", "U"]);
    env(&mut cmd);
    cmd.env("SHMNET_ALLOW", v.name());
    let mut srv = start("server in A (user U, allows V)", &mut cmd);
    let (port, _) = port_pid(&mut srv);
    for (user, key) in [(&v, "shm"), (&w, "fallback_policy")] {
        let before = count(&stats(shared.path()), key);
        let mut cmd = b.py(
            NET,
            &[
                "--drop",
                &drop(user),
                "client",
                &ip,
                &port.to_string(),
                "1048576",
            ],
        );
        env(&mut cmd);
        cmd.env("SHMNET_ALLOW", u.name());
        let out = run(&mut cmd);
        assert!(
            out.stdout.starts_with("ok U "),
            "client of {}: {}\n{}",
            user.name(),
            out.stdout,
            out.stderr
        );
        let s = stats(shared.path());
        assert_eq!(
            count(&s, key),
            before + 1,
            "client of {}: counters {s:?} (want {key} one more)",
            user.name()
        );
    }
    srv.kill();
}

/// A listener in SHMNET_DIR (an address behind a veth) that closes leaves
/// none of its files behind, its policy hints included (found by review:
/// `<name>.allow-*` stayed).
#[test]
fn veth_closed_listener_leaves_no_files() {
    if skip_unless_root("veth_closed_listener_leaves_no_files") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(12);
    let shm = tmpdir("iso-veth-files").join("shm");
    let ip = Netns::veth_addr(12, 1).to_string();
    let env = |cmd: &mut Command| {
        cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
            .env("SHMNET_DIR", &shm)
            .env("SHMNET_ALLOW", "*");
    };
    let mut cmd = a.py(NET, &["server", &ip, "0", "1", "A"]);
    env(&mut cmd);
    let mut srv = start("server in A", &mut cmd);
    let (port, _) = port_pid(&mut srv);
    let named = |e: &String| e.contains("allow") || e.starts_with("tcp");
    let during: Vec<String> = entries(&shm).into_iter().filter(named).collect();
    assert!(
        during.iter().any(|e| e.contains(".allow-")),
        "a policy hint while listening: {during:?}"
    );
    let mut cmd = b.py(NET, &["client", &ip, &port.to_string(), "100000"]);
    env(&mut cmd);
    let (out, err) = run_ok("client in B", &mut cmd);
    assert!(out.starts_with("ok A "), "{out}{err}");
    srv.expect("done");
    srv.finish();
    let left: Vec<String> = entries(&shm).into_iter().filter(named).collect();
    assert!(
        left.is_empty(),
        "left behind: {left:?} (during: {during:?})"
    );
}

/// A server that moves to a network namespace of its own after it
/// listened (a sandbox: bind, then unshare the network) keeps serving
/// over shared memory (found by review): its listener asked the new
/// namespace whether a connector's address was routed to it, and reset
/// the connection. Server in A on 10.211.13.1, client in B.
#[test]
fn veth_listener_keeps_its_namespace_after_unshare() {
    if skip_unless_root("veth_listener_keeps_its_namespace_after_unshare") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(13);
    let shm = tmpdir("iso-veth-unshare").join("shm");
    let ip = Netns::veth_addr(13, 1).to_string();
    let env = |cmd: &mut Command| {
        cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
            .env("SHMNET_DIR", &shm);
    };
    let server = r#"
import ctypes, hashlib, os, socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(8)
print("port", s.getsockname()[1], "pid", os.getpid(), flush=True)
def serve():
    c, _ = s.accept()
    h = hashlib.sha256()
    while (b := c.recv(65536)):
        h.update(b)
    c.sendall(("S " + h.hexdigest()).encode())
    c.close()
serve()
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:
    sys.exit(f"unshare: errno {ctypes.get_errno()}")
print("unshared", flush=True)
serve()
serve()
print("done", flush=True)
"#;
    let mut cmd = a.py(server, &[&ip]);
    env(&mut cmd);
    let mut srv = start("server in A", &mut cmd);
    let (port, _) = port_pid(&mut srv);
    for (ns, when) in [(&b, "B before"), (&a, "A after"), (&b, "B after")] {
        if when == "A after" {
            srv.expect("unshared");
        }
        let mut cmd = ns.py(NET, &["client", &ip, &port.to_string(), "100000"]);
        env(&mut cmd);
        let (out, err) = run_ok("client", &mut cmd);
        assert!(
            out.starts_with("ok S "),
            "client in {when} unshare: {out}{err}"
        );
    }
    srv.expect("done");
    let s = stats(&shm);
    assert_eq!(
        (count(&s, "shm"), count(&s, "fallback_refused")),
        (2, 1),
        "counters {s:?}"
    );
}

/// Programs a server runs (system(), popen) inherit its listener if it is
/// not close-on-exec, as C programs' sockets are by default; preloaded,
/// they adopt it quietly (found by review: each printed a `libshmnet:`
/// line, its SHMNET_DIR name being held by the server) and leave its
/// backlog alone. The server then still serves a client of B over shared
/// memory.
#[test]
fn veth_programs_a_server_runs_stay_quiet() {
    if skip_unless_root("veth_programs_a_server_runs_stay_quiet") {
        return;
    }
    let (a, b) = Netns::pair_with_veth(15);
    let shm = tmpdir("iso-veth-system").join("shm");
    let ip = Netns::veth_addr(15, 1).to_string();
    let env = |cmd: &mut Command| {
        cmd.env("SHMNET_PARTITIONS", "127.0.0.0/8,10.211.0.0/16")
            .env("SHMNET_DIR", &shm);
    };
    let server = r#"
import hashlib, os, socket, sys
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(8)
s.set_inheritable(True)
for _ in range(3):
    os.system("true")
print("port", s.getsockname()[1], "pid", os.getpid(), flush=True)
c, _ = s.accept()
h = hashlib.sha256()
while (b := c.recv(65536)):
    h.update(b)
c.sendall(("S " + h.hexdigest()).encode())
c.close()
print("done", flush=True)
"#;
    let mut cmd = a.py(server, &[]);
    env(&mut cmd);
    let mut srv = start("server in A", &mut cmd);
    let (port, _) = port_pid(&mut srv);
    let mut cmd = b.py(NET, &["client", &ip, &port.to_string(), "100000"]);
    env(&mut cmd);
    let (out, err) = run_ok("client in B", &mut cmd);
    assert!(out.starts_with("ok S "), "{out}{err}");
    srv.expect("done");
    let err = srv.finish();
    assert!(libshmnet_lines(&err).is_empty(), "stderr:\n{err}");
    assert_eq!(count(&stats(&shm), "shm"), 1);
}

/// With ip_unprivileged_port_start raised into the library's ephemeral
/// ports (32768-60999; the kernel allows it when ip_local_port_range starts
/// above it), connections of other users than root still work (found by
/// review: the listener took the connector's virtual source port for a
/// privileged one and reset about a quarter of them). 12 clients, each a
/// process of its own (each takes its own block of ports).
#[test]
fn raised_unprivileged_port_start_keeps_connections() {
    if skip_unless_root("raised_unprivileged_port_start_keeps_connections") {
        return;
    }
    let ns = Netns::create();
    for (key, value) in [
        ("net.ipv4.ip_local_port_range", "40000 60999"),
        ("net.ipv4.ip_unprivileged_port_start", "40000"),
    ] {
        let st = ns
            .cmd("sysctl")
            .args(["-qw", &format!("{key}={value}")])
            .status()
            .expect("sysctl");
        assert!(st.success(), "sysctl {key}");
    }
    let u = TestUser::create();
    let base = OpenDir::new("port-start", 0o755);
    let dir = base.join("u");
    dir_of(&dir, &u, 0o700);
    let drop = format!("{}:{}", u.uid(), u.gid());
    let mut cmd = ns.py(
        NET,
        &["--drop", &drop, "server", "127.0.0.1", "41000", "0", "P"],
    );
    default_mode(&mut cmd, &dir);
    let mut srv = start("server", &mut cmd);
    port_pid(&mut srv);
    for i in 0..12 {
        let args = ["--drop", &drop, "client", "127.0.0.1", "41000", "10000"];
        let mut cmd = ns.py(NET, &args);
        default_mode(&mut cmd, &dir);
        let (out, err) = run_ok("client", &mut cmd);
        assert!(out.starts_with("ok P "), "client {i}: {out}{err}");
    }
    let s = stats(&dir);
    assert_eq!(count(&s, "shm"), 12, "counters {s:?}");
    srv.kill();
}

/// A shared SHMNET_DIR does not let its other users stand in for a
/// listener of another namespace (found by review): user W takes the name
/// of 10.211.11.1:P first (an emulated listener of its own), then root's
/// kernel listener serves that address in the default mode; root's client
/// in B (default settings) must reach root's server (over kernel TCP), not
/// W's. Before, the connector checked only the namespace: W got the
/// connection.
#[test]
fn veth_shared_directory_does_not_let_another_user_stand_in() {
    if skip_unless_root("veth_shared_directory_does_not_let_another_user_stand_in") {
        return;
    }
    let w = TestUser::create();
    let (a, b) = Netns::pair_with_veth(11);
    let shared = OpenDir::new("veth-squat", 0o1777);
    let ip = Netns::veth_addr(11, 1).to_string();
    let port = "18211";
    let drop = format!("{}:{}", w.uid(), w.gid());
    let mut cmd = a.py(NET, &["--drop", &drop, "server", &ip, port, "0", "W"]);
    cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
        .env("SHMNET_FALLBACK", "never")
        .env("SHMNET_DIR", shared.path())
        .env("SHMNET_ALLOW", "*");
    let mut squatter = start("W's emulated listener in A", &mut cmd);
    port_pid(&mut squatter);
    let mut cmd = a.py(NET, &["server", &ip, port, "0", "R"]);
    cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
        .env("SHMNET_DIR", shared.path());
    let mut real = start("root's server in A", &mut cmd);
    port_pid(&mut real);
    let mut cmd = b.py(NET, &["client", &ip, port, "65536"]);
    cmd.env("SHMNET_PARTITIONS", "10.211.0.0/16")
        .env("SHMNET_DIR", shared.path());
    let out = run(&mut cmd);
    assert!(
        out.stdout.starts_with("ok R "),
        "root's client reached {:?} (want root's server, R)\n{}",
        out.stdout,
        out.stderr
    );
    squatter.kill();
    real.kill();
}

// ---------------------------------------------------------------------------
// Containers of one pod

/// Two processes in this network namespace but each in a mount namespace of
/// its own (a private tmpfs on /tmp) and with different SHMNET_DIRs, so
/// they share no directory: the preloaded pair meets over shared memory on
/// 127.0.0.1 (no ESTABLISHED kernel connection while the transfer is
/// paused; the server's `accepted_shm` 1, read from its directory outside
/// /tmp).
#[test]
fn containers_of_one_pod_meet_over_shared_memory() {
    if skip_unless_root("containers_of_one_pod_meet_over_shared_memory") {
        return;
    }
    let srv_dir = tmpdir("iso-pod").join("server-shm");
    let script = format!("{PRELUDE}{NET}");
    let mut cmd = private_tmp(python(), true);
    cmd.arg("-c")
        .arg(&script)
        .args(["server", "127.0.0.1", "0", "1", "S"])
        .env("SHMNET_DIR", &srv_dir);
    let mut srv = start("server (own /tmp)", &mut cmd);
    let (port, _) = port_pid(&mut srv);
    let p = port.to_string();
    let mut cmd = private_tmp(python(), true);
    cmd.arg("-c")
        .arg(&script)
        .args(["client", "127.0.0.1", &p, "8388608", "pause"])
        .env("SHMNET_DIR", "/tmp/shmnet-pod-client");
    let mut cli = start_piped("client (own /tmp)", &mut cmd);
    cli.expect("in-flight");
    let tcp = established(&kernel_tcp_sockets(), port);
    cli.go();
    let ok = cli.expect("ok ");
    cli.finish_clean();
    assert!(ok.starts_with("ok S "), "{ok}");
    srv.expect("done 1");
    srv.finish_clean();
    let s = stats(&srv_dir);
    assert!(
        tcp.is_empty() && count(&s, "accepted_shm") == 1,
        "kernel TCP connections during the transfer: {tcp:?}; server counters {s:?} \
         (want accepted_shm=1)"
    );
}

// ---------------------------------------------------------------------------
// A half-written handshake in an event loop

/// A local process that connects to a rendezvous and sends half a message
/// must not stall (or spin) an event loop's non-blocking accept.
#[test]
fn partial_handshake_does_not_stall_nonblocking_accept() {
    let out = emulated_script("hostile", &[], &[]);
    let line = out
        .lines()
        .find(|l| l.starts_with("non-blocking accept() took"))
        .unwrap_or_else(|| panic!("{out}"));
    let secs: f64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|s| s.trim_end_matches(',').trim_end_matches('s').parse().ok())
        .unwrap_or(99.0);
    assert!(secs < 1.0, "{line}");
}
