//! `shmnet gateway` is the gateway (issue 17; the same code as
//! `shmnet-gateway`): two of them on 127.0.0.1 in this namespace, with
//! certificates made by openssl, bring their link up (`--status` shows
//! it); SIGTERM stops each with exit 0; the man page lists the subcommand's options. (Carrying
//! connections needs two namespaces: gateway/tests.) And `shmnet ss -s`
//! shows connects to a remote range that found no gateway.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `ca.pem`, and `gw.pem`/`gw.key` for 127.0.0.1 signed by it; false
/// without openssl.
fn certs(dir: &Path) -> bool {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ];
    let ca = [ca.concat(), vec!["-subj", "/CN=test CA", "-days", "2"]].concat();
    std::fs::write(
        dir.join("gw.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let req = [
        &["req"][..],
        &ec,
        &["-keyout", "gw.key", "-out", "gw.csr", "-subj", "/CN=gw"],
    ]
    .concat();
    let sign = [
        "x509",
        "-req",
        "-in",
        "gw.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "gw.pem",
        "-days",
        "2",
        "-extfile",
        "gw.ext",
    ];
    openssl(dir, &ca) && openssl(dir, &req) && openssl(dir, &sign)
}

struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Gateway {
    fn start(dir: &Path, args: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shmnet"))
            .current_dir(dir)
            .arg("gateway")
            .args(["--cert", "gw.pem", "--key", "gw.key", "--ca", "ca.pem"])
            .args(args)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Gateway {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, what: &str) {
        while !self.seen.iter().any(|l| l.contains(what)) {
            match self.lines.recv_timeout(TIMEOUT) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no {what:?} in {:?}", self.seen),
            }
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(r, 0);
        self.child.wait().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn shmnet_gateway_runs_the_gateway() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if !certs(&dir) {
        eprintln!("shmnet_gateway_runs_the_gateway: skipped (needs openssl)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer = format!("127.0.0.1:{port}");
    let mut b = Gateway::start(&dir, &["--peer-listen", &peer, "--serve", "127.0.0.1/32"]);
    b.wait_for("peers: listening");
    // A's range is never connected to here: only the link is wanted.
    let remote = format!("127.0.0.99/32={peer}");
    let status = dir.join("a.json");
    let status = status.to_str().unwrap();
    let mut a = Gateway::start(
        &dir,
        &[
            "--listen",
            "127.0.0.99:0",
            "--remote",
            &remote,
            "--status-file",
            status,
        ],
    );
    a.wait_for("links established: 1");
    b.wait_for("connected");
    // --status: the running gateway's --status-file as a table (the file
    // is rewritten every second: the row says up once it has been).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let table = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_shmnet"))
            .args(["gateway", "--status", status])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(" up ") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..6],
        [peer.as_str(), "dialed", "up", "1", "0", "0"],
        "{table}"
    );
    let st = a.terminate();
    assert!(st.success(), "A: {st}");
    a.wait_for("stopped: every stream ended");
    // Its last word in the file: stopped, the link down (the file said
    // "up" for ever after the gateway had gone: review of issue 17).
    let out = Command::new(env!("CARGO_BIN_EXE_shmnet"))
        .args(["gateway", "--status", status])
        .output()
        .unwrap();
    let after = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = after.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], [peer.as_str(), "dialed", "down"], "{after}");
    assert!(after.contains("gateway: stopped (pid "), "{after}");
    let st = b.terminate();
    assert!(st.success(), "B: {st}");
    b.wait_for("stopped: every stream ended");

    let man = Command::new(env!("CARGO_BIN_EXE_shmnet"))
        .arg("man")
        .output()
        .unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    for want in [
        "shmnet gateway",
        "\\-\\-peer\\-listen",
        "\\-\\-drain\\-timeout",
    ] {
        assert!(man.contains(want), "{want} not in the man page");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A remote range inside loopback (127.77/16, not a partition here): with
/// no gateway, the default mode's kernel connect is refused by the kernel
/// (nobody listens), the emulated mode refuses; both counted
/// `fallback_no_gateway` and shown by `ss -s`.
#[test]
fn connects_without_a_gateway_are_counted_and_shown() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nogw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let connect = "import socket\ns = socket.socket()\ntry:\n    s.connect(('127.77.0.1', 9))\nexcept OSError as e:\n    print(e.errno)\n";
    for mode in ["tcp", "never"] {
        let out = Command::new("python3")
            .args(["-c", connect])
            .env("LD_PRELOAD", common::lib())
            .env("SHMNET_DIR", &dir)
            .env("SHMNET_PARTITIONS", "127.0.0.0/16")
            .env("SHMNET_REMOTE", "127.77.0.0/16")
            .env("SHMNET_FALLBACK", mode)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            said.trim(),
            libc::ECONNREFUSED.to_string(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ss = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shmnet"));
        c.args(["ss", "-s", "--dir"]).arg(&dir);
        if json {
            c.arg("--json");
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&ss(true)).unwrap();
    let made = &v["counters"]["since_made"];
    assert_eq!(
        (
            made["fallback_no_gateway"].as_u64(),
            made["fallback_no_listener"].as_u64()
        ),
        (Some(2), Some(0)),
        "{v}"
    );
    let text = ss(false);
    assert!(
        text.contains(
            "0 over shared memory, 2 over kernel TCP (counting 2 to a remote range with no gateway"
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("fallback_no_gateway") && l.contains(" 2 ")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
