//! Encoding server frames. Each frame is encoded once into `Bytes`, so one encoding is shared
//! by every recipient of a broadcast; the per-message frames (acks, events) are written
//! directly rather than through serde.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Code, Reconnect};

/// `{"type":"ping"}`: sent by the server every heartbeat interval.
pub static PING_FRAME: Bytes = Bytes::from_static(br#"{"type":"ping"}"#);
/// `{"type":"pong"}`: the answer to a client `ping`.
pub static PONG_FRAME: Bytes = Bytes::from_static(br#"{"type":"pong"}"#);

/// What the server tells a client once its handshake succeeded.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedInfo<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub instance_id: &'a str,
    /// Milliseconds since the epoch when the token expires (the session ends then).
    pub expires_at: Option<u64>,
    pub heartbeat: HeartbeatInfo,
    pub limits: LimitsInfo,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatInfo {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsInfo {
    pub max_frame_bytes: usize,
}

fn encode<T: Serialize>(frame: &T) -> Bytes {
    // Serializing these plain structs into a Vec cannot fail (no maps with non-string keys,
    // no failing Serialize impls); an empty frame would be the visible symptom if it did.
    serde_json::to_vec(frame).map(Bytes::from).unwrap_or_default()
}

pub fn encode_connected(info: &ConnectedInfo<'_>) -> Bytes {
    #[derive(Serialize)]
    struct Connected<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        v: u32,
        #[serde(flatten)]
        info: &'a ConnectedInfo<'a>,
    }
    encode(&Connected { kind: "connected", v: super::PROTOCOL_VERSION, info })
}

/// `{"type":"ack","id":…,"data":…}`, written directly: acks and events are the frames sent
/// per message, and serde's raw-value path costs several times the copy.
pub fn encode_ack(id: u64, data: &RawValue) -> Bytes {
    let data = data.get();
    let mut out = String::with_capacity(40 + data.len());
    out.push_str(r#"{"type":"ack","id":"#);
    out.push_str(itoa::Buffer::new().format(id));
    out.push_str(r#","data":"#);
    out.push_str(data);
    out.push('}');
    Bytes::from(out)
}

/// A server-pushed event (no ack).
pub fn encode_event(name: &str, data: &RawValue) -> Bytes {
    // Names that need no JSON escaping (every name a client may send, and ours) are copied;
    // any other goes through serde.
    if !super::valid_event_name(name) {
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            event: &'a str,
            data: &'a RawValue,
        }
        return encode(&Event { kind: "event", event: name, data });
    }
    let data = data.get();
    let mut out = String::with_capacity(36 + name.len() + data.len());
    out.push_str(r#"{"type":"event","event":""#);
    out.push_str(name);
    out.push_str(r#"","data":"#);
    out.push_str(data);
    out.push('}');
    Bytes::from(out)
}

pub fn encode_error(
    id: Option<u64>,
    code: Code,
    message: &str,
    details: Option<&serde_json::Value>,
) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        details: Option<&'a serde_json::Value>,
    }
    encode(&Error { kind: "error", id, code: code.as_str(), message, details })
}

/// The last frame of a session that the server ends. `code` must be a closing code.
pub fn encode_disconnect(code: Code, message: &str, retry_after_ms: Option<u64>) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Disconnect<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: u16,
        reason: &'static str,
        message: &'a str,
        reconnect: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    }
    encode(&Disconnect {
        kind: "disconnect",
        code: code.close_code().unwrap_or(3009),
        reason: code.as_str(),
        message,
        reconnect: code.reconnect() == Reconnect::Yes,
        retry_after_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_frames_as_json() {
        let raw = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        assert_eq!(&encode_ack(5, &raw)[..], br#"{"type":"ack","id":5,"data":{"x":1}}"#);
        let d = encode_disconnect(Code::PingTimeout, "no pong", None);
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(v["code"], 3001);
        assert_eq!(v["reason"], "ping_timeout");
        assert_eq!(v["reconnect"], true);
        assert_eq!(
            &encode_event("a:b", &raw)[..],
            br#"{"type":"event","event":"a:b","data":{"x":1}}"#
        );
        // A name that needs escaping takes the serde path and stays valid JSON.
        let odd: serde_json::Value =
            serde_json::from_slice(&encode_event("q\"uote", &raw)).unwrap();
        assert_eq!(odd["event"], "q\"uote");
        let e = encode_error(Some(2), Code::UnknownEvent, "no such event", None);
        assert_eq!(
            &e[..],
            br#"{"type":"error","id":2,"code":"unknown_event","message":"no such event"}"#
        );
    }
}
