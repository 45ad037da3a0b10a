use crate::bytes::BytesWriter;
use crate::capsule::capsule_types;
use crate::capsule::Capsule;
use crate::capsule::CapsuleKind;
use crate::frame::Frame;
use crate::error::ErrorCode;
use crate::varint::VarInt;

/// Capsules for WebTransport session termination.
#[derive(Debug)]
pub struct CloseWebTransportSession {
    error_code: u32,
    reason: String,
}

impl CloseWebTransportSession {
    /// The longest reason a capsule may carry (draft-ietf-webtrans-http3, section on session
    /// termination: at most 1024 bytes). A longer reason is cut at a UTF-8 boundary.
    pub const MAX_REASON_LEN: usize = 1024;

    /// A capsule that closes the session with `error_code` and `reason`.
    pub fn new(error_code: u32, reason: &str) -> Self {
        let mut end = reason.len().min(Self::MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            error_code,
            reason: reason[..end].to_string(),
        }
    }

    /// The capsule as the payload of an HTTP/3 DATA frame on the CONNECT stream.
    pub fn to_frame(&self) -> Frame<'static> {
        let length = 4 + self.reason.len();
        let mut payload = Vec::with_capacity(16 + length);
        // Writing into a `Vec` cannot run out of buffer.
        let _ = payload.put_varint(capsule_types::CAPSULE_TYPE_CLOSE_WEBTRANSPORT_SESSION);
        let _ = payload.put_varint(VarInt::from_u32(length as u32));
        let _ = payload.put_bytes(&self.error_code.to_be_bytes());
        let _ = payload.put_bytes(self.reason.as_bytes());
        Frame::new_data(payload.into())
    }

    /// Parses from [`Capsule`].
    ///
    /// # Panics
    ///
    /// Panics if `capsule` is not
    /// [`CloseWebTransportSession`](CapsuleKind::CloseWebtransportsession) type.
    pub fn with_capsule(capsule: &Capsule) -> Result<Self, ErrorCode> {
        const MAX_REASON_LEN: usize = CloseWebTransportSession::MAX_REASON_LEN;

        assert!(matches!(
            capsule.kind(),
            CapsuleKind::CloseWebTransportSession
        ));

        let payload = capsule.payload();

        if payload.len() < 4 || payload.len() > 4 + MAX_REASON_LEN {
            return Err(ErrorCode::Datagram);
        }

        let error_code =
            u32::from_be_bytes(payload[..4].try_into().expect("4B to u32 should succeed"));
        let reason = std::str::from_utf8(&payload[4..])
            .map_err(|_| ErrorCode::Datagram)?
            .to_string();

        Ok(Self { error_code, reason })
    }

    /// Returns the error code sent over this capsule.
    pub fn error_code(&self) -> VarInt {
        VarInt::from_u32(self.error_code)
    }

    /// Returns the reason sent over this capsule.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
