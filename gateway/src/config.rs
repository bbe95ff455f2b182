//! Command line: where to listen, which ranges go to which peer, identity.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

/// A remote range and the peer gateway that reaches it.
#[derive(Clone, Debug)]
pub struct Remote {
    pub range: IpNet,
    pub peer: SocketAddr,
}

fn parse_remote(s: &str) -> Result<Remote, String> {
    let (range, peer) = s.split_once('=').ok_or("expected CIDR=PEER_ADDR:PORT")?;
    Ok(Remote {
        range: range.parse().map_err(|e| format!("{range}: {e}"))?,
        peer: peer.parse().map_err(|e| format!("{peer}: {e}"))?,
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "shmnet-gateway",
    about = "Carry local connections to remote ranges as HTTP/2 CONNECT streams over mutual TLS (HBONE)"
)]
pub struct Args {
    /// Local listener whose connections go to a peer: each connection's
    /// local address (getsockname) is its destination and must be in a
    /// --remote range. Repeatable.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// A remote range and its peer gateway. Repeatable.
    #[arg(long, value_name = "CIDR=PEER:PORT", value_parser = parse_remote)]
    pub remote: Vec<Remote>,
    /// Accept CONNECT streams from peers here (15008 in HBONE).
    #[arg(long, value_name = "ADDR:PORT")]
    pub peer_listen: Option<SocketAddr>,
    /// Destinations peers may reach. Repeatable; none: every CONNECT is refused.
    #[arg(long, value_name = "CIDR")]
    pub serve: Vec<IpNet>,
    /// This gateway's certificate chain (PEM).
    #[arg(long, required_unless_present = "status")]
    pub cert: Option<PathBuf>,
    /// This gateway's private key (PEM). Never logged.
    #[arg(long, required_unless_present = "status")]
    pub key: Option<PathBuf>,
    /// Whom to trust: a CA, or a peer's own self-signed certificate (PEM).
    #[arg(long, required_unless_present = "status")]
    pub ca: Option<PathBuf>,
    /// Print the file a running gateway writes with --status-file as a
    /// table (per peer link: its state, links established, streams open
    /// and carried, bytes each way, resets), and exit.
    #[arg(long, value_name = "PATH", exclusive = true)]
    pub status: Option<PathBuf>,
    /// HTTP/2 stream window, bytes: what a gateway holds per stream for a
    /// slow reader. About the ring's size (SHMNET_RING_BYTES).
    #[arg(long, default_value_t = 2 << 20)]
    pub stream_window: u32,
    /// HTTP/2 connection window, bytes (more than a stream's, so one
    /// stalled stream cannot stop the others).
    #[arg(long, default_value_t = 16 << 20)]
    pub connection_window: u32,
    /// Seconds between PINGs on an idle or busy link.
    #[arg(long, default_value_t = 10.0)]
    pub ping_interval: f64,
    /// Seconds a PING may go unanswered before the link is dropped (its
    /// streams reset) and dialed again.
    #[arg(long, default_value_t = 20.0)]
    pub ping_timeout: f64,
    /// Rewrite this JSON file every second: per peer link, its state,
    /// links established, streams open and carried, bytes, resets.
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// Seconds a local connection waits for its CONNECT stream to open and
    /// be answered (a free stream under the peer's limit, the peer's
    /// onward connect); then it is reset. More than the peer's own connect
    /// timeout (10 s), so its answer comes first.
    #[arg(long, default_value_t = 15.0)]
    pub open_timeout: f64,
    /// Streams a peer may have open at once on its link to us (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); its further local connections
    /// wait for one to end, up to --open-timeout.
    #[arg(long, default_value_t = MAX_STREAMS)]
    pub max_streams: u32,
    /// Bytes a peer link may make this gateway hold for data on its way to
    /// the peer (every stream's send buffer and read in hand, with
    /// --max-streams open); each stream's HTTP/2 send buffer is this over
    /// --max-streams, less the read in hand, within 16 KiB..1 MiB. Data
    /// from the peer is bounded by --connection-window.
    #[arg(long, default_value_t = 256 << 20)]
    pub peer_memory: u64,
    /// Present the remote client's address to servers behind this gateway
    /// (the peer's `forwarded: for=`, else the peer gateway's address;
    /// never loopback), binding onward connections to it with
    /// IP_TRANSPARENT (needs CAP_NET_ADMIN). Through shared memory (this
    /// gateway preloaded) nothing else is needed; over kernel TCP, replies
    /// to that address must be routed back to this host (as for ztunnel's
    /// and Envoy's original source). Without it servers see this host's
    /// own address.
    #[arg(long)]
    pub original_source: bool,
    /// Seconds a stopping gateway (SIGTERM, SIGINT) waits for its streams
    /// to end: it sends GOAWAY to its peers and stops listening at once,
    /// then exits when no stream is left or this has passed (the streams
    /// left are reset). A second signal stops it at once.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// What the link and streams need from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub original_source: bool,
    pub open_timeout: Duration,
    pub max_streams: u32,
    /// Each stream's HTTP/2 send buffer (from --peer-memory).
    pub send_buffer: usize,
    pub drain_timeout: Duration,
}

impl Args {
    pub fn settings(&self) -> Settings {
        Settings {
            stream_window: self.stream_window.max(65_535),
            connection_window: self.connection_window.max(self.stream_window),
            ping_interval: secs(self.ping_interval),
            ping_timeout: secs(self.ping_timeout),
            original_source: self.original_source,
            open_timeout: secs(self.open_timeout),
            max_streams: self.max_streams.max(1),
            send_buffer: send_buffer(self.peer_memory, self.max_streams),
            drain_timeout: secs(self.drain_timeout),
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.05)).unwrap_or(Duration::from_secs(3600))
}

/// Each stream's share of --peer-memory, less the reads in hand (one
/// chunk, and the allocation a part of it handed on may keep), within
/// 16 KiB..1 MiB.
fn send_buffer(peer_memory: u64, max_streams: u32) -> usize {
    let share = peer_memory / u64::from(max_streams.max(1));
    let share = share.saturating_sub(2 * READ_CHUNK as u64);
    share.clamp(MIN_SEND_BUFFER as u64, MAX_SEND_BUFFER as u64) as usize
}

/// The HTTP/2 settings both sides use (ztunnel's, but the stream window).
pub const MAX_FRAME: u32 = 1 << 20;
const MAX_SEND_BUFFER: usize = 1 << 20;
const MIN_SEND_BUFFER: usize = 16 << 10;
/// What a stream reads from its local socket at once (at most one in hand).
pub const READ_CHUNK: usize = 64 << 10;
pub const MAX_STREAMS: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_buffer_is_the_peer_memory_shared_by_the_streams() {
        // Defaults: 256 MiB over 1000 streams, less 128 KiB in hand.
        assert_eq!(send_buffer(256 << 20, 1000), (268_435 - 131_072));
        assert_eq!(send_buffer(256 << 20, 10), 1 << 20);
        assert_eq!(send_buffer(1 << 20, 1000), 16 << 10);
    }
}
