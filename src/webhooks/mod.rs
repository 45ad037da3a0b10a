//! Webhooks: lifecycle events (`user.online`, `user.offline`, `session.connected`,
//! `session.disconnected`) delivered to the application's endpoints at least once.
//!
//! `emit` turns an event into one outbox row per endpoint and hands them to the history
//! writer, which stores them in the batch that records the event itself (`store::outbox`), so
//! what is recorded is delivered even if this instance dies right after. `deliver` is the
//! worker every instance runs: it claims due rows, POSTs them signed (`sign`), and marks each
//! delivered, due again after a backoff, or dead after `--webhook-max-attempts`. Receivers
//! deduplicate by the event id (`webhook-id`): a row whose delivery succeeded but whose
//! marking did not is delivered again.

pub mod deliver;
pub mod sign;

use serde::Serialize;
use serde_json::Value;

use crate::{
    config::WebhookConfig,
    state::now_ms,
    store::{
        outbox::NewDelivery,
        writer::{Record, Writer},
    },
};

/// One event, as its body is delivered (`{"id", "type", "createdAt", "data"}`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: u64,
    data: Value,
}

/// What records events: shared by whatever has events to tell (the session registration,
/// the cluster, channels).
#[derive(Clone)]
pub struct Emitter {
    config: WebhookConfig,
    writer: Writer,
}

impl Emitter {
    pub fn new(config: &WebhookConfig, writer: Writer) -> Self {
        Self { config: config.clone(), writer }
    }

    /// Records `kind` with `data` for delivery to every endpoint, when webhooks are on and
    /// the event is one of `--webhook-events`. Never waits: the writer stores it.
    pub fn emit(&self, kind: &str, data: Value) {
        emit(&self.config, &self.writer, kind, data);
    }
}

fn emit(cfg: &WebhookConfig, writer: &Writer, kind: &str, data: Value) {
    if !cfg.enabled() || !cfg.events.iter().any(|e| e == kind) {
        return;
    }
    let event_id = uuid::Uuid::now_v7().to_string();
    let created_at = now_ms();
    let body = Body { id: &event_id, kind, created_at, data };
    let Ok(body) = serde_json::to_string(&body) else { return };
    for endpoint in &cfg.urls {
        writer.record(Record::Webhook(NewDelivery {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: event_id.clone(),
            endpoint: endpoint.clone(),
            kind: kind.to_owned(),
            body: body.clone(),
            created_at_ms: created_at as i64,
        }));
    }
}
