//! The peer-facing side: mutual TLS, HTTP/2, one CONNECT per stream whose
//! :authority is the destination; each is connected onward with an
//! ordinary socket (shared memory when this gateway runs preloaded and the
//! destination is a preloaded listener) and spliced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{self, Settings};
use crate::log;
use crate::pending;
use crate::source;
use crate::splice;
use crate::status;
use std::sync::atomic::Ordering;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    serve: Vec<IpNet>,
    settings: Arc<Settings>,
    board: status::Board,
    stopping: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let serve = Arc::new(serve);
    let pending = pending::Pending::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log!("peer accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match pending.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                if refused.log {
                    log!("peer {peer} refused: {} (closed at once)", refused.why);
                }
                continue; // dropping `tcp` closes it
            }
        };
        let (acceptor, serve, settings) = (acceptor.clone(), serve.clone(), settings.clone());
        let board = board.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(slot);
            let tls = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return log!("peer {peer} refused: TLS: {e}"),
                Err(_) => return log!("peer {peer} refused: no TLS handshake in time"),
            };
            log!("peer {peer} connected");
            let stats = board.add(peer.to_string(), "accepted");
            stats.up.store(true, Ordering::Relaxed);
            stats.established.store(1, Ordering::Relaxed);
            let why = connection(tls, peer, serve, &settings, &stats, stopping).await;
            board.remove(&stats);
            log!("peer {peer} gone: {why}");
        });
    }
}

async fn connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
    serve: Arc<Vec<IpNet>>,
    settings: &Settings,
    stats: &Arc<status::Peer>,
    mut stopping: watch::Receiver<bool>,
) -> String {
    let mut conn = match h2::server::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(config::MAX_FRAME)
        .max_send_buffer_size(settings.send_buffer)
        .max_concurrent_streams(settings.max_streams)
        .max_header_list_size(64 << 10)
        .handshake::<_, Bytes>(tls)
        .await
    {
        Ok(c) => c,
        Err(e) => return format!("HTTP/2: {e}"),
    };
    let pinger = conn.ping_pong();
    let accept = async {
        let mut going_away = false;
        loop {
            // Stopping: GOAWAY, then streams already sent to us are
            // still taken and every open one runs to its end; h2 closes
            // the connection after the last (RFC 9113 §6.8).
            let r = tokio::select! {
                r = conn.accept() => r,
                () = async { let _ = stopping.wait_for(|s| *s).await; }, if !going_away => {
                    conn.graceful_shutdown();
                    going_away = true;
                    log!("peer {peer}: GOAWAY sent (stopping)");
                    continue;
                }
            };
            let Some(r) = r else { break };
            match r {
                Ok((request, respond)) => {
                    let stats = stats.clone();
                    let original = settings.original_source;
                    tokio::spawn(stream(
                        request,
                        respond,
                        peer,
                        serve.clone(),
                        stats,
                        original,
                    ));
                }
                Err(e) => return e.to_string(),
            }
        }
        "closed".to_string()
    };
    match pinger {
        Some(mut p) => tokio::select! {
            why = accept => why,
            why = crate::link::ping(&mut p, settings) => why,
        },
        None => accept.await,
    }
}

fn refuse(mut respond: SendResponse<Bytes>, status: StatusCode) {
    if let Ok(r) = Response::builder().status(status).body(()) {
        let _ = respond.send_response(r, true);
    }
}

async fn stream(
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
    peer: SocketAddr,
    serve: Arc<Vec<IpNet>>,
    stats: Arc<status::Peer>,
    original_source: bool,
) {
    if request.method() != Method::CONNECT {
        return refuse(respond, StatusCode::BAD_REQUEST);
    }
    let Some(dest) = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        return refuse(respond, StatusCode::BAD_REQUEST);
    };
    let Some(dest) = served(&serve, dest) else {
        log!("peer {peer}: CONNECT {dest} refused: not in a --serve range");
        return refuse(respond, StatusCode::FORBIDDEN);
    };
    // What the server sees as its client (never loopback): source.rs.
    let source = original_source.then(|| {
        let fwd = request
            .headers()
            .get("forwarded")
            .and_then(|v| v.to_str().ok())
            .and_then(source::forwarded_for);
        source::client_address(fwd, peer, dest)
    });
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, source::connect(dest, source)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log!("peer {peer}: CONNECT {dest}: {e}");
            return refuse(respond, StatusCode::SERVICE_UNAVAILABLE);
        }
        Err(_) => return refuse(respond, StatusCode::GATEWAY_TIMEOUT),
    };
    let _ = tcp.set_nodelay(true);
    let mut respond = respond;
    let Ok(ok) = Response::builder().status(StatusCode::OK).body(()) else {
        return;
    };
    let send = match respond.send_response(ok, false) {
        Ok(s) => s,
        Err(_) => return,
    };
    stats.stream_opened();
    let carried = splice::splice(
        tcp,
        send,
        request.into_body(),
        splice::Rest::default(),
        &stats,
    )
    .await;
    stats.stream_closed(carried.reset);
}

/// `dest` in its canonical form (an IPv4-mapped IPv6 address as the IPv4
/// address it is, which is where a connect to it goes) if a `--serve`
/// range holds it; None otherwise. (Checking the mapped form against the
/// ranges let `[::ffff:127.0.0.1]` through a `::/0` range to loopback.)
fn served(serve: &[IpNet], dest: SocketAddr) -> Option<SocketAddr> {
    let dest = SocketAddr::new(dest.ip().to_canonical(), dest.port());
    serve.iter().any(|r| r.contains(&dest.ip())).then_some(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_address_is_judged_as_the_ipv4_address_it_is() {
        let serve: Vec<IpNet> = vec!["10.211.2.0/24".parse().unwrap(), "::/0".parse().unwrap()];
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:2222".parse().unwrap();
        assert_eq!(served(&serve, mapped), None);
        let ok: SocketAddr = "[::ffff:10.211.2.2]:80".parse().unwrap();
        assert_eq!(served(&serve, ok), Some("10.211.2.2:80".parse().unwrap()));
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(served(&serve, v6), Some(v6));
    }
}
