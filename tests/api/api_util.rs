//! Calling the server API from tests: raw HTTP/1.1 with an API key, so every header and byte
//! of the request is the test's choice.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A test API key (long enough for `--api-keys`).
pub const KEY: &str = "test-api-key-0123456789";
/// A second key, for rotation.
pub const KEY2: &str = "test-api-key-abcdefghij";

/// What came back: status, the raw head (headers, lower-cased) and the JSON body (`Null` when
/// not JSON).
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }
}

/// A request with arbitrary extra header lines (`"Origin: x\r\n"`).
pub async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// `POST /api/v1/<method>` with `key` and a JSON body.
pub async fn call_with(addr: SocketAddr, key: Option<&str>, method: &str, body: &str) -> Answer {
    let auth = key.map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let headers = format!("{auth}Content-Type: application/json\r\n");
    raw(addr, "POST", &format!("/api/v1/{method}"), &headers, body).await
}

/// `POST /api/v1/<method>` with `KEY`; asserts 200 and returns the body.
pub async fn call(addr: SocketAddr, method: &str, body: Value) -> Value {
    let a = call_with(addr, Some(KEY), method, &body.to_string()).await;
    assert_eq!(a.status, 200, "{method} {body}: {} {}", a.status, a.body);
    a.body
}

/// Asserts an error answer: status, code, and the `{code, message, details}` shape.
pub fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert!(a.body["message"].is_string(), "{}", a.body);
    assert!(a.body.as_object().unwrap().contains_key("details"), "{}", a.body);
}
