//! Coming back after a shared-state outage: the resync that rewrites this instance's view into
//! Redis, and the sockets whose unregister failed meanwhile (`Unsettled`), whose users' offline
//! it announces.
//!
//! An unregister can fail two ways: refused or never delivered (Redis did not run it), or run
//! by Redis with its reply lost on a connection that broke. In the first case the socket is
//! still registered and removing it now announces the offline as usual. In the second, Redis
//! removed the socket and decided the transition, but nobody announced it: the user's current
//! state is announced instead, with a snapshot version, which orders after the lost transition
//! (and is ignored by a watcher that already has something newer), once per user. A socket is
//! also gone when another instance's reaper took it (this instance was out of reach for longer
//! than its liveness): that reaper announced it, so it is left alone (`PresenceStore::reaped`).

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use super::{bounded, record, register, reload_revocations, transition, unregister};
use crate::{
    node::Node,
    state::{
        StateError, now_ms,
        presence::{SocketRecord, Status, Transition},
    },
};

/// Sockets kept at most: past it the oldest go (the index-driven pass of `resync` still removes
/// theirs when Redis did not; only a lost reply's announcement is then missed).
const UNSETTLED_CAP: usize = 100_000;

/// Sockets whose unregister failed, for the next resync.
#[derive(Debug, Default)]
pub struct Unsettled {
    records: Mutex<VecDeque<SocketRecord>>,
}

impl Unsettled {
    pub fn add(&self, rec: SocketRecord) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= UNSETTLED_CAP {
            records.pop_front();
        }
        records.push_back(rec);
    }

    fn take(&self) -> VecDeque<SocketRecord> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back, ahead of any added since, what a failed resync did not settle.
    fn restore(&self, mut rest: VecDeque<SocketRecord>) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        rest.append(&mut records);
        *records = rest;
    }
}

/// Rewrites this instance's view into shared state: resubscribes its channels, registers
/// every live local session (a restarted Redis lost them), settles the sockets whose
/// unregister failed, and removes entries of sessions that ended while the backend was
/// unreachable.
pub async fn resync(node: &Node) -> Result<(), StateError> {
    bounded(node.fanout.subscribe_base()).await?;
    reload_revocations(node).await?;
    // A Redis that restarted empty lost channel presence too; refreshes keep only entries
    // that still exist, so put this instance's back.
    node.channels.restore_presence().await?;
    let local = node.hub.sessions();
    let live: HashSet<&str> = local.iter().map(|(id, _)| &**id).collect();
    for (id, entry) in &local {
        register(node, &record(node, id, entry)).await;
    }
    let mut settled = HashSet::new();
    let mut announced = HashSet::new();
    let mut unsettled = node.backends.unsettled.take().into_iter();
    while let Some(rec) = unsettled.next() {
        if let Err(e) = settle(node, &rec, &mut announced).await {
            node.backends.unsettled.restore(std::iter::once(rec).chain(unsettled).collect());
            return Err(e);
        }
        settled.insert(rec.socket_id);
    }
    for (socket_id, user_id) in
        bounded(node.presence.sockets_of_instance(&node.incarnation)).await?
    {
        if live.contains(socket_id.as_str()) || settled.contains(&socket_id) {
            continue;
        }
        // The stored record, not one made up from the index: the transition carries the
        // record's device, and the session that knew it has ended. Rare (after an outage),
        // so the extra read is no cost.
        if let Some(rec) = bounded(node.presence.socket(&user_id, &socket_id)).await? {
            unregister(node, &rec).await;
        }
    }
    Ok(())
}

/// Removes a socket whose unregister failed, or, when Redis already had (the reply was lost),
/// announces its user's `offline` if they are still offline and not `announced` yet in this
/// resync. A socket a reaper removed was announced by it.
async fn settle(
    node: &Node,
    rec: &SocketRecord,
    announced: &mut HashSet<String>,
) -> Result<(), StateError> {
    if let Some(t) = bounded(node.presence.unregister(rec)).await? {
        transition(node, &t).await;
        announced.insert(rec.user_id.clone());
        return Ok(());
    }
    if announced.contains(&rec.user_id) || bounded(node.presence.reaped(rec)).await? {
        return Ok(());
    }
    let now = bounded(node.presence.query(std::slice::from_ref(&rec.user_id))).await?;
    if let Some(p) = now.into_iter().next().filter(|p| !p.online) {
        let offline = Transition {
            user_id: rec.user_id.clone(),
            device_id: rec.device_id.clone(),
            status: Status::Offline,
            at_ms: now_ms(),
            version: p.version,
            watched: true,
        };
        transition(node, &offline).await;
        announced.insert(rec.user_id.clone());
    }
    Ok(())
}
