//! socketioxide 0.18 peer: the same server as the Socket.IO 4.8 peer (server.js) — JWT HS256
//! middleware on `handshake.auth.token`, optional per-socket throttle (100 events / 10 s),
//! events `echo`, `room:join`, `room:publish` — on the WebSocket transport only.
//! usage: SECRET=s socketioxide-peer [--port 3100] [--no-throttle]
//! Prints `{"listening":PORT,...}` once bound; exits on SIGTERM or Ctrl-C.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, TransportType};

const THROTTLE_EVENTS: u32 = 100;
const THROTTLE_WINDOW: Duration = Duration::from_secs(10);

/// Server-wide configuration, set once in `main` before the server starts.
struct Config {
    key: DecodingKey,
    validation: Validation,
    throttle: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> &'static Config {
    CONFIG.get().expect("config is set before serving")
}

#[derive(Deserialize)]
struct Auth {
    token: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
}

/// The authenticated user, stored on the socket like server.js's `socket.data.user`.
#[derive(Clone)]
struct User(#[allow(dead_code)] Option<String>);

#[derive(Deserialize)]
struct Publish {
    room: String,
    payload: Value,
}

/// Per-socket fixed-window event counter (server.js's `socket.use` throttle).
struct Throttle {
    enabled: bool,
    window: Mutex<(Instant, u32)>,
}

impl Throttle {
    fn new(enabled: bool) -> Self {
        Self { enabled, window: Mutex::new((Instant::now(), 0)) }
    }

    /// True when the event may be handled; otherwise tells the client and drops the event.
    fn admit(&self, s: &SocketRef) -> bool {
        if !self.enabled {
            return true;
        }
        let over = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if now.duration_since(w.0) > THROTTLE_WINDOW {
                *w = (now, 0);
            }
            w.1 += 1;
            w.1 > THROTTLE_EVENTS
        };
        if over {
            let limit = serde_json::json!({ "limit": THROTTLE_EVENTS, "window": THROTTLE_WINDOW.as_secs() });
            s.emit("rate_limit_exceeded", &limit).ok();
        }
        !over
    }
}

#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthorized")
    }
}

async fn authenticate(s: SocketRef, Data(auth): Data<Auth>) -> Result<(), Unauthorized> {
    let cfg = config();
    let claims = jsonwebtoken::decode::<Claims>(&auth.token, &cfg.key, &cfg.validation)
        .map_err(|_| Unauthorized)?
        .claims;
    s.extensions.insert(User(claims.sub));
    Ok(())
}

async fn on_connect(s: SocketRef) {
    let throttle = Arc::new(Throttle::new(config().throttle));

    let t = throttle.clone();
    s.on("echo", async move |s: SocketRef, Data::<Value>(data), ack: AckSender| {
        if t.admit(&s) {
            ack.send(&data).ok();
        }
    });

    let t = throttle.clone();
    s.on("room:join", async move |s: SocketRef, Data::<String>(room), ack: AckSender| {
        if t.admit(&s) {
            s.join(room);
            ack.send(&true).ok();
        }
    });

    let t = throttle;
    s.on(
        "room:publish",
        async move |s: SocketRef, io: SocketIo, Data::<Publish>(msg), ack: AckSender| {
            if t.admit(&s) {
                io.to(msg.room).emit("msg", &msg.payload).await.ok();
                ack.send(&true).ok();
            }
        },
    );
}

fn parse_args() -> Result<(u16, bool), String> {
    let (mut port, mut throttle) = (3100, true);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                let v = args.next().ok_or("--port needs a value")?;
                port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--no-throttle" => throttle = false,
            "--redis" => {
                return Err("--redis: this peer has no Redis adapter (embedded only)".into());
            }
            _ => {
                return Err(format!(
                    "unknown argument {a:?}; usage: socketioxide-peer [--port N] [--no-throttle]"
                ));
            }
        }
    }
    Ok((port, throttle))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, throttle) = parse_args().map_err(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    })?;
    let secret = std::env::var("SECRET").unwrap_or_else(|_| "bench-secret".into());
    let mut validation = Validation::new(Algorithm::HS256);
    // As jsonwebtoken (Node) verifies: `exp` checked when present, not required; no leeway.
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let key = DecodingKey::from_secret(secret.as_bytes())?;
    CONFIG.get_or_init(|| Config { key, validation, throttle });

    let (layer, io) = SocketIo::builder()
        .transports([TransportType::Websocket])
        .ping_interval(Duration::from_secs(25))
        .ping_timeout(Duration::from_secs(20))
        .max_payload(64 * 1024)
        .ws_max_message_size(64 * 1024)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));

    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "{}",
        serde_json::json!({ "listening": port, "pid": std::process::id(), "redis": false, "throttle": throttle })
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tokio::time::timeout(Duration::from_secs(1), io.close()).await.ok();
    Ok(())
}
