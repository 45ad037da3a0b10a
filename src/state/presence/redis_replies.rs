//! Redis replies of the presence backend (`super::redis`) turned into the store's types: a
//! shape we did not expect is a protocol error (the keys were written by something else),
//! never a panic.

use std::collections::{HashMap, HashSet};

use redis::{FromRedisValue, Value};

use super::{SocketRecord, Status, Transition, UserPresence};
use crate::state::StateError;

/// Converts a reply, reporting a shape we did not expect as a protocol error rather than a
/// Redis failure: it means the keys were written by something else.
pub(super) fn decode<T: FromRedisValue>(reply: Value, what: &str) -> Result<T, StateError> {
    redis::from_redis_value(reply).map_err(|e| StateError::Protocol(format!("{what}: {e}")))
}

/// The transition a script reported, if any: scripts answer a transition's version, or 0
/// for none (versions start far above 0, at the clock in µs).
pub(super) fn transition(
    socket: &SocketRecord,
    status: Status,
    version: u64,
    at_ms: u64,
) -> Option<Transition> {
    (version > 0).then(|| Transition {
        user_id: socket.user_id.clone(),
        device_id: socket.device_id.clone(),
        status,
        at_ms,
        version,
    })
}

/// Builds a record from its hash; `None` when the hash is gone (removed between the index read
/// and this one).
pub(super) fn record_from_hash(
    socket_id: String,
    mut fields: HashMap<String, String>,
) -> Result<Option<SocketRecord>, StateError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StateError::Protocol(format!("socket {socket_id}: no field {name}")))
    };
    let user_id = take("user")?;
    let device_id = take("device")?;
    let transport = take("transport")?;
    let instance_id = take("instance")?;
    let connected_at = take("connected_at")?;
    let connected_at_ms = connected_at.parse().map_err(|_| {
        StateError::Protocol(format!("socket {socket_id}: connected_at {connected_at:?}"))
    })?;
    Ok(Some(SocketRecord {
        socket_id,
        user_id,
        device_id,
        transport,
        instance_id,
        connected_at_ms,
    }))
}

pub(super) fn presence_from_devices(
    user_id: &str,
    devices: &[String],
    version: u64,
) -> UserPresence {
    let distinct: HashSet<&String> = devices.iter().collect();
    UserPresence {
        user_id: user_id.to_owned(),
        online: !devices.is_empty(),
        devices: distinct.len(),
        sockets: devices.len(),
        version,
    }
}
