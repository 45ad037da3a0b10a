//! Commands the application's backend gives through the server API that act on sessions
//! wherever they are in the cluster: disconnect a user or one session, end sessions whose
//! token was revoked, unsubscribe a user from a channel. The instance that takes the API call
//! applies the command to its own sessions and publishes it on the broker's cluster-wide
//! topic; every other instance applies it to its own (`run`). Commands are idempotent, so a
//! duplicate does no harm. A revocation lost with the broker reaches the instance with the
//! next reload of the revocations (`cluster::reload_revocations`; until then a revoked
//! session there lives on); a lost disconnect is not recovered.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    channels::frames::Unsubscribe,
    node::Node,
    protocol::Code,
    state::{
        StateError,
        revocation::{self, Mark},
    },
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// End `user`'s sessions (or the one session `session`).
    Disconnect { user: String, session: Option<String>, reconnect: bool, message: String },
    /// Know `user`'s tokens issued at or before `before` (seconds) as revoked until `until`
    /// (Unix ms), and end the sessions using them.
    RevokeUser {
        user: String,
        before: u64,
        #[serde(default = "revocation::default_until")]
        until: u64,
    },
    /// Know the token with this `jti` as revoked until `until`, and end the sessions using it.
    RevokeToken {
        jti: String,
        #[serde(default = "revocation::default_until")]
        until: u64,
    },
    /// End `user`'s subscriptions to `channel` (on one session when `session` is given).
    Unsubscribe { user: String, channel: String, session: Option<String> },
    /// Subscribe `user`'s sessions (or one) to `channel`, unless already subscribed.
    Subscribe { user: String, channel: String, session: Option<String> },
}

impl Command {
    /// Applies the command to this instance's sessions; returns how many it reached.
    pub async fn apply(&self, node: &Node) -> usize {
        let hub = &node.hub;
        match self {
            Command::Disconnect { user, session, reconnect, message } => {
                let code = if *reconnect { Code::ForceReconnect } else { Code::ForceDisconnect };
                let one = session.as_deref();
                hub.kick(Some(user), |id, _| one.is_none_or(|s| s == id), code, message)
            }
            // The instance's copy learns the mark before the sweep: a session admitted after
            // the sweep was checked against it.
            Command::RevokeUser { user, before, until } => {
                node.revoked.merge(&Mark::User {
                    user: user.clone(),
                    before: *before,
                    until_ms: *until,
                });
                hub.kick(
                    Some(user),
                    |_, entry| entry.token.issued_by(*before),
                    Code::TokenRevoked,
                    "token revoked",
                )
            }
            Command::RevokeToken { jti, until } => {
                node.revoked.merge(&Mark::Token { jti: jti.clone(), until_ms: *until });
                hub.kick(
                    None,
                    |_, entry| entry.token.has_jti(jti),
                    Code::TokenRevoked,
                    "token revoked",
                )
            }
            Command::Unsubscribe { user, channel, session } => {
                let mut n = 0;
                for socket in hub.sockets_of(user) {
                    if session.as_deref().is_some_and(|s| s != &*socket)
                        || !node.channels.is_subscribed(&socket, channel)
                    {
                        continue;
                    }
                    node.channels.end(&socket, channel, Some(Unsubscribe::Unsubscribed)).await;
                    n += 1;
                }
                n
            }
            Command::Subscribe { user, channel, session } => {
                let mut n = 0;
                for ctx in hub.contexts_of(user) {
                    if session.as_deref().is_some_and(|s| s != &*ctx.socket_id)
                        || node.channels.is_subscribed(&ctx.socket_id, channel)
                    {
                        continue;
                    }
                    match crate::channels::events::server_subscribe(ctx, channel).await {
                        Ok(()) => n += 1,
                        Err(e) => {
                            tracing::info!(channel, error = %e, "server-side subscribe refused")
                        }
                    }
                }
                n
            }
        }
    }
}

/// Applies `cmd` here and sends it to every other instance. Returns the sessions reached on
/// this instance.
pub async fn broadcast(node: &Node, cmd: &Command) -> Result<usize, StateError> {
    let local = cmd.apply(node).await;
    let body = serde_json::to_vec(cmd).map_err(|e| StateError::Protocol(e.to_string()))?;
    node.fanout.command(Bytes::from(body)).await?;
    Ok(local)
}

/// Applies the commands other instances publish, until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let Some(mut rx) = node.fanout.take_commands() else { return };
    loop {
        let body = tokio::select! {
            b = rx.recv() => match b { Some(b) => b, None => return },
            _ = node.shutdown.cancelled() => return,
        };
        match serde_json::from_slice::<Command>(&body) {
            Ok(cmd) => {
                let n = cmd.apply(&node).await;
                tracing::debug!(?cmd, sessions = n, "applied a cluster command");
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed cluster command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance of the release before revocations carried `until` still announces them:
    /// they are kept for the default time.
    #[test]
    fn a_revocation_without_until_is_kept_for_the_default_time() {
        let before_default = revocation::default_until();
        let cmd: Command =
            serde_json::from_str(r#"{"op":"revoke_user","user":"u","before":5}"#).unwrap();
        let Command::RevokeUser { until, .. } = cmd else { panic!("{cmd:?}") };
        assert!((before_default..=revocation::default_until()).contains(&until));
        let cmd: Command = serde_json::from_str(r#"{"op":"revoke_token","jti":"j"}"#).unwrap();
        assert!(matches!(cmd, Command::RevokeToken { until, .. } if until >= before_default));
    }
}
