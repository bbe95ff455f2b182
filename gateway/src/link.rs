//! One TLS + HTTP/2 connection to a peer gateway, kept open: dialed at
//! start, PINGed, re-dialed with backoff when it drops. Streams ask it for
//! the current connection and wait a while when there is none.
//!
//! A peer that sends GOAWAY (a graceful restart: RFC 9113 §6.8) opens no
//! more streams on that connection, but finishes the ones it has: the
//! connection is left to run until they end, and the next one is dialed
//! at once for new streams (ztunnel's pool does the same).

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
/// How often an up link asks h2 whether the peer sent GOAWAY (h2 has no
/// event for it; a stream that meets it says so at once, see `going_away`).
const GOAWAY_LOOK: Duration = Duration::from_millis(200);

/// The connection streams open on now, and which one it is (the count of
/// links established when it came up).
#[derive(Clone)]
pub struct Current {
    pub generation: u64,
    pub sender: SendRequest<Bytes>,
}

pub struct Link {
    pub peer: SocketAddr,
    pub stats: Arc<status::Peer>,
    /// How long a stream may take to open and be answered (--open-timeout).
    pub open_timeout: Duration,
    current: watch::Receiver<Option<Current>>,
    /// The newest generation known to be going away (GOAWAY received).
    gone: watch::Sender<u64>,
    /// Room for early data (early.rs), one `early::LIMIT` a permit: a
    /// quarter of the connection window. Early bytes wait in the peer's
    /// h2 buffer until its onward connect succeeds (up to 10 s), counted
    /// against the connection window: unbounded, 256 opening streams of
    /// 64 KiB stalled every stream of the link (review of early data).
    pub early_room: Arc<tokio::sync::Semaphore>,
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
        let (gone, gone_rx) = watch::channel(0);
        let stats = board.add(peer.to_string(), "dialed");
        let open_timeout = settings.open_timeout;
        let early_room = crate::early::room(settings.connection_window);
        tokio::spawn(keep(peer, tls, settings, tx, gone_rx, stats.clone()));
        Arc::new(Link {
            peer,
            stats,
            open_timeout,
            current: rx,
            gone,
            early_room,
        })
    }

    /// The link once it is up and not going away (waits up to
    /// `WAIT_FOR_LINK`).
    pub async fn sender(&self) -> Option<Current> {
        let mut rx = self.current.clone();
        let mut gone = self.gone.subscribe();
        let wait = async {
            loop {
                let newest_gone = *gone.borrow_and_update();
                let fresh =
                    |s: &Option<Current>| s.as_ref().is_some_and(|c| c.generation > newest_gone);
                tokio::select! {
                    r = rx.wait_for(fresh) => return r.ok().and_then(|s| s.clone()),
                    r = gone.changed() => r.ok()?,
                }
            }
        };
        tokio::time::timeout(WAIT_FOR_LINK, wait)
            .await
            .ok()
            .flatten()
    }

    /// A stream found `generation` going away (GOAWAY): no new streams on
    /// it; the next link is dialed at once.
    pub fn going_away(&self, generation: u64) {
        self.gone.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
    }
}

async fn keep(
    peer: SocketAddr,
    tls: Arc<ClientConfig>,
    settings: Settings,
    tx: watch::Sender<Option<Current>>,
    mut gone: watch::Receiver<u64>,
    stats: Arc<status::Peer>,
) {
    // Links established so far: 1 for a link that never dropped.
    let mut established = 0u64;
    let mut backoff = BACKOFF_MIN;
    loop {
        match tokio::time::timeout(DIAL_TIMEOUT, dial(peer, &tls, &settings)).await {
            Ok(Ok((sender, mut conn))) => {
                let Some(pinger) = conn.ping_pong() else {
                    return;
                };
                // The connection and its PINGs run in a task of their own:
                // one going away runs on after we dial the next, until its
                // streams end (still PINGed). Any other way out of here
                // ends it, and with it its streams.
                let (answered, up) = tokio::sync::oneshot::channel();
                let mut running = tokio::spawn(run(conn, pinger, settings.clone(), answered));
                let answered = tokio::select! {
                    why = &mut running => Err(ended(why)),
                    r = up => r.unwrap_or_else(|_| Err("gone".into())),
                };
                match answered {
                    Ok(()) => {
                        established += 1;
                        log!("link to {peer} up (links established: {established})");
                        stats.established.store(established, Ordering::Relaxed);
                        stats.up.store(true, Ordering::Relaxed);
                        let current = Current {
                            generation: established,
                            sender,
                        };
                        let _ = tx.send(Some(current.clone()));
                        let since = Instant::now();
                        let why = tokio::select! {
                            why = &mut running => Some(ended(why)),
                            () = going_away(&current, &mut gone) => None,
                        };
                        let _ = tx.send(None);
                        stats.up.store(false, Ordering::Relaxed);
                        if since.elapsed() >= STABLE {
                            backoff = BACKOFF_MIN;
                        }
                        let Some(why) = why else {
                            log!(
                                "link {established} to {peer} going away (GOAWAY): its streams finish on it; \
                                 new ones wait for the next link"
                            );
                            tokio::spawn(async move {
                                let why = ended(running.await);
                                log!("link {established} to {peer} closed after going away: {why}");
                            });
                            backoff = BACKOFF_MIN;
                            continue; // dial the next one at once
                        };
                        log!("link to {peer} down: {why}");
                    }
                    Err(why) => log!("link to {peer} refused: {why}"),
                }
                running.abort();
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

/// Returns once the peer sent GOAWAY on `link` (h2 then refuses new
/// streams on it), or a stream said so.
async fn going_away(link: &Current, gone: &mut watch::Receiver<u64>) {
    loop {
        tokio::select! {
            () = async {
                if gone.wait_for(|g| *g >= link.generation).await.is_err() {
                    std::future::pending::<()>().await; // the link is being dropped
                }
            } => return,
            () = tokio::time::sleep(GOAWAY_LOOK) => {
                // Answers at once: it only checks the connection's state.
                if let Err(e) = link.sender.clone().ready().await {
                    if e.is_go_away() {
                        return;
                    }
                }
            }
        }
    }
}

fn ended(r: Result<String, tokio::task::JoinError>) -> String {
    r.unwrap_or_else(|e| e.to_string())
}

/// Drives the connection; says on `answered` whether the peer answered a
/// first PING (under TLS 1.3 a client whose certificate the peer refused
/// learns it only then); then PINGs it. Returns (dropping the connection:
/// its streams are reset) when it ends or a PING goes unanswered.
async fn run(
    conn: Conn,
    mut pinger: h2::PingPong,
    settings: Settings,
    answered: tokio::sync::oneshot::Sender<Result<(), String>>,
) -> String {
    let mut driven = std::pin::pin!(drive(conn));
    let first = tokio::select! {
        why = &mut driven => return why,
        r = tokio::time::timeout(DIAL_TIMEOUT, pinger.ping(h2::Ping::opaque())) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no PING answer".into()),
        },
    };
    let ok = first.is_ok();
    let _ = answered.send(first);
    if !ok {
        return "refused".into();
    }
    tokio::select! {
        why = &mut driven => why,
        why = ping(&mut pinger, &settings) => why,
    }
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
pub async fn ping(pinger: &mut h2::PingPong, settings: &Settings) -> String {
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
