//! The session's registration: in the hub, in shared state and in the connection log, from
//! the moment it is admitted until it ends, on every exit path.

use std::sync::Arc;

use tracing::Instrument;

use super::SessionCtx;
use crate::{
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
    pub(super) record: SocketRecord,
    kind: TransportKind,
    /// Why the session ended, for the connection log. Stays `server_error` if the session
    /// unwinds from a panic.
    pub(super) reason: &'static str,
}

impl Registration {
    pub(super) fn new(ctx: &Arc<SessionCtx>) -> Self {
        let entry = SessionEntry {
            user_id: ctx.user_id.clone(),
            device_id: ctx.device_id.clone(),
            transport: ctx.peer.kind,
            connected_at_ms: now_ms(),
            outbound: ctx.outbound.clone(),
            token: ctx.token.clone(),
            ctx: Arc::downgrade(ctx),
        };
        let record = crate::cluster::record(&ctx.node, &ctx.socket_id, &entry);
        ctx.node.writer.record(Record::Opened(ConnectionOpened {
            socket_id: record.socket_id.clone(),
            user_id: record.user_id.clone(),
            device_id: record.device_id.clone(),
            transport: record.transport.clone(),
            ip_address: ctx.peer.remote.ip().to_string(),
            user_agent: ctx.peer.user_agent.clone(),
            server_instance: record.instance_id.clone(),
            connected_at_ms: record.connected_at_ms as i64,
        }));
        ctx.node.hub.insert(ctx.socket_id.clone(), entry);
        ctx.node.webhooks.emit("session.connected", crate::cluster::session_event(&record, ""));
        metrics::connected(ctx.peer.kind);
        Self {
            node: ctx.node.clone(),
            record,
            kind: ctx.peer.kind,
            reason: Code::ServerError.as_str(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Local state goes now, synchronously; shared state in a tracked task, so graceful
        // shutdown waits for it and a panic cannot skip it.
        self.node.hub.remove(&self.record.socket_id);
        let emptied_conversations = self.node.chat.remove_socket(&self.record.socket_id);
        let socket_id: Arc<str> = Arc::from(self.record.socket_id.as_str());
        let channels = self.node.channels.session_closed(&socket_id);
        metrics::disconnected(self.kind, self.reason);
        self.node
            .webhooks
            .emit("session.disconnected", crate::cluster::session_event(&self.record, self.reason));
        self.node.writer.record(Record::Closed(ConnectionClosed {
            socket_id: self.record.socket_id.clone(),
            disconnected_at_ms: now_ms() as i64,
            reason: self.reason.to_owned(),
        }));
        let node = self.node.clone();
        let record = std::mem::take(&mut self.record);
        let teardown = async move {
            for conversation in emptied_conversations {
                node.fanout.release_conversation(&conversation).await;
            }
            if let Some(channels) = channels {
                channels.await;
            }
            crate::cluster::unregister(&node, &record).await;
        };
        self.node.sessions.spawn(teardown.instrument(tracing::Span::current()));
    }
}
