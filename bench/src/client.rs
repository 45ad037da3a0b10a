//! One load-generator connection over WebSocket or WebTransport: open it, run the `connect`
//! handshake, send text frames, receive frames. Scenarios never see which transport it is.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};
use wtransport::{
    ClientConfig, Connection, Endpoint, RecvStream, SendStream,
    endpoint::endpoint_side::Client as ClientSide, tls::Sha256Digest,
};

use crate::frames::{self, Kind};

/// How long any single handshake step may take before the attempt counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Wt,
}

/// Where and how to connect; cheap to clone into every task.
#[derive(Clone)]
pub struct Target {
    pub transport: Transport,
    /// TCP address of the WebSocket listener and the upgrade path.
    pub ws_addr: SocketAddr,
    pub ws_path: String,
    /// `https://host:port/wt`.
    pub wt_url: String,
    /// Local addresses WebSocket connections bind to, round-robin (more than ~28k connections
    /// to one server port need more than one source address).
    pub source_ips: Arc<Vec<IpAddr>>,
    /// WebTransport client endpoints (UDP sockets), round-robin.
    pub endpoints: Arc<Vec<Endpoint<ClientSide>>>,
    next: Arc<AtomicUsize>,
}

impl Target {
    pub fn new(
        transport: Transport,
        ws_addr: SocketAddr,
        wt_url: String,
        source_ips: Vec<IpAddr>,
        cert: Option<[u8; 32]>,
        wt_endpoints: usize,
    ) -> Result<Self> {
        let mut endpoints = Vec::new();
        if transport == Transport::Wt {
            let cert = cert.context("WebTransport needs the server's certificate hash")?;
            for _ in 0..wt_endpoints.max(1) {
                // The server's socket setup: dual-stack `[::]`, large kernel buffers. Each
                // client socket takes the server's first flights (several datagrams each) for
                // every handshake on it, and the default 208 KiB buffer dropped them in
                // storms, each drop a ~1 s retry that the server would be blamed for.
                let any = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
                let socket = rtgate::server::wt_udp_socket(any).context("binding UDP")?;
                let cfg = ClientConfig::builder()
                    .with_bind_socket(socket)
                    .with_server_certificate_hashes([Sha256Digest::new(cert)])
                    .keep_alive_interval(None)
                    .max_idle_timeout(Some(Duration::from_secs(120)))
                    .context("idle timeout")?
                    .build();
                endpoints.push(Endpoint::client(cfg).context("binding a UDP client endpoint")?);
            }
        }
        Ok(Self {
            transport,
            ws_addr,
            ws_path: frames::ws_path().into(),
            wt_url,
            source_ips: Arc::new(source_ips),
            endpoints: Arc::new(endpoints),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Opens a transport connection (no protocol frame sent yet).
    pub async fn open(&self) -> Result<Conn> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.transport {
            Transport::Ws => {
                let src = (!self.source_ips.is_empty())
                    .then(|| self.source_ips[n % self.source_ips.len()]);
                tokio::time::timeout(STEP_TIMEOUT, open_ws(self.ws_addr, &self.ws_path, src))
                    .await
                    .context("WebSocket open timed out")?
            }
            Transport::Wt => {
                let ep = &self.endpoints[n % self.endpoints.len()];
                tokio::time::timeout(STEP_TIMEOUT, open_wt(ep, &self.wt_url))
                    .await
                    .context("WebTransport open timed out")?
            }
        }
    }

    /// Opens a connection and completes the `connect` → `connected` handshake.
    pub async fn connect(&self, token: &str) -> Result<Conn> {
        let mut conn = self.open().await?;
        conn.tx.send(&frames::connect(token)).await?;
        loop {
            let frame = tokio::time::timeout(STEP_TIMEOUT, conn.rx.recv())
                .await
                .context("no answer to connect")??
                .context("closed during the handshake")?;
            match frames::kind(&frame) {
                Kind::Connected => return Ok(conn),
                // Socket.IO's Engine.IO `open` packet comes first; a ping may too.
                Kind::Other => continue,
                Kind::Ping => conn.tx.send(frames::pong()).await?,
                _ => bail!("handshake refused: {}", String::from_utf8_lossy(&frame)),
            }
        }
    }
}

async fn open_ws(addr: SocketAddr, path: &str, src: Option<IpAddr>) -> Result<Conn> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding to {ip}"))?;
    }
    let tcp = sock.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    // Small buffers, like the server's: 100k connections at tungstenite's 128 KiB default
    // would be the load generator's memory, not the server's, that runs out.
    let cfg = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}{path}"), tcp, Some(cfg))
            .await
            .context("WebSocket upgrade")?;
    let (sink, stream) = ws.split();
    Ok(Conn { tx: Tx::Ws(sink), rx: Rx::Ws(stream), wt: None })
}

async fn open_wt(ep: &Endpoint<ClientSide>, url: &str) -> Result<Conn> {
    let conn = ep.connect(url).await.context("WebTransport connect")?;
    let (send, recv) =
        conn.open_bi().await.context("opening the stream")?.await.context("opening the stream")?;
    Ok(Conn {
        tx: Tx::Wt(send),
        rx: Rx::Wt { recv, buf: BytesMut::with_capacity(256) },
        wt: Some(conn),
    })
}

pub struct Conn {
    pub tx: Tx,
    pub rx: Rx,
    /// Keeps the WebTransport session open as long as the streams.
    wt: Option<Connection>,
}

impl Conn {
    /// Ends the connection politely: the protocol's `disconnect`, then the transport close.
    pub async fn close(mut self) {
        let _ = self.tx.send(frames::disconnect()).await;
        match (&mut self.tx, self.wt.take()) {
            (Tx::Ws(sink), _) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
            }
            (Tx::Wt(_), Some(conn)) => conn.close(0u32.into(), b""),
            (Tx::Wt(_), None) => {}
        }
    }
}

pub enum Tx {
    Ws(SplitSink<WebSocketStream<TcpStream>, Message>),
    Wt(SendStream),
}

impl Tx {
    pub async fn send(&mut self, text: &str) -> Result<()> {
        match self {
            Tx::Ws(sink) => sink.send(Message::text(text)).await.context("WebSocket send")?,
            Tx::Wt(send) => {
                // One write per frame: prefix and body together, so they leave in one packet.
                let mut buf = Vec::with_capacity(4 + text.len());
                buf.extend_from_slice(&(text.len() as u32).to_be_bytes());
                buf.extend_from_slice(text.as_bytes());
                send.write_all(&buf).await.context("WebTransport send")?;
            }
        }
        Ok(())
    }
}

pub enum Rx {
    Ws(SplitStream<WebSocketStream<TcpStream>>),
    Wt { recv: RecvStream, buf: BytesMut },
}

impl Rx {
    /// The next frame; `None` when the peer closed. Cancel-safe: bytes already read stay in
    /// the buffer, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        match self {
            Rx::Ws(stream) => loop {
                match stream.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(Message::Text(t))) => return Ok(Some(Bytes::from(t))),
                    Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e).context("WebSocket receive"),
                }
            },
            Rx::Wt { recv, buf } => loop {
                if buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() >= 4 + len {
                        buf.advance(4);
                        return Ok(Some(buf.split_to(len).freeze()));
                    }
                }
                let mut chunk = [0u8; 4096];
                match recv.read(&mut chunk).await {
                    Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(e).context("WebTransport receive"),
                }
            },
        }
    }
}

/// Fetches the WebTransport certificate hash from `GET /cert-hash` on the HTTP listener.
pub async fn fetch_cert_hash(http: SocketAddr) -> Result<[u8; 32]> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(http).await.context("connecting for /cert-hash")?;
    tcp.write_all(
        format!("GET /cert-hash HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut body = Vec::new();
    tcp.read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let json = text.split("\r\n\r\n").nth(1).context("no body in the /cert-hash answer")?;
    let v: serde_json::Value = serde_json::from_str(json.trim()).context("/cert-hash body")?;
    let hex = v["hex"].as_str().context("no `hex` in /cert-hash")?;
    parse_hex32(hex)
}

pub fn parse_hex32(hex: &str) -> Result<[u8; 32]> {
    if hex.len() != 64 {
        bail!("a SHA-256 is 64 hex digits, got {}", hex.len());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("bad hex digit")?;
    }
    Ok(out)
}
