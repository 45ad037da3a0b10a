//! The proxy kinds' requests and answers, and where each plugs in: `rpc` is an event of its
//! own, registered here; `connect` runs in the handshake, `refresh` off the session's timer,
//! `subscribe` in channel authorization and `publish` before a client publication is stored
//! (the callers are in `session` and `channels`; the shapes are here, in one place).

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ProxyError, ProxyKind};
use crate::{
    auth::Identity,
    dispatch::{EventError, Router},
    node::Node,
    session::SessionCtx,
    transport::PeerInfo,
    validate::{Dto, FieldError},
};

/// Registers `rpc` when an RPC proxy is configured (otherwise it stays an unknown event).
pub fn register(router: Router, config: &crate::config::Config) -> Router {
    if config.proxy.rpc_url.is_none() {
        return router;
    }
    router.on("rpc", rpc)
}

/// `connect`: who the connection is, from its upgrade's headers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectRequest<'a> {
    client: &'a str,
    transport: &'a str,
    remote: String,
    /// The headers listed in `--proxy-headers` that the request carried.
    headers: BTreeMap<&'a str, &'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectResult {
    user: String,
    /// Unix seconds when the session ends (refreshed through the refresh proxy); none: never.
    expire_at: Option<u64>,
    /// As the token claim `channels`.
    #[serde(default)]
    channels: Vec<String>,
}

/// Sessions the backend lets live without an expiry end at this far-off time.
const NEVER: u64 = 1 << 40;

/// Asks the connect proxy who the client of `peer` is.
pub async fn connect(node: &Node, client: &str, peer: &PeerInfo) -> Result<Identity, ProxyError> {
    let request = ConnectRequest {
        client,
        transport: peer.kind.as_str(),
        remote: peer.remote.ip().to_string(),
        headers: peer.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
    };
    let url = node.proxies.config().connect_url.as_deref();
    let result: ConnectResult = node.proxies.call(ProxyKind::Connect, url, &request).await?;
    let user_ok = !result.user.is_empty()
        && result.user.len() <= 128
        && !result.user.chars().any(char::is_control);
    if !user_ok || result.channels.len() > crate::auth::MAX_CHANNEL_CLAIMS {
        return Err(ProxyError::BadReply(
            "`user` must be 1 to 128 bytes, `channels` at most 64".into(),
        ));
    }
    Ok(Identity {
        user_id: result.user,
        device_id: None,
        expires_at: result.expire_at.unwrap_or(NEVER),
        admin: false,
        // Made now: a revocation of the user's tokens "issued before" now covers it.
        issued_at: Some(crate::state::now_ms() / 1000),
        jti: None,
        channels: result.channels,
        proxied: true,
    })
}

#[derive(Serialize)]
struct RefreshRequest<'a> {
    client: &'a str,
    user: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshResult {
    expire_at: Option<u64>,
    #[serde(default)]
    expired: bool,
}

/// Asks the refresh proxy to extend a session the connect proxy made; the new expiry (Unix
/// seconds), or `None` when the backend lets it expire.
pub async fn refresh(ctx: &SessionCtx) -> Result<Option<u64>, ProxyError> {
    let request = RefreshRequest { client: &ctx.socket_id, user: &ctx.user_id };
    let url = ctx.node.proxies.config().refresh_url.as_deref();
    let result: RefreshResult = ctx.node.proxies.call(ProxyKind::Refresh, url, &request).await?;
    Ok(if result.expired { None } else { Some(result.expire_at.unwrap_or(NEVER)) })
}

#[derive(Serialize)]
struct SubscribeRequest<'a> {
    client: &'a str,
    user: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeResult {
    /// Attached to the subscriber's presence entry, as a subscription token's `info`.
    info: Option<Box<RawValue>>,
}

/// Asks the subscribe proxy (`url`) whether `ctx` may subscribe to `channel`; the presence
/// info it attaches, if any.
pub async fn subscribe(
    ctx: &SessionCtx,
    url: Option<&str>,
    channel: &str,
    data: Option<&RawValue>,
) -> Result<Option<String>, EventError> {
    let request = SubscribeRequest { client: &ctx.socket_id, user: &ctx.user_id, channel, data };
    let result: SubscribeResult =
        ctx.node.proxies.call(ProxyKind::Subscribe, url, &request).await?;
    Ok(result.info.map(|i| i.get().to_owned()))
}

#[derive(Serialize)]
struct PublishRequest<'a> {
    client: &'a str,
    user: &'a str,
    channel: &'a str,
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct PublishResult {
    /// Replaces the client's `data` when present.
    data: Option<Box<RawValue>>,
}

/// Passes a client publication through the publish proxy (`url`): the data to publish (the
/// client's, or the backend's rewrite).
pub async fn publish(
    ctx: &SessionCtx,
    url: Option<&str>,
    channel: &str,
    data: &RawValue,
) -> Result<Option<Box<RawValue>>, EventError> {
    let request = PublishRequest { client: &ctx.socket_id, user: &ctx.user_id, channel, data };
    let result: PublishResult = ctx.node.proxies.call(ProxyKind::Publish, url, &request).await?;
    Ok(result.data)
}

/// The `rpc` payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcDto {
    method: String,
    #[serde(default = "null")]
    data: Box<RawValue>,
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).unwrap_or_default()
}

impl Dto for RpcDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if crate::protocol::valid_event_name(&self.method) {
            return Ok(());
        }
        Err(vec![FieldError {
            path: "method".into(),
            rule: "method".into(),
            message: "must be 1 to 64 characters of [A-Za-z0-9:._-]".into(),
        }])
    }
}

#[derive(Serialize)]
struct RpcRequest<'a> {
    client: &'a str,
    user: &'a str,
    method: &'a str,
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct RpcResult {
    data: Option<Box<RawValue>>,
}

/// `rpc {method, data}`: forwarded to the RPC proxy; its `result.data` is the ack.
async fn rpc(ctx: Arc<SessionCtx>, dto: RpcDto) -> Result<Box<RawValue>, EventError> {
    let request = RpcRequest {
        client: &ctx.socket_id,
        user: &ctx.user_id,
        method: &dto.method,
        data: &dto.data,
    };
    let url = ctx.node.proxies.config().rpc_url.as_deref();
    let result: RpcResult = ctx.node.proxies.call(ProxyKind::Rpc, url, &request).await?;
    Ok(result.data.unwrap_or_else(null))
}
