//! The malformed-input suite: a table of hostile inputs, each sent on its own connection over
//! both transports, each with the outcome the protocol documents. After the whole table the
//! server is alive and a control client on another session saw nothing but its own traffic.

use serde_json::{Value, json};

use crate::helpers::{Client, Closed, Kind, TestServer, spawn};

/// What a hostile input must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An `error` frame with this code; the session stays (checked with an echo afterwards).
    Error(&'static str),
    /// An `error`, then `disconnect`, then a close, all with this code.
    Closes(&'static str, u16),
    /// The transport is dropped without a `disconnect` frame (the stream itself is broken).
    Dropped,
    /// `bad_frame`, then the session ends with `protocol_error` (the stream cannot go on).
    BadThenProtocolError,
    /// `payload_too_large` (3007) — or, on WebSocket, a TCP reset when the client was still
    /// sending the oversized message as the server closed (documented in PROTOCOL.md).
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Sent as the first frame, before `connect`.
    BeforeConnect,
    /// Sent after a successful handshake.
    AfterConnect,
}

enum Input {
    Text(String),
    /// Raw bytes: a binary message on WebSocket, raw stream bytes on WebTransport.
    Raw(Vec<u8>),
}

struct Case {
    name: &'static str,
    when: When,
    input: Input,
    expect: Expect,
    /// Transports the case applies to.
    on: &'static [Kind],
}

const BOTH: &[Kind] = &[Kind::Ws, Kind::Wt];
const WS: &[Kind] = &[Kind::Ws];
const WT: &[Kind] = &[Kind::Wt];

fn t(name: &'static str, text: impl Into<String>, expect: Expect) -> Case {
    Case { name, when: When::AfterConnect, input: Input::Text(text.into()), expect, on: BOTH }
}

fn pre(name: &'static str, text: impl Into<String>, expect: Expect) -> Case {
    Case { name, when: When::BeforeConnect, input: Input::Text(text.into()), expect, on: BOTH }
}

fn event(name: &str, data: Value) -> String {
    json!({"type": "event", "event": name, "id": 1, "data": data}).to_string()
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let bad = Error("bad_frame");
    let invalid = Error("validation_failed");
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let mut many_ids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    many_ids.sort();
    vec![
        // Not JSON, or not a frame.
        t("not_json", "not json", bad),
        t("open_brace", "{", bad),
        t("empty", "", bad),
        t("whitespace", "   \n\t ", bad),
        t("null", "null", bad),
        t("array", "[]", bad),
        t("number", "123", bad),
        t("string", r#""event""#, bad),
        t("truncated", r#"{"type":"event","event":"sys:echo""#, bad),
        t("trailing_garbage", r#"{"type":"ping"} x"#, bad),
        t("bom_prefix", "\u{feff}{\"type\":\"ping\"}", bad),
        t("type_not_string", r#"{"type":5}"#, bad),
        t("unknown_type", r#"{"type":"warp"}"#, bad),
        t("duplicate_type", r#"{"type":"ping","type":"pong"}"#, bad),
        // Arrays are not frames, however their items line up with an envelope's fields.
        t("array_event", r#"["event","sys:echo",{"a":1},5]"#, bad),
        t("array_ping", r#"["ping"]"#, bad),
        t("array_disconnect", r#"["disconnect"]"#, bad),
        t("array_connect", r#"["connect",null,null,null,"x"]"#, bad),
        t("unknown_field", r#"{"type":"event","event":"sys:echo","extra":1}"#, bad),
        t(
            "proto_key_envelope",
            r#"{"type":"event","event":"sys:echo","__proto__":{"admin":true}}"#,
            bad,
        ),
        t("constructor_key_envelope", r#"{"type":"ping","constructor":{"prototype":{}}}"#, bad),
        t("field_not_allowed", r#"{"type":"ping","token":"x"}"#, bad),
        t("pong_with_version", r#"{"type":"pong","v":1}"#, bad),
        t("disconnect_code_string", r#"{"type":"disconnect","code":"x"}"#, bad),
        // Event envelope fields.
        t("missing_event", r#"{"type":"event","id":1}"#, bad),
        t("event_not_string", r#"{"type":"event","event":5}"#, bad),
        t("event_empty", r#"{"type":"event","event":""}"#, bad),
        t("event_too_long", event(&"e".repeat(65), json!(null)), bad),
        t("event_control_char", event("sys:\u{0}echo", json!(null)), bad),
        t("event_spaces", event("sys echo", json!(null)), bad),
        t("id_string", r#"{"type":"event","event":"sys:echo","id":"1"}"#, bad),
        t("id_null", r#"{"type":"event","event":"sys:echo","id":null}"#, bad),
        t("event_null", r#"{"type":"event","event":null,"id":1}"#, bad),
        t("id_negative", r#"{"type":"event","event":"sys:echo","id":-1}"#, bad),
        t("id_fraction", r#"{"type":"event","event":"sys:echo","id":1.5}"#, bad),
        t("id_over_2_53", r#"{"type":"event","event":"sys:echo","id":9007199254740992}"#, bad),
        t("id_huge_exponent", r#"{"type":"event","event":"sys:echo","id":1e400}"#, bad),
        t(
            "id_hundred_digits",
            format!(r#"{{"type":"event","event":"sys:echo","id":{}}}"#, "9".repeat(100)),
            bad,
        ),
        // Payload abuse.
        t(
            "nesting_10000_arrays",
            format!(r#"{{"type":"event","event":"sys:echo","id":1,"data":{deep}}}"#),
            bad,
        ),
        t(
            "nesting_10000_objects",
            format!(r#"{{"type":"event","event":"sys:echo","id":1,"data":{deep_obj}}}"#),
            bad,
        ),
        t("huge_number", r#"{"type":"event","event":"sys:echo","id":1,"data":1e999999}"#, bad),
        t("bad_escape", r#"{"type":"event","event":"sys:echo","id":1,"data":"\uZZZZ"}"#, bad),
        t(
            "raw_control_in_string",
            "{\"type\":\"event\",\"event\":\"sys:echo\",\"id\":1,\"data\":\"a\u{1}b\"}",
            bad,
        ),
        t("unknown_event", event("no:such", json!({})), Error("unknown_event")),
        // DTO validation (presence events).
        t("ids_wrong_type", event("presence:query", json!({"userIds": "alice"})), invalid),
        t("ids_missing", event("presence:query", json!({})), invalid),
        t("ids_empty", event("presence:query", json!({"userIds": []})), invalid),
        t("ids_too_many", event("presence:query", json!({"userIds": many_ids})), invalid),
        t("ids_null_entry", event("presence:query", json!({"userIds": [null]})), invalid),
        t("ids_control_char", event("presence:query", json!({"userIds": ["a\u{0}b"]})), invalid),
        t("ids_too_long", event("presence:query", json!({"userIds": ["x".repeat(129)]})), invalid),
        t(
            "dto_unknown_field",
            event("presence:query", json!({"userIds": ["a"], "extra": 1})),
            invalid,
        ),
        t(
            "dto_proto_key",
            event("presence:subscribe", json!({"userIds": ["a"], "__proto__": {"x": 1}})),
            invalid,
        ),
        t("dto_not_object", event("presence:subscribe", json!([1, 2])), invalid),
        // Positionally an array would fill `userIds`; a payload object is an object.
        t("dto_positional_array", event("presence:query", json!([["alice"]])), invalid),
        t("dto_null", event("presence:query", json!(null)), invalid),
        t(
            "dto_deep_nesting",
            format!(
                r#"{{"type":"event","event":"presence:query","id":1,"data":{{"userIds":{deep}}}}}"#
            ),
            bad,
        ),
        // Handshake misuse after the handshake.
        t("second_connect", r#"{"type":"connect","token":"x"}"#, Error("already_connected")),
        // Transport-level abuse.
        Case {
            name: "ws_binary_frame",
            when: When::AfterConnect,
            input: Input::Raw(vec![0, 1, 2]),
            expect: bad,
            on: WS,
        },
        Case {
            name: "oversized_frame",
            when: When::AfterConnect,
            input: Input::Text(event("sys:echo", json!("x".repeat(70_000)))),
            expect: TooLarge,
            on: BOTH,
        },
        Case {
            name: "wt_prefix_over_cap",
            when: When::AfterConnect,
            input: Input::Raw(u32::MAX.to_be_bytes().to_vec()),
            expect: Closes("payload_too_large", 3007),
            on: WT,
        },
        Case {
            name: "wt_invalid_utf8",
            when: When::AfterConnect,
            input: Input::Raw(framed(b"\xff\xfe\xfd")),
            expect: bad,
            on: WT,
        },
        Case {
            name: "ws_invalid_utf8_text",
            when: When::AfterConnect,
            input: Input::Raw(b"ws-invalid-utf8".to_vec()),
            expect: BadThenProtocolError,
            on: WS,
        },
        Case {
            name: "wt_prefix_longer_than_stream",
            when: When::AfterConnect,
            input: Input::Raw(truncated_frame()),
            expect: Dropped,
            on: WT,
        },
        // Before the handshake.
        pre("event_before_connect", event("sys:echo", json!(1)), Closes("protocol_error", 3502)),
        pre("garbage_before_connect", "garbage", Closes("protocol_error", 3502)),
        pre("ping_before_connect", r#"{"type":"ping"}"#, Closes("protocol_error", 3502)),
        pre("token_wrong_type", r#"{"type":"connect","token":5}"#, Closes("protocol_error", 3502)),
        pre(
            "version_string",
            r#"{"type":"connect","v":"1","token":"x"}"#,
            Closes("protocol_error", 3502),
        ),
        pre(
            "version_unknown",
            r#"{"type":"connect","v":99,"token":"x"}"#,
            Closes("unsupported_version", 3503),
        ),
        pre(
            "token_oversized",
            json!({"type": "connect", "token": "a".repeat(10_000)}).to_string(),
            Closes("invalid_token", 3501),
        ),
        pre(
            "token_two_segments",
            r#"{"type":"connect","token":"a.b"}"#,
            Closes("invalid_token", 3501),
        ),
        pre("token_missing", r#"{"type":"connect"}"#, Closes("auth_required", 3500)),
        pre("token_null", r#"{"type":"connect","token":null}"#, Closes("protocol_error", 3502)),
        pre("array_connect_first", r#"["connect"]"#, Closes("protocol_error", 3502)),
        pre(
            "connect_unknown_field",
            r#"{"type":"connect","token":"x","user":"admin"}"#,
            Closes("protocol_error", 3502),
        ),
        Case {
            name: "ws_binary_before_connect",
            when: When::BeforeConnect,
            input: Input::Raw(vec![1]),
            expect: Closes("protocol_error", 3502),
            on: WS,
        },
    ]
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Announces 100 bytes, sends 5, then finishes the stream.
fn truncated_frame() -> Vec<u8> {
    let mut v = 100u32.to_be_bytes().to_vec();
    v.extend_from_slice(b"short");
    v
}

async fn send(c: &mut Client, input: &Input, name: &str) {
    match (c, input) {
        (c, Input::Text(s)) => c.send_text(s).await,
        (Client::Ws(ws), Input::Raw(b)) if name == "ws_invalid_utf8_text" => {
            // A text message whose payload is not UTF-8: only a raw frame can say that.
            use futures_util::SinkExt;
            let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                vec![0xff, 0xfe, 0xfd],
                tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                ),
                true,
            );
            let _ = b;
            let _ = ws.send(tokio_tungstenite::tungstenite::Message::Frame(frame)).await;
        }
        (c, Input::Raw(b)) => {
            c.send_raw(b).await;
            if let (Client::Wt(wt), "wt_prefix_longer_than_stream") = (c, name) {
                wt.finish().await;
            }
        }
    }
}

async fn run_case(server: &TestServer, kind: Kind, case: &Case) {
    let label = format!("{} over {kind:?}", case.name);
    let mut c = server.open(kind).await;
    if case.when == When::AfterConnect {
        c.send(&json!({"type": "connect", "token": server.token("hostile")})).await;
        assert_eq!(c.recv().await.unwrap()["type"], "connected", "{label}");
    }
    send(&mut c, &case.input, case.name).await;
    match case.expect {
        Expect::Error(code) => {
            let f = c.recv_skip_pings().await.unwrap_or_else(|| panic!("{label}: closed"));
            assert_eq!(
                (f["type"].as_str(), f["code"].as_str()),
                (Some("error"), Some(code)),
                "{label}: {f}"
            );
            // The session is still usable.
            assert_eq!(c.request(77, "sys:echo", json!("ok")).await["data"], "ok", "{label}");
        }
        Expect::Closes(code, close) => {
            crate::helpers::expect_closed(&mut c, code, close, true).await;
        }
        Expect::Dropped => {
            let (frames, closed) = c.until_closed().await;
            assert!(!frames.iter().any(|f| f["type"] == "disconnect"), "{label}: {frames:?}");
            assert!(!matches!(closed, Closed::Code(c) if c >= 3000), "{label}: {closed:?}");
        }
        Expect::TooLarge => {
            let (frames, closed) = c.until_closed().await;
            match closed {
                Closed::Code(code) => {
                    assert_eq!(code, 3007, "{label}");
                    assert_eq!(
                        frames.last().map(|f| f["reason"].clone()),
                        Some(json!("payload_too_large")),
                        "{label}"
                    );
                }
                Closed::NoCode(why) => {
                    assert!(kind == Kind::Ws && why.contains("reset"), "{label}: {why}");
                }
            }
        }
        Expect::BadThenProtocolError => {
            let frames = crate::helpers::expect_closed(&mut c, "protocol_error", 3502, false).await;
            assert_eq!(frames[frames.len() - 2]["code"], "bad_frame", "{label}: {frames:?}");
        }
    }
}

/// `["connect",null,null,null,<valid token>]` lines up with a derived envelope's fields by
/// position; it must not open a session.
#[tokio::test]
async fn an_array_with_a_valid_token_is_not_a_connect_frame() {
    let server = spawn(|_| {}).await;
    for kind in [Kind::Ws, Kind::Wt] {
        let mut c = server.open(kind).await;
        let frame = json!(["connect", null, null, null, server.token("arr")]);
        c.send_text(&frame.to_string()).await;
        let frames = crate::helpers::expect_closed(&mut c, "protocol_error", 3502, true).await;
        assert!(frames[0]["message"].as_str().unwrap_or("").contains("JSON object"), "{frames:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_their_documented_outcome_and_harm_no_one_else() {
    let server = spawn(|c| c.event_rate_limit = 100_000).await;
    let mut control = server.connect(Kind::Wt, "control").await.0;
    let cases = cases();
    let runs: usize = cases.iter().map(|c| c.on.len()).sum();
    assert!(cases.len() >= 50 && runs >= 100, "{} cases, {runs} runs", cases.len());
    for case in &cases {
        for kind in case.on {
            run_case(&server, *kind, case).await;
        }
    }
    // The server is alive and the control session saw only what it asked for.
    assert_eq!(control.request(1, "sys:echo", json!("still fine")).await["data"], "still fine");
    let (status, _) = server.get("/health/live").await;
    assert_eq!(status, 200);
}
