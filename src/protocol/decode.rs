//! Decoding client frames. A frame is one JSON object; it is read into one flat envelope by a
//! hand-written map visitor (fast, it keeps `data` as raw JSON so a handler parses its DTO
//! straight from the client's bytes), then checked against what its `type` allows.
//!
//! Why not `#[derive(Deserialize)]`: derived struct deserializers also accept a JSON array,
//! filling fields by position (`["connect",null,null,null,"<token>"]` would be a `connect`),
//! read `null` as an absent `Option`, and name every envelope field in their "unknown field"
//! message, whatever the frame's type. Here only an object is a frame, a present field must
//! have its type (`"id": null` is not "no id"), and messages name the fields of the frame's
//! own type.

use std::{borrow::Cow, fmt};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{MAX_ACK_ID, MAX_EVENT_NAME_LEN};

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

/// The fields each frame type has besides `type`, as PROTOCOL.md lists them.
fn fields_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "event" => &["event", "id", "data"],
        "connect" => &["v", "token", "device"],
        "disconnect" => &["code", "reason"],
        "ping" | "pong" => &[],
        _ => return None,
    })
}

/// "`type`, `event`, `id`, `data`": the fields a frame of `kind` has, for messages.
fn field_list(kind: &str, fields: &[&str]) -> String {
    let mut out = String::from("`type`");
    for f in fields {
        out.push_str(", `");
        out.push_str(f);
        out.push('`');
    }
    if fields.is_empty() {
        format!("a `{kind}` frame has only {out}")
    } else {
        format!("a `{kind}` frame has {out}")
    }
}

/// Every field any client frame may carry, as read from the object. Which of them a given
/// `type` allows is checked after reading, when the type is known.
#[derive(Default)]
struct Envelope<'a> {
    kind: Option<Cow<'a, str>>,
    event: Option<Cow<'a, str>>,
    data: Option<&'a RawValue>,
    id: Option<u64>,
    token: Option<Cow<'a, str>>,
    device: Option<Cow<'a, str>>,
    v: Option<u32>,
    code: Option<u16>,
    reason: Option<Cow<'a, str>>,
    /// The first field no frame type has; reported once the type is known.
    unknown: Option<String>,
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
}

/// A field name, borrowed from the input when it has no escapes.
enum Key<'a> {
    Known(&'static str),
    Unknown(Cow<'a, str>),
}

const KNOWN: [&str; 9] = ["type", "event", "data", "id", "token", "device", "v", "code", "reason"];

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(StrVisitor).map(|name| match KNOWN.iter().find(|k| **k == name) {
            Some(k) => Key::Known(k),
            None => Key::Unknown(name),
        })
    }
}

/// A string value, borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Str)
    }
}

struct EnvelopeVisitor;

/// Stores a field's value, refusing a second occurrence of the same field.
fn set<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format_args!("duplicate field `{name}`")));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a frame: one JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut env = Envelope::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            // Each value is read with its own type: `null` or a string where a number belongs
            // is an error, not an absent field.
            match key {
                Key::Known("type") => set(&mut env.kind, "type", map.next_value::<Str>()?.0)?,
                Key::Known("event") => set(&mut env.event, "event", map.next_value::<Str>()?.0)?,
                Key::Known("data") => set(&mut env.data, "data", map.next_value()?)?,
                Key::Known("id") => set(&mut env.id, "id", map.next_value()?)?,
                Key::Known("token") => set(&mut env.token, "token", map.next_value::<Str>()?.0)?,
                Key::Known("device") => set(&mut env.device, "device", map.next_value::<Str>()?.0)?,
                Key::Known("v") => set(&mut env.v, "v", map.next_value()?)?,
                Key::Known("code") => set(&mut env.code, "code", map.next_value()?)?,
                Key::Known("reason") => set(&mut env.reason, "reason", map.next_value::<Str>()?.0)?,
                // `KNOWN` and the arms above list the same names; this arm keeps it total.
                Key::Known(name) => return Err(de::Error::unknown_field(name, &KNOWN)),
                Key::Unknown(name) => {
                    map.next_value::<IgnoredAny>()?;
                    if env.unknown.is_none() {
                        env.unknown = Some(name.into_owned());
                    }
                }
            }
        }
        Ok(env)
    }
}

fn read_envelope(bytes: &[u8]) -> Result<Envelope<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let env = de.deserialize_map(EnvelopeVisitor)?;
    de.end()?;
    Ok(env)
}

/// Decodes one client frame. Never panics, whatever the bytes.
pub fn decode_client_frame(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    let env = read_envelope(bytes).map_err(|e| DecodeError::new(None, e.to_string()))?;
    if env.id.is_some_and(|id| id > MAX_ACK_ID) {
        return Err(DecodeError::new(None, format!("`id` must be at most {MAX_ACK_ID}")));
    }
    let kind =
        env.kind.as_deref().ok_or_else(|| DecodeError::new(env.id, "missing field `type`"))?;
    let Some(allowed) = fields_of(kind) else {
        return Err(DecodeError::new(
            env.id,
            "unknown frame type: one of `connect`, `event`, `ping`, `pong`, `disconnect`",
        ));
    };
    if let Some(name) = &env.unknown {
        let msg = format!("unknown field `{name}`: {}", field_list(kind, allowed));
        return Err(DecodeError::new(env.id, msg));
    }
    if let Some(f) = env.present().find(|f| !allowed.contains(f)) {
        let msg = format!("field `{f}` is not allowed here: {}", field_list(kind, allowed));
        return Err(DecodeError::new(env.id, msg));
    }
    match kind {
        "event" => {
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
        "connect" => Ok(ClientFrame::Connect(ConnectFrame {
            version: env.v,
            token: env.token.map(Cow::into_owned),
            device: env.device.map(Cow::into_owned),
        })),
        "ping" => Ok(ClientFrame::Ping),
        "pong" => Ok(ClientFrame::Pong),
        _ => Ok(ClientFrame::Disconnect),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> EventFrame {
        match decode_client_frame(json.as_bytes()) {
            Ok(ClientFrame::Event(e)) => e,
            other => panic!("expected event, got {other:?}"),
        }
    }

    fn error(json: &str) -> DecodeError {
        match decode_client_frame(json.as_bytes()) {
            Err(e) => e,
            Ok(f) => panic!("{json} decoded to {f:?}"),
        }
    }

    #[test]
    fn decodes_event_with_ack_id_and_keeps_raw_data() {
        let e = event(r#"{"type":"event","event":"sys:echo","id":7,"data":{"a":[1, 2]}}"#);
        assert_eq!(e.name, "sys:echo");
        assert_eq!(e.id, Some(7));
        assert_eq!(e.data.get(), r#"{"a":[1, 2]}"#);
        // Escaped strings are read as well as borrowed ones.
        let e = event(r#"{"type":"ev\u0065nt","event":"sys:\u0065cho","data":"\"x\""}"#);
        assert_eq!((e.name.as_str(), e.data.get()), ("sys:echo", r#""\"x\"""#));
    }

    #[test]
    fn missing_data_is_null() {
        assert_eq!(event(r#"{"type":"event","event":"x"}"#).data.get(), "null");
        // `data` is any JSON, `null` included.
        assert_eq!(event(r#"{"type":"event","event":"x","data":null}"#).data.get(), "null");
    }

    #[test]
    fn decodes_control_frames() {
        assert!(matches!(decode_client_frame(br#"{"type":"ping"}"#), Ok(ClientFrame::Ping)));
        assert!(matches!(decode_client_frame(br#"{"type":"pong"}"#), Ok(ClientFrame::Pong)));
        assert!(matches!(
            decode_client_frame(br#"{"type":"disconnect","code":4000,"reason":"bye"}"#),
            Ok(ClientFrame::Disconnect)
        ));
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
            br#"{"type":"event","event":"a","id":1.5}"#,
            br#"{"type":"event","event":"a","id":1e3}"#,
            br#"{"type":"event","event":"a","id":true}"#,
            br#"{"type":"event","type":"event","event":"a"}"#,
            br#"{"type":"event","event":"a","data":1,"data":2}"#,
            br#"{"type":"event","event":"a"} {}"#,
            br#"{"event":"a"}"#,
            br#"{"type":null}"#,
            br#"{"type":7}"#,
            br#"[]"#,
            br#""connect""#,
            b"null",
            b"7",
            b"\xff\xfe",
            b"\xef\xbb\xbf{\"type\":\"ping\"}",
        ] {
            assert!(
                decode_client_frame(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// serde's derived struct deserializers fill fields from an array by position; a frame is
    /// an object, and nothing else is.
    #[test]
    fn arrays_are_not_frames() {
        for bad in [
            r#"["connect",null,null,null,"eyJhbGciOiJIUzI1NiJ9.e30.sig"]"#,
            r#"["connect"]"#,
            r#"["event","sys:echo",{"a":1},5]"#,
            r#"["ping"]"#,
            r#"["pong"]"#,
            r#"["disconnect"]"#,
        ] {
            let e = error(bad);
            assert!(e.message.contains("JSON object"), "{bad}: {}", e.message);
        }
    }

    /// A present field has its type: `null` is not "absent".
    #[test]
    fn null_is_not_an_absent_field() {
        for bad in [
            r#"{"type":"event","event":"sys:echo","id":null}"#,
            r#"{"type":"event","event":null}"#,
            r#"{"type":"connect","token":null}"#,
            r#"{"type":"connect","token":"t","v":null}"#,
            r#"{"type":"connect","token":"t","device":null}"#,
            r#"{"type":"disconnect","code":null}"#,
            r#"{"type":"disconnect","reason":null}"#,
        ] {
            error(bad);
        }
    }

    #[test]
    fn messages_name_the_fields_of_the_frame_type() {
        let e = error(r#"{"type":"connect","token":"t","tokne":"x"}"#);
        assert_eq!(
            e.message,
            "unknown field `tokne`: a `connect` frame has `type`, `v`, `token`, `device`"
        );
        let e = error(r#"{"type":"connect","token":"t","event":"x"}"#);
        assert_eq!(
            e.message,
            "field `event` is not allowed here: a `connect` frame has `type`, `v`, `token`, `device`"
        );
        let e = error(r#"{"type":"ping","id":3}"#);
        assert_eq!(e.message, "field `id` is not allowed here: a `ping` frame has only `type`");
        assert_eq!(e.id, Some(3));
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
}
