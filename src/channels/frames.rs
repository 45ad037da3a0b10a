//! What channels put on the wire and in history, encoded once and shared.
//!
//! A history entry is a publication's fields after its offset, as a JSON fragment
//! (`,"data":…` and, with `publisher_info`, `,"info":…`): the offset is assigned where the
//! history lives, so it is written into the publication only when one is read or delivered
//! (`publication`). Channel names need no JSON escaping (their characters are a closed set).

use bytes::Bytes;
use serde_json::value::RawValue;

/// Why the server ended a subscription (`channel:unsubscribed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribe {
    /// The subscription token expired: resubscribe with a fresh one.
    SubscriptionExpired,
    /// The channel's epoch changed (its history was lost): resubscribe, then reload state.
    StateLost,
    /// The server or the backend removed it: do not resubscribe automatically.
    Unsubscribed,
}

impl Unsubscribe {
    pub fn as_str(self) -> &'static str {
        match self {
            Unsubscribe::SubscriptionExpired => "subscription_expired",
            Unsubscribe::StateLost => "state_lost",
            Unsubscribe::Unsubscribed => "unsubscribed",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Unsubscribe::SubscriptionExpired => "subscription token expired",
            Unsubscribe::StateLost => "the channel's history was lost",
            Unsubscribe::Unsubscribed => "unsubscribed by the server",
        }
    }

    pub fn resubscribe(self) -> bool {
        self != Unsubscribe::Unsubscribed
    }
}

/// The history entry of a publication: `,"data":<data>` and `,"info":<info>` when given.
pub fn fields(data: &RawValue, info: Option<&[u8]>) -> Bytes {
    let data = data.get().as_bytes();
    let mut out = Vec::with_capacity(16 + data.len() + info.map_or(0, <[u8]>::len));
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data);
    if let Some(info) = info {
        out.extend_from_slice(br#","info":"#);
        out.extend_from_slice(info);
    }
    Bytes::from(out)
}

/// A publication object: `{"channel":…,"offset":…` + `fields` + `}`.
pub fn publication(out: &mut Vec<u8>, channel: &str, offset: Option<u64>, fields: &[u8]) {
    out.extend_from_slice(br#"{"channel":""#);
    out.extend_from_slice(channel.as_bytes());
    out.push(b'"');
    if let Some(offset) = offset {
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    }
    out.extend_from_slice(fields);
    out.push(b'}');
}

/// `{"type":"event","event":"channel:publication","data":<publication>}`.
pub fn publication_frame(channel: &str, offset: Option<u64>, fields: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(80 + channel.len() + fields.len());
    out.extend_from_slice(br#"{"type":"event","event":"channel:publication","data":"#);
    publication(&mut out, channel, offset, fields);
    out.push(b'}');
    Bytes::from(out)
}

/// A JSON array of publication objects, for an ack.
pub fn publications(channel: &str, entries: &[(u64, Bytes)]) -> Box<RawValue> {
    let mut out = Vec::with_capacity(2 + entries.iter().map(|(_, f)| f.len() + 40).sum::<usize>());
    out.push(b'[');
    for (i, (offset, fields)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        publication(&mut out, channel, Some(*offset), fields);
    }
    out.push(b']');
    raw(out)
}

/// `channel:join` / `channel:leave` with the client's info.
pub fn notice_frame(event: &str, channel: &str, info: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(64 + channel.len() + info.len());
    out.extend_from_slice(br#"{"type":"event","event":""#);
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(br#"","data":{"channel":""#);
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(br#"","info":"#);
    out.extend_from_slice(info);
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

pub fn unsubscribed_frame(channel: &str, why: Unsubscribe) -> Bytes {
    let data = serde_json::json!({
        "channel": channel,
        "code": why.as_str(),
        "reason": why.reason(),
        "resubscribe": why.resubscribe(),
    });
    match serde_json::value::to_raw_value(&data) {
        Ok(raw) => crate::protocol::encode_event("channel:unsubscribed", &raw),
        // A map of strings and a bool always serializes.
        Err(_) => Bytes::new(),
    }
}

/// A client's info: `{"clientId","userId","deviceId"}`, plus `data` when given (already JSON).
pub fn client_info(client: &str, user: &str, device: &str, data: Option<&str>) -> Bytes {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Info<'a> {
        client_id: &'a str,
        user_id: &'a str,
        device_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    }
    let data = data.and_then(|d| serde_json::from_str::<&RawValue>(d).ok());
    serde_json::to_vec(&Info { client_id: client, user_id: user, device_id: device, data })
        .map(Bytes::from)
        .unwrap_or_default()
}

/// The `userId` of a client info (`client_info`'s output).
pub fn info_user(info: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct User {
        user_id: String,
    }
    serde_json::from_slice::<User>(info).ok().map(|u| u.user_id)
}

/// A JSON array of already-encoded JSON values.
pub fn array(items: &[Bytes]) -> Box<RawValue> {
    let mut out = Vec::with_capacity(2 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    raw(out)
}

/// Bytes we assembled from JSON pieces, as a raw JSON value (`null` if they were not valid
/// JSON, which would be a bug here, never a client's doing).
pub fn raw(bytes: Vec<u8>) -> Box<RawValue> {
    String::from_utf8(bytes)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
        .unwrap_or_else(|| RawValue::from_string("null".to_owned()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).expect("valid JSON")
    }

    #[test]
    fn publications_are_json_with_their_offset() {
        let data = RawValue::from_string(r#"{"score":"2-1"}"#.into()).unwrap();
        let info = client_info("c1", "alice", "laptop", None);
        let f = fields(&data, Some(&info));
        let frame = json(&publication_frame("news:sports", Some(42), &f));
        assert_eq!(frame["event"], "channel:publication");
        assert_eq!(frame["data"]["offset"], 42);
        assert_eq!(frame["data"]["data"]["score"], "2-1");
        assert_eq!(frame["data"]["info"]["userId"], "alice");
        let plain = json(&publication_frame("lobby", None, &fields(&data, None)));
        assert!(plain["data"].get("offset").is_none() && plain["data"].get("info").is_none());
        let list = json(publications("c", &[(1, f.clone()), (2, f)]).get().as_bytes());
        assert_eq!((list[0]["offset"].as_u64(), list[1]["offset"].as_u64()), (Some(1), Some(2)));
    }

    #[test]
    fn notices_and_unsubscribes_are_json() {
        let info = client_info("c1", "bob", "phone", Some(r#"{"color":"red"}"#));
        let join = json(&notice_frame("channel:join", "doc:1", &info));
        assert_eq!(
            (join["data"]["channel"].as_str(), join["data"]["info"]["data"]["color"].as_str()),
            (Some("doc:1"), Some("red"))
        );
        let u = json(&unsubscribed_frame("doc:1", Unsubscribe::StateLost));
        assert_eq!(
            (u["data"]["code"].as_str(), u["data"]["resubscribe"].as_bool()),
            (Some("state_lost"), Some(true))
        );
        assert_eq!(
            json(array(&[info.clone(), info]).get().as_bytes()).as_array().map(Vec::len),
            Some(2)
        );
    }
}
