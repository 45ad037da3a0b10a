//! The session's registration: in the hub, in shared state and in the connection log, from
//! the moment it is admitted until it ends, on every exit path.

use std::sync::Arc;

use tracing::Instrument;

use super::SessionCtx;
use crate::{
    cluster::AtCap,
    hub::SessionEntry,
    node::Node,
    protocol::Code,
    state::{now_ms, presence::SocketRecord},
    store::{ConnectionClosed, ConnectionOpened, writer::Record},
    telemetry::metrics,
    transport::TransportKind,
};

/// Keeps the session registered — in the hub, and in shared state — for exactly as long as
/// it is live, on every exit path (including a panic unwinding through the session).
pub(super) struct Registration {
    node: Arc<Node>,
    // What shared state knows of the session, kept as the context's shared strings rather than
    // a `SocketRecord` (five owned strings, ~250 B per idle session); the record is rebuilt
    // when the session ends.
    socket_id: Arc<str>,
    user_id: Arc<str>,
    device_id: Arc<str>,
    kind: TransportKind,
    connected_at_ms: u64,
    /// Why the session ended, for the connection log. Stays `server_error` if the session
    /// unwinds from a panic.
    pub(super) reason: &'static str,
}

impl Registration {
    /// Registers the session in shared state unless its user is at the per-user cap (counted
    /// cluster-wide in the same step), then locally: hub, connection log, `session.connected`,
    /// and the user's `online` if this is their first session. `Err` when refused at the cap;
    /// then nothing was registered.
    pub(super) async fn admit(ctx: &Arc<SessionCtx>) -> Result<Self, AtCap> {
        let node = &ctx.node;
        let entry = SessionEntry {
            user_id: ctx.user_id.clone(),
            device_id: ctx.device_id.clone(),
            transport: ctx.peer.kind,
            connected_at_ms: now_ms(),
            outbound: ctx.outbound.clone(),
            token: ctx.token.clone(),
            ctx: Arc::downgrade(ctx),
        };
        let record = crate::cluster::record(node, &ctx.socket_id, &entry);
        let max = node.config.max_connections_per_user;
        // Before anything local: a refused session leaves nothing to undo.
        let online = crate::cluster::admit(node, &record, max).await?;
        let this = Self {
            node: node.clone(),
            socket_id: ctx.socket_id.clone(),
            user_id: ctx.user_id.clone(),
            device_id: ctx.device_id.clone(),
            kind: ctx.peer.kind,
            connected_at_ms: entry.connected_at_ms,
            reason: Code::ServerError.as_str(),
        };
        node.writer.record(Record::Opened(ConnectionOpened {
            socket_id: record.socket_id.clone(),
            user_id: record.user_id.clone(),
            device_id: record.device_id.clone(),
            transport: record.transport.clone(),
            ip_address: ctx.peer.remote.ip().to_string(),
            user_agent: ctx.peer.user_agent.clone(),
            server_instance: record.instance_id.clone(),
            connected_at_ms: record.connected_at_ms as i64,
        }));
        node.hub.insert(ctx.socket_id.clone(), entry);
        node.webhooks.emit("session.connected", crate::cluster::session_event(&record, ""));
        metrics::connected(ctx.peer.kind);
        if let Some(online) = online {
            crate::cluster::transition(node, &online).await;
        }
        Ok(this)
    }

    fn record(&self) -> SocketRecord {
        crate::cluster::socket_record(
            &self.node,
            &self.socket_id,
            &self.user_id,
            &self.device_id,
            self.kind,
            self.connected_at_ms,
        )
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Local state goes now, synchronously; shared state in a tracked task, so graceful
        // shutdown waits for it and a panic cannot skip it.
        let unwatched = self.node.hub.remove(&self.socket_id);
        let emptied_conversations = self.node.chat.remove_socket(&self.socket_id);
        let channels = self.node.channels.session_closed(&self.socket_id);
        let record = self.record();
        metrics::disconnected(self.kind, self.reason);
        self.node
            .webhooks
            .emit("session.disconnected", crate::cluster::session_event(&record, self.reason));
        self.node.writer.record(Record::Closed(ConnectionClosed {
            socket_id: record.socket_id.clone(),
            disconnected_at_ms: now_ms() as i64,
            reason: self.reason.to_owned(),
        }));
        let node = self.node.clone();
        let teardown = async move {
            for conversation in emptied_conversations {
                node.fanout.release_conversation(&conversation).await;
            }
            for user in unwatched {
                node.fanout.release_user(&user).await;
            }
            if let Some(channels) = channels {
                channels.await;
            }
            // A draining instance leaves shared state in one step after its sessions
            // (`cluster::leave`, in chunks): 100,000 unregisters at once would queue on the one
            // shard that holds presence, past the state timeout.
            if !node.shutdown.is_cancelled() {
                crate::cluster::unregister(&node, &record).await;
            }
        };
        self.node.sessions.spawn(teardown.instrument(tracing::Span::current()));
    }
}
