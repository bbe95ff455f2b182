//! Configuration from the environment as programs see it: an invalid value
//! gives exactly one `libshmnet:` line and the program runs normally;
//! logging goes where SHMNET_LOG_FILE says and never into the program.

mod common;

use common::{preloaded, py, python, run, run_clean, tmpdir, Net};

/// A loopback TCP echo inside one process.
const ECHO: &str = r#"
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def serve():
    conn, _ = srv.accept()
    while (data := conn.recv(4096)):
        conn.sendall(data)
    conn.close()
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(srv.getsockname())
c.sendall(b"hello" * 1000)
c.shutdown(socket.SHUT_WR)
got = b""
while (data := c.recv(4096)):
    got += data
t.join()
assert got == b"hello" * 1000
print("ok")
"#;

#[test]
fn invalid_values_print_one_line_and_pass_through() {
    let missing_dir = tmpdir("cfg").join("no/such/dir/log");
    let missing_dir = missing_dir.to_str().unwrap();
    // (the bad variable, its value, other variables set alongside)
    type Vars = &'static [(&'static str, &'static str)];
    let cases: Vec<(&str, &str, Vars)> = vec![
        ("SHMNET_PARTITIONS", "foo", &[]),
        ("SHMNET_PARTITIONS", "foo", &[("SHMNET_LOG", "trace")]),
        ("SHMNET_PARTITIONS", "127.0.0.0/33", &[]),
        ("SHMNET_RING_BYTES", "12X", &[]),
        ("SHMNET_RING_BYTES", "1K", &[]),
        ("SHMNET_FALLBACK", "maybe", &[]),
        ("SHMNET_SPIN_US", "-5", &[]),
        ("SHMNET_LOG", "loud", &[]),
        ("SHMNET_DIR", "relative/dir", &[]),
        ("SHMNET_LOG_FILE", missing_dir, &[("SHMNET_LOG", "debug")]),
    ];
    for (var, value, others) in cases {
        let out = run(py(ECHO, &[]).env(var, value).envs(others.iter().copied()));
        let case = format!("{var}={value} with {others:?}");
        assert!(
            out.status.success(),
            "{case}: {}\n{}",
            out.status,
            out.stderr
        );
        assert_eq!(out.stdout, "ok\n", "{case}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{case}: stderr:\n{}", out.stderr);
        assert!(
            lines[0].starts_with(&format!("libshmnet: {var}: ")),
            "{case}: {}",
            lines[0]
        );
        assert!(
            lines[0].ends_with("; passing all sockets through"),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn valid_values_are_silent() {
    let out = run_clean(py(ECHO, &[]).envs([
        ("SHMNET_PARTITIONS", " 127.77.0.0/16, ::1/128 ,127.1.2.3"),
        ("SHMNET_FALLBACK", "never"),
        ("SHMNET_RING_BYTES", "256K"),
        ("SHMNET_SPIN_US", "0"),
        ("SHMNET_LOG", "off"),
        ("SHMNET_DIR", "/tmp/shmnet-test-unused"),
    ]));
    assert_eq!(out, "ok\n");
}

/// A process that chroots where there is no /tmp (in.tftpd -s, a
/// sandboxed worker) and then uses loopback UDP and TCP in the default
/// mode: answered (through the kernel) and silent, as without the
/// library. The default SHMNET_DIR cannot be made there; before, each
/// such process printed a `libshmnet:` line (session 37's UDP sweep).
#[test]
fn a_chrooted_process_without_tmp_is_silent() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let empty = tmpdir("chroot-empty");
    // The child chroots before its library touched the directory (a
    // parent's opened one would be inherited and work).
    let script = r#"
import os, socket, sys
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.chroot(sys.argv[1]); os.chdir("/")
    uport, tport = map(int, os.read(r, 100).split())
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("127.0.0.1", 0))
    c.settimeout(5)
    c.sendto(b"ping", ("127.0.0.1", uport))
    ok = c.recv(10) == b"pong"
    t = socket.socket(); t.connect(("127.0.0.1", tport))
    t.sendall(b"tcp"); ok = ok and t.recv(10) == b"TCP"
    os._exit(0 if ok else 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4)
u.settimeout(10); srv.settimeout(10)
os.write(w, b"%d %d" % (u.getsockname()[1], srv.getsockname()[1]))
d, a = u.recvfrom(10); u.sendto(b"pong", a)
conn, _ = srv.accept(); conn.sendall(conn.recv(10).upper())
_, st = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(st))
"#;
    let out = run_clean(
        py(script, &[empty.to_str().unwrap()])
            .env_remove("SHMNET_DIR")
            .env_remove("XDG_RUNTIME_DIR"),
    );
    assert_eq!(out, "child 0\n");
}

const PARTITION_PEERS: &str = r#"
import socket
def pair(host):
    srv = socket.socket(); srv.bind((host, 0)); srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    c.sendall(b"ping"); assert conn.recv(4) == b"ping"
    print(host, srv.getsockname()[1])
pair(sys.argv[1])
pair("127.0.0.1")
"#;

#[test]
fn debug_log_goes_to_the_log_file_and_names_partition_addresses() {
    let net = Net::emulated("log");
    let log = net.dir.join("shmnet.log");
    let host = net.host_str();
    let out = run_clean(py(PARTITION_PEERS, &[&host]).envs([
        ("SHMNET_PARTITIONS", net.partitions.as_str()),
        ("SHMNET_LOG", "debug"),
        ("SHMNET_LOG_FILE", log.to_str().unwrap()),
    ]));
    let port = out.lines().next().unwrap().split(' ').nth(1).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().all(|l| l.starts_with("libshmnet: ")), "{text}");
    let partition = format!("listener on {host}:{port} (kernel TCP");
    assert!(
        text.contains("bind(fd") && text.contains(&partition),
        "{text}"
    );
    assert!(!text.contains("listener on 127.0.0.1"), "{text}");
    assert!(
        !text.contains("trace"),
        "debug must not include trace lines"
    );
}

#[test]
fn log_without_file_goes_to_stderr_only() {
    let host = Net::emulated("log-stderr").host_str();
    let out = run(py(PARTITION_PEERS, &[&host]).env("SHMNET_LOG", "debug"));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!("{host} ")),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("libshmnet"));
    assert!(out.stderr.lines().count() >= 3, "{}", out.stderr);
    assert!(
        out.stderr.lines().all(|l| l.starts_with("libshmnet: ")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("through shared memory"),
        "{}",
        out.stderr
    );
}

#[test]
fn trace_logs_every_call_without_recursing() {
    let log = tmpdir("trace").join("trace.log");
    // Writes to stderr are hooked too; logging them must not loop.
    let out = run(py(
        "import os\nos.write(2, b'to stderr\\n')\nprint('done')",
        &[],
    )
    .envs([
        ("SHMNET_LOG", "trace"),
        ("SHMNET_LOG_FILE", log.to_str().unwrap()),
    ]));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("done\n", "to stderr\n")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("] write(2, "), "{text}");
    assert!(text.contains(") = 10 (errno"), "{text}");
}

// ---------------------------------------------------------------------------
// What SHMNET_DIR holds

/// Names on the emulated network's loopback addresses are abstract (the
/// kernel drops them with their sockets): SHMNET_DIR holds nothing but the
/// counters and, while the program runs, its status file (docs/status.md,
/// removed at its exit), however many ports it used.
#[test]
fn shmnet_dir_holds_only_counters() {
    let net = Net::emulated("leftovers");
    let dir = net.shm_dir();
    let script = "import os, socket, sys\n\
        addr = (sys.argv[2], int(sys.argv[3]))\n\
        s = socket.socket(); s.bind(addr); s.listen(8)\n\
        for i in range(20):\n\
        \x20   c = socket.create_connection(addr); a, _ = s.accept()\n\
        \x20   c.sendall(b'x'); assert a.recv(1) == b'x'; c.close(); a.close()\n\
        s.close()\n\
        print(sorted(os.listdir(sys.argv[1])) if os.path.isdir(sys.argv[1]) else [])\n";
    let out = run(net
        .env(&mut preloaded(python()))
        .args(["-c", script])
        .arg(&dir)
        .args([net.host_str(), net.port_str()]));
    assert!(out.status.success(), "{}", out.stderr);
    let names: Vec<&str> = out
        .stdout
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|n| !n.is_empty())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("'stats-") || n.starts_with("'status-")),
        "left in SHMNET_DIR while running: {names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("'status-")).count() <= 1,
        "{names:?}"
    );
    let after: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().starts_with("stats-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(after.is_empty(), "left in SHMNET_DIR after exit: {after:?}");
}
