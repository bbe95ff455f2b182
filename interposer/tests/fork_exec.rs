//! Connections inherited across fork and exec: the exec'd program
//! re-attaches them and continues both byte streams where the previous
//! program image left them, bytes already in the rings included — inetd
//! and sshd style (fork, dup2 onto stdin/stdout, exec), a program that
//! execs itself, socat `EXEC:`; in both modes. What goes across exec
//! follows the fds' close-on-exec flag. Emulated hosts are handed out by
//! `common::Net`; default-mode servers listen on 127.0.0.1 or ::1 on a
//! port the kernel picks.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::kernel::{KernelWatch, Scope};
use common::net::{spare_port, EMULATED};
use common::{preloaded, python, run, tmpdir, Background, Net};

fn script(name: &str) -> String {
    common::helper(&format!("py/{name}")).display().to_string()
}

/// A preloaded python running `script` in emulated mode (`emulated`) or in
/// the default mode.
fn py_in(emulated: bool, name: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = preloaded(python());
    cmd.arg(script(name)).args(args);
    if emulated {
        cmd.env("SHMNET_PARTITIONS", EMULATED)
            .env("SHMNET_FALLBACK", "never");
    }
    cmd
}

/// A virtual host of the emulated network for one test (`common::Net`).
fn emu(test: &str) -> String {
    Net::emulated(test).host_str()
}

/// The proof that shared memory carried a connection to `host`:`port`,
/// made before the client runs: the kernel gets no TCP socket on it but a
/// listener (none at all for an emulated address), no TIME_WAIT left by a
/// connection either (`common::kernel`: what was there before is not held
/// against the test).
fn proof(host: &str, port: u16, emulated: bool) -> KernelWatch {
    KernelWatch::new(Scope::Endpoint {
        host: host.parse().expect("test host"),
        port,
        listeners: emulated,
    })
}

fn port_of(line: &str) -> u16 {
    line.split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// The inetd/sshd pattern: the server accepts, forks, dup2()s the
/// connection onto stdin and stdout and execs `sh -c 'head -c N |
/// sha256sum > OUT && exec python3 -c WRITER'`. The client's first 200 000
/// bytes sit in the ring when the server forks; the exec'd programs read
/// all 3 MB (digest compared) and write 2.5 MB back (digest compared). The
/// server closes its copy (sshd, inetd) or keeps it until the child is done
/// (a supervisor). Before: the exec'd program read a closed socket.
fn forked_child_execs(host: &str, emulated: bool, keep: &str) {
    let (n_in, n_out, early) = ("3000000", "2500000", "200000");
    let dir = tmpdir("exec_child");
    let out = dir.join("digest");
    let out_s = out.to_str().unwrap();
    let mut srv = Background::spawn(&mut py_in(
        emulated,
        "exec_serve.py",
        &[host, keep, n_in, n_out, early, out_s],
    ));
    let port = port_of(&srv.expect("port"));
    let before = proof(host, port, emulated);
    let cli = run(&mut py_in(
        emulated,
        "exec_client.py",
        &[host, &port.to_string(), n_in, early, n_out],
    ));
    let queued = srv.expect("queued");
    assert_eq!(queued, format!("queued {early}"), "{}", cli.stderr);
    assert_eq!(srv.expect("child"), "child 0");
    srv.finish_clean();
    assert!(
        cli.status.success() && cli.stderr.is_empty(),
        "{:?}\n{}\n{}",
        cli.status,
        cli.stdout,
        cli.stderr
    );
    let sent = cli.stdout.lines().next().unwrap_or_default();
    let digest = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        sent.strip_prefix("sent "),
        digest.split(' ').next(),
        "the exec'd program read other bytes"
    );
    assert!(
        cli.stdout.contains(&format!("got {n_out} True")),
        "{}",
        cli.stdout
    );
    before.assert_none("after the client ran");
}

#[test]
fn forked_child_execs_emulated_parent_closes() {
    forked_child_execs(&emu("exec-child-closes"), true, "close");
}

#[test]
fn forked_child_execs_emulated_parent_keeps() {
    forked_child_execs(&emu("exec-child-keeps"), true, "keep");
}

#[test]
fn forked_child_execs_loopback_parent_closes() {
    forked_child_execs("127.0.0.1", false, "close");
}

#[test]
fn forked_child_execs_loopback_ipv6_parent_keeps() {
    forked_child_execs("::1", false, "keep");
}

/// The connecting end execs itself: the server's greeting (in the client's
/// ring, unread) and the client's first bytes (in the server's) are there
/// at exec; the new image sends the rest, shuts down and reads everything
/// the server answers.
fn program_execs_itself(host: &str, emulated: bool) {
    program_runs_itself(host, emulated, "execv");
}

/// As `program_execs_itself`, the new image run `how` (see
/// tests/helpers/py/exec_self.py): a libc exec function called directly, or a
/// child made by posix_spawn, subprocess, system or popen (no fork
/// handler runs there) or by fork with a raw execve (no exec hook sees
/// it), the first image closing its copy as the child starts. The
/// connection's carrier is made only then, by the hook of that call or by
/// fork's handler.
fn program_runs_itself(host: &str, emulated: bool, how: &str) {
    let mut srv = Background::spawn(&mut py_in(
        emulated,
        "exec_hash_server.py",
        &[host, "1000000"],
    ));
    let port = port_of(&srv.expect("port"));
    let before = proof(host, port, emulated);
    let cli = run(&mut py_in(
        emulated,
        "exec_self.py",
        &["start", host, &port.to_string(), "2500000", "300000", how],
    ));
    assert_eq!(srv.expect("served"), "served");
    srv.finish_clean();
    assert!(
        cli.status.success() && cli.stderr.is_empty(),
        "{how}: {:?}\n{}\n{}",
        cli.status,
        cli.stdout,
        cli.stderr
    );
    assert_eq!(
        cli.stdout, "queued 6\ngreeting True\ndigest True\nstream 1000000 True\n",
        "{how}"
    );
    before.assert_none("after the client ran");
}

#[test]
fn program_execs_itself_emulated() {
    program_execs_itself(&emu("exec-self"), true);
}

#[test]
fn program_execs_itself_loopback() {
    program_execs_itself("127.0.0.1", false);
}

#[test]
fn program_execs_itself_with_execl_execlp_execle() {
    for how in ["execl", "execlp", "execle"] {
        program_runs_itself(&emu(how), true, how);
    }
}

#[test]
fn program_execs_itself_with_execvp_execvpe_fexecve_execveat() {
    for how in ["execvp", "execvpe", "fexecve", "execveat"] {
        program_runs_itself(&emu(how), true, how);
    }
}

#[test]
fn posix_spawn_with_an_inheritable_fd_emulated() {
    program_runs_itself(&emu("posix_spawn"), true, "posix_spawn");
    program_runs_itself(&emu("posix_spawnp"), true, "posix_spawnp");
}

#[test]
fn posix_spawn_with_an_inheritable_fd_loopback() {
    program_runs_itself("127.0.0.1", false, "posix_spawn");
}

/// subprocess with close_fds=False runs posix_spawn (asserted in the
/// script); with pass_fds it (v)forks, makes the close-on-exec fd
/// inheritable in the child and execs there.
#[test]
fn subprocess_with_close_fds_false_and_pass_fds() {
    program_runs_itself(&emu("subprocess"), true, "subprocess");
    program_runs_itself(&emu("pass_fds"), true, "pass_fds");
}

/// system() and popen(): glibc runs /bin/sh through its internal
/// posix_spawn; the (preloaded) shell re-attaches the connection and
/// passes it on to the program it runs.
#[test]
fn system_and_popen() {
    program_runs_itself(&emu("system"), true, "system");
    program_runs_itself(&emu("popen"), true, "popen");
}

/// The carrier made by fork's prepare handler: the child execs with a raw
/// system call, which no hook sees.
#[cfg(target_arch = "x86_64")]
#[test]
fn forked_child_execs_past_the_hooks() {
    program_runs_itself(&emu("fork_raw"), true, "fork_raw");
    program_runs_itself("127.0.0.1", false, "fork_raw");
}

/// socat, preloaded, serving with `fork` and `EXEC:cat` (socat relays
/// through a socket pair; the exec'd cat inherits the connection unused)
/// and `EXEC:cat,nofork` (cat gets the connection itself): a preloaded
/// client's 4 MiB come back intact. Before, `nofork` gave cat a closed
/// socket.
fn socat_exec(host: &str, emulated: bool) {
    if std::process::Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        common::missing_program("socat tests", "socat");
        return;
    }
    let echo = r#"
import hashlib, os, socket, sys, threading
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
d = os.urandom(4 << 20)
def w():
    c.sendall(d)
    c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=w)
t.start()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
t.join()
print(n, h.digest() == hashlib.sha256(d).digest())
"#;
    for (i, exec) in ["EXEC:cat", "EXEC:cat,nofork"].iter().enumerate() {
        // A port of the test's own: the emulated host's (virtual, any
        // will do), or one the kernel says is free on the loopback.
        let port = if emulated {
            16384 + i as u16
        } else {
            spare_port(host.parse().expect("test host"))
        };
        let before = proof(host, port, emulated);
        let mut cmd = preloaded("socat");
        if emulated {
            cmd.env("SHMNET_PARTITIONS", EMULATED)
                .env("SHMNET_FALLBACK", "never");
        }
        cmd.arg(format!("TCP-LISTEN:{port},bind={host},fork,reuseaddr"))
            .arg(exec);
        let mut socat = Background::start("socat", &mut cmd, Duration::from_secs(60), true);
        let mut outcome = None;
        for _ in 0..100 {
            let mut c = preloaded(python());
            c.args(["-c", echo, host, &port.to_string()]);
            if emulated {
                c.env("SHMNET_PARTITIONS", EMULATED)
                    .env("SHMNET_FALLBACK", "never");
            }
            let out = run(&mut c);
            // socat may not listen yet: connection refused, try again.
            if out.stderr.contains("ConnectionRefused") {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            outcome = Some(out);
            break;
        }
        let out = outcome.unwrap_or_else(|| socat.fail("never listened"));
        let round_trips = out.stdout.clone();
        if !(out.status.success() && out.stderr.is_empty() && round_trips == "4194304 True\n") {
            let d = socat.kill_and_describe();
            panic!("{exec}: {round_trips}\n{}\n{d}", out.stderr);
        }
        before.assert_none("after the client ran");
        let stderr = socat.kill();
        assert!(!stderr.contains("libshmnet:"), "{exec}: {stderr}");
    }
}

#[test]
fn socat_exec_emulated() {
    socat_exec(&emu("socat"), true);
}

#[test]
fn socat_exec_loopback() {
    socat_exec("127.0.0.1", false);
}

/// A connection's carrier goes across exec exactly while one of its fds
/// does: not for accept's close-on-exec fd, with an inheritable dup2 copy,
/// not once that copy is close-on-exec again or closed, and with
/// subprocess's pass_fds; the segment's memfd never goes by itself (a
/// program run without the library lists what it inherited). A connection
/// that reaches a program without its carrier (posix_spawn's dup2 runs
/// inside glibc) reads as closed, with one `libshmnet:` line.
#[test]
fn carrier_follows_close_on_exec() {
    let out = run(&mut py_in(
        true,
        "exec_cloexec.py",
        &[&emu("exec-lister"), &script("exec_lister.py")],
    ));
    assert!(
        out.status.success(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    // The lister runs without the library: the connection subprocess's
    // fork + execve hands it (pass_fds) is pointed at a closed socket
    // before the exec, with one line on the lister's stderr, which `look`
    // prints (tests/plain_image.rs); the carrier still goes. Python runs
    // the others through posix_spawn (close_fds=False), past that hook.
    let plain = "libshmnet: fd 5: a connection over shared memory goes to a program that runs \
                 without the library (its environment has no LD_PRELOAD) and cannot become a \
                 kernel TCP connection: it reads as closed there";
    assert_eq!(
        out.stdout,
        format!(
            "cloexec carriers 0 memfds 0 \n\
             dup2 carriers 1 memfds 0 \n\
             set_cloexec carriers 0 memfds 0 \n\
             closed_copy carriers 0 memfds 0 \n\
             pass_fds carriers 1 memfds 0 {plain}\n\
             spawned reads b'' 0\n"
        ),
        "{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("libshmnet: fd 0: ")
            && lines[0].contains("no carrier"),
        "{}",
        out.stderr
    );
}

/// Something shaped like a carrier that is not ours changes nothing across
/// exec (found by review): a plain Unix stream socket named in a forged
/// carrier message keeps its kernel bytes, the datagram socket holding the
/// message stays open, a socket with SO_PEEK_OFF is not peeked at, and a
/// Unix socket at a path ending like one of our SHMNET_DIR names keeps
/// its bytes (found by review: it was taken for ours and closed).
#[test]
fn forged_carrier_and_peek_offset_are_left_alone() {
    let mut cmd = py_in(true, "exec_forged.py", &[]);
    let out = common::run(&mut cmd);
    assert_eq!(
        out.stdout, "stream kernel data\npath app data\ndatagram open\npeek first datagram\n",
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// Listeners and connections adopted across exec

/// exec with emulated sockets open: an inherited listener is adopted and
/// keeps accepting through shared memory (inetd-style); an inherited
/// connection is re-attached and reads the bytes queued before the exec
/// (it once read as closed, with a `libshmnet:` line) — never
/// doorbell bytes handed to the program as data.
#[test]
fn exec_adopts_listeners_and_connections() {
    let net = Net::emulated("exec_inherit");
    let out = run(&mut net.py_helper("exec_inherit", &[]));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout
            .contains("inherited connection reads: b'queued before exec'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("client got: b'echo: hello after exec'"),
        "{}",
        out.stdout
    );
}
