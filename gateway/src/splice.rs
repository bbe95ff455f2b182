//! One local TCP connection <-> one HTTP/2 CONNECT stream, both ways.
//!
//! FIN -> END_STREAM -> shutdown(SHUT_WR); a local read or write error ->
//! RST_STREAM(CONNECT_ERROR) (RFC 9113 §8.5); a RST_STREAM or a lost link
//! -> the local socket closed with SO_LINGER 0 (a TCP RST). Received data
//! is released from the stream window only once written to the socket, so
//! a slow local reader holds the peer's writer back through the window and
//! a gateway holds at most one window per stream.

use std::future::poll_fn;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::status;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

use crate::config::READ_CHUNK;
pub use crate::early::Rest;

/// Why a direction stopped early.
enum Broken {
    /// The local socket failed: reset the stream.
    Local,
    /// The stream was reset or the link lost: reset the local socket.
    Peer,
    /// The gateway stops past its drain: reset both.
    Stopping,
}

/// Set once the gateway stops with streams still open.
static ABORTED: AtomicBool = AtomicBool::new(false);
static ABORT: Notify = Notify::const_new();

/// Resets every splice now and to come, and every local connection still
/// waiting for its CONNECT's answer (`aborted`).
pub fn abort_all() {
    ABORTED.store(true, Ordering::SeqCst);
    ABORT.notify_waiters();
}

/// Returns once `abort_all` has been called.
pub async fn aborted() {
    loop {
        let notified = ABORT.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if ABORTED.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

/// How a splice ended (its bytes are counted in the peer's status).
#[derive(Debug, Default, Clone, Copy)]
pub struct Carried {
    pub reset: bool,
}

pub async fn splice(
    mut tcp: TcpStream,
    mut send: SendStream<Bytes>,
    mut recv: RecvStream,
    rest: Rest,
    stats: &status::Peer,
) -> Carried {
    let mut carried = Carried::default();
    let broken = {
        let (rd, wr) = tcp.split();
        let up = up(rd, &mut send, rest, &stats.sent);
        let down = down(&mut recv, wr, &stats.received);
        let stopping = aborted();
        tokio::pin!(up, down, stopping);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let r = tokio::select! {
                r = &mut up, if !up_done => { up_done = true; r }
                r = &mut down, if !down_done => { down_done = true; r }
                () = &mut stopping => Err(Broken::Stopping),
            };
            if let Err(b) = r {
                break Some(b);
            }
            if up_done && down_done {
                break None;
            }
        }
    };
    match broken {
        None => {}
        Some(Broken::Local) => {
            send.send_reset(Reason::CONNECT_ERROR);
            carried.reset = true;
        }
        Some(Broken::Peer) => {
            // A RST to the local peer; close follows at drop.
            let _ = tcp.set_zero_linger();
            carried.reset = true;
        }
        Some(Broken::Stopping) => {
            send.send_reset(Reason::CANCEL);
            let _ = tcp.set_zero_linger();
            carried.reset = true;
        }
    }
    carried
}

/// Local socket -> stream, never more in hand than one read; first what
/// was read before the 200 and not sent yet (early.rs).
async fn up(
    mut rd: ReadHalf<'_>,
    send: &mut SendStream<Bytes>,
    rest: Rest,
    total: &AtomicU64,
) -> Result<(), Broken> {
    for data in rest.unsent {
        give(send, data).await?;
    }
    if rest.eof {
        if !rest.ended {
            send.send_data(Bytes::new(), true)
                .map_err(|_| Broken::Peer)?;
        }
        return Ok(());
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                return send.send_data(Bytes::new(), true).map_err(|_| Broken::Peer);
            }
            Ok(n) => {
                total.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => return Err(Broken::Local),
        }
        give(send, buf.split().freeze()).await?;
    }
}

/// Sends `data` as the stream's window and send buffer take it.
async fn give(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), Broken> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(_)) | None => return Err(Broken::Peer),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, false).map_err(|_| Broken::Peer)?;
    }
    Ok(())
}

/// Stream -> local socket; the window is released after each write.
async fn down(
    recv: &mut RecvStream,
    mut wr: WriteHalf<'_>,
    total: &AtomicU64,
) -> Result<(), Broken> {
    loop {
        match recv.data().await {
            None => {
                // END_STREAM: the peer's FIN.
                let _ = wr.shutdown().await;
                return Ok(());
            }
            Some(Ok(data)) => {
                wr.write_all(&data).await.map_err(|_| Broken::Local)?;
                total.fetch_add(data.len() as u64, Ordering::Relaxed);
                let _ = recv.flow_control().release_capacity(data.len());
            }
            Some(Err(_)) => return Err(Broken::Peer),
        }
    }
}
