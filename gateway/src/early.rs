//! Early data: a local connection's bytes go on its CONNECT stream as soon
//! as the CONNECT is sent, not after the peer's 200, so a connection
//! through the gateways costs one round trip between them, not two (the
//! issue 17 benchmark over a delay line: docs/benchmarks.md).
//!
//! Until the 200 a copy of what was read is kept, so that a stream the
//! peer did not process (GOAWAY past it, REFUSED_STREAM: RFC 9113 §8.7)
//! can be opened again with the same bytes; reading stops at `LIMIT` until
//! the answer comes. The copy is dropped at the 200 (`Early::into_rest`).

use std::future::poll_fn;
use std::io::ErrorKind;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use h2::SendStream;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What is read from a local connection before its CONNECT is answered:
/// one read chunk (config::READ_CHUNK; a stream's share of --peer-memory
/// leaves room for two, config::send_buffer). What h2 queues of it are
/// slices of the same allocation.
pub const LIMIT: usize = 64 << 10;

/// A link's room for early data: `LIMIT` a permit, a quarter of the
/// connection window (ours, taken as the peer's: both gateways are
/// usually run alike). The peer holds early bytes in its h2 buffer until
/// its onward connect succeeds, and they count against its connection
/// window; past this room a stream waits for its 200 before it sends, as
/// before early data, so streams already carrying keep three quarters of
/// the window (found by the review of early data: 400 opening streams of
/// 64 KiB to a destination whose connect hung stalled a 1 MiB upload on
/// the same link for 7 s; tests/early_room.rs).
pub fn room(connection_window: u32) -> Arc<Semaphore> {
    let slots = (connection_window as usize / 4 / LIMIT).max(1);
    Arc::new(Semaphore::new(slots))
}

/// Why early data stopped.
pub enum Stop {
    /// The local socket failed (the client reset it, say).
    Local(std::io::Error),
    /// The stream can take no more; its answer (or its error) says why.
    Stream,
}

pub struct Early {
    /// The link's room (`room`) this stream may take a permit of.
    room_of_link: Arc<Semaphore>,
    /// Held from the first read until the answer (dropped with `self`).
    permit: Option<OwnedSemaphorePermit>,
    /// Everything read so far (the copy), in one allocation of `LIMIT`.
    read: Vec<Bytes>,
    room: BytesMut,
    len: usize,
    /// The local socket said FIN.
    eof: bool,
    /// What the current stream has not taken yet (parts of `read`).
    unsent: Vec<Bytes>,
    /// END_STREAM sent on the current stream.
    ended: bool,
    /// The current stream takes no more (reset, or its link gone).
    closed: bool,
}

/// What is left to send after the 200: the copy's unsent part and whether
/// the local side already ended (`ended`: END_STREAM already sent).
#[derive(Default)]
pub struct Rest {
    pub unsent: Vec<Bytes>,
    pub eof: bool,
    pub ended: bool,
}

impl Early {
    pub fn new(room_of_link: Arc<Semaphore>) -> Early {
        Early {
            room_of_link,
            permit: None,
            read: Vec::new(),
            room: BytesMut::new(),
            len: 0,
            eof: false,
            unsent: Vec::new(),
            ended: false,
            closed: false,
        }
    }

    /// Bytes read from the local connection.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A new stream: everything read so far is to be sent on it again.
    pub fn rewind(&mut self) {
        self.unsent = self.read.clone();
        self.ended = false;
        self.closed = false;
    }

    /// One step: sends what it can of the unsent bytes, or reads more.
    /// Cancel-safe (nothing is in hand across an await), so it can race
    /// the answer; pending for good once the copy is full, the local side
    /// ended, or the stream closed.
    pub async fn step(
        &mut self,
        tcp: &TcpStream,
        send: &mut SendStream<Bytes>,
    ) -> Result<(), Stop> {
        if self.closed {
            return std::future::pending().await;
        }
        if let Some(first) = self.unsent.first() {
            send.reserve_capacity(first.len());
            let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(_)) | None => return self.close(),
            };
            let n = granted.min(first.len());
            if n == 0 {
                return Ok(());
            }
            let chunk = if n == first.len() {
                self.unsent.remove(0)
            } else {
                let c = first.slice(..n);
                self.unsent[0] = first.slice(n..);
                c
            };
            return send.send_data(chunk, false).or_else(|_| self.close());
        }
        if self.eof {
            if !self.ended {
                self.ended = true;
                return send.send_data(Bytes::new(), true).or_else(|_| self.close());
            }
            return std::future::pending().await;
        }
        if self.len >= LIMIT {
            // Held until the answer: the copy is bounded.
            return std::future::pending().await;
        }
        if self.permit.is_none() {
            match self.room_of_link.clone().try_acquire_owned() {
                Ok(p) => self.permit = Some(p),
                // The link's room is taken: wait for the answer, then
                // the splice carries everything.
                Err(_) => return std::future::pending().await,
            }
        }
        if self.room.capacity() == 0 && self.read.is_empty() {
            self.room = BytesMut::with_capacity(LIMIT);
        }
        loop {
            tcp.readable().await.map_err(Stop::Local)?;
            match tcp.try_read_buf(&mut self.room) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.len += n;
                    let got = self.room.split().freeze();
                    self.read.push(got.clone());
                    self.unsent.push(got);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Stop::Local(e)),
            }
        }
    }

    fn close(&mut self) -> Result<(), Stop> {
        self.closed = true;
        Err(Stop::Stream)
    }

    /// At the 200: the copy is dropped; what the stream has not taken yet
    /// is sent by the splice before anything newer.
    pub fn into_rest(self) -> Rest {
        Rest {
            unsent: self.unsent,
            eof: self.eof,
            ended: self.ended,
        }
    }
}
