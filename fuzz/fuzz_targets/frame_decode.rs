//! Fuzz target: arbitrary bytes as one client frame. `decode_client_frame` must never panic,
//! and whatever it accepts must survive being encoded again the way the server answers it.
//! An `event` frame must also round-trip: a server event is a valid client event without an
//! id, so decoding the re-encoded frame must give back the same name and the same raw data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtgate::protocol::{
    ClientFrame, Code, ConnectedInfo, HeartbeatInfo, LimitsInfo, decode_client_frame, encode_ack,
    encode_connected, encode_disconnect, encode_error, encode_event,
};
use serde::Deserialize;

/// Only `type` is read; serde skips the other fields without a depth limit, so deeply nested
/// `data` (which the decoder accepts) does not trip `Value`'s recursion limit.
#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: String,
}

fn assert_frame(bytes: &[u8], kind: &str) {
    match serde_json::from_slice::<Typed>(bytes) {
        Ok(t) => assert_eq!(t.kind, kind),
        Err(e) => panic!(
            "encoded `{kind}` frame is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_client_frame(data) else {
        return;
    };
    match frame {
        ClientFrame::Event(e) => {
            let event = encode_event(&e.name, &e.data);
            assert_frame(&event, "event");
            match decode_client_frame(&event) {
                Ok(ClientFrame::Event(back)) => {
                    assert_eq!(back.name, e.name);
                    assert_eq!(back.id, None);
                    assert_eq!(back.data.get(), e.data.get());
                }
                other => panic!("re-encoded event did not decode: {other:?}"),
            }
            if let Some(id) = e.id {
                assert_frame(&encode_ack(id, &e.data), "ack");
            }
            let details = serde_json::json!({ "event": e.name });
            assert_frame(
                &encode_error(e.id, Code::UnknownEvent, &e.name, Some(&details)),
                "error",
            );
        }
        ClientFrame::Connect(c) => {
            let token = c.token.as_deref().unwrap_or_default();
            let device = c.device.as_deref().unwrap_or_default();
            let info = ConnectedInfo {
                session_id: token,
                user_id: token,
                device_id: device,
                instance_id: device,
                expires_at: c.version.map(u64::from),
                heartbeat: HeartbeatInfo {
                    interval_ms: 25_000,
                    timeout_ms: 60_000,
                },
                limits: LimitsInfo {
                    max_frame_bytes: 65_536,
                },
            };
            assert_frame(&encode_connected(&info), "connected");
            assert_frame(
                &encode_disconnect(Code::InvalidToken, token, None),
                "disconnect",
            );
        }
        ClientFrame::Ping | ClientFrame::Pong | ClientFrame::Disconnect => {
            assert_frame(
                &encode_disconnect(Code::ProtocolError, "", Some(u64::MAX)),
                "disconnect",
            );
        }
    }
});
