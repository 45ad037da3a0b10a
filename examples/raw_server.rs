//! The raw baseline for the benchmarks: the same transport libraries rtgate uses (axum's
//! WebSocket, wtransport) and the same frames (`connect`, `sys:echo`, `channel:subscribe`,
//! `sys:channel-publish`, `ping`), with none of rtgate's pipeline: no JWT check, no throttle,
//! no validation, no namespaces, registry or presence, no history, no byte budget. What
//! rtgate costs on top of this is what `scripts/bench` reports as the rtgate/raw ratio.
//!
//! ```sh
//! cargo run --release --example raw_server -- --http-addr 127.0.0.1:3200 --wt-addr 127.0.0.1:4533
//! ```
//!
//! Over WebTransport it also answers a `sys:volatile-echo` datagram with a datagram, as rtgate
//! does (for `rtgate-bench lossy`), and with `--wt-streams` it treats every further
//! bidirectional stream of a session as a frame stream with a peer of its own (the
//! stream-per-flow comparison of `rtgate-bench lossy --separate-streams`).
//!
//! Prints `READY http=… wt=… cert_sha256=…` like `rtgate serve`; `GET /cert-hash` answers the
//! WebTransport certificate hash like rtgate.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::{
        State,
        ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use rtgate::http::{client_addr::Proxies, front::FrontDoor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wtransport::{
    Connection, Endpoint, Identity, RecvStream, SendStream, ServerConfig, datagram::Datagram,
    endpoint::IncomingSession,
};

type Tx = mpsc::UnboundedSender<Utf8Bytes>;

/// Channels: name → subscriber id → its outgoing queue.
#[derive(Default)]
struct Hub {
    channels: Mutex<HashMap<String, HashMap<u64, Tx>>>,
    next_id: AtomicU64,
}

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    cert_hex: Arc<str>,
}

/// The incoming frame, borrowed from the text.
#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(default)]
    event: Option<&'a str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData<'a> {
    channel: &'a str,
}

#[derive(Deserialize)]
struct PublishData<'a> {
    channel: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// One connection's state, shared by both transports.
struct Peer {
    id: u64,
    tx: Tx,
    channels: HashSet<String>,
    hub: Arc<Hub>,
}

impl Peer {
    fn new(hub: Arc<Hub>, tx: Tx) -> Self {
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        Self { id, tx, channels: HashSet::new(), hub }
    }

    /// Handles one frame; `false` ends the connection.
    fn handle(&mut self, text: &str) -> bool {
        let Ok(frame) = serde_json::from_str::<In>(text) else {
            return self
                .send(r#"{"type":"error","code":"bad_frame","message":"bad frame"}"#.into());
        };
        match frame.ty {
            "connect" => {
                self.send(format!(r#"{{"type":"connected","v":1,"sessionId":"raw-{}"}}"#, self.id))
            }
            "ping" => self.send(r#"{"type":"pong"}"#.into()),
            "pong" => true,
            "disconnect" => false,
            "event" => {
                let reply = self.event(frame.event.unwrap_or(""), frame.data);
                match frame.id {
                    Some(id) => self.send(format!(r#"{{"type":"ack","id":{id},"data":{reply}}}"#)),
                    None => true,
                }
            }
            _ => self.send(r#"{"type":"error","code":"bad_frame","message":"bad frame"}"#.into()),
        }
    }

    /// Runs an event; returns the ack's `data` as JSON text.
    fn event(&mut self, name: &str, data: Option<&RawValue>) -> String {
        let raw = data.map_or("null", RawValue::get);
        match name {
            "sys:echo" => raw.to_owned(),
            "channel:subscribe" => {
                let Ok(d) = serde_json::from_str::<SubscribeData>(raw) else {
                    return "null".into();
                };
                let mut channels = lock(&self.hub.channels);
                channels.entry(d.channel.to_owned()).or_default().insert(self.id, self.tx.clone());
                self.channels.insert(d.channel.to_owned());
                // rtgate's ack for a channel without history.
                format!(
                    r#"{{"channel":{},"offset":0,"epoch":"","recovered":false,"publications":[]}}"#,
                    serde_json::Value::from(d.channel)
                )
            }
            "sys:channel-publish" => {
                let Ok(d) = serde_json::from_str::<PublishData>(raw) else { return "null".into() };
                // Encoded once, shared by every subscriber (the publisher too, if subscribed).
                let frame = Utf8Bytes::from(format!(
                    r#"{{"type":"event","event":"channel:publication","data":{{"channel":{},"data":{}}}}}"#,
                    serde_json::Value::from(d.channel),
                    d.data.get()
                ));
                if let Some(subscribers) = lock(&self.hub.channels).get(d.channel) {
                    for tx in subscribers.values() {
                        let _ = tx.send(frame.clone());
                    }
                }
                "{}".into()
            }
            _ => "null".into(),
        }
    }

    fn send(&self, text: String) -> bool {
        self.tx.send(text.into()).is_ok()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let mut channels = lock(&self.hub.channels);
        for channel in &self.channels {
            if let Some(subscribers) = channels.get_mut(channel) {
                subscribers.remove(&self.id);
                if subscribers.is_empty() {
                    channels.remove(channel);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn ws_upgrade(State(app): State<App>, upgrade: WebSocketUpgrade) -> Response {
    // The same buffer sizes rtgate sets on its upgrade.
    upgrade
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| ws_session(app.hub, socket))
}

async fn ws_session(hub: Arc<Hub>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    // The writer: everything queued so far goes out with one flush.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Text(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut peer = Peer::new(hub, tx);
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(t) if !peer.handle(t.as_str()) => break,
            Message::Close(_) => break,
            _ => {}
        }
    }
    drop(peer);
    let _ = writer.await;
}

async fn wt_accept(
    hub: Arc<Hub>,
    endpoint: Endpoint<wtransport::endpoint::endpoint_side::Server>,
    more_streams: bool,
) {
    loop {
        let incoming = endpoint.accept().await;
        tokio::spawn(wt_session(hub.clone(), incoming, more_streams));
    }
}

async fn wt_session(hub: Arc<Hub>, incoming: IncomingSession, more_streams: bool) {
    let Ok(request) = incoming.await else { return };
    let Ok(conn) = request.accept().await else { return };
    let Ok((send, recv)) = conn.accept_bi().await else { return };
    // With --wt-streams, every further bidirectional stream the client opens is a frame stream
    // with a peer of its own: the stream-per-flow side of `rtgate-bench lossy
    // --separate-streams`. rtgate reads the first stream only, as this does without the flag.
    let more = more_streams.then(|| {
        let (hub, conn) = (hub.clone(), conn.clone());
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(wt_stream(hub.clone(), send, recv, None));
            }
        })
    });
    wt_stream(hub, send, recv, Some(conn.clone())).await;
    if let Some(more) = more {
        more.abort();
    }
    conn.close(0u32.into(), b"");
}

/// The answer to a `sys:volatile-echo` datagram, as a datagram (what rtgate does for a volatile
/// frame on WebTransport); every other datagram is ignored.
fn datagram_echo(conn: &Connection, payload: &[u8]) {
    let Ok(frame) = serde_json::from_slice::<In>(payload) else { return };
    if frame.ty == "event" && frame.event == Some("sys:volatile-echo") {
        let data = frame.data.map_or("null", RawValue::get);
        let echo = format!(r#"{{"type":"event","event":"sys:volatile-echo","data":{data}}}"#);
        let _ = conn.send_datagram(echo.as_bytes());
    }
}

/// The session's next datagram; never, for a stream without one.
async fn next_datagram(conn: Option<&Connection>) -> Option<(&Connection, Datagram)> {
    match conn {
        Some(c) => c.receive_datagram().await.ok().map(|d| (c, d)),
        None => std::future::pending().await,
    }
}

/// One frame stream and its peer; `datagrams`: the session whose datagrams this stream's
/// reader also answers (the first stream's).
async fn wt_stream(
    hub: Arc<Hub>,
    mut send: SendStream,
    mut recv: RecvStream,
    datagrams: Option<Connection>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            for frame in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                buf.extend_from_slice(frame.as_bytes());
            }
            if send.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = send.finish().await;
    });
    let mut peer = Peer::new(hub, tx);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    'read: loop {
        let n = tokio::select! {
            read = recv.read(&mut chunk) => match read {
                Ok(Some(n)) => n,
                _ => break,
            },
            Some((conn, d)) = next_datagram(datagrams.as_ref()) => {
                datagram_echo(conn, &d.payload());
                continue;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() >= at + 4 {
            let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if len > 64 * 1024 {
                break 'read;
            }
            if buf.len() < at + 4 + len {
                break;
            }
            let Ok(text) = std::str::from_utf8(&buf[at + 4..at + 4 + len]) else { break 'read };
            if !peer.handle(text) {
                break 'read;
            }
            at += 4 + len;
        }
        buf.drain(..at);
    }
    drop(peer);
    let _ = writer.await;
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let http_addr: SocketAddr = arg(&args, "--http-addr", "127.0.0.1:3200").parse()?;
    let wt_addr: SocketAddr = arg(&args, "--wt-addr", "127.0.0.1:4533").parse()?;
    let wt_streams = args.iter().any(|a| a == "--wt-streams");
    let identity = Identity::self_signed(["localhost", "127.0.0.1", "::1"])
        .context("self-signed certificate")?;
    let cert_hex: String = identity
        .certificate_chain()
        .as_slice()
        .first()
        .context("empty certificate chain")?
        .hash()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = ServerConfig::builder()
        // The same UDP socket setup (kernel buffer sizes).
        .with_bind_socket(rtgate::server::wt_udp_socket(wt_addr).context("binding UDP")?)
        // The same QUIC transport settings.
        .with_custom_transport(identity, rtgate::server::wt_transport_config())
        .keep_alive_interval(None)
        .build();
    let endpoint = Endpoint::server(config).context("binding UDP")?;
    let wt_local = endpoint.local_addr()?;
    let hub = Arc::new(Hub::default());
    let app = App { hub: hub.clone(), cert_hex: cert_hex.clone().into() };
    let router = Router::new()
        .route("/ws", get(ws_upgrade))
        .route(
            "/cert-hash",
            get(|State(app): State<App>| async move {
                Json(serde_json::json!({"algorithm": "sha-256", "hex": &*app.cert_hex}))
            }),
        )
        .with_state(app);
    // The same HTTP front door rtgate runs (hyper HTTP/1.1 with the header timeout), with
    // the same accept backlog; no proxies trusted, no per-IP limit.
    let listener = rtgate::server::listen_tcp(http_addr).context("binding TCP")?;
    println!("READY http={} wt={} cert_sha256={cert_hex}", listener.local_addr()?, wt_local);
    tokio::spawn(wt_accept(hub, endpoint, wt_streams));
    let front = FrontDoor::new(Duration::from_secs(10), Proxies::none(), Arc::new(|_| true));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // Never stopped: the process runs until it is killed.
    front.serve(listener, router, CancellationToken::new()).finish(Duration::ZERO).await;
    Ok(())
}
