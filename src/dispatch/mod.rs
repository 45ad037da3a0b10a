//! Dispatch: the router from event name to typed handler, and the error type every handler
//! returns. Features register handlers here (`Router::on`); they never touch the transport or
//! the session loop.
//!
//! A handler is `async fn(Arc<SessionCtx>, Dto) -> Result<impl Serialize, EventError>`. The
//! router erases the DTO type: the boxed route parses and validates the raw payload (the
//! `validate` stage) and serializes the reply, so the session only moves raw JSON around.

pub mod sys;

use std::{any::Any, collections::HashMap, future::Future, pin::Pin, sync::Arc};

use serde::Serialize;
use serde_json::{json, value::RawValue};

use crate::{
    protocol::Code,
    session::SessionCtx,
    validate::{self, Dto, FieldError},
};

/// The reply of a successful event, already serialized (`data: None` acks with `null`), and
/// what must happen right after the ack is queued, if anything.
pub struct Reply {
    pub data: Option<Box<RawValue>>,
    pub then: Option<AfterAck>,
}

/// Work a handler leaves for after its ack is queued (whether or not the client asked for
/// one): a channel subscription goes live only then, so its first live publication follows
/// the ack that carried the missed ones.
pub type AfterAck = Box<dyn FnOnce() + Send>;

/// A handler's reply with work for after the ack (`Reply::then`). Handlers return it instead of
/// a plain `impl Serialize` when the order of the ack and later frames matters.
pub struct Acked {
    pub data: Box<RawValue>,
    pub then: AfterAck,
}
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, EventError>> + Send>>;

/// Everything an event can fail with. Mapped to a wire code in exactly one place, `code()`.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    #[error("payload failed validation")]
    Validation(Vec<FieldError>),
    #[error("rate limit exceeded")]
    RateLimited { limit: u32, window_ms: u64, reset_at_ms: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A per-connection limit (conversations, subscriptions) would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// A dependency this event needs is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadChannel(String),
    /// Denied, unknown namespace, or not this user's channel: one answer, nothing leaked. The
    /// reason, when there is one the client may know (`token_expired`: its own token), goes
    /// in `details.reason`.
    #[error("permission denied")]
    PermissionDenied(Option<&'static str>),
    #[error("already subscribed to this channel")]
    AlreadySubscribed,
    #[error("not subscribed to this channel")]
    NotSubscribed,
    /// The application's backend refused (a proxy call), with its code and message.
    #[error("{message}")]
    App { code: u16, message: String },
    /// A failure of ours. The message goes to the log, never to the client.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl EventError {
    pub fn code(&self) -> Code {
        match self {
            EventError::UnknownEvent(_) => Code::UnknownEvent,
            EventError::Validation(_) => Code::ValidationFailed,
            EventError::RateLimited { .. } => Code::RateLimitExceeded,
            EventError::Forbidden(_) => Code::Forbidden,
            EventError::NotFound(_) => Code::NotFound,
            EventError::LimitExceeded(_) => Code::LimitExceeded,
            EventError::Unavailable(_) => Code::Unavailable,
            EventError::BadChannel(_) => Code::BadChannel,
            EventError::PermissionDenied(_) => Code::PermissionDenied,
            EventError::AlreadySubscribed => Code::AlreadySubscribed,
            EventError::NotSubscribed => Code::NotSubscribed,
            EventError::App { .. } => Code::AppError,
            EventError::Internal(_) => Code::InternalError,
        }
    }

    /// The text the client sees.
    pub fn public_message(&self) -> String {
        match self {
            EventError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            EventError::Validation(errors) => Some(json!({ "errors": errors })),
            EventError::RateLimited { limit, window_ms, reset_at_ms } => {
                Some(json!({ "limit": limit, "windowMs": window_ms, "resetAt": reset_at_ms }))
            }
            EventError::PermissionDenied(Some(reason)) => Some(json!({ "reason": reason })),
            EventError::App { code, .. } => Some(json!({ "appCode": code })),
            _ => None,
        }
    }
}

trait Route: Send + Sync {
    fn call(&self, ctx: Arc<SessionCtx>, data: Box<RawValue>) -> HandlerFuture;
}

/// The validate stage, then the handler, whose output `finish` turns into the reply.
fn start<T, F, Fut, O>(
    handler: &F,
    ctx: Arc<SessionCtx>,
    data: &RawValue,
    finish: fn(O) -> Result<Reply, EventError>,
) -> HandlerFuture
where
    T: Dto,
    F: Fn(Arc<SessionCtx>, T) -> Fut,
    Fut: Future<Output = Result<O, EventError>> + Send + 'static,
    O: 'static,
{
    let dto = match validate::parse::<T>(data) {
        Ok(dto) => dto,
        Err(errors) => return Box::pin(std::future::ready(Err(EventError::Validation(errors)))),
    };
    let fut = handler(ctx, dto);
    Box::pin(async move { finish(fut.await?) })
}

struct TypedRoute<F>(F);

impl<T, F, Fut, R> Route for TypedRoute<(F, std::marker::PhantomData<fn(T) -> R>)>
where
    T: Dto,
    F: Fn(Arc<SessionCtx>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, EventError>> + Send + 'static,
    R: Serialize + 'static,
{
    fn call(&self, ctx: Arc<SessionCtx>, data: Box<RawValue>) -> HandlerFuture {
        start(&self.0.0, ctx, &data, serialize::<R>)
    }
}

struct AckedRoute<F>(F);

impl<T, F, Fut> Route for AckedRoute<(F, std::marker::PhantomData<fn(T)>)>
where
    T: Dto,
    F: Fn(Arc<SessionCtx>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Acked, EventError>> + Send + 'static,
{
    fn call(&self, ctx: Arc<SessionCtx>, data: Box<RawValue>) -> HandlerFuture {
        start(&self.0.0, ctx, &data, acked)
    }
}

/// A handler's reply as raw JSON. A reply that already is raw JSON (echoes, relays) is
/// passed through instead of being serialized into a copy of itself.
fn serialize<R: Serialize + 'static>(reply: R) -> Result<Reply, EventError> {
    let mut slot = Some(reply);
    if let Some(raw) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Box<RawValue>>>() {
        return Ok(Reply { data: raw.take(), then: None });
    }
    // `Some(reply)` serializes exactly as `reply`.
    let raw = serde_json::value::to_raw_value(&slot).map_err(anyhow::Error::from)?;
    Ok(Reply { data: Some(raw), then: None })
}

/// `Acked` is not `Serialize`; its routes are typed separately (`Router::on_acked`).
fn acked(reply: Acked) -> Result<Reply, EventError> {
    Ok(Reply { data: Some(reply.data), then: Some(reply.then) })
}

/// Event name → handler. Built once at start-up, shared read-only by every session.
#[derive(Default)]
pub struct Router {
    routes: HashMap<&'static str, Box<dyn Route>>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// The router with every built-in handler registered.
    pub fn with_builtins(config: &crate::config::Config) -> Self {
        let router = crate::presence::register(sys::register(Self::new(), config.dev_events));
        let router = crate::channels::events::register(crate::chat::events::register(router));
        crate::proxy::events::register(router, config)
    }

    /// Registers `handler` for `name`. Panics on a duplicate name: that is a programming
    /// error found at start-up, never at run time.
    pub fn on<T, F, Fut, R>(mut self, name: &'static str, handler: F) -> Self
    where
        T: Dto,
        F: Fn(Arc<SessionCtx>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, EventError>> + Send + 'static,
        R: Serialize + 'static,
    {
        let route = TypedRoute((handler, std::marker::PhantomData::<fn(T) -> R>));
        let previous = self.routes.insert(name, Box::new(route));
        assert!(previous.is_none(), "event `{name}` registered twice");
        self
    }

    /// Registers a handler whose reply is `Acked`: the ack, then the reply's `then`.
    pub fn on_acked<T, F, Fut>(mut self, name: &'static str, handler: F) -> Self
    where
        T: Dto,
        F: Fn(Arc<SessionCtx>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Acked, EventError>> + Send + 'static,
    {
        let route = AckedRoute((handler, std::marker::PhantomData::<fn(T)>));
        let previous = self.routes.insert(name, Box::new(route));
        assert!(previous.is_none(), "event `{name}` registered twice");
        self
    }

    /// Starts handling one event: validation runs now, the handler when the future is polled.
    pub fn dispatch(&self, ctx: Arc<SessionCtx>, name: &str, data: Box<RawValue>) -> HandlerFuture {
        match self.routes.get(name) {
            Some(route) => route.call(ctx, data),
            None => Box::pin(std::future::ready(Err(EventError::UnknownEvent(name.to_owned())))),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// Every registered event name (the metrics' closed set of `event` labels).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }
}
