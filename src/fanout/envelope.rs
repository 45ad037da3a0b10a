//! The fanout envelope: our own small binary frame around an encoded server frame, naming
//! where it goes. `kind u8 | origin len u8 | origin | target len u16 | target | exclude len
//! u16 | exclude | body…`. Kinds that order their frames put the position in front of the
//! frame in the body (`prefixed`).

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    // 1 was a room (the `--dev-events` rooms, removed): never reused, so an instance of an
    // older version in the same cluster cannot have its envelopes misread.
    User = 2,
    Socket = 3,
    /// A presence update: the frame is prefixed with its version (u64, big-endian).
    Watchers = 4,
    /// A chat message: the frame is prefixed with its seq (i64, big-endian).
    Chat = 5,
    /// A member removed from a conversation: `exclude` names the user.
    ChatKick = 6,
    /// A volatile chat event (typing): `exclude` names the sending socket.
    ChatVolatile = 7,
    /// A channel publication in history: the body is `offset u64 | epoch len u8 | epoch |
    /// frame` (`channel_position`).
    ChannelPub = 8,
    /// A channel frame outside its order (a publication without history, a join or leave):
    /// `exclude` names a socket that must not get it.
    ChannelPlain = 9,
    /// As `ChannelPlain`, volatile (datagrams on WebTransport, dropped over budget).
    ChannelVolatile = 10,
    /// A cluster command (`commands::Command`, JSON) for every instance; no target.
    Command = 11,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            2 => Kind::User,
            3 => Kind::Socket,
            4 => Kind::Watchers,
            5 => Kind::Chat,
            6 => Kind::ChatKick,
            7 => Kind::ChatVolatile,
            8 => Kind::ChannelPub,
            9 => Kind::ChannelPlain,
            10 => Kind::ChannelVolatile,
            11 => Kind::Command,
            _ => return None,
        })
    }
}

pub(super) struct Envelope<'a> {
    pub(super) kind: Kind,
    pub(super) origin: &'a str,
    pub(super) target: &'a str,
    pub(super) exclude: Option<&'a str>,
    pub(super) frame: Bytes,
}

pub(super) fn encode(env: &Envelope<'_>) -> Bytes {
    let exclude = env.exclude.unwrap_or_default();
    let mut buf = BytesMut::with_capacity(
        6 + env.origin.len() + env.target.len() + exclude.len() + env.frame.len(),
    );
    buf.put_u8(env.kind as u8);
    // Ids are bounded far below these widths (instance ids ≤ 64, users ≤ 128, channel names
    // ≤ 255).
    buf.put_u8(env.origin.len().min(255) as u8);
    buf.put_slice(&env.origin.as_bytes()[..env.origin.len().min(255)]);
    buf.put_u16(env.target.len().min(u16::MAX as usize) as u16);
    buf.put_slice(env.target.as_bytes());
    buf.put_u16(exclude.len() as u16);
    buf.put_slice(exclude.as_bytes());
    buf.put_slice(&env.frame);
    buf.freeze()
}

/// Parses an envelope; `None` for anything malformed (a foreign publisher on our channels).
pub(super) fn decode(payload: &Bytes) -> Option<Envelope<'_>> {
    let b = payload.as_ref();
    let kind = Kind::from_u8(*b.first()?)?;
    let mut at = 1;
    let origin_len = *b.get(at)? as usize;
    at += 1;
    let origin = std::str::from_utf8(b.get(at..at + origin_len)?).ok()?;
    at += origin_len;
    let mut field = || -> Option<&str> {
        let len = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
        let s = std::str::from_utf8(b.get(at + 2..at + 2 + len)?).ok()?;
        at += 2 + len;
        Some(s)
    };
    let target = field()?;
    let exclude = field()?;
    Some(Envelope {
        kind,
        origin,
        target,
        exclude: (!exclude.is_empty()).then_some(exclude),
        frame: payload.slice(at..),
    })
}

/// Splits a chat envelope's body into its seq (or a presence version, whose bits are read back
/// with `as u64`) and frame.
pub(super) fn split_seq(body: &Bytes) -> Option<(i64, Bytes)> {
    let seq = i64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    Some((seq, body.slice(8..)))
}

/// A channel publication's body: its offset and epoch in front of the frame.
pub(super) fn channel_body(offset: u64, epoch: &str, frame: &Bytes) -> Bytes {
    let epoch = &epoch.as_bytes()[..epoch.len().min(255)];
    let mut body = BytesMut::with_capacity(9 + epoch.len() + frame.len());
    body.put_u64(offset);
    body.put_u8(epoch.len() as u8);
    body.put_slice(epoch);
    body.put_slice(frame);
    body.freeze()
}

/// Splits a `channel_body`: offset, epoch, frame.
pub(super) fn channel_position(body: &Bytes) -> Option<(u64, &str, Bytes)> {
    let offset = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let len = *body.get(8)? as usize;
    let epoch = std::str::from_utf8(body.get(9..9 + len)?).ok()?;
    Some((offset, epoch, body.slice(9 + len..)))
}

/// `n` (8 bytes, big-endian) then `frame`: a chat seq or a presence version in front of the
/// frame it orders.
pub(super) fn prefixed(n: [u8; 8], frame: &Bytes) -> Bytes {
    let mut body = BytesMut::with_capacity(8 + frame.len());
    body.put_slice(&n);
    body.put_slice(frame);
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_shares_the_frame() {
        let frame = Bytes::from_static(br#"{"type":"event"}"#);
        let env = encode(&Envelope {
            kind: Kind::ChannelPlain,
            origin: "rtg-1",
            target: "chat:ä",
            exclude: Some("s1"),
            frame: frame.clone(),
        });
        let d = decode(&env).unwrap();
        assert_eq!(
            (d.kind, d.origin, d.target, d.exclude),
            (Kind::ChannelPlain, "rtg-1", "chat:ä", Some("s1"))
        );
        assert_eq!(d.frame, frame);
        let d2 =
            encode(&Envelope { kind: Kind::User, origin: "o", target: "u", exclude: None, frame });
        assert_eq!(decode(&d2).unwrap().exclude, None);
    }

    #[test]
    fn channel_bodies_round_trip() {
        let frame = Bytes::from_static(b"{}");
        let body = channel_body(42, "e1f2", &frame);
        assert_eq!(channel_position(&body), Some((42, "e1f2", frame)));
        assert_eq!(channel_position(&Bytes::from_static(b"\0\0\0")), None);
        assert_eq!(channel_position(&Bytes::from_static(b"\0\0\0\0\0\0\0\x01\x09ab")), None);
    }

    #[test]
    fn malformed_envelopes_are_rejected_not_panicked_on() {
        for bad in [
            &b""[..],
            b"\x09",
            b"\x02\x05ab",
            b"\x02\x01a\x00\x09xy",
            b"\x02\x00\x00\x01\xff\x00\x00",
            // Well formed, but of kind 1 (the removed rooms) or past the last kind.
            b"\x01\x00\x00\x00\x00\x00",
            b"\x0c\x00\x00\x00\x00\x00",
        ] {
            assert!(decode(&Bytes::copy_from_slice(bad)).is_none(), "{bad:?}");
        }
    }
}
