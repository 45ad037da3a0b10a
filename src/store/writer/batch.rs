//! One batch of the writer's queue written to the store: records grouped by kind, one statement
//! per kind, connections the batch both opens and closes written once.

use std::collections::{HashMap, HashSet};

use super::Record;
use crate::store::{ConnectionClosed, ConnectionOpened, Store, StoreError};

/// Writes one batch: all inserts first, so closes in the same batch find their rows.
pub(super) async fn write(
    store: &dyn Store,
    batch: impl Iterator<Item = Record>,
) -> Result<(), StoreError> {
    let (mut opened, mut closed, mut presence, mut lost, mut webhooks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in batch {
        match r {
            Record::Opened(o) => opened.push(o),
            Record::Closed(c) => closed.push(c),
            Record::Presence(p) => presence.push(p),
            Record::InstanceLost { instance, at_ms } => lost.push((instance, at_ms)),
            Record::Webhook(w) => webhooks.push(w),
        }
    }
    let ended = pair_ended(&mut opened, &mut closed);
    if !opened.is_empty() {
        store.insert_connections(&opened).await?;
    }
    if !ended.is_empty() {
        store.insert_ended_connections(&ended).await?;
    }
    if !presence.is_empty() {
        store.insert_presence(&presence).await?;
    }
    if !closed.is_empty() {
        store.close_connections(&closed).await?;
    }
    for (instance, at_ms) in lost {
        let n = store.close_instance(&instance, at_ms, "instance_lost").await?;
        tracing::info!(instance = %instance, rows = n, "closed the connection rows of a lost instance");
    }
    if !webhooks.is_empty() {
        store.outbox().enqueue(&webhooks).await?;
    }
    Ok(())
}

/// Takes out of a batch the connections it both opens and closes, each with its first close
/// (the first close wins, as in `close_connections`): they are written once, already closed.
/// What stays in `opened` and `closed` is written as before.
fn pair_ended(
    opened: &mut Vec<ConnectionOpened>,
    closed: &mut Vec<ConnectionClosed>,
) -> Vec<(ConnectionOpened, ConnectionClosed)> {
    if opened.is_empty() || closed.is_empty() {
        return Vec::new();
    }
    let mut first_close: HashMap<String, ConnectionClosed> = HashMap::new();
    for c in closed.iter() {
        first_close.entry(c.socket_id.clone()).or_insert_with(|| c.clone());
    }
    let mut ended = Vec::new();
    let mut paired = HashSet::new();
    opened.retain(|o| {
        if paired.contains(&o.socket_id) {
            // Opened twice in one batch: the pair already holds it.
            return false;
        }
        let Some(c) = first_close.remove(&o.socket_id) else { return true };
        paired.insert(o.socket_id.clone());
        ended.push((o.clone(), c));
        false
    });
    closed.retain(|c| !paired.contains(&c.socket_id));
    ended
}
