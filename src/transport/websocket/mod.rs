//! WebSocket transport: one text message is one frame. Framing is our own (`codec`), so an
//! idle connection holds no read or write buffer; the upgrade handshake is in `upgrade`.
//!
//! The frame cap is enforced from each frame's header, before its body is buffered.
//! WebSocket pings are answered and a peer's close is replied to here, below the session;
//! the protocol's own heartbeat runs above it so that browsers (which cannot see WebSocket
//! pings) get the same one.

pub mod codec;
pub mod upgrade;

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use codec::{Incoming, MessageReader, WsError};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::Notify,
};

use super::{FrameReader, FrameWriter, PeerInfo, ReadError, Transport, WriteError};

/// Queued frames are written once they add up to this much, flush or not.
const WRITE_CHUNK: usize = 64 * 1024;

/// How long a closing connection reads (and drops) what the peer still sends after our close
/// frame, waiting for its end. Closing a socket with unread bytes makes the kernel send a
/// reset, which can overtake the close frame still on its way; a client that answers our
/// close in time ends the connection cleanly instead.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

pub struct WsTransport<S> {
    io: S,
    leftover: Bytes,
    peer: PeerInfo,
    max_frame: usize,
}

impl<S> WsTransport<S> {
    /// `io` is the upgraded connection and `leftover` what arrived with the upgrade request
    /// after its head.
    pub fn new(io: S, leftover: Bytes, peer: PeerInfo, max_frame: usize) -> Self {
        WsTransport { io, leftover, peer, max_frame }
    }
}

/// What the two halves share: the frames the reader owes the peer, which only the writer may
/// send, and the read half after the reader is done with it.
struct Shared<S> {
    owed: Mutex<Owed<S>>,
    /// Wakes an idle writer when something is owed.
    wake: Notify,
}

struct Owed<S> {
    /// Encoded pongs, and the reply to the peer's close or the close failing the connection.
    frames: Vec<u8>,
    /// A close frame is among `frames` (or was sent): the writer sends no second one.
    closed: bool,
    /// The read half, handed back when the reader is dropped, for the closing writer to drain.
    read_half: Option<ReadHalf<S>>,
}

impl<S> Shared<S> {
    fn owed(&self) -> MutexGuard<'_, Owed<S>> {
        // Never held across anything that can panic; the data is intact if it was.
        self.owed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn owe(&self, encode: impl FnOnce(&mut Vec<u8>), close: bool) {
        {
            let mut owed = self.owed();
            if owed.closed {
                return;
            }
            encode(&mut owed.frames);
            owed.closed = close;
        }
        self.wake.notify_one();
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for WsTransport<S> {
    type Reader = WsReader<S>;
    type Writer = WsWriter<S>;

    fn split(self) -> (PeerInfo, WsReader<S>, WsWriter<S>) {
        let (read_half, write_half) = tokio::io::split(self.io);
        let shared = Arc::new(Shared {
            owed: Mutex::new(Owed { frames: Vec::new(), closed: false, read_half: None }),
            wake: Notify::new(),
        });
        let reader = MessageReader::new(read_half, self.leftover, self.max_frame);
        (
            self.peer,
            WsReader { inner: Some(reader), shared: shared.clone() },
            WsWriter { io: write_half, out: Vec::new(), shared },
        )
    }
}

pub struct WsReader<S> {
    /// `None` only while being dropped.
    inner: Option<MessageReader<ReadHalf<S>>>,
    shared: Arc<Shared<S>>,
}

impl<S> Drop for WsReader<S> {
    fn drop(&mut self) {
        if let Some(reader) = self.inner.take() {
            self.shared.owed().read_half = Some(reader.into_inner());
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> FrameReader for WsReader<S> {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        let Some(reader) = self.inner.as_mut() else { return Ok(None) };
        loop {
            let incoming = match reader.read().await {
                Ok(incoming) => incoming,
                Err(e) => return Err(self.fail(e)),
            };
            return match incoming {
                None => Ok(None),
                Some(Incoming::Text(text)) => Ok(Some(text)),
                Some(Incoming::Binary(_)) => Err(ReadError::NotText),
                Some(Incoming::Ping(payload)) => {
                    self.shared.owe(|out| codec::encode(out, codec::PONG, &payload), false);
                    continue;
                }
                Some(Incoming::Pong) => continue,
                Some(Incoming::Close(close)) => {
                    // Echoed, as RFC 6455 suggests; the session then ends.
                    self.shared.owe(|out| codec::encode_close_reply(out, close.as_ref()), true);
                    Ok(None)
                }
            };
        }
    }
}

impl<S> WsReader<S> {
    /// Maps a read failure for the session; a protocol violation also owes the peer a close
    /// frame with its code (the session's own close codes cover the other failures).
    fn fail(&self, err: WsError) -> ReadError {
        match err {
            WsError::TooLarge { len, max } => {
                ReadError::TooLarge { len: usize::try_from(len).unwrap_or(usize::MAX), max }
            }
            WsError::InvalidUtf8 => ReadError::InvalidUtf8,
            WsError::Truncated => ReadError::Truncated,
            WsError::Protocol(why) => {
                self.shared.owe(|out| codec::encode_close(out, 1002, why), true);
                ReadError::Failed(err.to_string())
            }
            WsError::Io(e) => ReadError::Failed(e.to_string()),
        }
    }
}

pub struct WsWriter<S> {
    io: WriteHalf<S>,
    /// Frames not yet written. Released after each flush, so an idle connection holds none.
    out: Vec<u8>,
    shared: Arc<Shared<S>>,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> WsWriter<S> {
    /// Moves what the reader owes the peer behind what is queued; true when that includes a
    /// close frame (or one went before).
    fn take_owed(&mut self) -> bool {
        let mut owed = self.shared.owed();
        if !owed.frames.is_empty() {
            self.out.extend_from_slice(&owed.frames);
            owed.frames = Vec::new();
        }
        owed.closed
    }

    async fn write_out(&mut self) -> Result<(), WriteError> {
        let result = self.io.write_all(&self.out).await;
        self.out.clear();
        result.map_err(|e| WriteError(e.to_string()))
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> FrameWriter for WsWriter<S> {
    async fn write_frame(&mut self, frame: Bytes) -> Result<(), WriteError> {
        codec::encode(&mut self.out, codec::TEXT, &frame);
        if self.out.len() >= WRITE_CHUNK {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn write_volatile(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.write_frame(frame).await
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        self.take_owed();
        self.write_out().await?;
        self.out = Vec::new();
        self.io.flush().await.map_err(|e| WriteError(e.to_string()))
    }

    fn wants_flush(&self) -> impl Future<Output = ()> + Send + '_ {
        self.shared.wake.notified()
    }

    async fn close(mut self, code: u16, reason: &str) {
        if !self.take_owed() {
            codec::encode_close(&mut self.out, code, reason);
        }
        // Errors here mean the peer is already gone, which is what closing wants anyway.
        if self.write_out().await.is_ok() {
            let _ = self.io.flush().await;
            let _ = self.io.shutdown().await;
        }
        let read_half = self.shared.owed().read_half.take();
        if let Some(mut read_half) = read_half {
            drain(&mut read_half).await;
        }
    }
}

/// Reads and drops what the peer still sends after our close frame, until it ends the
/// connection or `CLOSE_DRAIN` passes.
pub async fn drain(read: &mut (impl AsyncRead + Unpin)) {
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        // On the heap: an array here would size every writer task, idle or not.
        let mut sink = vec![0u8; 4096];
        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests;
