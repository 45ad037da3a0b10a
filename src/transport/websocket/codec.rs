//! WebSocket framing (RFC 6455, the server's side) that holds no buffer while a connection
//! is idle. tungstenite keeps a read buffer and a write buffer per connection for its whole
//! life (4 KiB each here, and the write buffer keeps the high-water mark of the largest
//! burst); at tens of thousands of idle connections those buffers were most of a session's
//! memory. Here a read goes into a chunk on the stack of the poll that reads, and only bytes
//! of a frame that has not fully arrived yet are kept on the heap, until it has. Frame
//! headers are parsed and written by tungstenite's `FrameHeader`; close codes are judged by
//! its `CloseCode`.

use std::{future::poll_fn, io, io::Cursor, mem::MaybeUninit, pin::Pin, task::ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tungstenite::protocol::frame::{
    FrameHeader,
    coding::{CloseCode, Control, Data, OpCode},
};

/// Bytes read per system call while no large frame is in progress. It lives on the stack of
/// one poll, never in the connection.
const READ_CHUNK: usize = 16 * 1024;

/// A message or control frame from the peer. Pings are answered by whoever owns the write
/// side; the reader only reports them.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The peer's close frame: its code and reason, if it sent one.
    Close(Option<(u16, Bytes)>),
}

/// Why a connection cannot go on. Each maps to the close code RFC 6455 gives it.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The message (or its announced length) is over the cap. Nothing beyond the frame
    /// header was buffered.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("WebSocket protocol violation: {0}")]
    Protocol(&'static str),
    #[error("a text message was not valid UTF-8")]
    InvalidUtf8,
    #[error("the connection ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl WsError {
    /// The close code to fail the connection with (`None`: the connection is already gone).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            WsError::TooLarge { .. } => Some(1009),
            WsError::Protocol(_) => Some(1002),
            WsError::InvalidUtf8 => Some(1007),
            WsError::Truncated | WsError::Io(_) => None,
        }
    }
}

/// The read side: turns bytes into messages, reassembling fragments and checking every rule
/// a server must check (masking, reserved bits, control frame limits, UTF-8, close codes).
pub struct MessageReader<R> {
    io: R,
    /// Bytes read and not yet consumed. Empty and unallocated between messages.
    buf: BytesMut,
    /// A fragmented message in progress.
    partial: Option<Partial>,
    /// Bytes still missing from the frame at the head of `buf` (0: its header is incomplete).
    missing: usize,
    max: usize,
}

/// A fragmented message: its fragments so far and, for text, how much of it is known to be
/// UTF-8, so that an invalid fragment fails the connection when it arrives (as RFC 6455 §8.1
/// asks), each byte checked once.
struct Partial {
    text: bool,
    data: BytesMut,
    checked: usize,
}

impl Partial {
    fn new(text: bool, data: BytesMut) -> Result<Self, WsError> {
        let mut partial = Partial { text, data, checked: 0 };
        partial.check()?;
        Ok(partial)
    }

    /// Checks what arrived since the last look; a character cut at the end may still complete.
    fn check(&mut self) -> Result<(), WsError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            Err(e) if e.error_len().is_some() => return Err(WsError::InvalidUtf8),
            Err(e) => self.checked += e.valid_up_to(),
        }
        Ok(())
    }

    /// The whole message; its text was checked fragment by fragment, so only a character cut
    /// off by the end is left to refuse.
    fn finish(self) -> Result<Incoming, WsError> {
        match (self.text, self.checked == self.data.len()) {
            (false, _) => Ok(Incoming::Binary(self.data.freeze())),
            (true, true) => Ok(Incoming::Text(self.data.freeze())),
            (true, false) => Err(WsError::InvalidUtf8),
        }
    }
}

impl<R> MessageReader<R> {
    /// The connection's read side, for draining it; what was buffered is dropped.
    pub fn into_inner(self) -> R {
        self.io
    }
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// `leftover`: bytes that arrived with the upgrade request, before the reader existed.
    pub fn new(io: R, leftover: Bytes, max: usize) -> Self {
        let buf = if leftover.is_empty() { BytesMut::new() } else { BytesMut::from(&leftover[..]) };
        MessageReader { io, buf, partial: None, missing: 0, max }
    }

    /// The next message or control frame; `Ok(None)` when the peer closed the connection
    /// between frames. Cancel-safe: bytes are moved into `buf` in the same poll that reads
    /// them, so a cancelled call loses nothing.
    pub async fn read(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            if let Some(incoming) = self.next_buffered()? {
                if self.buf.is_empty() {
                    // Give the allocation back; the message just split off keeps its part.
                    self.buf = BytesMut::new();
                }
                return Ok(Some(incoming));
            }
            if self.fill().await? == 0 {
                return match self.buf.is_empty() && self.partial.is_none() {
                    true => Ok(None),
                    false => Err(WsError::Truncated),
                };
            }
        }
    }

    /// Reads what is there: into the frame's own buffer for a large frame in progress (read
    /// straight where it will stay), else into a chunk on the stack, keeping what was read.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.missing > READ_CHUNK {
            self.buf.reserve(self.missing);
            return self.io.read_buf(&mut self.buf).await;
        }
        poll_fn(|cx| {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            self.buf.extend_from_slice(read.filled());
            std::task::Poll::Ready(Ok(read.filled().len()))
        })
        .await
    }

    /// Parses frames out of `buf` until one completes a message or control frame.
    fn next_buffered(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let mut cursor = Cursor::new(&self.buf[..]);
            let parsed = FrameHeader::parse(&mut cursor)
                .map_err(|_| WsError::Protocol("reserved opcode"))?;
            let Some((header, len)) = parsed else {
                self.missing = 0;
                return Ok(None);
            };
            let head = cursor.position() as usize;
            let Some(mask) = header.mask else {
                return Err(WsError::Protocol("a client's frames must be masked"));
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(WsError::Protocol("reserved bits set with no extension agreed"));
            }
            let control = matches!(header.opcode, OpCode::Control(_));
            if control && (len > 125 || !header.is_final) {
                return Err(WsError::Protocol("a control frame over 125 bytes or fragmented"));
            }
            // Judged from the header, before the body is buffered.
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
            let total = if control { len } else { so_far.saturating_add(len) };
            if total > self.max as u64 {
                return Err(WsError::TooLarge { len: total, max: self.max });
            }
            let len = len as usize; // at most `max`, a usize
            if self.buf.len() < head + len {
                self.missing = head + len - self.buf.len();
                return Ok(None);
            }
            self.missing = 0;
            self.buf.advance(head);
            let mut payload = self.buf.split_to(len);
            unmask(&mut payload, mask);
            let fin = header.is_final;
            match header.opcode {
                OpCode::Data(Data::Continue) => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(WsError::Protocol("a continuation frame with no message"));
                    };
                    partial.data.extend_from_slice(&payload);
                    partial.check()?;
                    if fin && let Some(whole) = self.partial.take() {
                        return whole.finish().map(Some);
                    }
                }
                OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol("a new message inside a fragmented one"));
                    }
                    let text = data == Data::Text;
                    if fin {
                        return message(text, payload.freeze()).map(Some);
                    }
                    self.partial = Some(Partial::new(text, payload)?);
                }
                OpCode::Control(Control::Ping) => {
                    return Ok(Some(Incoming::Ping(payload.freeze())));
                }
                OpCode::Control(Control::Pong) => return Ok(Some(Incoming::Pong)),
                OpCode::Control(Control::Close) => return close(payload.freeze()).map(Some),
                // `FrameHeader::parse` refuses reserved opcodes.
                OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                    return Err(WsError::Protocol("reserved opcode"));
                }
            }
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

fn message(text: bool, payload: Bytes) -> Result<Incoming, WsError> {
    if !text {
        return Ok(Incoming::Binary(payload));
    }
    match std::str::from_utf8(&payload) {
        Ok(_) => Ok(Incoming::Text(payload)),
        Err(_) => Err(WsError::InvalidUtf8),
    }
}

fn close(payload: Bytes) -> Result<Incoming, WsError> {
    match payload.len() {
        0 => Ok(Incoming::Close(None)),
        1 => Err(WsError::Protocol("a close frame with a one-byte body")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() {
                return Err(WsError::Protocol("a close code a peer may not send"));
            }
            let reason = payload.slice(2..);
            std::str::from_utf8(&reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Incoming::Close(Some((code, reason))))
        }
    }
}

/// Appends one unfragmented, unmasked frame (a server's) to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Appends a close frame. `reason` is cut to fit the 125-byte control frame limit, at a
/// character boundary.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut body = Vec::with_capacity(2 + end);
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(&reason.as_bytes()[..end]);
    encode(out, OpCode::Control(Control::Close), &body);
}

/// Appends the reply to a peer's close: its code and reason echoed (an empty close answers
/// an empty one).
pub fn encode_close_reply(out: &mut Vec<u8>, close: Option<&(u16, Bytes)>) {
    match close {
        // The reason was checked to be UTF-8 when the close frame was read.
        Some((code, reason)) => encode_close(out, *code, std::str::from_utf8(reason).unwrap_or("")),
        None => encode(out, OpCode::Control(Control::Close), &[]),
    }
}

pub const TEXT: OpCode = OpCode::Data(Data::Text);
pub const BINARY: OpCode = OpCode::Data(Data::Binary);
pub const PONG: OpCode = OpCode::Control(Control::Pong);

#[cfg(test)]
mod tests;
