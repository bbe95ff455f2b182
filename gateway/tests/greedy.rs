//! A peer with a valid certificate that opens many streams to a fast
//! source, grants huge windows and then never reads its socket: gateway
//! B's memory stays within its bound per peer (docs/design/gateway.md,
//! "Memory"). The first adversarial review grew B to 678 MB in 5 s with
//! 300 such streams. Needs root (ip netns).

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{Pair, B_LINK, B_SERVICE, PEER};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PORT: u16 = 7400;
const STREAMS: usize = 300;
/// B's resident memory may not pass this with STREAMS greedy streams
/// (the bound at the defaults, docs/design/gateway.md "Memory", plus the
/// process's own ~10 MiB).
const BOUND_KIB: u64 = 160 << 10;

/// Writes zeros to every connection until it fails.
fn source(listener: TcpListener) {
    for c in listener.incoming() {
        let Ok(mut c) = c else { return };
        std::thread::spawn(move || {
            let buf = vec![0u8; 64 << 10];
            while c.write_all(&buf).is_ok() {}
        });
    }
}

/// A socket whose reads stop for good once `stop` is set: the peer that
/// never reads again.
struct Stalling<S> {
    inner: S,
    stop: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stop.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[allow(deprecated)]
fn client_config(dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("test-ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join("a.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("a.key")).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[test]
fn a_greedy_peer_cannot_grow_the_gateway_without_bound() {
    if !common::root() {
        eprintln!("a_greedy_peer_cannot_grow_the_gateway_without_bound: skipped (needs root)");
        return;
    }
    let pair = Pair::new("greedy");
    pair.certs();
    let listener = Pair::inside(&pair.b, || TcpListener::bind((B_SERVICE, PORT)).unwrap());
    std::thread::spawn(move || source(listener));
    let b = pair.gateway_b(&[], &[]);
    let tcp = Pair::inside(&pair.a, || TcpStream::connect(PEER).unwrap());
    tcp.set_nonblocking(true).unwrap();
    let tls = client_config(&pair.dir);
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut peak = 0u64;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let name = ServerName::IpAddress(B_LINK.parse::<std::net::IpAddr>().unwrap().into());
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        let io = Stalling {
            inner: tls,
            stop: stop.clone(),
        };
        let (mut sender, conn) = h2::client::Builder::new()
            .initial_window_size(i32::MAX as u32)
            .initial_connection_window_size(i32::MAX as u32)
            .max_frame_size((1 << 24) - 1)
            .max_concurrent_reset_streams(0)
            .handshake::<_, bytes::Bytes>(io)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut held = Vec::new();
        for _ in 0..STREAMS {
            sender = sender.ready().await.unwrap();
            let request = http::Request::builder()
                .method(http::Method::CONNECT)
                .uri(format!("{B_SERVICE}:{PORT}"))
                .body(())
                .unwrap();
            let (response, send) = sender.send_request(request, false).unwrap();
            held.push((response, send));
        }
        let mut open = Vec::new();
        for (response, send) in held {
            let r = response.await.unwrap();
            assert_eq!(r.status(), http::StatusCode::OK);
            open.push((r.into_body(), send));
        }
        // From now on nothing is read: B can only buffer or wait.
        stop.store(true, Ordering::Relaxed);
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            peak = peak.max(b.rss_kib());
        }
        drop(open);
    });
    assert!(
        peak < BOUND_KIB,
        "gateway B's RSS reached {} MiB with {STREAMS} greedy streams (bound {} MiB)",
        peak >> 10,
        BOUND_KIB >> 10
    );
    eprintln!("greedy peer: B's peak RSS {} MiB", peak >> 10);
}
