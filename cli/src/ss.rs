//! `shmnet ss` / `shmnet status`: one line per live emulated socket, from
//! the status files in the rendezvous directory; `-s` a summary with the
//! counters (`summary`).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;

use serde::Serialize;

use crate::cli::SsArgs;
use crate::status::{self, Entry, Kind};
use crate::units;

#[derive(Serialize)]
struct Socket {
    pid: u32,
    command: String,
    fd: Option<i32>,
    /// listening, established, half-closed, closed-by-peer
    state: &'static str,
    local: String,
    peer: Option<String>,
    /// connector or acceptor (connections)
    role: Option<&'static str>,
    bytes_sent: Option<u64>,
    bytes_received: Option<u64>,
    /// Bytes in our ring not yet read by the peer, and in the peer's not
    /// yet read by us (null: the peer's side is not visible here).
    send_queue: Option<u64>,
    recv_queue: Option<u64>,
    /// This side is asleep in a read or waiting for room to write.
    waiting: Option<&'static str>,
    ring_bytes: Option<u64>,
    /// Listeners: connections waiting to be accepted (kernel TCP and
    /// shared memory; null: unknown).
    backlog: Option<u64>,
    backlog_tcp: Option<u64>,
    backlog_shm: Option<u64>,
    opened_unix_s: u64,
}

pub(crate) fn main(a: SsArgs) -> i32 {
    let dir = crate::dir::resolve(a.dir.as_deref());
    let scan = if dir.exists() {
        match status::scan(&dir) {
            Ok(s) => s,
            Err(e) => return crate::fail(format_args!("{e}")),
        }
    } else {
        // Nothing was ever published there: an empty list, said once.
        if !a.json && !a.summary {
            eprintln!("shmnet: {} does not exist: no preloaded program has used it (another SHMNET_DIR? try --dir)", dir.display());
            return 0;
        }
        status::Scan::default()
    };
    let sockets = sockets(&scan.entries, a.pid);
    if !a.json {
        say_skipped(&scan.skipped);
    }
    if a.summary {
        let mut pids: Vec<u32> = sockets.iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let summary = crate::summary::Summary {
            dir: &dir,
            processes: pids.len(),
            states: crate::summary::STATES
                .map(|st| sockets.iter().filter(|k| k.state == st).count()),
            not_listed: scan.overflow,
            skipped: &scan.skipped,
            only: a.pid,
        };
        crate::summary::print(&summary, a.json);
        return 0;
    }
    if a.json {
        // Written as it is serialized: no second copy of every row.
        #[derive(Serialize)]
        struct Doc<'a> {
            dir: &'a std::path::Path,
            files_removed: usize,
            not_listed: u64,
            skipped: &'a [status::Skipped],
            sockets: &'a [Socket],
        }
        let doc = Doc {
            dir: &dir,
            files_removed: scan.removed,
            not_listed: scan.overflow,
            skipped: &scan.skipped,
            sockets: &sockets,
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
        return 0;
    }
    print!("{}", human(&sockets));
    if scan.overflow > 0 {
        println!(
            "({} sockets found the status files full since the files were made and were not \
             listed: a count since start, closed ones included)",
            scan.overflow
        );
    }
    0
}

/// The inode of process `pid`'s fd `fd` if it is a socket.
fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    m.file_type().is_socket().then(|| m.ino())
}

/// The files not taken, and why, on stderr (the table stays the sockets).
fn say_skipped(skipped: &[status::Skipped]) {
    const SHOWN: usize = 20;
    for s in skipped.iter().take(SHOWN) {
        eprintln!("shmnet: skipped {}: {}", s.file, s.why);
    }
    if skipped.len() > SHOWN {
        eprintln!(
            "shmnet: {} more skipped (--json lists them all)",
            skipped.len() - SHOWN
        );
    }
}

/// An address as both sides may name it: an IPv4 peer of a dual-stack
/// listener is `::ffff:a.b.c.d` there and `a.b.c.d` at the connector.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// One side of a connection (its segment, role and addresses) as the
/// processes holding it publish it, from files of one owner: each holder's
/// counts are the ring's totals at its last call, so the highest are the
/// socket's; a shutdown by any holder is the socket's.
#[derive(Default, Clone, Copy)]
struct Side {
    sent: u64,
    received: u64,
    shut_wr: bool,
}

type SideKey = (u64, bool, SocketAddr, SocketAddr, u32);

fn side_key(e: &Entry, owner: u32) -> Option<SideKey> {
    Some((
        e.segment,
        e.flags & status::CONNECTOR != 0,
        canonical(e.local),
        canonical(e.peer?),
        owner,
    ))
}

fn sides(entries: &[Entry]) -> HashMap<SideKey, Side> {
    let mut sides: HashMap<SideKey, Side> = HashMap::new();
    for e in entries
        .iter()
        .filter(|e| e.kind == Kind::Connection && e.segment != 0)
    {
        let Some(key) = side_key(e, e.owner) else {
            continue;
        };
        let s = sides.entry(key).or_default();
        s.sent = s.sent.max(e.sent);
        s.received = s.received.max(e.received);
        s.shut_wr |= e.flags & status::SHUT_WR != 0;
    }
    sides
}

/// The side of `e`'s socket (`mine`) or its peer's, as seen in files of
/// `e`'s owner and root's (another user's file could claim anything).
fn side_of(sides: &HashMap<SideKey, Side>, e: &Entry, peer_side: bool) -> Option<Side> {
    let (local, peer) = (canonical(e.local), canonical(e.peer?));
    let connector = e.flags & status::CONNECTOR != 0;
    let owners: &[u32] = if e.owner == 0 { &[0] } else { &[e.owner, 0] };
    let mut found: Option<Side> = None;
    for &owner in owners {
        let key = if peer_side {
            (e.segment, !connector, peer, local, owner)
        } else {
            (e.segment, connector, local, peer, owner)
        };
        if let Some(s) = sides.get(&key) {
            let f = found.get_or_insert_with(Side::default);
            f.sent = f.sent.max(s.sent);
            f.received = f.received.max(s.received);
            f.shut_wr |= s.shut_wr;
        }
    }
    found
}

fn sockets(entries: &[Entry], only: Option<u32>) -> Vec<Socket> {
    let sides = sides(entries);
    let by_addrs: HashMap<(SocketAddr, SocketAddr), &Entry> = entries
        .iter()
        .filter(|e| e.kind == Kind::Connection && e.segment == 0)
        .filter_map(|e| Some(((canonical(e.local), canonical(e.peer?)), e)))
        .collect();
    let mut backlogs = crate::queues::TcpBacklogs::default();
    let mut rings = crate::rings::Rings::default();
    let mut commands: HashMap<u32, String> = HashMap::new();
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| only.is_none_or(|p| p == e.pid)) {
        let command = commands
            .entry(e.pid)
            .or_insert_with(|| status::command(e.pid, 40))
            .clone();
        let base = Socket {
            pid: e.pid,
            command,
            fd: e.fd,
            state: "listening",
            local: e.local.to_string(),
            peer: None,
            role: None,
            bytes_sent: None,
            bytes_received: None,
            send_queue: None,
            recv_queue: None,
            waiting: None,
            ring_bytes: None,
            backlog: None,
            backlog_tcp: None,
            backlog_shm: None,
            opened_unix_s: e.opened_s,
        };
        match e.kind {
            Kind::Listener => {
                let tcp = backlogs.get(e.pid, e.tcp_ino);
                let shm: Option<u64> = e
                    .rendezvous_ino
                    .iter()
                    .filter(|&&i| i != 0)
                    .map(|&i| crate::queues::unix_backlog(i))
                    .try_fold(0u64, |acc, q| q.map(|q| acc.saturating_add(q)));
                let backlog = match (tcp, shm) {
                    (None, None) => None,
                    (t, s) => Some(t.unwrap_or(0).saturating_add(s.unwrap_or(0))),
                };
                out.push(Socket {
                    backlog,
                    backlog_tcp: tcp,
                    backlog_shm: shm,
                    ..base
                });
            }
            Kind::Connection => {
                let peer_addr = e.peer.unwrap_or(e.local);
                let (mine, other) = if e.segment != 0 {
                    (side_of(&sides, e, false), side_of(&sides, e, true))
                } else {
                    let key = (canonical(peer_addr), canonical(e.local));
                    let o = by_addrs.get(&key).map(|o| Side {
                        sent: o.sent,
                        received: o.received,
                        shut_wr: o.flags & status::SHUT_WR != 0,
                    });
                    (None, o)
                };
                let mine = mine.unwrap_or(Side {
                    sent: e.sent,
                    received: e.received,
                    shut_wr: e.flags & status::SHUT_WR != 0,
                });
                let mut send_queue = other.map(|o| mine.sent.saturating_sub(o.received));
                let mut recv_queue = other.map(|o| o.sent.saturating_sub(mine.received));
                let mut peer_done =
                    e.flags & status::PEER_EOF != 0 || other.is_some_and(|o| o.shut_wr);
                let mut shut = mine.shut_wr;
                // The ring itself, when it can be read, says what waits
                // each way and who closed, whoever holds (or held) it.
                if let Some(r) = rings.view(e.pid, e.segment) {
                    let (tx, rx) = if e.flags & status::CONNECTOR != 0 {
                        (0, 1)
                    } else {
                        (1, 0)
                    };
                    send_queue = Some(r.queued[tx]);
                    recv_queue = Some(r.queued[rx]);
                    peer_done |= r.writer_closed[rx] || r.reset;
                    shut |= r.writer_closed[tx];
                }
                // A peer that exited or was killed wrote nothing in the
                // ring; our doorbell socket (the application's fd) saw it go.
                if !peer_done && other.is_none() {
                    peer_done =
                        e.fd.and_then(|fd| socket_inode(e.pid, fd))
                            .and_then(crate::queues::unix_peer_gone)
                            .unwrap_or(false);
                }
                let state = if peer_done {
                    "closed-by-peer"
                } else if shut {
                    "half-closed"
                } else {
                    "established"
                };
                let waiting = match (
                    e.flags & status::WAIT_READ != 0,
                    e.flags & status::WAIT_WRITE != 0,
                ) {
                    (true, true) => Some("read+write"),
                    (true, false) => Some("read"),
                    (false, true) => Some("write"),
                    (false, false) => None,
                };
                out.push(Socket {
                    state,
                    peer: Some(peer_addr.to_string()),
                    role: Some(if e.flags & status::CONNECTOR != 0 {
                        "connector"
                    } else {
                        "acceptor"
                    }),
                    bytes_sent: Some(e.sent),
                    bytes_received: Some(e.received),
                    send_queue,
                    recv_queue,
                    waiting,
                    ring_bytes: Some(u64::from(e.ring_bytes)),
                    ..base
                });
            }
        }
    }
    out
}

fn human(sockets: &[Socket]) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), units::bytes);
    let rows: Vec<Vec<String>> = sockets
        .iter()
        .map(|s| {
            let (sendq, recvq) = if s.state == "listening" {
                (
                    "-".to_owned(),
                    s.backlog.map_or("-".to_owned(), |b| b.to_string()),
                )
            } else {
                (opt(s.send_queue), opt(s.recv_queue))
            };
            vec![
                s.pid.to_string(),
                s.command.clone(),
                s.fd.map_or("-".to_owned(), |f| f.to_string()),
                s.state.to_owned(),
                s.local.clone(),
                s.peer.clone().unwrap_or_else(|| "*".to_owned()),
                opt(s.bytes_sent),
                opt(s.bytes_received),
                sendq,
                recvq,
                s.waiting.unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no emulated sockets\n".to_owned();
    }
    units::table(
        &[
            "PID", "COMMAND", "FD", "STATE", "LOCAL", "PEER", "SENT", "RECEIVED", "SEND-Q",
            "RECV-Q", "WAITING",
        ],
        &rows,
        &[
            true, false, true, false, false, false, true, true, true, true, false,
        ],
    )
}
