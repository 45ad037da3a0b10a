//! The HTTP front door under slowloris: raw TCP connections that send nothing, half a request
//! head, or go quiet after a request are closed after `--http-header-timeout` (TLS handshake
//! included), an upgraded WebSocket is not, and every accepted connection counts once against
//! the per-IP connect rate.

use std::time::Duration;

use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    helpers::{Kind, spawn},
    raw_http::{closed_within, read_response, request},
};

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Timer granularity, scheduling on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn short_header_timeout(c: &mut rtgate::config::Config) {
    c.http_header_timeout = HEADER_TIMEOUT;
    c.handshake_timeout = Duration::from_secs(2);
}

/// Closed by the timeout: not at once, and not much later.
fn assert_timed_out(took: Option<Duration>, what: &str) {
    let took =
        took.unwrap_or_else(|| panic!("{what}: still open after {:?}", HEADER_TIMEOUT + SLACK));
    assert!(took >= HEADER_TIMEOUT - Duration::from_millis(200), "{what}: closed after {took:?}");
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_header_timeout() {
    let server = spawn(short_header_timeout).await;
    let mut s = TcpStream::connect(server.http).await.unwrap();
    assert_timed_out(closed_within(&mut s, HEADER_TIMEOUT + SLACK).await, "silent");
}

/// The timeout bounds the whole head, so a client dribbling a header line every 200 ms (each
/// byte resetting an idle timer) is closed all the same.
#[tokio::test]
async fn partial_request_head_is_closed_while_bytes_trickle_in() {
    let server = spawn(short_header_timeout).await;
    let (mut rd, mut wr) = TcpStream::connect(server.http).await.unwrap().into_split();
    let dribble = tokio::spawn(async move {
        let _ = wr.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await;
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    });
    assert_timed_out(closed_within(&mut rd, HEADER_TIMEOUT + SLACK).await, "partial head");
    dribble.abort();
}

/// Keep-alive works (a second request within the timeout is answered), and a connection idle
/// after its last response is closed once the timeout runs out again.
#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = spawn(short_header_timeout).await;
    let mut s = TcpStream::connect(server.http).await.unwrap();
    let req = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().0, 200);
    tokio::time::sleep(HEADER_TIMEOUT / 2).await;
    s.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().0, 200, "kept alive");
    assert_timed_out(closed_within(&mut s, HEADER_TIMEOUT + SLACK).await, "idle keep-alive");
}

/// With `--tls-cert` the listener is HTTPS/WSS: a client that never starts the TLS handshake
/// is closed by the same timeout.
#[tokio::test]
async fn tls_handshake_is_bounded_by_the_header_timeout() {
    let dir = std::env::temp_dir().join(format!("rtgate-front-tls-{}", uuid::Uuid::new_v4()));
    rtgate::certs::write_dev_cert(&dir).await.unwrap();
    let server = spawn(|c| {
        short_header_timeout(c);
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
    })
    .await;
    let mut s = TcpStream::connect(server.http).await.unwrap();
    assert_timed_out(closed_within(&mut s, HEADER_TIMEOUT + SLACK).await, "no TLS handshake");
    let _ = std::fs::remove_dir_all(dir);
}

/// After the upgrade the socket belongs to the session: an idle WebSocket outlives the header
/// timeout (its own limits are the handshake timeout and the heartbeat).
#[tokio::test]
async fn upgraded_websocket_is_not_closed_by_the_header_timeout() {
    let server = spawn(short_header_timeout).await;
    let (mut c, _) = server.connect(Kind::Ws, "idle").await;
    tokio::time::sleep(HEADER_TIMEOUT * 2 + Duration::from_millis(500)).await;
    let ack = c.request(1, "sys:echo", json!("still here")).await;
    assert_eq!(ack["data"], "still here", "{ack}");
}

/// Connections that never send a request count against the per-IP rate; a WebSocket upgrade
/// does not count a second time; past the rate a connection is closed straight after accept
/// (long before the header timeout), and those admitted before keep working.
#[tokio::test]
async fn every_tcp_connection_counts_once_against_the_per_ip_rate() {
    let server = spawn(|c| {
        c.connect_rate_per_ip = 3;
        c.connect_rate_window = Duration::from_secs(60);
    })
    .await;
    let mut first = TcpStream::connect(server.http).await.unwrap();
    let _second = TcpStream::connect(server.http).await.unwrap();
    // The third connection: its upgrade must not count again.
    let (mut c, _) = server.connect(Kind::Ws, "counted").await;
    let mut over = TcpStream::connect(server.http).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await.is_some(),
        "the fourth connection from 127.0.0.1 must be closed at once"
    );
    assert!(request(server.http, b"", "/health/live", &[]).await.is_err(), "and the fifth");
    first.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut first).await.unwrap().0, 200);
    assert_eq!(c.request(1, "sys:echo", json!(1)).await["data"], 1);
}
