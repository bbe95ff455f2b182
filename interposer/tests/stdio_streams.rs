//! C stdio on a connection of ours (`abi::stdio`): glibc's FILE writes
//! with its internal `__write`, past every hook, so before these streams
//! the bytes reached the Unix socket behind the fd and the peer reset the
//! connection. Each case in both modes (the emulated network with
//! SHMNET_FALLBACK=never, and the default mode on a loopback address),
//! the bytes checked by sha256 or FNV-1a, shared memory proved by the
//! kernel having no TCP socket for the connection:
//!
//! - bash's builtins on `/dev/tcp` (`printf ... >&3`: bash dup2()s fd 3
//!   onto 1 and writes through stdout's FILE), with redirections to files
//!   in between, which must still reach the files;
//! - a server that execs `bash -c` with the connection as its stdin and
//!   stdout (inetd, socat EXEC:, subprocess with stdout=conn);
//! - a C program using fdopen + fprintf + fgets, and exit() flushing a
//!   stream's last bytes.

mod common;

use common::{preloaded, python, run, tmpdir, Background, Net};

/// `cmd` on `net`: its partition in shm-only mode, or the default mode.
fn on<'a>(net: &Net, cmd: &'a mut std::process::Command) -> &'a mut std::process::Command {
    if net.partitions.is_empty() {
        cmd
    } else {
        net.env(cmd)
    }
}

/// The preloaded stdio_server.py in `mode` on `net`.
fn server(net: &Net, mode: &str, file: &str) -> Background {
    let script = common::helper("py/stdio_server.py");
    let mut cmd = preloaded(python());
    cmd.arg(script)
        .args([&net.host_str(), &net.port_str(), mode])
        .env("STDIO_FILE", file);
    let mut srv = Background::spawn(on(net, &mut cmd));
    srv.expect("port");
    srv
}

/// bash's `printf`/`echo` builtins into `/dev/tcp`, stdout redirected to
/// files between them (the stream goes to the connection and back).
fn bash_dev_tcp(net: &Net) {
    let dir = tmpdir(&format!("stdio-bash-{}", net.name));
    let file = dir.join("out");
    let file_s = file.to_str().unwrap();
    let mut srv = server(net, "echo", file_s);
    let watch = net.watch(net.port);
    let script = r#"
exec 3<>/dev/tcp/$1/$2
printf 'hello %s\n' world >&3
echo "to the file" > "$3"
printf '%.0sABCDEFGHIJ' {1..20000} >&3
{ echo grouped; printf '%s\n' lines; } >> "$3"
echo >&3
echo "on stdout"
echo END >&3
read -r reply <&3
echo "reply $reply"
"#;
    let mut cmd = preloaded("bash");
    cmd.arg("-c")
        .arg(script)
        .args(["bash", &net.host_str(), &net.port_str(), file_s]);
    let out = run(on(net, &mut cmd));
    assert_eq!(srv.expect("server"), "server 200017 OK", "{}", out.stderr);
    srv.finish_clean();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "on stdout\nreply got 200017 OK\n");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "to the file\ngrouped\nlines\n"
    );
    watch.assert_none("after bash's /dev/tcp connection");
}

#[test]
fn bash_dev_tcp_builtins_emulated() {
    bash_dev_tcp(&Net::emulated("stdio-bash-emu"));
}

#[test]
fn bash_dev_tcp_builtins_default_mode() {
    bash_dev_tcp(&Net::loopback("stdio-bash-lo"));
}

/// The server execs `bash -c 'echo; printf; echo > FILE; cat; echo'`
/// with the connection as fds 0 and 1: the exec'd image's stdout is ours
/// from its start-up; the redirection to a file goes to the file.
fn exec_shell(net: &Net) {
    let dir = tmpdir(&format!("stdio-exec-{}", net.name));
    let file = dir.join("out");
    let mut srv = server(net, "shell", file.to_str().unwrap());
    let watch = net.watch(net.port);
    let script = common::helper("py/stdio_client.py");
    let mut cmd = preloaded(python());
    cmd.arg(script)
        .args([&net.host_str(), &net.port_str(), "300000"]);
    let out = run(on(net, &mut cmd));
    assert_eq!(srv.expect("child"), "child 0", "{}", out.stderr);
    srv.finish_clean();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "got 500015 OK\n");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "to the file\n");
    watch.assert_none("after the exec'd shell's connection");
}

#[test]
fn exec_shell_on_the_connection_emulated() {
    exec_shell(&Net::emulated("stdio-exec-emu"));
}

#[test]
fn exec_shell_on_the_connection_default_mode() {
    exec_shell(&Net::loopback("stdio-exec-lo"));
}

/// fdopen(sock, "r+") + fprintf + fgets against fdopen(conn, "r") +
/// fputs to fdopen(dup(conn), "w"); 3000 lines, FNV-1a both ways.
fn fdopen_streams(net: &Net) {
    let exe = common::build_c("stdio_fdopen", &["-O1", "-Wall"]);
    let watch = net.watch(net.port);
    let mut cmd = preloaded(exe);
    cmd.args([&net.host_str(), &net.port_str(), "3000"]);
    let out = run(on(net, &mut cmd));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "client 388608 388608 same\n");
    watch.assert_none("after the fdopen streams");
}

#[test]
fn fdopen_fprintf_fgets_emulated() {
    fdopen_streams(&Net::emulated("stdio-fdopen-emu"));
}

#[test]
fn fdopen_fprintf_fgets_default_mode() {
    fdopen_streams(&Net::loopback("stdio-fdopen-lo"));
}

/// freopen(path, "w", stdout) while stdout is our stream on a connection:
/// what was printed before goes to the connection, what after to the
/// file; the connection's other fd still works (its entry under fd 1 was
/// released, not the connection).
fn freopen_stdout(net: &Net) {
    let exe = common::build_c("stdio_freopen", &["-O1", "-Wall"]);
    let file = tmpdir(&format!("stdio-freopen-{}", net.name)).join("out");
    let watch = net.watch(net.port);
    let mut cmd = preloaded(exe);
    cmd.args([&net.host_str(), &net.port_str(), file.to_str().unwrap()]);
    let out = run(on(net, &mut cmd));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "freopen ok\n");
    watch.assert_none("after the connection");
}

#[test]
fn freopen_of_stdout_on_a_connection_emulated() {
    freopen_stdout(&Net::emulated("stdio-freopen-emu"));
}

#[test]
fn freopen_of_stdout_on_a_connection_default_mode() {
    freopen_stdout(&Net::loopback("stdio-freopen-lo"));
}

/// One case of `stdio_cases.c` on `net`, the library preloaded or not
/// (plain kernel TCP): "RESULT / PEER" (what the program saw, what the
/// peer got), each from the file it writes when done.
fn stdio_case(which: &str, net: &Net, preload: bool) -> String {
    let exe = common::build_c("stdio_cases", &["-O1", "-Wall", "-pthread"]);
    let dir = tmpdir(&format!("stdio-case-{}", net.name));
    let mut cmd = if preload {
        preloaded(&exe)
    } else {
        let mut cmd = std::process::Command::new(&exe);
        cmd.env_remove("LD_PRELOAD")
            .stdin(std::process::Stdio::null());
        cmd
    };
    cmd.args([&net.host_str(), &net.port_str()])
        .arg(&dir)
        .arg(which);
    let cmd = if preload { on(net, &mut cmd) } else { &mut cmd };
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{which}: {:?}\n{}",
        out.status,
        out.stderr
    );
    // (daemon's child and the peer finish after the program's first
    // process: each renames its file into place when complete.)
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    let read = |name: &str| loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{which}: no {name}\n{}",
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    format!("{} / {}", read("result"), read("peer"))
}

/// `which` gives `expected` on the kernel's TCP, and the same with the
/// library in both modes, shared memory only.
fn same_as_kernel(which: &str, expected: &str) {
    let kernel = Net::loopback(&format!("stdio-{which}-kernel"));
    assert_eq!(
        stdio_case(which, &kernel, false),
        expected,
        "the kernel's result"
    );
    for net in [
        Net::emulated(&format!("stdio-{which}-emu")),
        Net::loopback(&format!("stdio-{which}-lo")),
    ] {
        let watch = net.watch(net.port);
        assert_eq!(stdio_case(which, &net, true), expected, "{}", net.name);
        watch.assert_none(which);
    }
}

/// `stdout = fopen(file)` then dup2(conn, 1): printf goes to the file.
#[test]
fn a_stream_the_program_assigned_to_stdout_stays_its_own() {
    same_as_kernel("assigned-stdout", "file=[pending;to-file\n] / got 0 []");
}

/// `stdin = fmemopen(...)` then dup2(conn, 0): fgets reads the memory.
#[test]
fn a_stream_the_program_assigned_to_stdin_stays_its_own() {
    same_as_kernel("stdin-assigned", "read=[mem-input\n] / got 0 []");
}

/// fclose(stdout) then dup2(conn, 1): printf fails, nothing is sent.
#[test]
fn a_closed_stdout_stays_closed_on_a_connection() {
    same_as_kernel("fclosed-stdout", "printf=-1 / got 0 []");
}

/// daemon(3) re-points fds 0-2 at /dev/null past our hooks: printf and
/// write(1) after it go there, not to the connection.
#[test]
fn after_daemon_stdout_is_dev_null() {
    same_as_kernel(
        "daemon",
        "printf=13 write=4 fd1=/dev/null / got 7 [before;]",
    );
}

/// forkpty(3)'s child has the terminal on fds 0-2: its printf and
/// write(1) reach the master, not the connection.
#[test]
fn after_forkpty_the_childs_stdout_is_the_terminal() {
    same_as_kernel("forkpty", "pty=[in-pty-child||raw||] / got 7 [before;]");
}

/// A thread in printf on glibc's stdout (a pipe) while the connection
/// becomes fd 1: the last 4095 bytes its stream held reach the peer.
#[test]
fn bytes_left_in_a_stream_another_thread_held_reach_the_connection() {
    same_as_kernel(
        "thread-race",
        &format!(
            "printf=8388607 pipe=8384512 / got 4095 [{}]",
            "b".repeat(64)
        ),
    );
}

/// The stream's buffer is the socket's st_blksize (4 KiB): the first
/// 4096 bytes go to the connection, the rest to the file dup2'd after.
#[test]
fn a_streams_buffer_is_the_sockets_block_size() {
    let head: String = (0..6).map(|i| format!("{i:09}|")).collect();
    same_as_kernel(
        "buffer-split",
        &format!("file=1904 / got 4096 [{head}0000]"),
    );
}

/// One fgets on a connection takes one buffer (4 KiB) of it, as on the
/// kernel's socket.
#[test]
fn fgets_reads_ahead_as_much_as_glibc_on_a_socket() {
    same_as_kernel("overread", "line=100 rest=15904 / got 0 []");
}
