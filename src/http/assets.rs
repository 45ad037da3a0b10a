//! The browser client (`client-js/`) and its demo page, embedded in the binary so a page loads
//! them straight from rtgate with no bundler: `GET /` is the demo, `GET /client/<file>` the ES
//! modules of the client (and its TypeScript declarations), `GET /demo/<file>` the demo's script
//! and style. The files are the ones in `client-js/`, compiled in with `include_str!`, so what is
//! served is always what the client's tests ran against.

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Modules of the client, served under `/client/`. Imports between them are relative, so a page
/// imports `/client/rtgate.js` and the browser fetches the rest.
const CLIENT: &[(&str, &str, &str)] = &[
    ("rtgate.js", JS, include_str!("../../client-js/src/rtgate.js")),
    ("backoff.js", JS, include_str!("../../client-js/src/backoff.js")),
    ("conversation.js", JS, include_str!("../../client-js/src/conversation.js")),
    ("emitter.js", JS, include_str!("../../client-js/src/emitter.js")),
    ("framing.js", JS, include_str!("../../client-js/src/framing.js")),
    ("presence.js", JS, include_str!("../../client-js/src/presence.js")),
    ("subscription.js", JS, include_str!("../../client-js/src/subscription.js")),
    ("transports.js", JS, include_str!("../../client-js/src/transports.js")),
    ("rtgate.d.ts", TEXT, include_str!("../../client-js/src/rtgate.d.ts")),
];

const DEMO: &[(&str, &str, &str)] = &[
    ("demo.js", JS, include_str!("../../client-js/demo/demo.js")),
    ("demo.css", CSS, include_str!("../../client-js/demo/demo.css")),
];

const INDEX: &str = include_str!("../../client-js/demo/index.html");

/// The demo page's policy: its own scripts and styles only, so even a rendering bug could not
/// run injected markup's inline handlers. `connect-src` allows the WebTransport port (another
/// origin) and the WebSocket.
const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self' https: http: wss: ws:; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Adds the asset routes to the HTTP router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .route("/", get(index))
        .route(
            "/client/{file}",
            get(|Path(file): Path<String>| async move { serve(CLIENT, &file) }),
        )
        .route("/demo/{file}", get(|Path(file): Path<String>| async move { serve(DEMO, &file) }))
}

async fn index() -> Response {
    let mut res = asset(HTML, INDEX);
    res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DEMO_CSP));
    res
}

fn serve(table: &[(&str, &'static str, &'static str)], file: &str) -> Response {
    match table.iter().find(|(name, ..)| *name == file) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate every load: a rebuilt server may carry a newer client.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the client imports is served, so the browser never hits a 404 mid-import.
    #[test]
    fn every_relative_import_of_the_client_is_served() {
        for (name, _, body) in CLIENT {
            for line in body.lines().filter(|l| l.contains("from './")) {
                let target = line.split("from './").nth(1).and_then(|r| r.split('\'').next());
                let target = target.unwrap_or_default();
                assert!(
                    CLIENT.iter().any(|(n, ..)| *n == target),
                    "{name} imports {target}, which is not served"
                );
            }
        }
    }
}
