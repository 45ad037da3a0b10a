//! WebSocket transport over axum's upgrade: one text message is one frame.
//!
//! The frame cap is enforced by tungstenite's `max_message_size`/`max_frame_size`, which
//! refuse a message while reading its header, before the body is buffered. WebSocket-level
//! ping/pong and the close handshake are left to tungstenite; the protocol's own heartbeat
//! runs above it so that browsers (which cannot see WebSocket pings) get the same one.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};

use super::{FrameReader, FrameWriter, PeerInfo, ReadError, Transport, WriteError};

pub struct WsTransport {
    socket: WebSocket,
    peer: PeerInfo,
    max_frame: usize,
}

impl WsTransport {
    /// `socket` must come from an upgrade configured with `max_message_size(max_frame)`.
    pub fn new(socket: WebSocket, peer: PeerInfo, max_frame: usize) -> Self {
        Self { socket, peer, max_frame }
    }
}

impl Transport for WsTransport {
    type Reader = WsReader;
    type Writer = WsWriter;

    fn split(self) -> (PeerInfo, WsReader, WsWriter) {
        let (sink, stream) = self.socket.split();
        (self.peer, WsReader { stream, max_frame: self.max_frame }, WsWriter { sink })
    }
}

pub struct WsReader {
    stream: SplitStream<WebSocket>,
    max_frame: usize,
}

impl FrameReader for WsReader {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        // `StreamExt::next` is cancel-safe: a message is either returned or stays inside
        // tungstenite's buffer.
        loop {
            return match self.stream.next().await {
                None => Ok(None),
                Some(Ok(Message::Text(text))) => Ok(Some(Bytes::from(text))),
                Some(Ok(Message::Binary(_))) => Err(ReadError::NotText),
                Some(Ok(Message::Close(_))) => Ok(None),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Err(e)) => Err(classify(e, self.max_frame)),
            };
        }
    }
}

fn classify(err: axum::Error, max: usize) -> ReadError {
    use tungstenite::error::{CapacityError, Error};
    let inner = err.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(CapacityError::MessageTooLong { size, .. })) => {
            ReadError::TooLarge { len: *size, max }
        }
        // tungstenite does not continue a connection after a text message fails UTF-8
        // validation, so this ends the session (with its own code) rather than one frame.
        Some(Error::Utf8(_)) => ReadError::InvalidUtf8,
        _ => ReadError::Failed(inner.to_string()),
    }
}

pub struct WsWriter {
    sink: SplitSink<WebSocket, Message>,
}

fn text(frame: Bytes) -> Result<Message, WriteError> {
    // Frames come from our own encoder, which only produces UTF-8 JSON.
    axum::extract::ws::Utf8Bytes::try_from(frame)
        .map(Message::Text)
        .map_err(|_| WriteError("outbound frame is not UTF-8".into()))
}

impl FrameWriter for WsWriter {
    async fn write_frame(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.sink.feed(text(frame)?).await.map_err(|e| WriteError(e.to_string()))
    }

    async fn write_volatile(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.write_frame(frame).await
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        self.sink.flush().await.map_err(|e| WriteError(e.to_string()))
    }

    async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        // Errors here mean the peer is already gone, which is what closing wants anyway.
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
    }
}
