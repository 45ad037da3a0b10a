//! Raw sockets for the HTTP front door tests: connections that send nothing or half a request,
//! requests prefixed with a PROXY protocol header, WebSocket sessions opened with forwarded
//! headers. Errors are returned, not unwrapped, because refusals are what these tests observe.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    self,
    client::IntoClientRequest,
    http::{HeaderName, HeaderValue},
};

use crate::helpers::{Client, Io, RECV_TIMEOUT};

/// Reads (and discards) until the peer closes; how long that took, or `None` if the
/// connection was still open after `limit`.
pub async fn closed_within<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` off a kept-alive connection.
pub async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u16, Value), String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(RECV_TIMEOUT, r.read(&mut byte)).await {
            Ok(Ok(1)) => raw.push(byte[0]),
            other => return Err(format!("no response head: {other:?}")),
        }
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(head.clone())?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// One request on a new connection that first sends `prefix` (a PROXY header, or nothing).
/// `Err` when the connection is refused or closed without a response.
pub async fn request(
    addr: SocketAddr,
    prefix: &[u8],
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(req.as_bytes());
    s.write_all(&bytes).await.map_err(|e| format!("write: {e}"))?;
    read_response(&mut s).await
}

/// A PROXY protocol v2 header (PROXY command, TCP) from `src` to `dst`, built by hand from the
/// specification so the server's parser is checked against an independent encoder.
pub fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed address families"),
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// A PROXY protocol v1 (text) header for IPv4.
pub fn proxy_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port()).into_bytes()
}

/// A WebSocket to `/ws` over a connection that first sends `prefix`, with extra headers.
pub async fn ws(
    addr: SocketAddr,
    prefix: &[u8],
    headers: &[(&str, &str)],
) -> Result<Client, tungstenite::Error> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(prefix).await?;
    let mut req = format!("ws://{addr}/ws").into_client_request()?;
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().append(name, HeaderValue::from_str(v).unwrap());
    }
    let tcp: Box<dyn Io> = Box::new(tcp);
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    Ok(Client::Ws(Box::new(ws)))
}

/// `ws` plus the handshake as the holder of `token`; the session ends when the client is dropped.
pub async fn session(
    addr: SocketAddr,
    prefix: &[u8],
    headers: &[(&str, &str)],
    token: &str,
) -> Result<Client, String> {
    let mut c = ws(addr, prefix, headers).await.map_err(|e| e.to_string())?;
    c.send(&json!({"type": "connect", "token": token})).await;
    match c.recv().await {
        Some(f) if f["type"] == "connected" => Ok(c),
        other => Err(format!("no `connected`: {other:?}")),
    }
}
