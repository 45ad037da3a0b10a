//! rtgate: a WebTransport-first realtime server with WebSocket fallback.
//!
//! # Layout
//! - `protocol`: frames, codes and the codec; no I/O.
//! - `transport`: the seam. WebSocket and WebTransport become `FrameReader`/`FrameWriter`.
//! - `session`: one per connection; handshake, heartbeat, the event pipeline, teardown.
//!   `session::outbound` is the bounded write path, `session::heartbeat` the ping clock.
//! - `auth` → `throttle` → `validate` → `dispatch`: the pipeline stages, in order.
//! - `hub`: the sessions live on this instance.
//! - `node`: the composition root shared by sessions and HTTP handlers.
//! - `http`: axum routes (WebSocket upgrade, health, cert hash).
//! - `server`: binding, serving and graceful shutdown; `certs`, `config`, `telemetry`.
//!
//! `ARCHITECTURE.md` at the repository root is the map; `PROTOCOL.md` is the wire contract.

pub mod api;
pub mod auth;
pub mod certs;
pub mod channels;
pub mod chat;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod dispatch;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod node;
pub mod presence;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod throttle;
pub mod transport;
pub mod validate;
pub mod webhooks;
