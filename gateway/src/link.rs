//! One TLS + HTTP/2 connection to a peer gateway, kept open: dialed at
//! start, PINGed, re-dialed with backoff when it drops. Streams ask it for
//! the current connection and wait a while when there is none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{self, Settings};
use crate::log;
use crate::status;
use std::sync::atomic::Ordering;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A link that stayed up this long starts the next backoff from the minimum.
const STABLE: Duration = Duration::from_secs(5);
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new local connection waits for a link that is down.
pub const WAIT_FOR_LINK: Duration = Duration::from_secs(10);

pub struct Link {
    pub peer: SocketAddr,
    pub stats: Arc<status::Peer>,
    /// How long a stream may take to open and be answered (--open-timeout).
    pub open_timeout: Duration,
    current: watch::Receiver<Option<SendRequest<Bytes>>>,
}

impl Link {
    /// Starts the dialing task; the returned link is shared by every range
    /// that names this peer.
    pub fn start(
        peer: SocketAddr,
        tls: Arc<ClientConfig>,
        settings: Settings,
        board: &status::Board,
    ) -> Arc<Link> {
        let (tx, rx) = watch::channel(None);
        let stats = board.add(peer.to_string(), "dialed");
        let open_timeout = settings.open_timeout;
        tokio::spawn(keep(peer, tls, settings, tx, stats.clone()));
        Arc::new(Link {
            peer,
            stats,
            open_timeout,
            current: rx,
        })
    }

    /// The link's sender once it is up (waits up to `WAIT_FOR_LINK`).
    pub async fn sender(&self) -> Option<SendRequest<Bytes>> {
        let mut rx = self.current.clone();
        let wait = async {
            rx.wait_for(|s| s.is_some())
                .await
                .ok()
                .and_then(|s| s.clone())
        };
        tokio::time::timeout(WAIT_FOR_LINK, wait)
            .await
            .ok()
            .flatten()
    }
}

async fn keep(
    peer: SocketAddr,
    tls: Arc<ClientConfig>,
    settings: Settings,
    tx: watch::Sender<Option<SendRequest<Bytes>>>,
    stats: Arc<status::Peer>,
) {
    // Links established so far: 1 for a link that never dropped.
    let mut established = 0u64;
    let mut backoff = BACKOFF_MIN;
    loop {
        match tokio::time::timeout(DIAL_TIMEOUT, dial(peer, &tls, &settings)).await {
            Ok(Ok((sender, mut conn))) => {
                let Some(mut pinger) = conn.ping_pong() else {
                    return;
                };
                let mut driven = std::pin::pin!(drive(conn));
                // Up once the peer answers a PING: under TLS 1.3 a client
                // whose certificate the peer refused learns it only here.
                let answered = tokio::select! {
                    why = &mut driven => Err(why),
                    r = tokio::time::timeout(DIAL_TIMEOUT, pinger.ping(h2::Ping::opaque())) => match r {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no PING answer".into()),
                    },
                };
                match answered {
                    Ok(()) => {
                        established += 1;
                        log!("link to {peer} up (links established: {established})");
                        stats.established.store(established, Ordering::Relaxed);
                        stats.up.store(true, Ordering::Relaxed);
                        let _ = tx.send(Some(sender));
                        let since = Instant::now();
                        let why = tokio::select! {
                            why = &mut driven => why,
                            why = ping(pinger, &settings) => why,
                        };
                        let _ = tx.send(None);
                        stats.up.store(false, Ordering::Relaxed);
                        log!("link to {peer} down: {why}");
                        if since.elapsed() >= STABLE {
                            backoff = BACKOFF_MIN;
                        }
                    }
                    Err(why) => log!("link to {peer} refused: {why}"),
                }
            }
            Ok(Err(e)) => log!("link to {peer}: {e}"),
            Err(_) => log!("link to {peer}: no answer in {DIAL_TIMEOUT:?}"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

type Conn = h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, Bytes>;

async fn dial(
    peer: SocketAddr,
    tls: &Arc<ClientConfig>,
    settings: &Settings,
) -> Result<(SendRequest<Bytes>, Conn), String> {
    let tcp = TcpStream::connect(peer).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(peer.ip().into());
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("TLS: the peer did not agree to h2".into());
    }
    h2::client::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(config::MAX_FRAME)
        .max_send_buffer_size(settings.send_buffer)
        .enable_push(false)
        .handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2: {e}"))
}

/// Runs the connection until it ends.
async fn drive<T, B>(conn: h2::client::Connection<T, B>) -> String
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: bytes::Buf,
{
    match conn.await {
        Ok(()) => "closed".into(),
        Err(e) => e.to_string(),
    }
}

/// Sends a PING every `ping_interval`; returns when one goes unanswered
/// for `ping_timeout` (ztunnel: 10 s and 20 s).
pub async fn ping(mut pinger: h2::PingPong, settings: &Settings) -> String {
    loop {
        tokio::time::sleep(settings.ping_interval).await;
        let answer = pinger.ping(h2::Ping::opaque());
        match tokio::time::timeout(settings.ping_timeout, answer).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("ping: {e}"),
            Err(_) => return format!("no PING answer in {:?}", settings.ping_timeout),
        }
    }
}
