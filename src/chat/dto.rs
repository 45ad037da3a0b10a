//! Chat payloads as typed DTOs with declarative rules.

use serde::Deserialize;
use validator::Validate;

use crate::validate::{Dto, FieldError, not_blank, plain_text, uuid, validated};

/// A client message id: the sender's idempotency key for `message:send`.
pub fn client_message_key(s: &str) -> Result<(), validator::ValidationError> {
    if crate::protocol::valid_event_name(s) {
        return Ok(());
    }
    Err(validator::ValidationError::new("client_message_id")
        .with_message("must be 1 to 64 characters of [A-Za-z0-9:._-]".into()))
}

/// Most characters (Unicode scalar values, not bytes) in a message.
pub const MAX_CONTENT_CHARS: u64 = 5000;

/// `message:send`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendMessageDto {
    #[validate(
        length(max = 5000, message = "must be at most 5000 characters"),
        custom(function = "not_blank"),
        custom(function = "plain_text")
    )]
    pub content: String,
    #[validate(custom(function = "uuid"))]
    pub conversation_id: String,
    #[validate(custom(function = "uuid"))]
    pub reply_to_id: Option<String>,
    /// Set by the client so a retried send (after a lost ack) is not stored twice.
    #[validate(custom(function = "client_message_key"))]
    pub client_message_id: Option<String>,
}

impl Dto for SendMessageDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

/// `conversation:join`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinDto {
    #[validate(custom(function = "uuid"))]
    pub conversation_id: String,
    /// The last seq this client has seen; missed messages after it are sent before new ones.
    #[validate(range(min = 0, message = "must be 0 or more"))]
    pub since_seq: Option<i64>,
}

impl Dto for JoinDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

/// `conversation:leave`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaveDto {
    #[validate(custom(function = "uuid"))]
    pub conversation_id: String,
}

impl Dto for LeaveDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

/// `typing`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TypingDto {
    #[validate(custom(function = "uuid"))]
    pub conversation_id: String,
    pub is_typing: bool,
}

impl Dto for TypingDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::validate::parse;

    fn check(json: &str) -> Result<SendMessageDto, Vec<FieldError>> {
        parse::<SendMessageDto>(&RawValue::from_string(json.into()).unwrap())
    }

    const CONV: &str = "0b7e4a8e-6a55-4f6e-9d1c-3a6f2b1c9e10";

    fn rules(json: &str) -> Vec<(String, String)> {
        check(json).unwrap_err().into_iter().map(|e| (e.path, e.rule)).collect()
    }

    #[test]
    fn accepts_a_valid_message_with_newlines_tabs_and_markup_as_text() {
        let m = check(&format!(
            r#"{{"content":"hi\n\t<b>there</b> ' OR 1=1 --","conversationId":"{CONV}"}}"#
        ))
        .unwrap();
        assert_eq!(m.content, "hi\n\t<b>there</b> ' OR 1=1 --");
    }

    #[test]
    fn content_is_counted_in_characters_not_bytes() {
        let ok = "é".repeat(5000); // 10,000 bytes
        assert!(check(&format!(r#"{{"content":"{ok}","conversationId":"{CONV}"}}"#)).is_ok());
        let long = "a".repeat(5001);
        assert_eq!(
            rules(&format!(r#"{{"content":"{long}","conversationId":"{CONV}"}}"#)),
            [("content".into(), "length".into())]
        );
    }

    #[test]
    fn reports_one_entry_per_failing_field() {
        let r = rules(r#"{"content":"   ","conversationId":"nope","replyToId":"also-nope"}"#);
        assert_eq!(
            r,
            [
                ("content".to_owned(), "not_blank".to_owned()),
                ("conversationId".to_owned(), "uuid".to_owned()),
                ("replyToId".to_owned(), "uuid".to_owned()),
            ]
        );
    }

    #[test]
    fn client_message_ids_are_short_tokens() {
        let ok =
            format!(r#"{{"content":"x","conversationId":"{CONV}","clientMessageId":"c-1.a:b_2"}}"#);
        assert_eq!(check(&ok).unwrap().client_message_id.as_deref(), Some("c-1.a:b_2"));
        let long = "a".repeat(65);
        for bad in ["", "has space", long.as_str()] {
            let json =
                format!(r#"{{"content":"x","conversationId":"{CONV}","clientMessageId":"{bad}"}}"#);
            assert_eq!(rules(&json), [("clientMessageId".into(), "client_message_id".into())]);
        }
    }

    #[test]
    fn join_takes_an_optional_non_negative_since_seq() {
        let parse = |json: &str| parse::<JoinDto>(&RawValue::from_string(json.into()).unwrap());
        let j = parse(&format!(r#"{{"conversationId":"{CONV}","sinceSeq":7}}"#)).unwrap();
        assert_eq!(j.since_seq, Some(7));
        assert!(parse(&format!(r#"{{"conversationId":"{CONV}"}}"#)).unwrap().since_seq.is_none());
        let e = parse(&format!(r#"{{"conversationId":"{CONV}","sinceSeq":-1}}"#)).unwrap_err();
        assert_eq!((e[0].path.as_str(), e[0].rule.as_str()), ("sinceSeq", "range"));
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\\u0000b", "bell\\u0007", "esc\\u001b[31m", "del\\u007f", "c1\\u0085"] {
            let r = rules(&format!(r#"{{"content":"{bad}","conversationId":"{CONV}"}}"#));
            assert_eq!(r, [("content".to_owned(), "control_chars".to_owned())], "{bad}");
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        assert_eq!(
            rules(&format!(r#"{{"content":"x","conversationId":"{CONV}","__proto__":{{}}}}"#))[0].1,
            "type"
        );
        assert_eq!(
            rules(r#"{"content":5,"conversationId":"x"}"#)[0],
            ("content".to_owned(), "type".to_owned())
        );
        assert_eq!(rules(r#"{"conversationId":"x"}"#)[0].1, "type");
    }
}
