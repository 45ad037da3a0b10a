//! `GET /metrics`: the Prometheus text exposition. The series live in
//! `telemetry::metrics`; this route samples the values that are cheaper to read once per scrape
//! than to track per frame (outbound queue bytes, writer queue depth, live tasks), then renders.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::HttpState;
use crate::telemetry::metrics::{self, Sample};

/// The content type Prometheus expects for the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn metrics(State(state): State<HttpState>) -> Response {
    let node = &state.node;
    let (outbound_bytes, outbound_bytes_max) = node.hub.outbound_bytes();
    metrics::set_sample(Sample {
        outbound_bytes,
        outbound_bytes_max,
        writer_queue: node.writer.queued(),
        session_tasks: node.sessions.len(),
        runtime_tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks(),
    });
    match metrics::render() {
        Some(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder owns this process")
            .into_response(),
    }
}
