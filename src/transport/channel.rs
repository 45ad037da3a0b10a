//! An in-process transport over channels, so session logic can be unit-tested with paused
//! time and no sockets. Frames the "client" sends go in `ChannelClient::tx`; frames the
//! server writes come out of `ChannelClient::rx`.

use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{FrameReader, FrameWriter, PeerInfo, ReadError, Transport, TransportKind, WriteError};

/// What the server side wrote, as seen by the test.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Frame(Bytes),
    Volatile(Bytes),
    Closed(u16, String),
}

pub struct ChannelClient {
    pub tx: mpsc::UnboundedSender<Result<Bytes, ReadError>>,
    pub rx: mpsc::UnboundedReceiver<Written>,
}

pub struct ChannelTransport {
    rx: mpsc::UnboundedReceiver<Result<Bytes, ReadError>>,
    tx: mpsc::UnboundedSender<Written>,
}

pub fn pair() -> (ChannelTransport, ChannelClient) {
    let (ctx, srx) = mpsc::unbounded_channel();
    let (stx, crx) = mpsc::unbounded_channel();
    (ChannelTransport { rx: srx, tx: stx }, ChannelClient { tx: ctx, rx: crx })
}

impl Transport for ChannelTransport {
    type Reader = ChannelReader;
    type Writer = ChannelWriter;

    fn split(self) -> (PeerInfo, ChannelReader, ChannelWriter) {
        let peer = PeerInfo {
            headers: Vec::new(),
            kind: TransportKind::Channel,
            remote: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            user_agent: None,
            origin: None,
        };
        (peer, ChannelReader(self.rx), ChannelWriter(self.tx))
    }
}

pub struct ChannelReader(mpsc::UnboundedReceiver<Result<Bytes, ReadError>>);

impl FrameReader for ChannelReader {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        self.0.recv().await.transpose()
    }
}

pub struct ChannelWriter(mpsc::UnboundedSender<Written>);

impl ChannelWriter {
    fn put(&self, w: Written) -> Result<(), WriteError> {
        self.0.send(w).map_err(|_| WriteError("test client dropped".into()))
    }
}

impl FrameWriter for ChannelWriter {
    async fn write_frame(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.put(Written::Frame(frame))
    }
    async fn write_volatile(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.put(Written::Volatile(frame))
    }
    async fn flush(&mut self) -> Result<(), WriteError> {
        Ok(())
    }
    async fn close(self, code: u16, reason: &str) {
        let _ = self.put(Written::Closed(code, reason.to_owned()));
    }
}
