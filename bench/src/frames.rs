//! The protocol frames the load generator sends, and a cheap classifier for what comes back.
//! Classification looks at the leading `"type"` first (both rtgate and the raw baseline write
//! it first) and falls back to a JSON parse, so the generator spends little CPU per frame on a
//! machine it shares with the server.
//!
//! With `--protocol socketio` the same scenarios speak Socket.IO 4 (Engine.IO 4 over
//! WebSocket) to the Socket.IO peer in `anchors/socketio-bench` (its `echo`, `room:join`,
//! `room:publish` → `msg` events; fanout's channel is a room there): one load generator for
//! all three servers, so a ratio against Socket.IO is not bounded by a slower client. The
//! protocol is chosen once per process, before the first frame.

use std::sync::OnceLock;

use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// rtgate's JSON frames (also spoken by the raw baseline).
    Rtgate,
    /// Socket.IO 4 over a WebSocket-only Engine.IO 4 connection.
    Socketio,
}

static PROTOCOL: OnceLock<Protocol> = OnceLock::new();

/// Sets the protocol for the whole run; the first call wins.
pub fn set_protocol(p: Protocol) {
    let _ = PROTOCOL.set(p);
}

pub fn protocol() -> Protocol {
    *PROTOCOL.get().unwrap_or(&Protocol::Rtgate)
}

impl Protocol {
    /// The WebSocket path to upgrade on.
    pub fn ws_path(self) -> &'static str {
        match self {
            Protocol::Rtgate => "/ws",
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    pub fn disconnect(self) -> &'static str {
        match self {
            Protocol::Rtgate => r#"{"type":"disconnect"}"#,
            Protocol::Socketio => "41",
        }
    }

    /// The answer to a server ping.
    pub fn pong(self) -> &'static str {
        match self {
            Protocol::Rtgate => r#"{"type":"pong"}"#,
            Protocol::Socketio => "3",
        }
    }

    pub fn connect(self, token: &str) -> String {
        match self {
            Protocol::Rtgate => json!({"type": "connect", "v": 1, "token": token}).to_string(),
            Protocol::Socketio => format!("40{}", json!({ "token": token })),
        }
    }

    /// An acked echo whose payload is a string of `payload` bytes.
    pub fn echo(self, id: u64, payload: &str) -> String {
        match self {
            Protocol::Rtgate => {
                format!(r#"{{"type":"event","event":"sys:echo","id":{id},"data":"{payload}"}}"#)
            }
            Protocol::Socketio => format!(r#"42{id}["echo","{payload}"]"#),
        }
    }

    /// Joins fanout's group: `channel:subscribe` to `channel` (rtgate and the raw baseline),
    /// or `room:join` to the room of that name (Socket.IO).
    pub fn fanout_join(self, id: u64, channel: &str) -> String {
        match self {
            Protocol::Rtgate => self.channel_subscribe(id, channel, None),
            Protocol::Socketio => format!("42{id}{}", json!(["room:join", channel])),
        }
    }

    /// A fanout publish carrying its send time (µs since the run's epoch) and padding:
    /// `sys:channel-publish` (rtgate and the raw baseline), or `room:publish` (Socket.IO).
    pub fn fanout_publish(self, id: u64, channel: &str, t_us: u64, pad: &str) -> String {
        match self {
            Protocol::Rtgate => self.channel_publish(id, channel, t_us, pad),
            Protocol::Socketio => format!(
                r#"42{id}["room:publish",{{"room":"{channel}","payload":{{"t":{t_us},"b":"{pad}"}}}}]"#
            ),
        }
    }

    /// `channel:subscribe` (rtgate only), from `since` when given.
    pub fn channel_subscribe(self, id: u64, channel: &str, since: Option<(u64, &str)>) -> String {
        let mut data = json!({ "channel": channel });
        if let Some((offset, epoch)) = since {
            data["since"] = json!({ "offset": offset, "epoch": epoch });
        }
        json!({"type": "event", "event": "channel:subscribe", "id": id, "data": data}).to_string()
    }

    /// A publication to `channel` as the backend would make it (`sys:channel-publish`, a
    /// `--dev-events` server), carrying its send time and padding.
    pub fn channel_publish(self, id: u64, channel: &str, t_us: u64, pad: &str) -> String {
        format!(
            r#"{{"type":"event","event":"sys:channel-publish","id":{id},"data":{{"channel":"{channel}","data":{{"t":{t_us},"b":"{pad}"}}}}}}"#
        )
    }

    pub fn kind(self, frame: &[u8]) -> Kind {
        match self {
            Protocol::Rtgate => rtgate_kind(frame),
            Protocol::Socketio => sio_kind(frame),
        }
    }
}

pub fn ws_path() -> &'static str {
    protocol().ws_path()
}

pub fn disconnect() -> &'static str {
    protocol().disconnect()
}

pub fn pong() -> &'static str {
    protocol().pong()
}

pub fn connect(token: &str) -> String {
    protocol().connect(token)
}

pub fn echo(id: u64, payload: &str) -> String {
    protocol().echo(id, payload)
}

pub fn fanout_join(id: u64, channel: &str) -> String {
    protocol().fanout_join(id, channel)
}

pub fn fanout_publish(id: u64, channel: &str, t_us: u64, pad: &str) -> String {
    protocol().fanout_publish(id, channel, t_us, pad)
}

pub fn kind(frame: &[u8]) -> Kind {
    protocol().kind(frame)
}

pub fn channel_subscribe(id: u64, channel: &str, since: Option<(u64, &str)>) -> String {
    protocol().channel_subscribe(id, channel, since)
}

pub fn channel_publish(id: u64, channel: &str, t_us: u64, pad: &str) -> String {
    protocol().channel_publish(id, channel, t_us, pad)
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

fn rtgate_kind(frame: &[u8]) -> Kind {
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

/// Engine.IO packet type, then Socket.IO packet type: `2` ping, `0…` open, `40` connected,
/// `41` disconnect, `42…` event, `43…` ack, `44…` connect error.
fn sio_kind(frame: &[u8]) -> Kind {
    match frame {
        b"2" => Kind::Ping,
        [b'4', b'0', ..] => Kind::Connected,
        [b'4', b'1', ..] => Kind::Disconnect,
        [b'4', b'2', ..] => Kind::Event,
        [b'4', b'3', ..] => Kind::Ack,
        [b'4', b'4', ..] => Kind::Error,
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
        let f = br#"{"type":"event","event":"channel:publication","data":{"channel":"bench:fanout","data":{"t":1234,"b":"xx"}}}"#;
        assert_eq!(sent_at_us(f), Some(1234));
        assert_eq!(sent_at_us(b"{}"), None);
    }

    #[test]
    fn socketio_frames_and_packet_types() {
        let p = Protocol::Socketio;
        assert_eq!(p.connect("t"), r#"40{"token":"t"}"#);
        assert_eq!(p.echo(7, "abc"), r#"427["echo","abc"]"#);
        assert_eq!(p.fanout_join(1, "r"), r#"421["room:join","r"]"#);
        let publish = p.fanout_publish(2, "r", 5, "pp");
        let body: serde_json::Value = serde_json::from_str(&publish[3..]).expect("JSON array");
        assert_eq!(body, json!(["room:publish", {"room": "r", "payload": {"t": 5, "b": "pp"}}]));
        for (frame, kind) in [
            (&b"2"[..], Kind::Ping),
            (br#"0{"sid":"x","pingInterval":25000}"#, Kind::Other),
            (br#"40{"sid":"x"}"#, Kind::Connected),
            (br#"44{"message":"unauthorized"}"#, Kind::Error),
            (br#"437["abc"]"#, Kind::Ack),
            (br#"42["msg",{"t":1,"b":""}]"#, Kind::Event),
            (b"41", Kind::Disconnect),
        ] {
            assert_eq!(p.kind(frame), kind, "{}", String::from_utf8_lossy(frame));
        }
        assert_eq!(sent_at_us(br#"42["msg",{"t":99,"b":""}]"#), Some(99));
    }

    #[test]
    fn built_frames_are_json() {
        let p = Protocol::Rtgate;
        for f in [
            p.connect("t"),
            p.echo(7, "abc"),
            p.fanout_join(1, "bench:fanout"),
            p.fanout_publish(2, "bench:fanout", 5, "pp"),
        ] {
            serde_json::from_str::<serde_json::Value>(&f).expect("valid JSON");
        }
    }

    #[test]
    fn rtgate_fanout_subscribes_and_publishes_to_the_channel() {
        let p = Protocol::Rtgate;
        let join: serde_json::Value =
            serde_json::from_str(&p.fanout_join(1, "bench:f")).expect("JSON");
        assert_eq!(
            join,
            json!({"type": "event", "event": "channel:subscribe", "id": 1, "data": {"channel": "bench:f"}})
        );
        let publish: serde_json::Value =
            serde_json::from_str(&p.fanout_publish(2, "bench:f", 5, "pp")).expect("JSON");
        assert_eq!(publish["data"], json!({"channel": "bench:f", "data": {"t": 5, "b": "pp"}}));
        assert_eq!(publish["event"], "sys:channel-publish");
    }
}
