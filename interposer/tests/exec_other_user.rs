//! A connection handed to a program exec'd by a process that switched user
//! between fork and exec, as CGI servers and inetd's `nobody` services do:
//! root accepts, forks, the child calls setuid(65534), dup2()s the
//! connection onto stdin/stdout and execs. The carrier is made at exec, by
//! nobody, and the exec'd image (nobody too) must take it. Before: it
//! refused every carrier made by the overflow uid, and the program read
//! its connection as closed (found by review). Needs root; skipped
//! otherwise.

mod common;

use common::host::skip_unless_root;
use common::kernel::{KernelWatch, Scope};
use common::net::EMULATED;
use common::{preloaded, python, run, tmpdir, Background, Net};

const NOBODY: &str = "65534";

fn env_for(cmd: &mut std::process::Command, emulated: bool) -> &mut std::process::Command {
    if emulated {
        cmd.env("SHMNET_PARTITIONS", EMULATED)
            .env("SHMNET_FALLBACK", "never");
    }
    cmd
}

/// No kernel TCP socket on `host`:`port` but a default-mode listener
/// (`common::kernel`), made before the client runs.
fn proof(host: &str, port: u16, emulated: bool) -> KernelWatch {
    KernelWatch::new(Scope::Endpoint {
        host: host.parse().expect("test host"),
        port,
        listeners: emulated,
    })
}

/// `exec_serve.py` with a uid: the child becomes nobody, then execs `sh -c
/// 'head -c N | sha256sum > OUT && exec python3 -c WRITER'`, which reads
/// the client's 1 MB (200 000 bytes of it queued before the fork; digest
/// compared) and writes 1.5 MB back (digest compared).
fn setuid_child_execs(host: &str, emulated: bool) {
    let (n_in, n_out, early) = ("1000000", "1500000", "200000");
    let dir = tmpdir("exec_other_user");
    // Nobody writes the digest there.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = dir.join("digest");
    let out_s = out.to_str().unwrap();
    let serve = common::helper("py/exec_serve.py").display().to_string();
    let mut srv = Background::spawn(env_for(
        preloaded(python()).args([&serve, host, "close", n_in, n_out, early, out_s, NOBODY]),
        emulated,
    ));
    let port: u16 = srv
        .expect("port")
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("port");
    let before = emulated.then(|| proof(host, port, emulated));
    let client = common::helper("py/exec_client.py").display().to_string();
    let cli = run(env_for(
        preloaded(python()).args([&client, host, &port.to_string(), n_in, early, n_out]),
        emulated,
    ));
    assert_eq!(
        srv.expect("queued"),
        format!("queued {early}"),
        "{}",
        cli.stderr
    );
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
        "the exec'd program (uid 65534) read other bytes"
    );
    assert!(
        cli.stdout.contains(&format!("got {n_out} True")),
        "{}",
        cli.stdout
    );
    if let Some(before) = before {
        before.assert_none("after the client ran");
    }
}

#[test]
fn setuid_child_execs_emulated() {
    if skip_unless_root("setuid_child_execs_emulated") {
        return;
    }
    setuid_child_execs(&Net::emulated("exec-other-user").host_str(), true);
}

#[test]
fn setuid_child_execs_loopback() {
    if skip_unless_root("setuid_child_execs_loopback") {
        return;
    }
    setuid_child_execs("127.0.0.1", false);
}

/// What the CGI script writes after its header: its uid, its query and
/// `seq 1 30000` (a program the script runs: nobody's child of nobody
/// writes to the connection too).
fn cgi_body(query: &str) -> String {
    let mut body = format!("cgi uid {NOBODY} q={query}\n");
    for i in 1..=30000 {
        body.push_str(&format!("{i}\n"));
    }
    body.push_str("end\n");
    body
}

/// `python3 -m http.server --cgi`, preloaded and run as root, serves a
/// shell CGI script (it runs as nobody) to a preloaded curl: the whole
/// body arrives, as with kernel TCP.
fn http_server_cgi(host: &str, emulated: bool) {
    let dir = tmpdir("http_cgi");
    let bin = dir.join("cgi-bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("count.cgi");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"cgi uid $(id -u) q=$QUERY_STRING\"\nseq 1 30000\necho end\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut srv = Background::spawn(
        env_for(
            preloaded(python()).args(["-u", "-m", "http.server", "--cgi", "--bind", host, "0"]),
            emulated,
        )
        .current_dir(&dir),
    );
    let port: u16 = srv
        .expect("Serving HTTP on")
        .split(' ')
        .nth(5)
        .and_then(|p| p.parse().ok())
        .expect("port");
    let before = emulated.then(|| proof(host, port, emulated));
    let query = "x=1";
    let cli = run(env_for(
        preloaded("curl").args([
            "-sS",
            "-m",
            "60",
            &format!("http://{host}:{port}/cgi-bin/count.cgi?{query}"),
        ]),
        emulated,
    ));
    let want = cgi_body(query);
    assert!(
        cli.status.success() && cli.stdout == want,
        "{:?}: {} bytes, want {}; starts {:?}\n{}\nserver: {}",
        cli.status,
        cli.stdout.len(),
        want.len(),
        cli.stdout.get(..60.min(cli.stdout.len())),
        cli.stderr,
        srv.kill_and_describe()
    );
    if let Some(before) = before {
        before.assert_none("after curl ran");
    }
    let described = srv.kill_and_describe();
    assert!(!described.contains("libshmnet:"), "{described}");
}

#[test]
fn http_server_cgi_emulated() {
    if skip_unless_root("http_server_cgi_emulated") {
        return;
    }
    http_server_cgi(&Net::emulated("http-server-cgi").host_str(), true);
}

#[test]
fn http_server_cgi_loopback() {
    if skip_unless_root("http_server_cgi_loopback") {
        return;
    }
    http_server_cgi("127.0.0.1", false);
}

/// Inside a user namespace, as its overflow uid (every unmapped user reads
/// as 65534 there), the maker check stays as narrow as before but for
/// this very process's carrier: a child that dup2()s and execs re-attaches
/// its connection; a carrier the parent made at fork (an fd inheritable
/// before it) is refused, and that connection reads as closed, with one
/// `libshmnet:` line.
#[test]
fn overflow_uid_in_a_user_namespace_takes_only_its_own_carrier() {
    if skip_unless_root("overflow_uid_in_a_user_namespace_takes_only_its_own_carrier") {
        return;
    }
    let net = Net::emulated("exec-userns");
    let dir = tmpdir("exec_userns");
    let script = common::helper("py/exec_userns.py").display().to_string();
    let out = run(env_for(
        preloaded("unshare")
            .args([
                "--user",
                python().to_str().unwrap(),
                &script,
                &net.host_str(),
            ])
            .env("SHMNET_DIR", &dir),
        true,
    ));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"uid 65534"), "{}", out.stderr);
    assert_eq!(
        lines[1..],
        [
            "read 0 b'hello'",
            &format!("read {} b''", second_fd(&lines))
        ],
        "{}",
        out.stderr
    );
    let refused: Vec<&str> = out.stderr.lines().collect();
    assert!(
        refused.len() == 1 && refused[0].contains("no carrier came with it"),
        "{}",
        out.stderr
    );
}

/// The fd number the second reader was told.
fn second_fd(lines: &[&str]) -> String {
    lines
        .get(2)
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("?")
        .to_string()
}
