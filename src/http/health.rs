//! Health endpoints. `live` answers while the process runs; `ready` says whether this
//! instance should get new connections, with one entry per dependency.
//!
//! A Redis or database outage makes the instance `degraded`, not unready: sessions keep working for
//! everything that runs locally, and taking every instance out of rotation because the shared
//! Redis is down would turn a partial outage into a full one.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::HttpState;

pub(super) async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn redis_check(state: &HttpState) -> Value {
    let Some(conn) = &state.node.backends.redis else {
        return json!({ "status": "up", "backend": "memory" });
    };
    let mut conn = conn.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    let started = std::time::Instant::now();
    match tokio::time::timeout(Duration::from_millis(500), ping).await {
        Ok(Ok(_)) => {
            json!({ "status": "up", "backend": "redis", "latencyMs": started.elapsed().as_millis() as u64 })
        }
        Ok(Err(e)) => json!({ "status": "down", "backend": "redis", "error": e.to_string() }),
        Err(_) => {
            json!({ "status": "down", "backend": "redis", "error": "no answer within 500 ms" })
        }
    }
}

async fn database_check(state: &HttpState) -> Value {
    let node = &state.node;
    let backend = if node.config.database_url.is_some() { "postgres" } else { "sqlite" };
    let ping = tokio::time::timeout(Duration::from_millis(500), node.store.ping()).await;
    let (status, error) = match ping {
        Ok(Ok(())) => ("up", None),
        Ok(Err(e)) => ("down", Some(e.to_string())),
        Err(_) => ("down", Some("no answer within 500 ms".to_owned())),
    };
    let mut check = json!({
        "status": status,
        "backend": backend,
        "error": error,
        "writerQueued": node.writer.queued(),
        "writerDropped": node.writer.dropped(),
    });
    if node.config.split_history() {
        check["warning"] = json!(
            "REDIS_URL without DATABASE_URL: chat and history are in this instance's own SQLite file, not shared with the other instances"
        );
    }
    check
}

pub(super) async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let node = &state.node;
    let draining = node.shutdown.is_cancelled();
    let by_transport: serde_json::Map<String, Value> = node
        .hub
        .count_by_transport()
        .into_iter()
        .map(|(k, n)| (k.as_str().to_owned(), json!(n)))
        .collect();
    let (redis, database) = tokio::join!(redis_check(&state), database_check(&state));
    let all_up = redis["status"] == "up" && database["status"] == "up";
    let status = match (draining, all_up) {
        (true, _) => "draining",
        (false, true) => "ready",
        (false, false) => "degraded",
    };
    let code = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "status": status,
        "instance": node.instance_id,
        "sessions": by_transport,
        "checks": {
            "listeners": { "status": if draining { "down" } else { "up" } },
            "redis": redis,
            "database": database,
        },
    });
    (code, Json(body))
}
