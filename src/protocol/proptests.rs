//! Property tests for the codec: decoding is total, client event frames round-trip, and every
//! encoded server frame is JSON with the right `type`. The fuzz targets in `fuzz/` explore the
//! same surface without a time bound; these run in every `cargo test` with proptest's default
//! 256 cases per property.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, value::RawValue};

use super::{
    ClientFrame, Code, MAX_ACK_ID, decode_client_frame, encode_ack, encode_disconnect,
    encode_error, encode_event,
};

/// Any JSON value, a few levels deep. Floats are finite because JSON has no NaN or infinity.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any event name the decoder accepts: 1 to 64 characters of `[A-Za-z0-9:._-]`.
fn event_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9:._-]{1,64}"
}

fn code() -> impl Strategy<Value = Code> {
    prop::sample::select(Code::ALL)
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

/// The fields every server frame may carry except `data`, which `raw_data` reads.
#[derive(Deserialize)]
struct ServerFrame {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u64>,
    event: Option<String>,
    code: Option<Value>,
    reason: Option<String>,
    message: Option<String>,
    reconnect: Option<bool>,
    #[serde(rename = "retryAfterMs")]
    retry_after_ms: Option<u64>,
}

/// `data` as raw text, so the comparison is byte-exact: parsing floats into `Value` is only
/// best-effort precise in serde_json, and an `Option` field would read `null` as absent.
fn raw_data(bytes: &[u8]) -> Option<String> {
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(bytes).unwrap();
    fields.get("data").map(|d| d.get().to_owned())
}

fn server_frame(bytes: &[u8]) -> ServerFrame {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("not a JSON server frame ({e}): {:?}", String::from_utf8_lossy(bytes))
    })
}

proptest! {
    #[test]
    fn decode_never_panics_on_bytes(bytes in any::<Vec<u8>>()) {
        let _ = decode_client_frame(&bytes);
    }

    #[test]
    fn decode_never_panics_on_strings(s in any::<String>()) {
        let _ = decode_client_frame(s.as_bytes());
    }

    /// Mostly-valid envelopes reach the per-type checks that random bytes rarely get past.
    #[test]
    fn decode_never_panics_on_near_frames(
        kind in "(event|ping|pong|connect|disconnect|[a-z]{0,8})",
        rest in r#"(,"(event|data|id|token|device|v|code|reason|x)":("[^"]{0,8}"|-?[0-9]{0,20}|null|\{\}|\[\]|true)){0,6}"#,
    ) {
        let frame = format!(r#"{{"type":"{kind}"{rest}}}"#);
        let _ = decode_client_frame(frame.as_bytes());
    }

    #[test]
    fn client_event_round_trips(
        name in event_name(),
        id in prop::option::of(0..=MAX_ACK_ID),
        data in prop::option::of(json_value()),
        pretty in any::<bool>(),
        order in Just(vec!["type", "event", "id", "data"]).prop_shuffle(),
    ) {
        let data_text = data.as_ref().map(|d| {
            let text = if pretty { serde_json::to_string_pretty(d) } else { serde_json::to_string(d) };
            text.unwrap()
        });
        let fields: Vec<String> = order
            .iter()
            .filter_map(|&field| {
                let value = match field {
                    "type" => Some(r#""event""#.to_owned()),
                    "event" => Some(serde_json::to_string(&name).unwrap()),
                    "id" => id.map(|id| id.to_string()),
                    _ => data_text.clone(),
                }?;
                Some(format!(r#""{field}":{value}"#))
            })
            .collect();
        let frame = format!("{{{}}}", fields.join(","));

        match decode_client_frame(frame.as_bytes()) {
            Ok(ClientFrame::Event(e)) => {
                prop_assert_eq!(&e.name, &name);
                prop_assert_eq!(e.id, id);
                prop_assert_eq!(e.data.get(), data_text.as_deref().unwrap_or("null"));
            }
            other => prop_assert!(false, "{frame} decoded to {other:?}"),
        }
    }

    #[test]
    fn event_names_outside_the_rule_are_refused(name in "[a-z:]{65,200}|[a-z]{0,10}[ \"\\\\<>/é\u{0}-\u{1f}][a-z]{0,10}") {
        let frame = format!(r#"{{"type":"event","event":"{name}"}}"#);
        prop_assert!(decode_client_frame(frame.as_bytes()).is_err());
    }

    #[test]
    fn ack_ids_over_the_limit_are_refused(id in (MAX_ACK_ID + 1)..=u64::MAX) {
        let frame = format!(r#"{{"type":"event","event":"a","id":{id}}}"#);
        prop_assert!(decode_client_frame(frame.as_bytes()).is_err());
    }

    #[test]
    fn encoded_ack_is_json(id in any::<u64>(), data in json_value()) {
        let data = raw(&data);
        let bytes = encode_ack(id, &data);
        let f = server_frame(&bytes);
        prop_assert_eq!(f.kind.as_str(), "ack");
        prop_assert_eq!(f.id, Some(id));
        prop_assert_eq!(raw_data(&bytes), Some(data.get().to_owned()));
    }

    #[test]
    fn encoded_event_is_json(name in any::<String>(), data in json_value()) {
        let data = raw(&data);
        let bytes = encode_event(&name, &data);
        let f = server_frame(&bytes);
        prop_assert_eq!(f.kind.as_str(), "event");
        prop_assert_eq!(f.event.as_deref(), Some(name.as_str()));
        prop_assert_eq!(raw_data(&bytes), Some(data.get().to_owned()));
    }

    #[test]
    fn encoded_error_is_json(
        id in prop::option::of(any::<u64>()),
        code in code(),
        message in any::<String>(),
        details in prop::option::of(json_value()),
    ) {
        let f = server_frame(&encode_error(id, code, &message, details.as_ref()));
        prop_assert_eq!(f.kind.as_str(), "error");
        prop_assert_eq!(f.id, id);
        prop_assert_eq!(f.code, Some(Value::from(code.as_str())));
        prop_assert_eq!(f.message.as_deref(), Some(message.as_str()));
    }

    #[test]
    fn encoded_disconnect_is_json(
        code in code(),
        message in any::<String>(),
        retry_after_ms in prop::option::of(any::<u64>()),
    ) {
        let f = server_frame(&encode_disconnect(code, &message, retry_after_ms));
        prop_assert_eq!(f.kind.as_str(), "disconnect");
        prop_assert_eq!(f.code, Some(Value::from(code.close_code().unwrap_or(3009))));
        prop_assert_eq!(f.reason.as_deref(), Some(code.as_str()));
        prop_assert_eq!(f.message.as_deref(), Some(message.as_str()));
        prop_assert_eq!(f.reconnect, Some(code.reconnect() == super::Reconnect::Yes));
        prop_assert_eq!(f.retry_after_ms, retry_after_ms);
    }
}
