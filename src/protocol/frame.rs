//! Frame shapes and the codec. Inbound frames are decoded from one flat envelope (fast, and
//! it keeps `data` as raw JSON so a handler parses its DTO straight from the client's bytes);
//! outbound frames are encoded once into `Bytes` so one encoding can be shared by every
//! recipient of a broadcast.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Code, MAX_ACK_ID, MAX_EVENT_NAME_LEN, Reconnect};

/// A decoded client frame.
#[derive(Debug)]
pub enum ClientFrame {
    Connect(ConnectFrame),
    Event(EventFrame),
    Ping,
    Pong,
    /// The client is leaving on purpose.
    Disconnect,
}

/// The handshake frame: the first frame of every session.
#[derive(Debug, Default)]
pub struct ConnectFrame {
    pub version: Option<u32>,
    pub token: Option<String>,
    pub device: Option<String>,
}

/// A client event, optionally asking for an acknowledgement.
#[derive(Debug)]
pub struct EventFrame {
    pub name: String,
    /// Present when the client wants an `ack` (or an `error`) carrying the same id.
    pub id: Option<u64>,
    /// The event payload as the client sent it (`null` when absent).
    pub data: Box<RawValue>,
}

/// Why a frame could not be decoded. `id` is the ack id when it could still be read, so the
/// error can be correlated with the request by the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub id: Option<u64>,
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<u64>, message: impl Into<String>) -> Self {
        Self { id, message: message.into() }
    }
}

/// Every field any client frame may carry. Which fields a given `type` allows is checked
/// after parsing, so a `ping` with a `token` is as much an error as an unknown field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    device: Option<Cow<'a, str>>,
    #[serde(default)]
    v: Option<u32>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

impl Envelope<'_> {
    /// Names of the fields that are set, for the "field not allowed here" check.
    fn present(&self) -> impl Iterator<Item = &'static str> {
        [
            ("event", self.event.is_some()),
            ("data", self.data.is_some()),
            ("id", self.id.is_some()),
            ("token", self.token.is_some()),
            ("device", self.device.is_some()),
            ("v", self.v.is_some()),
            ("code", self.code.is_some()),
            ("reason", self.reason.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
    }

    fn only(&self, allowed: &[&str]) -> Result<(), DecodeError> {
        match self.present().find(|f| !allowed.contains(f)) {
            Some(f) => Err(DecodeError::new(
                self.id,
                format!("field `{f}` is not allowed in this `{}` frame", self.kind),
            )),
            None => Ok(()),
        }
    }
}

/// Decodes one client frame. Never panics, whatever the bytes.
pub fn decode_client_frame(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    let env: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::new(None, e.to_string()))?;
    if env.id.is_some_and(|id| id > MAX_ACK_ID) {
        return Err(DecodeError::new(None, format!("`id` must be at most {MAX_ACK_ID}")));
    }
    match env.kind.as_ref() {
        "event" => {
            env.only(&["event", "data", "id"])?;
            let name = env
                .event
                .as_deref()
                .ok_or_else(|| DecodeError::new(env.id, "missing field `event`"))?;
            if !super::valid_event_name(name) {
                return Err(DecodeError::new(
                    env.id,
                    format!(
                        "`event` must be 1 to {MAX_EVENT_NAME_LEN} characters of [A-Za-z0-9:._-]"
                    ),
                ));
            }
            let data = match env.data {
                Some(raw) => match check_data(raw.get()) {
                    Ok(()) => raw.to_owned(),
                    Err(why) => return Err(DecodeError::new(env.id, format!("`data` {why}"))),
                },
                None => null_raw(),
            };
            Ok(ClientFrame::Event(EventFrame { name: name.to_owned(), id: env.id, data }))
        }
        "ping" => env.only(&[]).map(|()| ClientFrame::Ping),
        "pong" => env.only(&[]).map(|()| ClientFrame::Pong),
        "connect" => {
            env.only(&["token", "device", "v"])?;
            Ok(ClientFrame::Connect(ConnectFrame {
                version: env.v,
                token: env.token.map(Cow::into_owned),
                device: env.device.map(Cow::into_owned),
            }))
        }
        "disconnect" => env.only(&["code", "reason"]).map(|()| ClientFrame::Disconnect),
        other => Err(DecodeError::new(env.id, format!("unknown frame type `{other}`"))),
    }
}

/// Deepest nesting of arrays and objects accepted in `data`. serde_json skips raw values
/// without its usual recursion limit, and deep nesting would make every later parser (the
/// handler's, a client's) pay for it.
pub(super) const MAX_DEPTH: usize = 64;

/// Checks what serde_json's raw-value skipping does not: nesting depth (at most `MAX_DEPTH`)
/// and numbers beyond the `f64` range, which JavaScript clients would read as `Infinity`.
/// `json` is already known to be valid JSON. Linear, allocation-free.
fn check_data(json: &str) -> Result<(), String> {
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Jump from one quote or backslash to the next instead of walking a state
                // machine byte by byte: payloads are mostly string content.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        Some(n) if bytes[i + n] == b'\\' => i += n + 2,
                        Some(n) => {
                            i += n + 1;
                            break;
                        }
                        // Unreachable for valid JSON; ends the scan either way.
                        None => return Ok(()),
                    }
                    if i >= bytes.len() {
                        return Ok(());
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |n| i + n);
                let number = &json[i..end];
                // Without an exponent, a number needs over 308 digits to leave the f64
                // range; only the rare rest pays for a float parse.
                let surely_finite = number.len() <= 300 && !number.contains(['e', 'E']);
                if !surely_finite && !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err("holds a number beyond the 64-bit float range".into());
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn null_raw() -> Box<RawValue> {
    // "null" is valid JSON, so this cannot fail; the fallback keeps the function total.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| Box::default())
}

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

    fn event(json: &str) -> EventFrame {
        match decode_client_frame(json.as_bytes()) {
            Ok(ClientFrame::Event(e)) => e,
            other => panic!("expected event, got {other:?}"),
        }
    }

    #[test]
    fn decodes_event_with_ack_id_and_keeps_raw_data() {
        let e = event(r#"{"type":"event","event":"sys:echo","id":7,"data":{"a":[1, 2]}}"#);
        assert_eq!(e.name, "sys:echo");
        assert_eq!(e.id, Some(7));
        assert_eq!(e.data.get(), r#"{"a":[1, 2]}"#);
    }

    #[test]
    fn missing_data_is_null() {
        assert_eq!(event(r#"{"type":"event","event":"x"}"#).data.get(), "null");
    }

    #[test]
    fn decodes_control_frames() {
        assert!(matches!(decode_client_frame(br#"{"type":"ping"}"#), Ok(ClientFrame::Ping)));
        assert!(matches!(decode_client_frame(br#"{"type":"pong"}"#), Ok(ClientFrame::Pong)));
        let c = decode_client_frame(br#"{"type":"connect","v":1,"token":"t","device":"d"}"#);
        match c {
            Ok(ClientFrame::Connect(c)) => {
                assert_eq!(
                    (c.version, c.token.as_deref(), c.device.as_deref()),
                    (Some(1), Some("t"), Some("d"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_what_is_not_a_frame() {
        for bad in [
            &b"not json"[..],
            br#"{"type":"event"}"#,
            br#"{"type":"event","event":""}"#,
            br#"{"type":"nope"}"#,
            br#"{"type":"ping","token":"x"}"#,
            br#"{"type":"event","event":"a","extra":1}"#,
            br#"{"type":"event","event":"a","id":"7"}"#,
            br#"{"type":"event","event":"a","id":9007199254740992}"#,
            br#"{"type":"event","event":"a","id":-1}"#,
            br#"{"type":"event","type":"event","event":"a"}"#,
            br#"[]"#,
            b"\xff\xfe",
        ] {
            assert!(
                decode_client_frame(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn deep_nesting_in_data_is_refused() {
        let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let frame = format!(r#"{{"type":"event","event":"e","data":{ok}}}"#);
        assert!(decode_client_frame(frame.as_bytes()).is_ok());
        let numbers =
            r#"{"type":"event","event":"e","data":[-1.5e3, 0, 1e308, 12345678901234567890]}"#;
        assert!(decode_client_frame(numbers.as_bytes()).is_ok());
        let huge = r#"{"type":"event","event":"e","data":{"n":1e999}}"#;
        assert!(decode_client_frame(huge.as_bytes()).is_err());
        let digits = format!(r#"{{"type":"event","event":"e","data":[{}]}}"#, "9".repeat(400));
        assert!(decode_client_frame(digits.as_bytes()).is_err());
        // An escaped backslash ends right before the closing quote; the brackets after the
        // string count again.
        let after = format!(r#"{{"type":"event","event":"e","data":["\\",{deep}]}}"#);
        assert!(decode_client_frame(after.as_bytes()).is_err());
        let frame = format!(r#"{{"type":"event","event":"e","data":{deep}}}"#);
        assert!(decode_client_frame(frame.as_bytes()).is_err());
        // Brackets inside strings do not count.
        let text = format!(r#"{{"type":"event","event":"e","data":"{}\"["}}"#, "[".repeat(500));
        assert!(decode_client_frame(text.as_bytes()).is_ok());
    }

    #[test]
    fn error_keeps_the_ack_id_when_it_was_readable() {
        let err = decode_client_frame(br#"{"type":"event","id":3}"#).err();
        assert_eq!(err.map(|e| e.id), Some(Some(3)));
    }

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
