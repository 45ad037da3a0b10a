use super::names::{channel_name, parse_channel_name, watch_topic_base};
use super::pushes::decode_message;
use super::*;
use redis::Value;

#[test]
fn channel_names_round_trip() {
    let prefix = "rtgate:";
    for channel in [
        Channel::Chan("general".into()),
        Channel::Chan("a:b:ch:inst:c".into()),
        Channel::Chan(String::new()),
        Channel::Instance("inst-1".into()),
        Channel::Cluster,
        Channel::Watch("alice".into()),
        Channel::Watch("ch:inst:x".into()),
        Channel::Conversation("0b7e4a8e-6a55-4f6e-9d1c-3a6f2b1c9e10".into()),
        Channel::Chan("news:sports#alice,bob".into()),
    ] {
        let name = channel_name(prefix, &channel);
        assert_eq!(parse_channel_name(prefix, name.as_bytes()), Some(channel), "{name}");
    }
    assert_eq!(channel_name(prefix, &Channel::Cluster), "rtgate:ch:cluster");
    assert_eq!(channel_name(prefix, &Channel::Watch("u".into())), "rtgate:ch:watch:u");
    // What the presence scripts count subscribers of is the topic the user's updates go to.
    assert_eq!(watch_topic_base(prefix) + "u", channel_name(prefix, &Channel::Watch("u".into())));
    assert_eq!(channel_name(prefix, &Channel::Chan("c".into())), "rtgate:ch:chan:c");
    assert_eq!(channel_name(prefix, &Channel::Instance("i".into())), "rtgate:ch:inst:i");
}

#[test]
fn foreign_channel_names_are_rejected() {
    let prefix = "rtgate:";
    for name in [
        &b"other:ch:cluster"[..],
        b"rtgate:ch:clusterx",
        // Presence went out on one channel for every instance before per-user topics.
        b"rtgate:ch:presence",
        b"rtgate:ch:unknown:x",
        // The removed rooms' channels.
        b"rtgate:ch:room:r",
        b"rtgate:",
        b"\xff\xfe",
    ] {
        assert_eq!(parse_channel_name(prefix, name), None);
    }
}

#[test]
fn message_push_decodes_payload_bytes() {
    let payload = vec![0u8, 0xff, 0xfe, b'x'];
    let message = decode_message(
        "p:",
        vec![Value::BulkString(b"p:ch:inst:7".to_vec()), Value::BulkString(payload.clone())],
    );
    assert_eq!(
        message,
        Some(Message { channel: Channel::Instance("7".into()), payload: Bytes::from(payload) })
    );
    assert_eq!(decode_message("p:", vec![Value::BulkString(b"p:ch:presence".to_vec())]), None);
}
