//! What `serve` prints once it listens: where (both transports, the server API), and the one
//! machine-readable `READY` line scripts and tests wait for.

use super::{Server, WT_PATH};
use crate::http;

/// Says where the server listens, then the one machine-readable `READY` line scripts and tests
/// wait for (`READY http=… wt=… cert_sha256=…`). With `--log-format json` both are JSON lines
/// shaped like the log lines, so every stdout line stays one JSON object (`fields.message` is
/// `READY`, with `http`, `wt` and `cert_sha256`).
pub(super) fn announce(server: &Server) {
    let (http, wt, hash) = (server.http_addr, server.wt_addr, server.certs.sha256_hex());
    let scheme = if server.node.config.tls_cert.is_some() { "wss" } else { "ws" };
    let ws_url = format!("{scheme}://{http}{}", http::WS_PATH);
    let wt_url = format!("https://{wt}{WT_PATH}");
    let api_url = match server.api_addr() {
        Some(addr) => format!("http://{addr}/api/v1"),
        None => format!("{}://{http}/api/v1", if scheme == "wss" { "https" } else { "http" }),
    };
    let api_access = match server.node.config.api.keys.len() {
        0 => "loopback clients only: set --api-keys".to_owned(),
        n => format!("{n} API key(s)"),
    };
    if server.node.config.log_format == crate::config::LogFormat::Json {
        // Printed, not logged: scripts wait for these whatever the log filter says. The shape
        // is the JSON log lines' own (`timestamp`, `level`, `fields.message`, `target`).
        let line = |fields: serde_json::Value| {
            let now = time::OffsetDateTime::now_utc();
            let timestamp =
                now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            serde_json::json!({
                "timestamp": timestamp,
                "level": "INFO",
                "fields": fields,
                "target": module_path!(),
            })
        };
        println!(
            "{}",
            line(serde_json::json!({
                "message": "listening",
                "version": env!("CARGO_PKG_VERSION"),
                "websocket": ws_url,
                "webtransport": wt_url,
                "api": api_url,
                "selfSigned": server.certs.self_signed,
                "instance": server.node.instance_id,
                "incarnation": server.node.incarnation,
            }))
        );
        println!(
            "{}",
            line(serde_json::json!({
                "message": "READY",
                "http": http.to_string(),
                "wt": wt.to_string(),
                "cert_sha256": hash,
            }))
        );
        return;
    }
    println!(
        "rtgate {} listening ({})\n  websocket     {ws_url}   (TCP {}; health at /health/ready)\n  webtransport  {wt_url}   (UDP {}; cert sha-256 {hash}{})\n  server api    {api_url}   ({api_access}; /api/v1/openapi.json)",
        env!("CARGO_PKG_VERSION"),
        server.node.incarnation,
        http.port(),
        wt.port(),
        if server.certs.self_signed { ", self-signed: GET /cert-hash" } else { "" },
    );
    // One machine-readable line for scripts and tests that start the binary on port 0.
    println!("READY http={http} wt={wt} cert_sha256={hash}");
}
