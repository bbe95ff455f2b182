//! Hang-ups, errors and the sends after a peer's close, as kernel TCP
//! reports them (the kernel is the specification): each C program runs
//! without the library over kernel TCP, preloaded on the emulated network
//! (`SHMNET_FALLBACK=never`) and preloaded in the default mode on a
//! loopback host, and the three outputs must be the same.
//!
//! - hangup_matrix.c: for the peer's close, its shutdown(SHUT_WR), ours,
//!   both, closes with data unread either way, and a killed peer that had
//!   read everything, what poll (7 masks) and
//!   epoll (13 masks, level and edge-triggered) report; a closed
//!   connection registered for nothing beside a pipe (the wait sleeps
//!   until the pipe); the sends and reads after each (the first send after
//!   a close goes, the RST that answers it leaves EPIPE pending); and a
//!   registration told nothing of the close, after this side's shutdown or
//!   send, asleep or not; two members sharing one data; 48 connections in
//!   one set under changed, shared and dup'd data ("crowd", decision 54:
//!   members are found by data and by connection). Before session 34 epoll said EPOLLHUP to a
//!   registration that asked for nothing, and the first send after the
//!   peer's close was EPIPE.
//! - hangup_edges.c (review hup14): a connection sharing its epoll data
//!   with a pipe whose writer closed or a reset kernel socket (their
//!   hang-ups were swallowed, the wait spun, the connection was made
//!   edge-triggered), EPOLLEXCLUSIVE, a registration whose first number
//!   was closed after a dup, a set and connection shared with a forked
//!   process (the other's shutdown gave no EPOLLHUP), sendmmsg and
//!   sendfile after a peer's close, SO_SNDBUF and the first send's count.
//!   A wait that used over half its timeout in CPU prints "spin".
//! - hangup_sharing.c (review s35 of the hupo1 merge): registrations
//!   sharing one data, each hung up its own way: each event is one
//!   registration's, with its own bits (a pipe's IN|HUP beside a spent
//!   one-shot or edge-triggered connection lost its HUP; members in
//!   different states all got the OR of their bits; a quiet member beside
//!   a sibling's EPOLLHUP was never silenced, a busy loop; an
//!   EPOLLRDHUP-only registration got a sibling's EPOLLIN; a silenced
//!   member beside reused numbers with its data gave spurious EPOLLHUPs;
//!   a pipe's EPOLLHUP beside silenced members was missing at some waits).
//! - fin_behind_data.c: a peer shut down writing, then closed with our
//!   bytes unread: EPIPE when its FIN reached us, ECONNRESET when the FIN
//!   was behind more data than our receive window (128,000 bytes, more
//!   once we have read: "warm") and the RST overtook it (before: EPIPE
//!   always).
//! - keepalive_reuse.py: http.client's second request on a connection its
//!   server closed meets RemoteDisconnected, not BrokenPipeError.
//! - waker_turns.c: an epoll wait on a set holding no connection of the
//!   waiter's while another process's waker stays in it (decision 44), on
//!   a thread with a 128 KiB stack: it used to take a stack frame per 1 ms
//!   turn (SIGSEGV within 3 s).

mod common;

use std::process::Command;

use common::{build_c, preloaded, py_file, python, stdout_of, Net};

/// `exe ARGS` over kernel TCP (127.0.0.1), on the emulated network and in
/// the default mode: the three outputs, each ending with "done" when
/// `done`.
fn three_ways(name: &str, exe: &std::path::Path, args: &[&str], done: bool) -> [String; 3] {
    let kernel = stdout_of(
        &format!("{name} over kernel TCP"),
        Command::new(exe).arg("127.0.0.1").args(args),
    );
    let net = Net::emulated(name);
    let mut cmd = preloaded(exe);
    cmd.arg(net.host_str()).args(args);
    net.env(&mut cmd).env("SHMNET_LOG", "error");
    let emulated = stdout_of(&format!("{name} emulated"), &mut cmd);
    let lo = Net::loopback(&format!("{name}-default"));
    let mut cmd = preloaded(exe);
    cmd.arg(lo.host_str())
        .args(args)
        .env("SHMNET_DIR", lo.shm_dir())
        .env("SHMNET_LOG", "error");
    let default = stdout_of(&format!("{name} in the default mode"), &mut cmd);
    if done {
        assert!(kernel.ends_with("done\n"), "{kernel}");
    }
    [kernel, emulated, default]
}

fn matrix(part: &str) {
    let exe = build_c("hangup_matrix", &["-O1", "-Wall", "-pthread"]);
    let [kernel, emulated, default] =
        three_ways(&format!("hangup-matrix-{part}"), &exe, &[part], true);
    assert_eq!(
        emulated, kernel,
        "{part}: emulated network against kernel TCP"
    );
    assert_eq!(default, kernel, "{part}: default mode against kernel TCP");
}

/// poll with every mask after each hang-up (events 0 and POLLRDHUP too).
#[test]
fn poll_reports_hangups_as_tcp() {
    matrix("poll");
}

/// epoll with every mask, level and edge-triggered, after each hang-up:
/// EPOLLHUP only when both directions are shut or after a RST, also to a
/// registration that asked for nothing.
#[test]
fn epoll_reports_hangups_as_tcp() {
    matrix("epoll");
}

/// A closed connection registered for nothing beside a pipe written
/// 100 ms later: the wait sleeps until the pipe, epoll and poll.
#[test]
fn a_wait_sleeps_beside_a_closed_connection_registered_for_nothing() {
    matrix("wait");
}

/// Sends after each hang-up: after the peer's close the first send goes
/// and the next is EPIPE (SIGPIPE without MSG_NOSIGNAL); SO_ERROR, poll
/// and epoll in between; recv after it.
#[test]
fn the_first_send_after_a_peer_close_goes_and_the_next_is_epipe() {
    matrix("send");
}

/// A registration told nothing of the peer's close gets EPOLLHUP when this
/// side shuts down writing, and EPOLLHUP|EPOLLERR when its send is
/// answered with a RST: also a waiter asleep meanwhile, edge-triggered
/// ones once.
#[test]
fn a_later_shutdown_or_send_gives_the_hangup_tcp_reports() {
    matrix("later");
}

/// Two connections registered with one data, one paused (events 0) whose
/// peer closed, the other read a byte per wake-up: 3 wake-ups for 3 bytes,
/// no wake-up for the paused side's close (review s32 `samedata.c`: the
/// library's wait woke for it and the read blocked).
#[test]
fn a_hangup_tcp_does_not_report_is_silent_among_members_sharing_data() {
    matrix("shared");
}

/// Many connections in one set, their data changed by MOD, DEL and ADD
/// again (some shared, one also under a dup), half registered for
/// nothing: every peer closes, then this side shuts down writing on some.
/// The events, by data, are kernel TCP's (issue 14: members are found by
/// their data and their connection, not by a walk over the set).
#[test]
fn hangups_in_a_crowded_set_reach_the_members_their_data_names() {
    matrix("crowd");
}

fn edges(part: &str) {
    let exe = build_c("hangup_edges", &["-O1", "-Wall"]);
    let [kernel, emulated, default] =
        three_ways(&format!("hangup-edges-{part}"), &exe, &[part], true);
    assert!(!kernel.contains("spin"), "{part}: kernel TCP {kernel}");
    assert_eq!(
        emulated, kernel,
        "{part}: emulated network against kernel TCP"
    );
    assert_eq!(default, kernel, "{part}: default mode against kernel TCP");
}

/// A connection and a pipe whose writer closed (or a kernel socket reset
/// by its peer, registered for nothing) share one epoll data: the other
/// fd's hang-up is reported, the wait sleeps, and the connection's 3
/// bytes come one per wake-up (review hup14 `mixed.c`: a spin to the
/// timeout, then 1 byte of 3).
#[test]
fn a_hangup_of_another_fd_sharing_a_connection_data_is_reported() {
    edges("mixed");
}

/// EPOLLEXCLUSIVE registrations whose peer closed: quiet without a spin
/// (the kernel refuses to MOD them), EPOLLHUP after our shutdown.
#[test]
fn an_exclusive_registration_is_silenced_without_a_spin() {
    edges("exclusive");
}

/// A registration (events 0, or EPOLLET) whose number was dup'd and
/// closed: the level one cannot be silenced and its hang-up is reported
/// rather than spun on (only the absence of a spin is compared), the
/// edge-triggered one is quiet; EPOLLHUP after our shutdown.
#[test]
fn a_registration_under_a_closed_number_does_not_spin() {
    edges("dup");
}

/// A set and connection shared with a forked process: the other
/// process's shutdown(SHUT_WR) gives the waiter EPOLLHUP, parent or child.
#[test]
fn another_process_shutdown_gives_the_hangup() {
    edges("fork");
}

/// sendmmsg on a connection delivers its messages (it went past the
/// library into the doorbell connection); after a peer's close sendmmsg
/// and sendfile send the first time as send does; the first send's
/// count follows SO_SNDBUF.
#[test]
fn every_send_path_sends_first_after_a_peer_close() {
    edges("sends");
}

fn sharing(part: &str) {
    let exe = build_c("hangup_sharing", &["-O1", "-Wall"]);
    let [kernel, emulated, default] =
        three_ways(&format!("hangup-sharing-{part}"), &exe, &[part], true);
    assert_eq!(
        emulated, kernel,
        "{part}: emulated network against kernel TCP"
    );
    assert_eq!(default, kernel, "{part}: default mode against kernel TCP");
}

/// A level connection whose peer closed, a one-shot (then edge-triggered)
/// one reported once already and a pipe whose writer closed, one data:
/// the pipe's event stays IN|HUP at every wait (review s35 `again.c`: the
/// spent member took it and made it IN).
#[test]
fn a_spent_one_shot_or_edge_member_does_not_take_a_pipe_hangup() {
    sharing("again");
}

/// Connections sharing one data, one shut down both ways and one half
/// closed: IN|RDHUP|HUP and IN|RDHUP, each its own (review s35
/// `shared2.c`: both got the OR).
#[test]
fn members_sharing_data_get_each_their_own_bits() {
    sharing("states");
}

/// 40 and 100 connections sharing data 9 through DEL/ADD/MOD churn, a
/// third registered for nothing, every other peer closed, every fifth
/// shut down here: the kernel's multiset of events (review s35
/// `crowd2.c`: 33 x IN|RDHUP|HUP for 6 of them and 27 x IN|RDHUP).
#[test]
fn a_crowd_sharing_data_gets_the_kernels_multiset() {
    sharing("crowd");
}

/// An edge-triggered (then one-shot) connection shut down both ways and
/// a closed one registered for nothing with the same data: the wait is
/// quiet (review s35 `mix.c`: EPOLLHUP at every wait, ~310,000 waits/s).
#[test]
fn a_quiet_member_beside_a_siblings_hangup_is_silenced() {
    sharing("quiet");
}

/// An EPOLLRDHUP-only registration beside an EPOLLIN one with its data
/// that holds the end in its ring: EPOLLRDHUP alone (review s35
/// `rdhup2.c`: our pending EPOLLIN was or-ed into it).
#[test]
fn a_pending_event_goes_to_its_own_registration() {
    sharing("rdhup");
}

/// A closed connection registered for nothing, kept silenced, beside 20
/// in turn with its data and likely its number: each is quiet after its
/// peer's close and says EPOLLHUP once this side shuts down (review s35
/// `reuse.c`: two spurious EPOLLHUPs for each).
#[test]
fn a_silenced_member_beside_reused_numbers_stays_quiet() {
    sharing("reuse");
}

/// A pipe whose writer closed beside two closed connections registered
/// for nothing, one data: the pipe's EPOLLHUP at every wait (review s35
/// `pipehup.c`: missing at one or two of six, taken for a silenced
/// member's).
#[test]
fn a_pipe_hangup_beside_silenced_members_is_reported_at_every_wait() {
    sharing("pipe");
}

/// A forked child waits 2 s on a set it shares with its parent, whose
/// waker stays in it: the wait times out as over kernel TCP, on a
/// 128 KiB stack (it took a frame per 1 ms turn before session 34).
#[test]
fn a_wait_beside_another_process_waker_goes_round_without_growing_the_stack() {
    let exe = build_c("waker_turns", &["-O1", "-Wall", "-pthread"]);
    let [kernel, emulated, default] = three_ways("waker-turns", &exe, &["2"], false);
    assert!(
        kernel.contains("child epoll_wait 0\nchild exit 0"),
        "{kernel}"
    );
    assert_eq!(emulated, kernel, "emulated network against kernel TCP");
    assert_eq!(default, kernel, "default mode against kernel TCP");
}

/// A keep-alive HTTP client (python's http.client) whose server closed
/// the idle connection: the second request is sent and its response read
/// finds the end (RemoteDisconnected), as over kernel TCP (before session
/// 34: BrokenPipeError at the send).
#[test]
fn a_keepalive_client_sends_into_a_connection_its_server_closed() {
    let kernel = stdout_of(
        "keepalive_reuse over kernel TCP",
        Command::new(python())
            .arg(common::helper("py/keepalive_reuse.py"))
            .arg("127.0.0.1"),
    );
    assert!(kernel.contains("second: RemoteDisconnected"), "{kernel}");
    let net = Net::emulated("keepalive-reuse");
    let emulated = stdout_of(
        "keepalive_reuse emulated",
        &mut net.py_helper("keepalive_reuse", &[&net.host_str()]),
    );
    let lo = Net::loopback("keepalive-reuse-default");
    let mut cmd = py_file("keepalive_reuse.py", &[&lo.host_str()]);
    cmd.env("SHMNET_DIR", lo.shm_dir());
    let default = stdout_of("keepalive_reuse in the default mode", &mut cmd);
    assert_eq!(emulated, kernel, "emulated network against kernel TCP");
    assert_eq!(default, kernel, "default mode against kernel TCP");
}

/// A peer that shut down writing, then closed with our bytes unread: its
/// RST is EPIPE here when its FIN came first (what it sent before fitted
/// in our receive window), ECONNRESET (no SIGPIPE) when the FIN was still
/// behind its data (130,000 or 512,000 bytes we did not read). Before: EPIPE always
/// (socat EXEC:cat under a client that does not read, review sweep35).
/// After we had read 4 MiB from it (a grown window), EPIPE for 130,000 and
/// 512,000 too; and 130,000 is past the kernel's edge (128,000). Main's
/// library (review s35tail #3, #4): ECONNRESET for the warm 512,000 (a
/// fixed 128 KiB window), EPIPE for a cold 130,000 (131,072 taken).
#[test]
fn a_fin_behind_more_than_the_window_is_overtaken_by_the_rst() {
    let exe = build_c("fin_behind_data", &["-O1", "-Wall"]);
    let [kernel, emulated, default] = three_ways("fin-behind-data", &exe, &[], true);
    assert!(
        kernel
            .contains("512000 sent: poll IN OUT ERR HUP RDHUP; send ECONNRESET send EPIPE+SIGPIPE"),
        "{kernel}"
    );
    assert_eq!(emulated, kernel, "emulated network against kernel TCP");
    assert_eq!(default, kernel, "default mode against kernel TCP");
}
