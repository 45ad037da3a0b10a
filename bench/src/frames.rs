//! The protocol frames the load generator sends, and a cheap classifier for what comes back.
//! Classification looks at the leading `"type"` first (both rtgate and the raw baseline write
//! it first) and falls back to a JSON parse, so the generator spends little CPU per frame on a
//! machine it shares with the server.

use serde_json::json;

pub const DISCONNECT: &str = r#"{"type":"disconnect"}"#;
pub const PONG: &str = r#"{"type":"pong"}"#;
/// The event name fanout publishes and receivers count.
pub const FANOUT_EVENT: &str = "bench";

pub fn connect(token: &str) -> String {
    json!({"type": "connect", "v": 1, "token": token}).to_string()
}

/// An acked `sys:echo` whose payload is a string of `payload` bytes.
pub fn echo(id: u64, payload: &str) -> String {
    format!(r#"{{"type":"event","event":"sys:echo","id":{id},"data":"{payload}"}}"#)
}

pub fn room_join(id: u64, room: &str) -> String {
    json!({"type": "event", "event": "sys:room-join", "id": id, "data": {"room": room}}).to_string()
}

/// A `sys:room-publish` carrying its send time (µs since the run's epoch) and padding.
pub fn publish(id: u64, room: &str, t_us: u64, pad: &str) -> String {
    format!(
        r#"{{"type":"event","event":"sys:room-publish","id":{id},"data":{{"room":"{room}","event":"{FANOUT_EVENT}","data":{{"t":{t_us},"b":"{pad}"}}}}}}"#
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connected,
    Ack,
    Event,
    Ping,
    Error,
    Disconnect,
    Other,
}

pub fn kind(frame: &[u8]) -> Kind {
    const P: &[u8] = br#"{"type":""#;
    if let Some(rest) = frame.strip_prefix(P) {
        for (name, k) in [
            (&b"ack\""[..], Kind::Ack),
            (b"event\"", Kind::Event),
            (b"ping\"", Kind::Ping),
            (b"connected\"", Kind::Connected),
            (b"error\"", Kind::Error),
            (b"disconnect\"", Kind::Disconnect),
        ] {
            if rest.starts_with(name) {
                return k;
            }
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(frame) else { return Kind::Other };
    match v["type"].as_str() {
        Some("ack") => Kind::Ack,
        Some("event") => Kind::Event,
        Some("ping") => Kind::Ping,
        Some("connected") => Kind::Connected,
        Some("error") => Kind::Error,
        Some("disconnect") => Kind::Disconnect,
        _ => Kind::Other,
    }
}

/// The send time a fanout delivery carries (`"t":<µs>`), without parsing the whole frame.
pub fn sent_at_us(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(4).position(|w| w == br#""t":"#)? + 4;
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&frame[at..at + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_prefix_and_by_parse() {
        assert_eq!(kind(br#"{"type":"ack","id":1,"data":"x"}"#), Kind::Ack);
        assert_eq!(kind(br#"{"type":"connected","v":1}"#), Kind::Connected);
        assert_eq!(kind(br#"{ "id":1, "type":"error"}"#), Kind::Error);
        assert_eq!(kind(b"not json"), Kind::Other);
    }

    #[test]
    fn reads_the_send_time_of_a_delivery() {
        let f =
            format!(r#"{{"type":"event","event":"{FANOUT_EVENT}","data":{{"t":1234,"b":"xx"}}}}"#);
        assert_eq!(sent_at_us(f.as_bytes()), Some(1234));
        assert_eq!(sent_at_us(b"{}"), None);
    }

    #[test]
    fn built_frames_are_json() {
        for f in [connect("t"), echo(7, "abc"), room_join(1, "r"), publish(2, "r", 5, "pp")] {
            serde_json::from_str::<serde_json::Value>(&f).expect("valid JSON");
        }
    }
}
