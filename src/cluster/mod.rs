//! This instance as a member of the cluster: registering and unregistering sessions in shared
//! state (announcing the presence transitions that result), refreshing the instance's
//! liveness, reaping crashed instances, and resynchronizing after a shared-state outage.
//!
//! Shared state is never allowed to stop a session: every call is bounded by `STATE_TIMEOUT`,
//! a failure marks the backends degraded, and the liveness loop rewrites this instance's
//! registry entries once the backend answers again.

use std::{sync::Arc, time::Duration};

use crate::{
    hub::SessionEntry,
    node::Node,
    presence::announce,
    state::{
        StateError, now_ms,
        presence::{Registered, SocketRecord, Transition},
    },
    store::{PresenceLog, writer::Record},
    transport::TransportKind,
};

pub use crate::state::STATE_TIMEOUT;

mod resync;
pub use resync::{Unsettled, resync};

/// Runs a shared-state call under `STATE_TIMEOUT`.
pub async fn bounded<T>(fut: impl Future<Output = Result<T, StateError>>) -> Result<T, StateError> {
    bounded_for(STATE_TIMEOUT, fut).await
}

/// Runs a shared-state call that takes several round trips (a reap in chunks) under `limit`.
pub async fn bounded_for<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, StateError>>,
) -> Result<T, StateError> {
    tokio::time::timeout(limit, fut).await.unwrap_or(Err(StateError::Timeout(limit)))
}

pub fn record(node: &Node, socket_id: &str, entry: &SessionEntry) -> SocketRecord {
    socket_record(
        node,
        socket_id,
        &entry.user_id,
        &entry.device_id,
        entry.transport,
        entry.connected_at_ms,
    )
}

/// What shared state keeps of one session of this instance.
pub fn socket_record(
    node: &Node,
    socket_id: &str,
    user_id: &str,
    device_id: &str,
    transport: TransportKind,
    connected_at_ms: u64,
) -> SocketRecord {
    SocketRecord {
        socket_id: socket_id.to_owned(),
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        transport: transport.as_str().to_owned(),
        instance_id: node.incarnation.clone(),
        connected_at_ms,
    }
}

/// The `data` of a `session.connected` (no `reason`) or `session.disconnected` webhook.
pub(crate) fn session_event(s: &SocketRecord, reason: &str) -> serde_json::Value {
    let mut data = serde_json::json!({
        "sessionId": s.socket_id,
        "userId": s.user_id,
        "deviceId": s.device_id,
        "transport": s.transport,
        "instance": s.instance_id,
        "connectedAt": s.connected_at_ms,
    });
    if !reason.is_empty() {
        data["reason"] = reason.into();
        data["at"] = now_ms().into();
    }
    data
}

/// A cluster-wide transition: recorded in the presence history and pushed to watchers.
pub async fn transition(node: &Node, t: &Transition) {
    let kind = match t.status {
        crate::state::presence::Status::Online => "user.online",
        crate::state::presence::Status::Offline => "user.offline",
    };
    let data = serde_json::json!({ "userId": t.user_id, "deviceId": t.device_id, "at": t.at_ms });
    node.webhooks.emit(kind, data);
    node.writer.record(Record::Presence(PresenceLog {
        user_id: t.user_id.clone(),
        device_id: t.device_id.clone(),
        status: t.status.as_str().to_owned(),
        at_ms: t.at_ms as i64,
    }));
    announce(node, t).await;
}

/// The user already has as many connections as they may.
#[derive(Debug)]
pub struct AtCap;

/// Registers a new session cluster-wide unless its user is at `max` connections, counted in
/// the same atomic step (on this instance alone while shared state is down). `Ok` carries the
/// user's `online` transition if this is their first session, for the caller to announce
/// (`transition`) once the session is live locally.
pub async fn admit(
    node: &Node,
    rec: &SocketRecord,
    max: usize,
) -> Result<Option<Transition>, AtCap> {
    match bounded(node.presence.register_capped(rec, max)).await {
        Ok(Registered::Added(online)) => Ok(online),
        Ok(Registered::Full) => Err(AtCap),
        Err(e) => {
            node.backends.mark_degraded("register", &e);
            // The liveness loop registers it once shared state answers again.
            if node.hub.count_user(&rec.user_id) >= max { Err(AtCap) } else { Ok(None) }
        }
    }
}

/// Registers a live session cluster-wide again (after an outage); announces the user's
/// `online` if it is their first.
pub async fn register(node: &Node, rec: &SocketRecord) {
    match bounded(node.presence.register(rec)).await {
        Ok(Some(t)) => transition(node, &t).await,
        Ok(None) => {}
        Err(e) => node.backends.mark_degraded("register", &e),
    }
}

/// Unregisters a session cluster-wide; announces the user's `offline` if it was their last.
/// A call that found Redis unreachable leaves the socket to the resync (`resync::Unsettled`).
pub async fn unregister(node: &Node, rec: &SocketRecord) {
    match bounded(node.presence.unregister(rec)).await {
        Ok(Some(t)) => transition(node, &t).await,
        Ok(None) => {}
        Err(e) => {
            node.backends.mark_degraded("unregister", &e);
            // Only an outage leads to a resync; any other failure would wait for the next.
            if e.is_outage() {
                node.backends.unsettled.add(rec.clone());
            }
        }
    }
}

/// Announces this instance to the cluster: first liveness refresh and channel subscriptions.
/// A failure leaves the node degraded; the liveness loop retries.
pub async fn join(node: &Node) {
    let ttl = node.config.liveness_ttl;
    let joined = async {
        bounded(node.presence.heartbeat(&node.incarnation, ttl)).await?;
        bounded(node.fanout.subscribe_base()).await?;
        // After subscribing: a revocation announced from now on arrives as a command, one
        // stored before is in the load.
        reload_revocations(node).await
    };
    if let Err(e) = joined.await {
        node.backends.mark_degraded("join", &e);
    }
}

/// Merges the stored revocations into this instance's copy (which also forgets lapsed
/// ones). At join, after an outage, and on every cleanup run: the last covers a revocation
/// whose cluster command this instance missed (the broker delivers at most once).
pub async fn reload_revocations(node: &Node) -> Result<(), StateError> {
    let marks = bounded(node.revocations.marks()).await?;
    node.revoked.merge_all(&marks);
    Ok(())
}

/// How often the liveness loop probes while shared state is down: calls fail at once until a
/// probe sees Redis answer, so this bounds how long sessions run without it after it is back.
const DOWN_PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Refreshes this instance's liveness every third of its TTL (and probes every
/// `DOWN_PROBE_PERIOD` while shared state is down), and resynchronizes after an outage. Runs
/// until shutdown.
pub async fn liveness_loop(node: Arc<Node>) {
    let ttl = node.config.liveness_ttl;
    let period = (ttl / 3).max(Duration::from_millis(50));
    loop {
        let alive = async {
            bounded(node.presence.heartbeat(&node.incarnation, ttl)).await?;
            bounded(node.fanout.ping()).await
        };
        match alive.await {
            Ok(()) if node.backends.clear_degraded() => {
                tracing::info!("shared state reachable again; resynchronizing this instance");
                if let Err(e) = resync(&node).await {
                    node.backends.mark_degraded("resync", &e);
                }
            }
            Ok(()) => {}
            Err(e) => node.backends.mark_degraded("liveness", &e),
        }
        let wait = if node.backends.is_degraded() { period.min(DOWN_PROBE_PERIOD) } else { period };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // Another call found Redis unreachable: probe now, then every DOWN_PROBE_PERIOD.
            _ = node.backends.health.went_down() => {}
            _ = node.shutdown.cancelled() => return,
        }
    }
}

/// The last step of a graceful exit, once every session has ended: forgets this incarnation
/// in shared state at once (its liveness marker and its entry among the known instances),
/// instead of leaving both for another instance's reaper. The sessions that ended in the drain
/// did not unregister one by one: their sockets are removed here, a chunk per call (so it may
/// take longer than one state call; bounded by the shutdown grace), and their users'
/// transitions announced.
pub async fn leave(node: &Node) {
    let within = node.config.shutdown_grace.clamp(STATE_TIMEOUT, crate::state::REAP_TIMEOUT);
    match bounded_for(within, node.presence.leave(&node.incarnation)).await {
        Ok(Some(r)) => {
            tracing::info!(sockets = r.sockets.len(), "left the cluster");
            for t in &r.offline {
                transition(node, t).await;
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not leave the cluster; the reaper will"),
    }
    // Every subscription has ended (each took its count back); this drops what drifted.
    if let Ok(vacated) = bounded(node.occupancy.forget_instance(&node.incarnation)).await {
        for channel in vacated {
            node.webhooks.emit("channel.vacated", crate::channels::occupancy_event(&channel));
        }
    }
    // Deliveries to other instances are queued, not awaited: the last ones (the offline
    // updates above, the drained sessions' leaves) go out before the process ends.
    node.fanout.flush().await;
}

/// The periodic cleanup job: reaps instances whose liveness expired (their users go offline,
/// announced once cluster-wide) and prunes in-memory limiter state. Safe on every instance.
pub async fn cleanup_loop(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(node.config.cleanup_interval) => {}
            _ = node.shutdown.cancelled() => return,
        }
        cleanup_once(&node).await;
    }
}

pub async fn cleanup_once(node: &Node) {
    // A dead instance's sockets are reaped a chunk per call: more than one call's time.
    match bounded_for(crate::state::REAP_TIMEOUT, node.presence.reap_dead_instances()).await {
        Ok(reaped) => {
            for r in reaped {
                tracing::warn!(instance = %r.instance_id, sockets = r.sockets.len(), "reaped a dead instance");
                node.writer.record(Record::InstanceLost {
                    instance: r.instance_id.clone(),
                    at_ms: now_ms() as i64,
                });
                match bounded(node.occupancy.forget_instance(&r.instance_id)).await {
                    Ok(vacated) => {
                        for channel in vacated {
                            let data = crate::channels::occupancy_event(&channel);
                            node.webhooks.emit("channel.vacated", data);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "forgetting a dead instance's channels failed")
                    }
                }
                for s in &r.sockets {
                    node.webhooks.emit("session.disconnected", session_event(s, "instance_lost"));
                }
                for t in &r.offline {
                    transition(node, t).await;
                }
            }
        }
        Err(e) => node.backends.mark_degraded("cleanup", &e),
    }
    if let Some(limiter) = &node.backends.memory_limiter {
        limiter.retain_recent();
    }
    if let Some((history, presence)) = &node.backends.memory_channels {
        history.prune();
        presence.prune();
    }
    if let Some((revocations, idempotency)) = &node.backends.memory_api {
        revocations.prune();
        idempotency.prune();
    }
    if let Err(e) = reload_revocations(node).await {
        node.backends.mark_degraded("revocations reload", &e);
    }
    node.admission.prune();
    retention(node).await;
}

/// Most retention batches one cleanup run deletes per table, so one run stays short; the
/// next run continues.
const MAX_RETENTION_BATCHES: u32 = 100;

/// Deletes history past its retention, in bounded batches.
async fn retention(node: &Node) {
    let cfg = &node.config;
    let now = now_ms() as i64;
    let batch = cfg.retention_batch.max(1);
    let conn_cutoff = now - cfg.connection_retention.as_millis() as i64;
    let presence_cutoff = now - cfg.presence_retention.as_millis() as i64;
    let store = &node.store;
    let connections =
        drain("socket_connections", batch, || store.delete_connections_before(conn_cutoff, batch))
            .await;
    let presence =
        drain("presence_logs", batch, || store.delete_presence_before(presence_cutoff, batch))
            .await;
    let unused_cutoff = now - cfg.history_meta_ttl.as_millis() as i64;
    let channel_history = drain("channel_publications", batch, || {
        store.delete_expired_channel_history(now, unused_cutoff, batch)
    })
    .await;
    let webhook_cutoff = now - cfg.webhooks.retention.as_millis() as i64;
    let outbox = store.outbox();
    let webhooks =
        drain("webhook_outbox", batch, || outbox.delete_finished_before(webhook_cutoff, batch))
            .await;
    if connections + presence + channel_history + webhooks > 0 {
        tracing::info!(
            connections,
            presence,
            channel_history,
            webhooks,
            "retention removed old history"
        );
    }
}

/// Repeats one bounded delete until it comes back short (or `MAX_RETENTION_BATCHES`, so one
/// run stays short); returns how many rows went.
async fn drain<F, Fut>(table: &str, batch: u32, delete: F) -> u64
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, crate::store::StoreError>>,
{
    let mut total = 0;
    for _ in 0..MAX_RETENTION_BATCHES {
        match delete().await {
            Ok(n) => {
                total += n;
                if n < u64::from(batch) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, table, "retention failed");
                break;
            }
        }
    }
    total
}
