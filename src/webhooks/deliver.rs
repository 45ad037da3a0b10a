//! The delivery worker every instance runs while webhooks are on: claim due outbox rows for a
//! lease, POST each (signed) to its endpoint, and record the outcome. A 2xx is delivered;
//! anything else (another status, no answer within `--webhook-timeout`, a refused
//! connection) is due again after an exponential backoff with jitter, and dead after
//! `--webhook-max-attempts`. Workers on several instances never take the same row (the
//! claim), and a worker that dies loses its rows when their lease runs out.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, header};
use rand::Rng;

use super::sign;
use crate::{
    node::Node,
    proxy::client::{Outbound, outbound_client},
    state::now_ms,
    store::outbox::{Delivery, Outbox},
};

/// Rows one worker claims at a time.
const BATCH: u32 = 32;
/// How long a claim keeps other workers off a row; longer than a batch of attempts takes.
const LEASE: Duration = Duration::from_secs(60);
/// How often an idle worker looks for due rows.
const POLL: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Runs until shutdown.
pub async fn run(node: Arc<Node>) {
    let client = match outbound_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks are off: the system's root certificates did not load");
            return;
        }
    };
    let outbox = node.store.outbox();
    loop {
        let claimed = outbox.claim(now_ms() as i64, LEASE.as_millis() as i64, BATCH).await;
        let full = match claimed {
            Ok(rows) => {
                let n = rows.len();
                let attempts = rows.into_iter().map(|row| attempt(&node, &client, &*outbox, row));
                futures_util::future::join_all(attempts).await;
                n == BATCH as usize
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhooks failed; retrying");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = node.shutdown.cancelled() => return,
        }
    }
}

/// One delivery attempt and its outcome in the outbox.
async fn attempt(node: &Node, client: &Outbound, outbox: &dyn Outbox, row: Delivery) {
    let cfg = &node.config.webhooks;
    let attempts = row.attempts.saturating_add(1);
    let outcome = tokio::time::timeout(cfg.timeout, post(node, client, &row)).await;
    let outcome = outcome.unwrap_or_else(|_| Err(format!("no answer within {:?}", cfg.timeout)));
    let now = now_ms() as i64;
    let recorded = match outcome {
        Ok(()) => outbox.delivered(&row.id, attempts, now).await,
        Err(error) if attempts as u32 >= cfg.max_attempts => {
            tracing::warn!(event = %row.event_id, endpoint = %row.endpoint, attempts, %error, "webhook dead-lettered");
            outbox.dead(&row.id, attempts, now, &error).await
        }
        Err(error) => {
            tracing::debug!(event = %row.event_id, attempts, %error, "webhook attempt failed");
            let next = now + backoff(cfg.backoff, attempts).as_millis() as i64;
            outbox.retry(&row.id, attempts, next, &error).await
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the row is tried again: at least once, never lost.
        tracing::warn!(error = %e, "recording a webhook attempt failed");
    }
}

async fn post(node: &Node, client: &Outbound, row: &Delivery) -> Result<(), String> {
    let secret = node.config.webhooks.secret.as_deref().unwrap_or_default();
    let timestamp = now_ms() / 1000;
    let signature = sign::signature(secret.as_bytes(), &row.event_id, timestamp, &row.body);
    let request = Request::builder()
        .method(Method::POST)
        .uri(&row.endpoint)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("rtgate/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &row.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(row.body.clone())))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {}", status.as_u16())) }
}

/// The wait after the `attempts`-th failure: `first`, doubled each time, at most
/// `MAX_BACKOFF`, less up to a fifth at random so endpoints that come back are not hit by
/// every retry at once.
fn backoff(first: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
    let full = first.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    full.mul_f64(1.0 - rand::rng().random_range(0.0..0.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let first = Duration::from_secs(1);
        for (attempts, full) in [(1, 1), (2, 2), (3, 4), (5, 16), (40, 600)] {
            let b = backoff(first, attempts);
            let full = Duration::from_secs(full);
            assert!(b <= full && b >= full.mul_f64(0.8), "{attempts}: {b:?}");
        }
    }
}
