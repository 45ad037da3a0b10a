//! The wire protocol: frame shapes, codes, and the codec between bytes and frames.
//!
//! This module does no I/O and knows nothing about transports; everything here is a pure
//! function of its input, which is why it is the part covered by property tests and fuzzing.
//! `PROTOCOL.md` at the repository root is the human-readable authority for what is here.

mod codes;
mod decode;
mod encode;
#[cfg(test)]
mod proptests;

pub use codes::{Code, Reconnect};
pub use decode::{ClientFrame, ConnectFrame, DecodeError, EventFrame, decode_client_frame};
pub use encode::{
    ConnectedInfo, HeartbeatInfo, LimitsInfo, PING_FRAME, PONG_FRAME, encode_ack, encode_connected,
    encode_disconnect, encode_error, encode_event,
};

/// Version of the protocol spoken by this server. A client states the version it speaks in
/// `connect.v`; a different major version is refused with `unsupported_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest ack id a client may use: JavaScript numbers are exact up to 2^53 - 1.
pub const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// Longest event name accepted; names are identifiers, not payloads.
pub const MAX_EVENT_NAME_LEN: usize = 64;

/// Event names are identifiers: 1 to `MAX_EVENT_NAME_LEN` bytes of `[A-Za-z0-9:._-]`.
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b))
}
