//! Redis replies of the presence backend (`super::redis`) turned into the store's types: a
//! shape we did not expect is a protocol error (the keys were written by something else),
//! never a panic.

use std::collections::HashSet;

use redis::{FromRedisValue, Value};

use super::{SocketRecord, Status, Transition, UserPresence};
use crate::state::StateError;

/// Converts a reply, reporting a shape we did not expect as a protocol error rather than a
/// Redis failure: it means the keys were written by something else.
pub(super) fn decode<T: FromRedisValue>(reply: Value, what: &str) -> Result<T, StateError> {
    redis::from_redis_value(reply).map_err(|e| StateError::Protocol(format!("{what}: {e}")))
}

/// The transition a script reported, if any: scripts answer a transition's version, or 0
/// for none (versions start far above 0, at the clock in µs); `watched` as in `Transition`.
pub(super) fn transition(
    socket: &SocketRecord,
    status: Status,
    version: u64,
    watched: bool,
    at_ms: u64,
) -> Option<Transition> {
    (version > 0).then(|| Transition {
        user_id: socket.user_id.clone(),
        device_id: socket.device_id.clone(),
        status,
        at_ms,
        version,
        watched,
    })
}

/// A socket's entry (`super::redis::record_value`) as its connected_at, transport, instance
/// and device: the one place that reads the format.
fn fields(value: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = value.splitn(4, ' ');
    Some((parts.next()?, parts.next()?, parts.next()?, parts.next()?))
}

/// Builds a socket's record from its entry in the user's hash.
pub(super) fn record_from_value(
    socket_id: String,
    user_id: String,
    value: &str,
) -> Result<SocketRecord, StateError> {
    let bad = || StateError::Protocol(format!("socket {socket_id}: entry {value:?}"));
    let (connected_at, transport, instance_id, device_id) = fields(value).ok_or_else(bad)?;
    let connected_at_ms = connected_at.parse().map_err(|_| bad())?;
    Ok(SocketRecord {
        socket_id,
        user_id,
        device_id: device_id.to_owned(),
        transport: transport.to_owned(),
        instance_id: instance_id.to_owned(),
        connected_at_ms,
    })
}

/// The device of a socket's entry.
pub(super) fn device_of(value: &str) -> Result<&str, StateError> {
    fields(value)
        .map(|(_, _, _, device)| device)
        .ok_or_else(|| StateError::Protocol(format!("socket entry {value:?}")))
}

/// A user's presence from the entries of their hash (one per socket).
pub(super) fn presence_from_entries(
    user_id: &str,
    entries: &[String],
    version: u64,
) -> Result<UserPresence, StateError> {
    let distinct: HashSet<&str> = entries.iter().map(|e| device_of(e)).collect::<Result<_, _>>()?;
    Ok(UserPresence {
        user_id: user_id.to_owned(),
        online: !entries.is_empty(),
        devices: distinct.len(),
        sockets: entries.len(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::presence::redis::record_value;

    #[test]
    fn a_record_survives_its_entry() {
        let record = SocketRecord {
            socket_id: "s1".into(),
            user_id: "alice".into(),
            device_id: "phone:2".into(),
            transport: "webtransport".into(),
            instance_id: "rtg-a1#0f3c".into(),
            connected_at_ms: 1_764_000_000_123,
        };
        let entry = record_value(&record);
        assert_eq!(record_from_value("s1".into(), "alice".into(), &entry).unwrap(), record);
        assert_eq!(device_of(&entry).unwrap(), "phone:2");
    }

    #[test]
    fn an_entry_of_another_shape_is_a_protocol_error() {
        for entry in ["", "phone", "12 websocket rtg-a", "soon websocket rtg-a phone"] {
            assert!(matches!(
                record_from_value("s1".into(), "alice".into(), entry),
                Err(StateError::Protocol(_))
            ));
        }
        assert!(matches!(device_of("phone"), Err(StateError::Protocol(_))));
    }
}
