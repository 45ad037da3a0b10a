//! The schemas of the request fields the server API validates beyond their JSON type: what
//! the handlers check, said in the OpenAPI document (lengths, patterns, list sizes), so a
//! client and a fuzzer know a valid value from one the server refuses. Used with
//! `#[schema(schema_with = …)]`; each must match the check it documents.

use utoipa::openapi::{
    ArrayBuilder, ObjectBuilder, Type,
    schema::{Schema, SchemaType},
};

/// No control characters (Unicode `Cc`, what `char::is_control` refuses).
const NO_CONTROL: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

fn string(nullable: bool) -> ObjectBuilder {
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new().schema_type(ty)
}

/// `users::user_id`: 1 to 128 bytes (a length in characters cannot say bytes: at most 128
/// characters), no control characters.
fn user_id_builder() -> ObjectBuilder {
    string(false)
        .description(Some(
            "A user id as tokens carry it: 1 to 128 bytes (UTF-8), no control characters.",
        ))
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(NO_CONTROL))
        .examples(["alice"])
}

pub(super) fn user_id() -> Schema {
    user_id_builder().build().into()
}

/// `users-status`: 1 to 1000 user ids.
pub(super) fn user_ids() -> Schema {
    ArrayBuilder::new()
        .items(user_id_builder())
        .min_items(Some(1))
        .max_items(Some(super::users::MAX_STATUS_USERS))
        .description(Some("1 to 1000 user ids."))
        .build()
        .into()
}

/// `revoke-token`: as a user id.
pub(super) fn jti() -> Schema {
    string(false)
        .description(Some("The token's `jti` claim: 1 to 128 bytes, no control characters."))
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(NO_CONTROL))
        .build()
        .into()
}

/// `disconnect`: at most 256 bytes, no control characters.
pub(super) fn disconnect_message() -> Schema {
    string(true)
        .description(Some(
            "For humans, in the `disconnect` frame's `message`: at most 256 bytes, no control \
             characters.",
        ))
        .max_length(Some(256))
        .pattern(Some(NO_CONTROL))
        .build()
        .into()
}

/// `channels::name::parse`: 1 to 255 of `[A-Za-z0-9_.:@#,=/-]`; before a first `:`, a
/// namespace of 1 to 64 of `[A-Za-z0-9_-]`. All ASCII, so characters are bytes.
pub(super) fn channel() -> Schema {
    string(false)
        .description(Some(
            "A channel: `namespace:rest` (its namespace must be configured), or a name without \
             `:` in the namespace `default`.",
        ))
        .min_length(Some(1))
        .max_length(Some(crate::channels::name::MAX_NAME))
        .pattern(Some(r"^([A-Za-z0-9_-]{1,64}:[A-Za-z0-9_.:@#,=/-]*|[A-Za-z0-9_.@#,=/-]+)$"))
        .examples(["news:sports", "lobby"])
        .build()
        .into()
}

/// `broadcast`: 1 to 100 channels. Any string: a name that is not a valid channel fails on
/// its own (`bad_channel` in its result), as an unknown namespace does, and the others are
/// published.
pub(super) fn channels() -> Schema {
    ArrayBuilder::new()
        .items(string(false).examples(["news:sports", "lobby"]))
        .min_items(Some(1))
        .max_items(Some(super::publish::MAX_BROADCAST))
        .description(Some(
            "1 to 100 channels. One that is not a valid name (`bad_channel`) or whose namespace \
             is not configured (`unknown_namespace`) gets its error in its result; the others \
             are published.",
        ))
        .build()
        .into()
}

/// `publish-to-user`: `protocol::valid_event_name`, and none of the reserved prefixes.
pub(super) fn event() -> Schema {
    string(false)
        .description(Some(
            "The event name the sessions see: 1 to 64 of `[A-Za-z0-9:._-]`, not starting with \
             `sys:`, `channel:` or `presence:`.",
        ))
        .min_length(Some(1))
        .max_length(Some(crate::protocol::MAX_EVENT_NAME_LEN))
        .pattern(Some(r"^(?!sys:|channel:|presence:)[A-Za-z0-9:._-]{1,64}$"))
        .examples(["order:shipped"])
        .build()
        .into()
}

/// `publish::idempotency_key`: 1 to 128 printable ASCII characters.
pub(super) fn idempotency_key() -> Schema {
    string(true)
        .description(Some(
            "Deduplicates retries cluster-wide within `--idempotency-window`: 1 to 128 \
             printable ASCII characters.",
        ))
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(r"^[!-~]{1,128}$"))
        .build()
        .into()
}
