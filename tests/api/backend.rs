//! A small application backend for the tests, served in-process on a loopback port: the
//! proxy endpoints (`/connect`, `/refresh`, `/subscribe`, `/publish`, `/rpc`) answer as a real
//! app would, `/hang` never answers, and every request is recorded for assertions. (The
//! webhook receiver lives with the webhook tests.)

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<(String, Value)>>>);

impl Calls {
    fn push(&self, kind: &str, body: &Value) {
        self.0.lock().unwrap().push((kind.to_owned(), body.clone()));
    }

    /// The bodies of the calls of `kind`, in arrival order.
    pub fn of(&self, kind: &str) -> Vec<Value> {
        self.0.lock().unwrap().iter().filter(|(k, _)| k == kind).map(|(_, v)| v.clone()).collect()
    }
}

pub struct TestBackend {
    pub addr: SocketAddr,
    pub calls: Calls,
}

impl TestBackend {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub async fn start() -> TestBackend {
    let calls = Calls::default();
    let app = Router::new()
        .route("/connect", post(connect))
        .route("/refresh", post(refresh))
        .route("/subscribe", post(subscribe))
        .route("/publish", post(publish))
        .route("/rpc", post(rpc))
        .route("/hang", post(hang))
        .route("/broken", post(broken))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestBackend { addr, calls }
}

fn now_s() -> u64 {
    rtgate::state::now_ms() / 1000
}

/// The session cookie names the user (`session=<user>`); `expire=<s>` sets a short life.
async fn connect(
    State(calls): State<Calls>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    calls.push("connect", &body);
    let _ = headers;
    let cookie = body["headers"]["cookie"].as_str().unwrap_or("");
    let get = |name: &str| {
        cookie
            .split(';')
            .find_map(|c| c.trim().strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    match get("session") {
        Some(user) => {
            let expire = get("expire").and_then(|s| s.parse::<u64>().ok()).map(|s| now_s() + s);
            Json(json!({"result": {"user": user, "expireAt": expire, "channels": ["claimed:*"]}}))
        }
        None => Json(json!({"error": {"code": 1001, "message": "not signed in"}})),
    }
}

async fn refresh(State(calls): State<Calls>, Json(body): Json<Value>) -> Json<Value> {
    calls.push("refresh", &body);
    Json(json!({"result": {"expireAt": now_s() + 60}}))
}

/// `…:ok*` channels are allowed with presence info; everything else is refused with 1403.
async fn subscribe(State(calls): State<Calls>, Json(body): Json<Value>) -> Json<Value> {
    calls.push("subscribe", &body);
    let channel = body["channel"].as_str().unwrap_or("");
    if channel.split(':').nth(1).is_some_and(|n| n.starts_with("ok")) {
        Json(json!({"result": {"info": {"role": "reader"}}}))
    } else {
        Json(json!({"error": {"code": 1403, "message": "not your channel"}}))
    }
}

/// Masks the word "darn", refuses "spam".
async fn publish(State(calls): State<Calls>, Json(body): Json<Value>) -> Json<Value> {
    calls.push("publish", &body);
    let text = body["data"]["text"].as_str().unwrap_or("");
    if text.contains("spam") {
        return Json(json!({"error": {"code": 1400, "message": "no spam"}}));
    }
    if text.contains("darn") {
        return Json(json!({"result": {"data": {"text": text.replace("darn", "****")}}}));
    }
    Json(json!({"result": {}}))
}

/// `add` sums `a` and `b`; `fail` refuses with 1500; `bad` answers a code outside the range.
async fn rpc(State(calls): State<Calls>, Json(body): Json<Value>) -> Json<Value> {
    calls.push("rpc", &body);
    match body["method"].as_str() {
        Some("add") => {
            let sum =
                body["data"]["a"].as_i64().unwrap_or(0) + body["data"]["b"].as_i64().unwrap_or(0);
            Json(json!({"result": {"data": {"sum": sum, "user": body["user"]}}}))
        }
        Some("fail") => Json(json!({"error": {"code": 1500, "message": "it failed"}})),
        _ => Json(json!({"error": {"code": 42, "message": "outside the range"}})),
    }
}

async fn hang(State(calls): State<Calls>, Json(body): Json<Value>) -> Json<Value> {
    calls.push("hang", &body);
    tokio::time::sleep(Duration::from_secs(30)).await;
    Json(json!({"result": {}}))
}

async fn broken(
    State(calls): State<Calls>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, &'static str) {
    calls.push("broken", &body);
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom")
}
