//! The payloads of the `channel:*` events, each validated before its handler runs.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::validate::{Dto, FieldError, optional_object};

/// Largest `data` a subscriber may attach to its presence, in bytes of JSON.
pub const MAX_CLIENT_DATA: usize = 1024;

/// A position in a channel's history, as a client holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeDto {
    pub channel: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default, deserialize_with = "optional_object")]
    pub since: Option<Since>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

impl Dto for SubscribeDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        match &self.data {
            Some(d) if d.get().len() > MAX_CLIENT_DATA => Err(vec![FieldError {
                path: "data".into(),
                rule: "length".into(),
                message: format!("must be at most {MAX_CLIENT_DATA} bytes of JSON"),
            }]),
            _ => Ok(()),
        }
    }
}

/// `{"channel"}`: unsubscribe, presence, presence stats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDto {
    pub channel: String,
}

impl Dto for ChannelDto {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishDto {
    pub channel: String,
    pub data: Box<RawValue>,
}

impl Dto for PublishDto {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryDto {
    pub channel: String,
    #[serde(default, deserialize_with = "optional_object")]
    pub since: Option<Since>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub reverse: bool,
}

/// Most publications one `channel:history` returns.
pub const MAX_HISTORY_LIMIT: u32 = 100;

impl Dto for HistoryDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        match self.limit {
            Some(l) if !(1..=MAX_HISTORY_LIMIT).contains(&l) => Err(vec![FieldError {
                path: "limit".into(),
                rule: "range".into(),
                message: format!("must be 1 to {MAX_HISTORY_LIMIT}"),
            }]),
            _ => Ok(()),
        }
    }
}
