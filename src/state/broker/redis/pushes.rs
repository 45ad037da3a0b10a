//! The subscriber connection's pushes, turned into [`Message`]s for the fanout layer (and a
//! sharded channel's `sunsubscribe` into a resubscription, on a cluster).

use std::sync::Arc;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::names::parse_channel_name;
use super::{Follow, follow_slot_moves};
use crate::state::broker::Message;

/// Forwards published messages from the subscriber connection to the broker's receiver until
/// the receiver is dropped.
pub(super) async fn translate(
    prefix: String,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    out: mpsc::UnboundedSender<Message>,
    follow: Option<Arc<Follow>>,
) {
    while let Some(push) = pushes.recv().await {
        if push.kind == PushKind::SUnsubscribe
            && let Some(follow) = &follow
        {
            // Also the confirmation of our own `sunsubscribe`: the task then finds the channel
            // no longer wanted once that call released the lock.
            if let Some(Value::BulkString(name)) = push.data.first()
                && let Some(channel) = parse_channel_name(&prefix, name)
            {
                tokio::spawn(follow_slot_moves(follow.clone(), channel));
            }
            continue;
        }
        if push.kind != PushKind::Message && push.kind != PushKind::SMessage {
            // Subscribe/unsubscribe confirmations and disconnections: the connection
            // already acts on them (resubscription, reconnection).
            tracing::debug!(kind = ?push.kind, "broker: ignoring redis push");
            continue;
        }
        let Some(message) = decode_message(&prefix, push.data) else {
            continue;
        };
        if out.send(message).is_err() {
            tracing::debug!("broker: receiver dropped; stopping translation");
            return;
        }
    }
}

/// `data` of a `message` (or sharded `smessage`) push is `[channel, payload]`.
pub(super) fn decode_message(prefix: &str, data: Vec<Value>) -> Option<Message> {
    let mut data = data.into_iter();
    let (Some(Value::BulkString(name)), Some(Value::BulkString(payload)), None) =
        (data.next(), data.next(), data.next())
    else {
        tracing::debug!("broker: malformed message push ignored");
        return None;
    };
    let Some(channel) = parse_channel_name(prefix, &name) else {
        tracing::debug!(
            channel = %String::from_utf8_lossy(&name),
            "broker: message on unknown channel ignored"
        );
        return None;
    };
    Some(Message { channel, payload: Bytes::from(payload) })
}
