//! Test harness: spawns the real server on ephemeral ports and drives it with real clients
//! over either transport, so every scenario can run over both by parametrizing on `Kind`.

use std::{
    net::SocketAddr,
    sync::Once,
    time::{Duration, Instant},
};

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rtgate::{
    config::Config,
    server::{Server, WT_PATH},
};
use serde_json::{Value, json};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;
use wtransport::{ClientConfig, Endpoint, RecvStream, SendStream, tls::Sha256Digest};

/// How long a test waits for any single expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
pub const SECRET: &str = "integration-test-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ws,
    Wt,
}

pub struct TestServer {
    pub http: SocketAddr,
    pub wt: SocketAddr,
    pub cert: [u8; 32],
    pub config: Config,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            rtgate::telemetry::init(rtgate::config::LogFormat::Human, "debug");
        }
    });
}

/// The configuration every test starts from: loopback, port 0, a known secret, and
/// heartbeats slow enough not to interfere unless a test shortens them.
pub fn test_config() -> Config {
    let mut c = Config::from_env().expect("default config");
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c.wt_addr = "127.0.0.1:0".parse().unwrap();
    c.jwt.secret = SECRET.into();
    c.shutdown_grace = Duration::from_secs(3);
    c.shutdown_reconnect_spread = Duration::from_millis(500);
    // Tests open many connections from 127.0.0.1; the per-IP limit has its own test.
    c.connect_rate_per_ip = 100_000;
    // Tests that put instances on Redis mean each to keep its own SQLite file (the database
    // suites use PostgreSQL where sharing matters).
    c.allow_local_database = true;
    // Each server gets its own embedded database file.
    c.sqlite_path =
        std::env::temp_dir().join(format!("rtgate-test-{}.sqlite", uuid::Uuid::new_v4().simple()));
    c
}

pub async fn spawn(tweak: impl FnOnce(&mut Config)) -> TestServer {
    init_logs();
    let mut config = test_config();
    tweak(&mut config);
    let server = Server::bind(config.clone()).await.expect("server binds");
    TestServer {
        http: server.http_addr(),
        wt: server.wt_addr(),
        cert: server.cert_sha256(),
        config,
        shutdown: server.shutdown_token(),
        task: tokio::spawn(server.run()),
    }
}

impl TestServer {
    pub fn token(&self, sub: &str) -> String {
        self.token_for(sub, Duration::from_secs(3600))
    }

    pub fn token_for(&self, sub: &str, ttl: Duration) -> String {
        rtgate::auth::mint_dev_token(&self.config.jwt, sub, ttl, None, vec![]).unwrap()
    }

    /// Opens a transport connection without sending anything.
    pub async fn open(&self, kind: Kind) -> Client {
        Client::open(kind, self.http, self.wt, self.cert).await
    }

    /// Opens a connection and completes the handshake; returns the `connected` frame.
    pub async fn connect(&self, kind: Kind, user: &str) -> (Client, Value) {
        let mut c = self.open(kind).await;
        c.send(&json!({"type": "connect", "v": 1, "token": self.token(user)})).await;
        let connected = c.recv().await.expect("a frame after connect");
        assert_eq!(connected["type"], "connected", "{connected}");
        (c, connected)
    }

    /// A plain HTTP/1.1 GET; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        http_get(self.http, path).await
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http_get_auth(addr, path, None).await
}

/// Any byte stream a WebSocket can run over (plain TCP, TLS).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A real client of either transport.
pub enum Client {
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
    Wt(Box<WtClient>),
}

pub struct WtClient {
    pub conn: wtransport::Connection,
    send: SendStream,
    recv: RecvStream,
    buf: BytesMut,
    _endpoint: Endpoint<wtransport::endpoint::endpoint_side::Client>,
}

impl WtClient {
    /// The client side of an established WebTransport session: opens the frame stream.
    pub async fn on(
        conn: wtransport::Connection,
        endpoint: Endpoint<wtransport::endpoint::endpoint_side::Client>,
    ) -> WtClient {
        let (send, recv) = conn.open_bi().await.unwrap().await.unwrap();
        WtClient { conn, send, recv, buf: BytesMut::new(), _endpoint: endpoint }
    }

    /// Finishes the client's send stream (EOF to the server).
    pub async fn finish(&mut self) {
        let _ = self.send.finish().await;
    }
}

/// How the transport ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    /// Closed without a code (reset, timeout, clean EOF without code).
    NoCode(String),
}

impl Client {
    pub async fn open(kind: Kind, http: SocketAddr, wt: SocketAddr, cert: [u8; 32]) -> Client {
        match kind {
            Kind::Ws => {
                let tcp: Box<dyn Io> = Box::new(TcpStream::connect(http).await.unwrap());
                let (ws, _) =
                    tokio_tungstenite::client_async(format!("ws://{http}/ws"), tcp).await.unwrap();
                Client::Ws(Box::new(ws))
            }
            Kind::Wt => {
                let cfg = ClientConfig::builder()
                    .with_bind_default()
                    .with_server_certificate_hashes([Sha256Digest::new(cert)])
                    .build();
                let endpoint = Endpoint::client(cfg).unwrap();
                let conn = endpoint.connect(format!("https://{wt}{WT_PATH}")).await.unwrap();
                Client::Wt(Box::new(WtClient::on(conn, endpoint).await))
            }
        }
    }

    pub async fn send(&mut self, frame: &Value) {
        self.send_text(&frame.to_string()).await
    }

    /// Sends one text frame. A send that fails because the server already closed is not an
    /// error here: tests observe the close (and what preceded it) on the receiving side.
    pub async fn send_text(&mut self, text: &str) {
        match self {
            Client::Ws(ws) => {
                let _ = ws.send(Message::text(text)).await;
            }
            Client::Wt(wt) => {
                let mut frame = (text.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(text.as_bytes());
                let _ = wt.send.write_all(&frame).await;
            }
        }
    }

    /// Sends raw bytes: a binary message on WebSocket, bytes as-is on the WebTransport stream
    /// (so a test controls the length prefix itself).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match self {
            Client::Ws(ws) => ws.send(Message::binary(bytes.to_vec())).await.unwrap(),
            Client::Wt(wt) => wt.send.write_all(bytes).await.unwrap(),
        }
    }

    /// The next frame, or `None` once the connection is closed. Panics after `RECV_TIMEOUT`.
    pub async fn recv(&mut self) -> Option<Value> {
        tokio::time::timeout(RECV_TIMEOUT, self.recv_inner())
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next frame that is not a server `ping`.
    pub async fn recv_skip_pings(&mut self) -> Option<Value> {
        loop {
            let f = self.recv().await?;
            if f["type"] != "ping" {
                return Some(f);
            }
        }
    }

    async fn recv_inner(&mut self) -> Option<Value> {
        match self {
            Client::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => continue,
                }
            },
            Client::Wt(wt) => loop {
                if wt.buf.len() >= 4 {
                    let len = u32::from_be_bytes(wt.buf[..4].try_into().unwrap()) as usize;
                    if wt.buf.len() >= 4 + len {
                        wt.buf.advance(4);
                        let body = wt.buf.split_to(len);
                        return Some(serde_json::from_slice(&body).unwrap());
                    }
                }
                let mut chunk = [0u8; 4096];
                match wt.recv.read(&mut chunk).await {
                    Ok(Some(n)) => wt.buf.extend_from_slice(&chunk[..n]),
                    Ok(None) | Err(_) => return None,
                }
            },
        }
    }

    /// Reads frames until the transport closes; returns them and the close as seen.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Closed) {
        let mut frames = Vec::new();
        let deadline = Instant::now() + RECV_TIMEOUT;
        match self {
            Client::Ws(ws) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, ws.next())
                    .await
                    .expect("timed out waiting for close")
                {
                    Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                    Some(Ok(Message::Close(Some(cf)))) => {
                        return (frames, Closed::Code(cf.code.into()));
                    }
                    Some(Ok(Message::Close(None))) => {
                        return (frames, Closed::NoCode("close without code".into()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return (frames, Closed::NoCode(e.to_string())),
                    None => return (frames, Closed::NoCode("stream ended".into())),
                }
            },
            Client::Wt(_) => {
                while let Some(f) = tokio::time::timeout_at(deadline.into(), self.recv_inner())
                    .await
                    .expect("timed out waiting for close")
                {
                    frames.push(f);
                }
                let Client::Wt(wt) = self else { unreachable!() };
                let left = deadline.saturating_duration_since(Instant::now());
                let err = tokio::time::timeout(left, wt.conn.closed())
                    .await
                    .expect("connection not closed");
                match err {
                    wtransport::error::ConnectionError::ApplicationClosed(c) => {
                        (frames, Closed::Code(c.code().into_inner() as u16))
                    }
                    other => (frames, Closed::NoCode(other.to_string())),
                }
            }
        }
    }

    /// WebTransport only: the QUIC connection under the session.
    pub fn wt_connection(&self) -> &wtransport::Connection {
        let Client::Wt(wt) = self else { panic!("WebTransport only") };
        &wt.conn
    }

    /// WebTransport only: sends one frame as a datagram.
    pub fn send_datagram(&self, frame: &Value) {
        let Client::Wt(wt) = self else { panic!("datagrams are WebTransport only") };
        wt.conn.send_datagram(frame.to_string().as_bytes()).unwrap();
    }

    /// WebTransport only: the next datagram, as JSON.
    pub async fn recv_datagram(&self) -> Value {
        let Client::Wt(wt) = self else { panic!("datagrams are WebTransport only") };
        let d =
            tokio::time::timeout(RECV_TIMEOUT, wt.conn.receive_datagram()).await.unwrap().unwrap();
        serde_json::from_slice(&d.payload()).unwrap()
    }

    /// Sends `event` with an ack id and returns the `ack` or `error` carrying that id.
    pub async fn request(&mut self, id: u64, event: &str, data: Value) -> Value {
        self.send(&json!({"type": "event", "event": event, "id": id, "data": data})).await;
        loop {
            let f = self.recv().await.expect("connection closed while waiting for ack");
            if f["id"] == id && (f["type"] == "ack" || f["type"] == "error") {
                return f;
            }
        }
    }
}

/// Asserts that the session ends with an `error` (when `with_error`), then a `disconnect`
/// carrying `reason`/`code`, then a transport close with the same code.
pub async fn expect_closed(
    c: &mut Client,
    reason: &str,
    code: u16,
    with_error: bool,
) -> Vec<Value> {
    let (frames, closed) = c.until_closed().await;
    let frames: Vec<Value> = frames.into_iter().filter(|f| f["type"] != "ping").collect();
    let disconnect = frames.last().unwrap_or_else(|| panic!("no frames before close: {closed:?}"));
    assert_eq!(disconnect["type"], "disconnect", "{frames:?}");
    assert_eq!(disconnect["reason"], reason, "{frames:?}");
    assert_eq!(disconnect["code"], code, "{frames:?}");
    if with_error {
        let error = &frames[frames.len() - 2];
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(reason)),
            "{frames:?}"
        );
    }
    assert_eq!(closed, Closed::Code(code));
    frames
}

/// The real binary in its own process (for signals and `kill -9`), bound to port 0.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub wt: SocketAddr,
    pub cert: [u8; 32],
}

impl ServerProcess {
    pub async fn start(args: &[&str], env: &[(&str, String)]) -> ServerProcess {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", args, env).await
    }

    /// As `start`, on given addresses: a restart on the ports of a process that is gone.
    pub async fn start_on(
        http: &str,
        wt: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rtgate"));
        cmd.args(["serve", "--http-addr", http, "--wt-addr", wt])
            .args(args)
            .env("RTGATE_JWT_SECRET", SECRET)
            .env("RTGATE_LOG", "warn")
            // As in `test_config`: an instance on Redis keeps its own SQLite file, knowingly.
            .env("RTGATE_ALLOW_LOCAL_DATABASE", "true")
            .stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let ready = lines.find(|l| l.starts_with("READY "));
            // With TEST_LOG the process's later log lines go on to the test's output.
            if std::env::var_os("TEST_LOG").is_some() {
                std::thread::spawn(move || lines.for_each(|l| eprintln!("[server] {l}")));
            }
            ready
        })
        .await
        .unwrap()
        .expect("server printed READY");
        let field = |name: &str| -> String {
            ready.split(' ').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap().to_owned()
        };
        let hex = field("cert_sha256");
        let cert: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap()).collect();
        ServerProcess {
            child,
            http: field("http").parse().unwrap(),
            wt: field("wt").parse().unwrap(),
            cert: cert.try_into().unwrap(),
        }
    }

    /// Opens a connection and completes the handshake as `user`.
    pub async fn connect(&self, kind: Kind, user: &str) -> Client {
        let mut c = Client::open(kind, self.http, self.wt, self.cert).await;
        let mut config = test_config();
        config.jwt.secret = SECRET.into();
        let token =
            rtgate::auth::mint_dev_token(&config.jwt, user, Duration::from_secs(600), None, vec![])
                .unwrap();
        c.send(&json!({"type": "connect", "token": token})).await;
        assert_eq!(c.recv().await.unwrap()["type"], "connected");
        c
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET with `Authorization: Bearer <token>`; returns status and JSON body.
pub async fn http_get_auth(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    http_request(addr, "GET", path, token, None).await
}

/// An HTTP/1.1 request with an optional bearer token and JSON body; returns status and JSON
/// body (`Null` when the body is empty or not JSON).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let content = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The namespace the tests whose subject is fanout itself publish through: public and
/// without history, so a publication goes straight to the live subscribers on every instance
/// (`sys:channel-publish`, a `--dev-events` server).
pub const FAN: &str = "fan";

/// Just the `FAN` namespace, for `Config::namespaces`.
pub fn fan_namespaces() -> rtgate::config::Namespaces {
    rtgate::config::Namespaces::new([rtgate::config::NamespaceConfig::new(FAN)])
        .expect("valid namespaces")
}

/// `fan_namespaces` as a configuration file, for a server in its own process
/// (`--config <path>`); removed on drop.
pub struct FanConfig {
    path: std::path::PathBuf,
}

impl FanConfig {
    pub fn write() -> FanConfig {
        let name = format!("rtgate-fan-{}.toml", uuid::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, format!("[namespaces.{FAN}]\nsubscribe = \"public\"\n")).unwrap();
        FanConfig { path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for FanConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Subscribes `c` to `channel` and asserts the ack.
pub async fn subscribe(c: &mut Client, id: u64, channel: &str) {
    let ack = c.request(id, "channel:subscribe", json!({ "channel": channel })).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

/// A `sys:channel-publish` frame (sent as is; `request` would wait for its ack).
pub fn channel_publish(id: u64, channel: &str, data: &Value) -> Value {
    let data = json!({ "channel": channel, "data": data });
    json!({"type": "event", "event": "sys:channel-publish", "id": id, "data": data})
}
