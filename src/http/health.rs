//! Health endpoints. `live` answers while the process runs; `ready` says whether this
//! instance should get new connections, with one entry per dependency (shared-state and
//! database backends add theirs as they land).

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::HttpState;

pub(super) async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
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
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if draining { "draining" } else { "ready" },
        "instance": node.instance_id,
        "sessions": by_transport,
        "checks": {
            "listeners": { "status": if draining { "down" } else { "up" } },
        },
    });
    (status, Json(body))
}
