//! The local side: connections accepted on --listen become CONNECT streams
//! to the peer gateway of the --remote range their destination is in. The
//! destination is the accepted socket's local address: under the
//! interposer, the address the program connected to (the handshake's
//! `dest`); in stage 1, the kernel's, for a range routed to this host
//! (`ip route add local CIDR dev lo`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ipnet::IpNet;
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Remote, Settings};
use crate::early::{Early, Stop};
use crate::link::Link;
use crate::log;
use crate::splice;
use crate::status;

#[derive(Clone)]
pub struct Routes(Arc<Vec<(IpNet, Arc<Link>)>>);

impl Routes {
    /// One link per distinct peer, shared by its ranges.
    pub fn new(
        remotes: &[Remote],
        tls: Arc<ClientConfig>,
        settings: &Settings,
        board: &status::Board,
    ) -> Routes {
        let mut links: Vec<Arc<Link>> = Vec::new();
        let mut routes = Vec::new();
        for r in remotes {
            let link = match links.iter().find(|l| l.peer == r.peer) {
                Some(l) => l.clone(),
                None => {
                    let l = Link::start(r.peer, tls.clone(), settings.clone(), board);
                    links.push(l.clone());
                    l
                }
            };
            routes.push((r.range, link));
        }
        Routes(Arc::new(routes))
    }

    fn link_for(&self, dest: SocketAddr) -> Option<Arc<Link>> {
        let ip = match dest.ip() {
            std::net::IpAddr::V6(v6) => v6.to_canonical(),
            ip => ip,
        };
        self.0
            .iter()
            .find(|(range, _)| range.contains(&ip))
            .map(|(_, l)| l.clone())
    }
}

pub async fn serve(listener: TcpListener, routes: Routes) {
    loop {
        match listener.accept().await {
            Ok((tcp, from)) => {
                tokio::spawn(carry(tcp, from, routes.clone()));
            }
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                log!("local accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn carry(tcp: TcpStream, from: SocketAddr, routes: Routes) {
    let _ = tcp.set_nodelay(true);
    let Ok(dest) = tcp.local_addr() else { return };
    let Some(link) = routes.link_for(dest) else {
        log!("{from} -> {dest}: in no --remote range, reset");
        let _ = tcp.set_zero_linger();
        return;
    };
    // Counted from here (a stopping gateway waits for it too: found by
    // the review of issue 17, a connection whose CONNECT was not answered
    // yet was closed at exit).
    link.stats.opening.fetch_add(1, Ordering::SeqCst);
    let mut early = Early::new(link.early_room.clone());
    let opened = tokio::select! {
        r = open(&link, &tcp, &mut early, dest, from) => r,
        () = splice::aborted() => Err("the gateway stopped: reset".into()),
    };
    match opened {
        Ok((send, recv)) => {
            link.stats.stream_opened();
            link.stats.opening.fetch_sub(1, Ordering::SeqCst);
            // Counted once, on the stream that was answered.
            link.stats
                .sent
                .fetch_add(early.len() as u64, Ordering::Relaxed);
            let rest = early.into_rest();
            let carried = splice::splice(tcp, send, recv, rest, &link.stats).await;
            link.stats.stream_closed(carried.reset);
        }
        Err(e) => {
            // Refused, failed or timed out: the early bytes go with the
            // stream (reset by h2 when dropped unfinished).
            log!("{from} -> {dest} via {}: {e}", link.peer);
            let _ = tcp.set_zero_linger();
            drop(tcp);
            link.stats.opening.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

type Opened = (h2::SendStream<bytes::Bytes>, h2::RecvStream);

async fn open(
    link: &Link,
    tcp: &TcpStream,
    early: &mut Early,
    dest: SocketAddr,
    from: SocketAddr,
) -> Result<Opened, String> {
    // A stream slot (the peer's limit) and the peer's answer, within
    // --open-timeout: past it the local connection is reset, never left
    // hanging (found by the first review: the 1001st stream hung).
    let limit = link.open_timeout;
    match tokio::time::timeout(limit, open_on_a_link(link, tcp, early, dest, from)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no stream opened and answered within {limit:?} (the peer's stream limit reached, or its connect slow): reset"
        )),
    }
}

/// Opens the stream on the current link, the local connection's bytes
/// sent on it at once (early.rs). A stream the peer did not process
/// (GOAWAY past it: RFC 9113 §6.8; REFUSED_STREAM: §8.7) is opened once
/// more, on the next link after a GOAWAY, with the same bytes. (Usually
/// the link task has seen the GOAWAY first and the stream waits for the
/// next link in `sender`; this is for a stream that came in between.)
async fn open_on_a_link(
    link: &Link,
    tcp: &TcpStream,
    early: &mut Early,
    dest: SocketAddr,
    from: SocketAddr,
) -> Result<Opened, String> {
    let mut tries = 0;
    loop {
        let current = link.sender().await.ok_or("no link to the peer")?;
        match request(current.sender, tcp, early, dest, from).await {
            Ok(stream) => return Ok(stream),
            Err(Failed::Unprocessed { why, going_away }) if tries == 0 => {
                tries += 1;
                log!(
                    "{from} -> {dest}: not processed by {} on link {} ({why}): again{} with its {} bytes",
                    link.peer,
                    current.generation,
                    if going_away { " on the next link" } else { "" },
                    early.len()
                );
                if going_away {
                    link.going_away(current.generation);
                }
            }
            Err(Failed::Unprocessed { why, .. } | Failed::Other(why)) => return Err(why),
        }
    }
}

/// Why a CONNECT failed.
enum Failed {
    /// The peer did not process it (RFC 9113 §8.7): it may be sent again.
    /// `going_away`: a GOAWAY, the link takes no more streams.
    Unprocessed {
        why: String,
        going_away: bool,
    },
    Other(String),
}

impl From<h2::Error> for Failed {
    fn from(e: h2::Error) -> Failed {
        // Only the peer's own GOAWAY (h2 fails with it exactly the streams
        // above its last-stream-id, and those opened after it) or
        // REFUSED_STREAM; a GOAWAY h2 sent itself (a protocol error) may
        // follow a stream the peer processed.
        let refused = e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM);
        if e.is_remote() && (e.is_go_away() || refused) {
            Failed::Unprocessed {
                why: e.to_string(),
                going_away: e.is_go_away(),
            }
        } else {
            Failed::Other(e.to_string())
        }
    }
}

async fn request(
    sender: h2::client::SendRequest<bytes::Bytes>,
    tcp: &TcpStream,
    early: &mut Early,
    dest: SocketAddr,
    from: SocketAddr,
) -> Result<Opened, Failed> {
    let mut sender = sender.ready().await?;
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(dest.to_string())
        .header("forwarded", format!("for=\"{from}\""))
        .body(())
        .map_err(|e| Failed::Other(e.to_string()))?;
    let (mut response, mut send) = sender.send_request(request, false)?;
    early.rewind();
    let response = loop {
        tokio::select! {
            biased;
            r = &mut response => break r?,
            r = early.step(tcp, &mut send) => match r {
                Ok(()) | Err(Stop::Stream) => {} // the answer says why
                Err(Stop::Local(e)) => {
                    send.send_reset(h2::Reason::CONNECT_ERROR);
                    return Err(Failed::Other(format!("local read before the answer: {e}")));
                }
            },
        }
    };
    if response.status() != http::StatusCode::OK {
        return Err(Failed::Other(format!(
            "peer answered {}",
            response.status()
        )));
    }
    Ok((send, response.into_body()))
}
