//! The session: one per connection, identical for every transport. It owns the read side of
//! the connection and runs the pipeline:
//!
//! handshake (first frame = `connect`, under a deadline) → auth → register in the hub →
//! per frame: decode → throttle → validate → dispatch, with the heartbeat, token expiry and
//! shutdown watched alongside → teardown (always).
//!
//! **Invariants.** The loop never awaits a handler, a database or another session: events run
//! one at a time, in arrival order, as an in-flight future the loop polls next to its reads
//! and timers, so pongs are seen even while a handler waits. Every write goes through the
//! session's bounded `Outbound`. Every session the server ends gets a `disconnect` frame
//! before the transport closes.

mod handshake;
pub mod heartbeat;
pub mod outbound;
mod registration;
mod token;

use std::{
    collections::VecDeque, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration,
};

use futures_util::FutureExt;

use bytes::Bytes;
use rand::Rng;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::{
    dispatch::{EventError, HandlerFuture, Reply},
    node::Node,
    protocol::{
        ClientFrame, Code, ConnectedInfo, EventFrame, HeartbeatInfo, LimitsInfo, PING_FRAME,
        PONG_FRAME, decode_client_frame, encode_ack, encode_connected, encode_disconnect,
        encode_error,
    },
    transport::{FrameReader, PeerInfo, ReadError, Transport},
};
use crate::{
    telemetry::metrics::{self, Invalid, RateScope},
    throttle::{Refused, SocketThrottle},
};
use heartbeat::{Beat, Heartbeat};
use outbound::{Dead, Outbound};
use registration::Registration;
use token::TokenBeat;
pub use token::{SessionToken, is_revoked};

/// What a handler knows about the session it serves.
pub struct SessionCtx {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub device_id: Arc<str>,
    /// The connect token's `channels` claim (see `Identity::channels`).
    pub channel_claims: Box<[String]>,
    /// Made by the connect proxy, not a token: the refresh proxy extends it, not `sys:refresh`.
    pub proxied: bool,
    /// The current token's expiry, `iat` and `jti` (the connect token's until a refresh).
    pub token: SessionToken,
    pub peer: PeerInfo,
    pub node: Arc<Node>,
    pub outbound: Outbound,
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The server ends the session with this code.
    Close(Code, String),
    /// The client said `disconnect`.
    ClientLeft,
    /// The connection went away under us (peer closed, reset, write failed).
    Gone(String),
}

impl End {
    /// The `disconnect_reason` recorded in the connection log.
    fn reason(&self) -> &'static str {
        match self {
            End::Close(code, _) => code.as_str(),
            End::ClientLeft => "client_disconnect",
            End::Gone(_) => "connection_lost",
        }
    }
}

/// How long a session that is not shutting down waits for its last frames to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs one session to completion. Spawned once per accepted connection by each transport.
///
/// Not an `async fn`: the transport is split, the writer started and admission boxed before
/// the future exists, so the future (which every live session holds, in its task, for its whole
/// life) keeps no slot for the transport or for values moved out of it. An `async fn` keeps
/// every parameter for as long as it runs, moved out or not.
pub fn run<T: Transport>(node: Arc<Node>, transport: T) -> impl Future<Output = ()> + Send {
    let (peer, reader, writer) = transport.split();
    let socket_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
    let span = tracing::info_span!(
        "session",
        socket_id = %socket_id,
        transport = %peer.kind,
        remote = %peer.remote,
        user_id = tracing::field::Empty,
        device_id = tracing::field::Empty,
    );
    let (outbound, writer_task) =
        Outbound::spawn(writer, node.config.outbound_queue_bytes, &node.shutdown);
    let kind = peer.kind;
    // Held for the whole session; dropping it frees the slot.
    let slot = crate::node::Admission::slot(&node);
    // Admission runs boxed: its futures (the handshake deadline, shared-state calls) are done
    // once the session is live, but inline they would size every session's task, for the
    // whole life of the connection, by the largest of them.
    let admission = slot
        .is_some()
        .then(|| Box::pin(admit(node.clone(), socket_id, peer, reader, outbound.clone())));
    async move {
        let _slot = slot;
        let end = match admission {
            Some(admission) => serve(kind, admission).instrument(span.clone()).await,
            None => {
                let msg = "server is at its connection limit; reconnect later";
                outbound.send(encode_error(None, Code::ServerBusy, msg, None));
                metrics::refused(kind, Code::ServerBusy.as_str());
                End::Close(Code::ServerBusy, msg.into())
            }
        };
        // Boxed for the same reason as admission: it runs once, at the end.
        Box::pin(finish(&node, end, outbound, writer_task)).instrument(span).await;
    }
}

/// What admission hands the live session, or how the session ended before it went live.
type Admitted<R> = (R, Result<(Arc<SessionCtx>, Registration), End>);

async fn serve<R: FrameReader>(
    kind: crate::transport::TransportKind,
    admission: std::pin::Pin<Box<impl Future<Output = Admitted<R>>>>,
) -> End {
    let (mut reader, admitted) = admission.await;
    let (ctx, mut registration) = match admitted {
        Ok(admitted) => admitted,
        Err(end) => {
            metrics::refused(kind, end.reason());
            return end;
        }
    };
    let end = live(&ctx, &mut reader).await;
    registration.reason = end.reason();
    end
}

/// Handshake → register (within the per-user cap) → `connected`. `Err` is how the session
/// ends before it went live.
async fn admit<R: FrameReader>(
    node: Arc<Node>,
    socket_id: Arc<str>,
    peer: PeerInfo,
    mut reader: R,
    outbound: Outbound,
) -> Admitted<R> {
    let admitted = admit_on(&node, socket_id, peer, &mut reader, outbound).await;
    (reader, admitted)
}

async fn admit_on<R: FrameReader>(
    node: &Arc<Node>,
    socket_id: Arc<str>,
    mut peer: PeerInfo,
    reader: &mut R,
    outbound: Outbound,
) -> Result<(Arc<SessionCtx>, Registration), End> {
    let handshake = tokio::select! {
        r = timeout(node.config.handshake_timeout, handshake::run(node, reader, &socket_id, &peer)) => r,
        _ = node.shutdown.cancelled() => return Err(End::Close(Code::ServerShutdown, "server is shutting down".into())),
    };
    // Only the connect proxy wanted them; a live session holds none.
    peer.headers = Vec::new();
    let (identity, device) = match handshake {
        Err(_) => {
            let msg = format!("no connect frame within {:?}", node.config.handshake_timeout);
            outbound.send(encode_error(None, Code::HandshakeTimeout, &msg, None));
            return Err(End::Close(Code::HandshakeTimeout, msg));
        }
        Ok(Err(handshake::Refusal::Gone(why))) => return Err(End::Gone(why)),
        Ok(Err(handshake::Refusal::Refused(code, msg))) => {
            outbound.send(encode_error(None, code, &msg, None));
            return Err(End::Close(code, msg));
        }
        Ok(Ok(accepted)) => accepted,
    };
    let device_id: Arc<str> = device.unwrap_or_else(|| socket_id.to_string()).into();
    let span = tracing::Span::current();
    span.record("user_id", identity.user_id.as_str());
    span.record("device_id", &*device_id);

    let cfg = &node.config;
    let token = SessionToken::new(&identity, cfg.jwt.leeway, cfg.jwt.refresh_notice);
    let expires_at = identity.expires_at;
    // The rest of the identity is in `token` or not needed once admitted; an idle session
    // keeps only what it reads.
    let ctx = Arc::new(SessionCtx {
        socket_id: socket_id.clone(),
        user_id: identity.user_id.into(),
        device_id,
        channel_claims: identity.channels.into_boxed_slice(),
        proxied: identity.proxied,
        token,
        peer,
        node: node.clone(),
        outbound,
    });
    let Ok(registration) = Registration::admit(&ctx).await else {
        let refused = format!("at most {} connections per user", cfg.max_connections_per_user);
        ctx.outbound.send(encode_error(None, Code::TooManyConnections, &refused, None));
        return Err(End::Close(Code::TooManyConnections, refused));
    };
    ctx.outbound.send(encode_connected(&ConnectedInfo {
        session_id: &ctx.socket_id,
        user_id: &ctx.user_id,
        device_id: &ctx.device_id,
        instance_id: &node.instance_id,
        expires_at: Some(expires_at.saturating_mul(1000)),
        heartbeat: HeartbeatInfo {
            interval_ms: cfg.ping_interval.as_millis() as u64,
            timeout_ms: cfg.pong_timeout.as_millis() as u64,
        },
        limits: LimitsInfo { max_frame_bytes: cfg.max_frame_bytes },
    }));
    tracing::info!("connected");
    Ok((ctx, registration))
}

/// An event whose pipeline is running.
struct InFlight {
    id: Option<u64>,
    name: String,
    fut: HandlerFuture,
}

/// The pipeline for one event after decoding and the per-socket throttle: the per-user
/// message budget (message events only) → validate → dispatch.
fn start(ctx: &Arc<SessionCtx>, ev: EventFrame) -> InFlight {
    let EventFrame { name, id, data } = ev;
    let node = &ctx.node;
    // Unknown events are refused by the router without spending the user's message budget.
    let fut: HandlerFuture =
        if node.throttle.counts_as_message(&name) && node.router.contains(&name) {
            let ctx = ctx.clone();
            let event = name.clone();
            Box::pin(async move {
                ctx.node.throttle.admit_message(&ctx.user_id).await?;
                ctx.node.router.dispatch(ctx.clone(), &event, data).await
            })
        } else {
            node.router.dispatch(ctx.clone(), &name, data)
        };
    InFlight { id, name, fut }
}

fn reply(ctx: &SessionCtx, done: InFlight, result: Result<Reply, EventError>) {
    let events = &ctx.node.events;
    match &result {
        Ok(_) => events.record(&done.name, None),
        Err(err) => {
            events.record(&done.name, Some(err.code()));
            match err {
                EventError::Validation(_) => metrics::invalid(Invalid::Payload),
                EventError::RateLimited { .. } => metrics::rate_limited(RateScope::User),
                _ => {}
            }
        }
    }
    match result {
        Ok(Reply { data, then }) => {
            if let Some(id) = done.id {
                let frame = match data {
                    Some(raw) => encode_ack(id, &raw),
                    None => encode_ack(id, &null()),
                };
                ctx.outbound.send(frame);
            }
            if let Some(then) = then {
                then();
            }
        }
        Err(err) => {
            // Logged once, here, with the session's span and the event name.
            match &err {
                EventError::Internal(_) => {
                    tracing::error!(event = %done.name, error = %err, "event failed")
                }
                _ => {
                    tracing::debug!(event = %done.name, code = %err.code(), error = %err, "event refused")
                }
            }
            let details = err.details();
            ctx.outbound.send(encode_error(
                done.id,
                err.code(),
                &err.public_message(),
                details.as_ref(),
            ));
        }
    }
}

fn null() -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&()).unwrap_or_default()
}

async fn live<R: FrameReader>(ctx: &Arc<SessionCtx>, reader: &mut R) -> End {
    let node = &ctx.node;
    let cfg = &node.config;
    let mut hb = Heartbeat::new(Instant::now(), cfg.ping_interval, cfg.pong_timeout);
    // The heartbeat and the token share one timer: every `select!` iteration polls each of
    // its timers, and this loop runs twice per message. `token_at` is when the token next
    // needs a look (its notice or its end); a refresh only moves those later, so a stale
    // `token_at` costs one early look, never a missed one.
    // Due at once: the first look (made by the timer, like every other) finds out what the
    // token needs, a notice already due at connect included.
    let mut token_at = Instant::now();
    // `due` is the unrounded wakeup: comparing it per frame costs what it did before the
    // grid; only an actual move pays for rounding onto the grid and re-arming.
    let grid = heartbeat::grid(cfg.ping_interval);
    let wakeup = |hb: &Heartbeat, token_at: Instant| hb.next_wakeup().min(token_at);
    let mut due = wakeup(&hb, token_at);
    let timer = sleep_until(heartbeat::on_grid(due, grid));
    // One future for "stop now" (shutdown, or the outbound side died), created once: a fresh
    // `cancelled()` registers with the token's waiter list and unregisters on drop, which
    // cost more per message than the echo handler itself.
    let stop = ctx.outbound.dead();
    tokio::pin!(timer, stop);
    let mut pending: VecDeque<EventFrame> = VecDeque::new();
    let mut current: Option<InFlight> = None;
    let mut throttle = node.throttle.socket();

    loop {
        if current.is_none() {
            current = pending.pop_front().map(|ev| start(ctx, ev));
        }
        tokio::select! {
            biased;
            // First, so that a handler that finished on its first poll (most do) is answered
            // without polling every other branch again. A ready handler cannot starve the
            // rest: the next event only starts in the next iteration.
            result = async {
                match current.as_mut() {
                    // A panicking handler fails its event, not the session (nor the connection).
                    Some(c) => AssertUnwindSafe(&mut c.fut).catch_unwind().await.unwrap_or_else(|_| {
                        Err(EventError::Internal(anyhow::anyhow!("handler panicked")))
                    }),
                    None => std::future::pending().await,
                }
            }, if current.is_some() => {
                if let Some(done) = current.take() {
                    reply(ctx, done, result);
                }
            }
            _ = &mut stop => {
                if node.shutdown.is_cancelled() {
                    return End::Close(Code::ServerShutdown, "server is shutting down".into());
                }
                return match ctx.outbound.why() {
                    Some(Dead::SlowConsumer) => {
                        metrics::slow_consumer();
                        End::Close(Code::SlowConsumer, "outbound queue overflowed".into())
                    }
                    Some(Dead::WriteFailed(e)) => End::Gone(e),
                    Some(Dead::Kicked(code, message)) => End::Close(code, message),
                    None => End::Gone("outbound closed".into()),
                };
            }
            _ = &mut timer => {
                let now = Instant::now();
                if now >= token_at {
                    match ctx.token.poll(now) {
                        TokenBeat::Expired => {
                            return End::Close(Code::TokenExpired, "token expired".into());
                        }
                        TokenBeat::Notify(expires_at) => {
                            token::notify(ctx, expires_at);
                            token_at = match ctx.token.poll(now) {
                                TokenBeat::Wait(at) => at,
                                _ => now,
                            };
                        }
                        TokenBeat::Wait(at) => token_at = at,
                    }
                }
                match hb.poll(now) {
                    Beat::TimedOut => {
                        metrics::ping_timeout();
                        let msg = format!("no pong within {:?}", cfg.pong_timeout);
                        return End::Close(Code::PingTimeout, msg);
                    }
                    Beat::Ping => { ctx.outbound.send(PING_FRAME.clone()); }
                    Beat::Idle => {}
                }
                due = wakeup(&hb, token_at);
                timer.as_mut().reset(heartbeat::on_grid(due, grid));
            }
            frame = reader.read_frame() => match frame {
                Ok(Some(bytes)) => {
                    if let Some(end) = on_frame(ctx, &bytes, &mut pending, &mut hb, &mut throttle) {
                        return end;
                    }
                    // Only a pong moves the wakeup; re-arming the timer on every frame would
                    // take the timer wheel's lock once per message.
                    let next = wakeup(&hb, token_at);
                    if next != due {
                        due = next;
                        timer.as_mut().reset(heartbeat::on_grid(due, grid));
                    }
                }
                Ok(None) => return End::Gone("peer closed".into()),
                Err(e @ ReadError::TooLarge { .. }) => {
                    let msg = e.to_string();
                    ctx.outbound.send(encode_error(None, Code::PayloadTooLarge, &msg, None));
                    return End::Close(Code::PayloadTooLarge, msg);
                }
                Err(e @ ReadError::InvalidUtf8) => {
                    let msg = e.to_string();
                    ctx.outbound.send(encode_error(None, Code::BadFrame, &msg, None));
                    return End::Close(Code::ProtocolError, msg);
                }
                Err(e @ ReadError::NotText) => {
                    ctx.outbound.send(encode_error(None, Code::BadFrame, &e.to_string(), None));
                }
                Err(e) => return End::Gone(e.to_string()),
            },
        }
    }
}

/// Handles one decoded frame; returns how the session ends when the frame ends it.
fn on_frame(
    ctx: &SessionCtx,
    bytes: &Bytes,
    pending: &mut VecDeque<EventFrame>,
    hb: &mut Heartbeat,
    throttle: &mut SocketThrottle,
) -> Option<End> {
    let out = &ctx.outbound;
    match decode_client_frame(bytes) {
        Ok(ClientFrame::Event(ev)) => {
            let events = &ctx.node.events;
            if let Err(refused) = ctx.node.throttle.admit_event(throttle) {
                metrics::rate_limited(RateScope::Socket);
                match refused {
                    Refused::Flood => {
                        events.record(&ev.name, Some(Code::RateLimitFlood));
                        let msg = "kept sending far past the rate limit".to_owned();
                        return Some(End::Close(Code::RateLimitFlood, msg));
                    }
                    Refused::Limited(err) => {
                        events.record(&ev.name, Some(err.code()));
                        tracing::debug!(event = %ev.name, "event refused by the per-socket rate limit");
                        let details = err.details();
                        out.send(encode_error(
                            ev.id,
                            err.code(),
                            &err.public_message(),
                            details.as_ref(),
                        ));
                    }
                }
            } else if pending.len() >= ctx.node.config.max_pending_events {
                events.record(&ev.name, Some(Code::Overloaded));
                let msg = "too many events waiting; slow down";
                out.send(encode_error(ev.id, Code::Overloaded, msg, None));
            } else {
                pending.push_back(ev);
            }
        }
        Ok(ClientFrame::Pong) => hb.pong(),
        Ok(ClientFrame::Ping) => {
            out.send(PONG_FRAME.clone());
        }
        Ok(ClientFrame::Connect(_)) => {
            out.send(encode_error(
                None,
                Code::AlreadyConnected,
                "session is already connected",
                None,
            ));
        }
        Ok(ClientFrame::Disconnect) => return Some(End::ClientLeft),
        Err(e) => {
            metrics::invalid(Invalid::Frame);
            out.send(encode_error(e.id, Code::BadFrame, &e.message, None));
        }
    }
    None
}

/// Says goodbye the way `end` requires and waits (bounded) for the writer to finish.
async fn finish(
    node: &Node,
    end: End,
    outbound: Outbound,
    mut writer: tokio::task::JoinHandle<()>,
) {
    let mut grace = CLOSE_GRACE;
    match &end {
        End::Close(code, message) => {
            if *code == Code::ServerShutdown {
                grace = node.config.shutdown_grace;
            }
            // Spread the reconnects of everyone told to back off at once.
            let retry_after = matches!(code, Code::ServerShutdown | Code::ServerBusy).then(|| {
                let spread = node.config.shutdown_reconnect_spread.as_millis() as u64;
                rand::rng().random_range(0..=spread)
            });
            let last = encode_disconnect(*code, message, retry_after);
            outbound.finish(Some(last), code.close_code().unwrap_or(1011), code.as_str());
            tracing::info!(reason = %code, message = %message, "disconnected by server");
        }
        End::ClientLeft => {
            outbound.close(1000, "bye");
            tracing::info!(reason = "client_disconnect", "disconnected by client");
        }
        End::Gone(why) => {
            outbound.close(1000, "");
            tracing::info!(reason = "transport_closed", detail = %why, "connection lost");
        }
    }
    drop(outbound);
    if timeout(grace, &mut writer).await.is_err() {
        // The peer stopped reading; dropping the writer drops the connection.
        writer.abort();
    }
}

#[cfg(test)]
mod tests;
