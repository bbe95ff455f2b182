//! The gateway name of the library (`shmnet.5/tcp/gateway`, an abstract
//! Unix name of this network namespace: docs/design/gateway.md) goes with
//! the --listen address that is SHMNET_GATEWAY; if another process held it
//! when we listened, the library says so once and our listener stays an
//! ordinary one. This watches the name and takes it back once it is free
//! (found by the first review: a squatter that left was never replaced):
//! a second listener on the same address (SO_REUSEPORT), whose listen asks
//! the library for the name again, replaces the first if it got it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::log;
use crate::outbound::{self, Routes};

/// The name as /proc/net/unix shows it.
const NAME: &str = "@shmnet.5/tcp/gateway";
const FIRST_LOOK: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Whether `addr` is the SHMNET_GATEWAY address the library (preloaded)
/// gives the name.
pub fn is_gateway_address(addr: SocketAddr) -> bool {
    let preloaded = std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("shmnet"));
    preloaded
        && std::env::var("SHMNET_GATEWAY")
            .ok()
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .is_some_and(|g| g == addr)
}

/// A listener on `addr` that a later one may join (SO_REUSEPORT).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Whether this process holds the gateway name; None if /proc cannot say.
fn held_by_us() -> Option<bool> {
    let unix = std::fs::read_to_string("/proc/net/unix").ok()?;
    // Num RefCount Protocol Flags Type St Inode Path
    let inodes: Vec<String> = unix
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == NAME).then(|| f[6].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return Some(false);
    }
    let ours: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|p| {
            let p = p.to_string_lossy().into_owned();
            Some(p.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    Some(inodes.iter().any(|i| ours.contains(i)))
}

/// Serves `listener` and takes the gateway name back whenever it is not
/// ours, looking more rarely while someone else keeps it.
pub async fn serve(addr: SocketAddr, listener: TcpListener, routes: Routes) {
    // Aborted with us (a stopping gateway stops listening).
    let mut _serving = Serving(tokio::spawn(outbound::serve(listener, routes.clone())));
    let mut wait = FIRST_LOOK;
    loop {
        tokio::time::sleep(wait).await;
        if held_by_us() != Some(false) {
            wait = FIRST_LOOK;
            continue;
        }
        let Ok(next) = listen(addr) else {
            wait = (wait * 2).min(MAX_WAIT);
            continue;
        };
        if held_by_us() == Some(true) {
            log!("local: the gateway name is ours again (listening on {addr})");
            _serving = Serving(tokio::spawn(outbound::serve(next, routes.clone())));
            wait = FIRST_LOOK;
        } else {
            drop(next);
            wait = (wait * 2).min(MAX_WAIT);
        }
    }
}

/// The task serving the current listener, aborted when replaced or dropped.
struct Serving(JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}
