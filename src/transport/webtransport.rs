//! WebTransport transport (HTTP/3 over QUIC, via wtransport/quinn).
//!
//! The client opens one bidirectional stream right after the session is established; it
//! carries frames as `u32` big-endian length + UTF-8 JSON body. The length is checked against
//! the cap before any of the body is read, so an announced 4 GiB frame costs four bytes of
//! buffer. Datagrams carry volatile frames in both directions, one frame per datagram; an
//! empty datagram from the client is a liveness probe and carries nothing.

use bytes::{Buf, Bytes, BytesMut};
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::{FrameReader, FrameWriter, PeerInfo, ReadError, Transport, WriteError};

/// Size of the length prefix in front of every stream frame.
pub const LENGTH_PREFIX: usize = 4;

pub struct WtTransport {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    peer: PeerInfo,
    max_frame: usize,
}

impl WtTransport {
    pub fn new(
        conn: Connection,
        send: SendStream,
        recv: RecvStream,
        peer: PeerInfo,
        max_frame: usize,
    ) -> Self {
        Self { conn, send, recv, peer, max_frame }
    }
}

impl Transport for WtTransport {
    type Reader = WtReader;
    type Writer = WtWriter;

    fn split(self) -> (PeerInfo, WtReader, WtWriter) {
        let reader = WtReader {
            conn: self.conn.clone(),
            recv: Some(self.recv),
            buf: BytesMut::with_capacity(256),
            max_frame: self.max_frame,
            eof: false,
        };
        (self.peer, reader, WtWriter { conn: self.conn, send: self.send })
    }
}

pub struct WtReader {
    conn: Connection,
    /// `None` only once dropped: see the `Drop` impl.
    recv: Option<RecvStream>,
    /// Bytes read from the stream but not yet returned as a frame. Never holds more than one
    /// length prefix plus `max_frame` bytes.
    buf: BytesMut,
    max_frame: usize,
    eof: bool,
}

/// What `buf` holds: a whole frame, the need for more bytes, or an oversized announcement.
///
/// Public so the `wt_framing` fuzz target can drive the splitter directly; the reader is the
/// only caller in the server. On `Ok(None)` the caller reads at most the missing bytes of the
/// current frame, which keeps `buf` within `LENGTH_PREFIX + max`.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ReadError> {
    if buf.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(ReadError::TooLarge { len, max });
    }
    if buf.len() < LENGTH_PREFIX + len {
        buf.reserve(LENGTH_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

impl FrameReader for WtReader {
    async fn read_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf, self.max_frame)? {
                return Ok(Some(frame));
            }
            if self.eof {
                return if self.buf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
            }
            // Read no further than the current frame needs so `buf` stays within its bound.
            let want = match self.buf.len() {
                n if n < LENGTH_PREFIX => LENGTH_PREFIX - n,
                _ => {
                    let len =
                        u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                    LENGTH_PREFIX + len as usize - self.buf.len()
                }
            };
            let Some(recv) = self.recv.as_mut() else { return Ok(None) };
            tokio::select! {
                // Both branches are cancel-safe: quinn's `read_chunk` returns data it has
                // consumed, and a datagram not yet received stays queued in the connection.
                // Reading chunks (not into a stack array) keeps an idle session's future small.
                read = recv.quic_stream_mut().read_chunk(want, true) => match read {
                    Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                    Ok(None) => self.eof = true,
                    Err(e) => return Err(ReadError::Failed(e.to_string())),
                },
                dgram = self.conn.receive_datagram() => match dgram {
                    // An empty datagram is a client's liveness probe: it exists to draw a
                    // stateless reset from a restarted server, and a live one ignores it.
                    Ok(d) if d.payload().is_empty() => {}
                    Ok(d) if d.payload().len() <= self.max_frame => return Ok(Some(d.payload())),
                    Ok(d) => return Err(ReadError::TooLarge { len: d.payload().len(), max: self.max_frame }),
                    Err(e) => return Err(ReadError::Failed(e.to_string())),
                },
            }
        }
    }
}

/// How long each step of a goodbye may wait for the peer's acknowledgement.
const CLOSE_STEP: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a dropped reader keeps the receive side open for the writer's goodbye: the
/// writer's three steps, plus slack.
const RECV_LINGER: std::time::Duration = std::time::Duration::from_secs(7);

impl Drop for WtReader {
    /// The session loop drops its reader before the writer sends the last frames. Dropping an
    /// unfinished quinn receive stream sends STOP_SENDING, and Firefox then discards what the
    /// server still writes on that bidirectional stream (the `disconnect` frame of a refused
    /// token, say). So the receive side stays open until the connection closes.
    fn drop(&mut self) {
        let (Some(recv), Ok(runtime)) = (self.recv.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let conn = self.conn.clone();
        runtime.spawn(async move {
            let _recv = recv;
            let _ = tokio::time::timeout(RECV_LINGER, conn.closed()).await;
        });
    }
}

pub struct WtWriter {
    conn: Connection,
    send: SendStream,
}

impl FrameWriter for WtWriter {
    async fn write_frame(&mut self, frame: Bytes) -> Result<(), WriteError> {
        let len = u32::try_from(frame.len()).map_err(|_| WriteError("frame over 4 GiB".into()))?;
        self.send.write_all(&len.to_be_bytes()).await.map_err(|e| WriteError(e.to_string()))?;
        self.send.write_all(&frame).await.map_err(|e| WriteError(e.to_string()))
    }

    async fn write_volatile(&mut self, frame: Bytes) -> Result<(), WriteError> {
        match self.conn.max_datagram_size() {
            Some(max) if frame.len() <= max => {
                // A full datagram buffer drops the frame, which volatile frames allow.
                let _ = self.conn.send_datagram(&frame);
                Ok(())
            }
            // Peer has datagrams off, or the frame does not fit one: send it reliably.
            _ => self.write_frame(frame).await,
        }
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        // quinn sends as soon as data is written; there is no user-space buffer to push.
        Ok(())
    }

    async fn close(mut self, code: u16, reason: &str) {
        // `finish` resolves once the peer acknowledged everything on the stream, so the
        // `disconnect` frame written before this reaches the client ahead of the close.
        let _ = tokio::time::timeout(CLOSE_STEP, self.send.finish()).await;
        // The CLOSE_WEBTRANSPORT_SESSION capsule is what fills the browser's
        // `WebTransportCloseInfo` (a bare QUIC close rejects `closed` without a code). Its
        // acknowledgement only says the peer's QUIC stack has it: a QUIC close right after can
        // overtake it on the way up to the page (Chromium then reports "Connection lost"). So
        // the peer gets a moment to answer with its own FIN, which ends the connection, before
        // the QUIC close does.
        let _ =
            tokio::time::timeout(CLOSE_STEP, self.conn.close_session(code.into(), reason)).await;
        let _ = tokio::time::timeout(CLOSE_STEP, self.conn.closed()).await;
        self.conn.close(VarInt::from_u32(u32::from(code)), reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(take_frame(&mut buf, 1024), Err(ReadError::TooLarge { .. })));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn frames_are_split_at_their_length() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&3u32.to_be_bytes());
        buf.extend_from_slice(b"abc");
        buf.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(take_frame(&mut buf, 10).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(take_frame(&mut buf, 10).unwrap(), None);
        buf.extend_from_slice(b"z");
        assert_eq!(take_frame(&mut buf, 10).unwrap().as_deref(), Some(&b"z"[..]));
    }

    /// Frames of at most `cap` bytes each, with the cap itself.
    fn frames_under_cap() -> impl Strategy<Value = (usize, Vec<Vec<u8>>)> {
        (0usize..=300).prop_flat_map(|cap| {
            let frame = prop::collection::vec(any::<u8>(), 0..=cap);
            (Just(cap), prop::collection::vec(frame, 0..16))
        })
    }

    proptest! {
        /// The stream is cut at arbitrary points (chunks may hold several frames or a few
        /// bytes of one); the frames that come out are the frames that went in.
        #[test]
        fn frames_survive_any_chunking(
            (cap, frames) in frames_under_cap(),
            chunk_sizes in prop::collection::vec(1usize..=64, 1..16),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                stream.extend_from_slice(&u32::try_from(f.len()).unwrap().to_be_bytes());
                stream.extend_from_slice(f);
            }
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut rest = &stream[..];
            for &size in chunk_sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                rest = tail;
                buf.extend_from_slice(chunk);
                while let Some(frame) = take_frame(&mut buf, cap).unwrap() {
                    prop_assert!(frame.len() <= cap);
                    out.push(frame.to_vec());
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        /// An announced length over the cap is refused as soon as the four prefix bytes are in,
        /// however they arrive, and nothing is reserved for the announced body.
        #[test]
        fn oversized_prefix_is_refused_before_buffering(
            cap in 0usize..=65_536,
            // Just over the cap is where an off-by-one would hide; the rest of the range
            // covers announcements up to 4 GiB.
            excess in prop_oneof![1u64..=4, 1u64..=u64::from(u32::MAX)],
            split in 0usize..=LENGTH_PREFIX,
        ) {
            let len = u32::try_from((cap as u64 + excess).min(u64::from(u32::MAX))).unwrap();
            let prefix = len.to_be_bytes();
            let mut buf = BytesMut::with_capacity(LENGTH_PREFIX);
            buf.extend_from_slice(&prefix[..split]);
            if split < LENGTH_PREFIX {
                prop_assert_eq!(take_frame(&mut buf, cap).unwrap(), None);
                buf.extend_from_slice(&prefix[split..]);
            }
            let capacity = buf.capacity();
            match take_frame(&mut buf, cap) {
                Err(ReadError::TooLarge { len: l, max }) => {
                    prop_assert_eq!((l, max), (len as usize, cap));
                }
                other => prop_assert!(false, "expected TooLarge, got {other:?}"),
            }
            prop_assert_eq!(buf.len(), LENGTH_PREFIX);
            prop_assert_eq!(buf.capacity(), capacity);
        }
    }
}
