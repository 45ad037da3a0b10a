//! The transport boundary: the one seam between "bytes from some network protocol" and the
//! session. Everything after `Transport::split` sees frames, never sockets or streams.
//!
//! **Architecture invariant:** no code outside this module branches on the transport kind;
//! `PeerInfo::kind` exists for logs and metrics only.

pub mod websocket;
pub mod webtransport;

#[cfg(test)]
pub mod channel;

use std::{fmt, future::Future, net::SocketAddr};

use bytes::Bytes;

/// Which network protocol a session arrived on. Used for logs and metrics, never for logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    WebSocket,
    WebTransport,
    /// In-process channels, for unit tests of the session.
    Channel,
}

impl TransportKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::WebTransport => "webtransport",
            TransportKind::Channel => "channel",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about the peer before the handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub kind: TransportKind,
    pub remote: SocketAddr,
    pub user_agent: Option<String>,
    pub origin: Option<String>,
    /// The request headers the connect proxy gets (`--proxy-headers`), collected only when
    /// one is configured; the handshake takes them, so a live session holds none.
    pub headers: Vec<(String, String)>,
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The frame (or its announced length) is over the cap. Nothing beyond the cap was
    /// buffered; the stream cannot continue because the rest of the frame was not consumed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A frame that is not text (a WebSocket binary message). The session may continue.
    #[error("binary frames are not accepted; send text")]
    NotText,
    /// A WebSocket text message that is not valid UTF-8. The connection cannot continue.
    #[error("a text message was not valid UTF-8")]
    InvalidUtf8,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The connection failed (reset, timed out, protocol violation at the transport level).
    #[error("transport failed: {0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
#[error("transport write failed: {0}")]
pub struct WriteError(pub String);

/// A connection that has not been split yet.
pub trait Transport: Send + 'static {
    type Reader: FrameReader;
    type Writer: FrameWriter;

    fn split(self) -> (PeerInfo, Self::Reader, Self::Writer);
}

/// The read half. Owned by the session loop.
pub trait FrameReader: Send + 'static {
    /// Reads one frame. `Ok(None)` means the peer closed cleanly.
    ///
    /// Must be cancel-safe: the session loop `select!`s on it together with timers, and a
    /// cancelled call must not lose bytes that were already read.
    fn read_frame(&mut self) -> impl Future<Output = Result<Option<Bytes>, ReadError>> + Send;
}

/// The write half. Owned by the session's writer task.
pub trait FrameWriter: Send + 'static {
    /// Queues one frame for sending. May buffer; `flush` pushes buffered frames out.
    fn write_frame(&mut self, frame: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Sends a frame that may be dropped (typing indicators, cursors): a datagram where the
    /// transport has them, an ordinary frame where it does not.
    fn write_volatile(
        &mut self,
        frame: Bytes,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    fn flush(&mut self) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Resolves when the transport has frames of its own to send (a WebSocket pong, the reply
    /// to a close) and wants `flush` called, although nothing was written. Most never do.
    fn wants_flush(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::pending()
    }

    /// Flushes what was written, then closes the connection with `code` and `reason`
    /// (reason ≤ 123 bytes so it fits a WebSocket close frame).
    fn close(self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
}
