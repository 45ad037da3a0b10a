use super::*;

/// A client frame: masked, as a browser sends it.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// A connection that delivers its bytes in the given pieces, one per read.
struct Pieces(std::collections::VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

fn pieces(wire: &[u8], size: usize) -> MessageReader<Pieces> {
    let pieces = wire.chunks(size).map(<[u8]>::to_vec).collect();
    MessageReader::new(Pieces(pieces), Bytes::new(), 100_000)
}

fn reader(bytes: Vec<u8>, max: usize) -> MessageReader<&'static [u8]> {
    MessageReader::new(Box::leak(bytes.into_boxed_slice()), Bytes::new(), max)
}

#[tokio::test]
async fn reads_messages_and_holds_no_buffer_between_them() {
    let mut wire = frame(0x81, b"hello");
    wire.extend(frame(0x82, &[1, 2, 3]));
    let mut r = reader(wire, 1024);
    assert_eq!(r.read().await.unwrap(), Some(Incoming::Text(Bytes::from_static(b"hello"))));
    assert!(r.buf.capacity() > 0, "the second frame, read with the first, is kept");
    assert_eq!(r.read().await.unwrap(), Some(Incoming::Binary(Bytes::from_static(&[1, 2, 3]))));
    assert_eq!(r.buf.capacity(), 0, "the read buffer was kept after the last whole message");
    assert_eq!(r.read().await.unwrap(), None);
}

#[tokio::test]
async fn reassembles_fragments_around_a_ping() {
    let mut wire = frame(0x01, b"hel");
    wire.extend(frame(0x89, b"p"));
    wire.extend(frame(0x80, b"lo"));
    let mut r = reader(wire, 1024);
    assert_eq!(r.read().await.unwrap(), Some(Incoming::Ping(Bytes::from_static(b"p"))));
    assert_eq!(r.read().await.unwrap(), Some(Incoming::Text(Bytes::from_static(b"hello"))));
}

#[tokio::test]
async fn a_character_may_span_fragments() {
    let mut wire = frame(0x01, &[0xc3]);
    wire.extend(frame(0x80, &[0xa9]));
    let text = reader(wire, 1000).read().await.unwrap();
    assert_eq!(text, Some(Incoming::Text(Bytes::from("é"))));
}

#[tokio::test]
async fn reads_a_message_that_arrives_a_byte_at_a_time() {
    let payload = vec![b'x'; 70_000];
    let mut r = pieces(&frame(0x81, &payload), 7_001);
    assert_eq!(r.read().await.unwrap(), Some(Incoming::Text(Bytes::from(payload))));
    assert_eq!(r.read().await.unwrap(), None);
    let mut r = pieces(&frame(0x81, b"ok"), 1);
    assert_eq!(r.read().await.unwrap(), Some(Incoming::Text(Bytes::from_static(b"ok"))));
}

#[tokio::test]
async fn refuses_an_oversized_message_from_its_header() {
    // Only the header is on the wire: the refusal cannot have waited for the body.
    let wire = frame(0x81, &[b'x'; 2000])[..8].to_vec();
    let err = reader(wire, 1000).read().await.unwrap_err();
    assert!(matches!(err, WsError::TooLarge { len: 2000, max: 1000 }), "{err:?}");
    // Fragments count together.
    let mut wire = frame(0x01, &[b'x'; 600]);
    wire.extend(frame(0x80, &[b'x'; 600]));
    let err = reader(wire, 1000).read().await.unwrap_err();
    assert!(matches!(err, WsError::TooLarge { len: 1200, .. }), "{err:?}");
}

#[tokio::test]
async fn refuses_what_a_server_must_refuse() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], 1002),        // unmasked
        (frame(0xC1, b"x"), 1002),                   // rsv1 without an extension
        (frame(0x83, b"x"), 1002),                   // reserved opcode
        (frame(0x89, &[0; 126]), 1002),              // control frame over 125 bytes
        (frame(0x09, b"x"), 1002),                   // fragmented control frame
        (frame(0x80, b"x"), 1002),                   // continuation with no message
        (frame(0x81, &[0xff, 0xfe]), 1007),          // text that is not UTF-8
        (frame(0x88, &[0x03]), 1002),                // one-byte close body
        (frame(0x88, &1005u16.to_be_bytes()), 1002), // a code no peer may send
        (frame(0x88, &[0x03, 0xe8, 0xff]), 1007),    // close reason not UTF-8
    ];
    for (wire, code) in cases {
        let err = reader(wire.clone(), 1000).read().await.unwrap_err();
        assert_eq!(err.close_code(), Some(code), "{wire:x?}: {err:?}");
    }
    // An invalid fragment fails the connection when it arrives, not when the message ends.
    let mut invalid_fragment = frame(0x01, b"a");
    invalid_fragment.extend(frame(0x00, &[0xff]));
    let err = reader(invalid_fragment, 1000).read().await.unwrap_err();
    assert_eq!(err.close_code(), Some(1007), "{err:?}");
    let mut new_inside_fragmented = frame(0x01, b"a");
    new_inside_fragmented.extend(frame(0x81, b"b"));
    let err = reader(new_inside_fragmented, 1000).read().await.unwrap_err();
    assert_eq!(err.close_code(), Some(1002));
}

#[tokio::test]
async fn a_connection_ending_inside_a_frame_is_truncated() {
    let wire = frame(0x81, b"hello")[..5].to_vec();
    assert!(matches!(reader(wire, 1000).read().await, Err(WsError::Truncated)));
}

#[tokio::test]
async fn reads_close_frames() {
    let mut body = 4001u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    let close = reader(frame(0x88, &body), 1000).read().await.unwrap();
    assert_eq!(close, Some(Incoming::Close(Some((4001, Bytes::from_static(b"bye"))))));
    assert_eq!(reader(frame(0x88, b""), 1000).read().await.unwrap(), Some(Incoming::Close(None)));
}

#[test]
fn encodes_server_frames_unmasked() {
    let mut out = Vec::new();
    encode(&mut out, TEXT, b"hi");
    assert_eq!(out, [0x81, 0x02, b'h', b'i']);
    out.clear();
    encode(&mut out, BINARY, &[7; 300]);
    assert_eq!(out[..4], [0x82, 126, 0x01, 0x2c]);
    assert_eq!(out.len(), 304);
    out.clear();
    // The reason is cut at a character boundary to keep the frame a control frame.
    encode_close(&mut out, 1000, &"é".repeat(100));
    assert_eq!(out[0], 0x88);
    assert!(out[1] as usize <= 125);
    assert!(std::str::from_utf8(&out[4..]).is_ok());
}
