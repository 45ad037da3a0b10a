//! The bundled browser client and demo page: served from the binary at stable paths with the
//! content types a page needs to load ES modules without a bundler.

use crate::helpers::spawn;

/// A raw HTTP/1.1 GET; returns the status, the lower-cased head and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[tokio::test]
async fn client_modules_are_served_as_javascript() {
    let server = spawn(|_| {}).await;
    for name in ["rtgate.js", "transports.js", "conversation.js", "backoff.js"] {
        let (status, head, body) = get(server.http, &format!("/client/{name}")).await;
        assert_eq!(status, 200, "{name}");
        assert!(head.contains("content-type: text/javascript; charset=utf-8"), "{name}: {head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert_eq!(body, file(&format!("client-js/src/{name}")), "{name} is the file in client-js");
    }
    let (status, _, body) = get(server.http, "/client/rtgate.d.ts").await;
    assert_eq!(status, 200);
    assert!(body.contains("export declare class RtgateClient"));
}

#[tokio::test]
async fn demo_page_is_served_at_the_root_with_a_strict_policy() {
    let server = spawn(|_| {}).await;
    let (status, head, body) = get(server.http, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'; script-src 'self'"),
        "{head}"
    );
    assert!(body.contains(r#"<script type="module" src="/demo/demo.js">"#));
    let (status, head, _) = get(server.http, "/demo/demo.js").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    let (status, head, _) = get(server.http, "/demo/demo.css").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
}

#[tokio::test]
async fn unknown_assets_are_404() {
    let server = spawn(|_| {}).await;
    for path in ["/client/nope.js", "/client/..%2Fsrc%2Fmain.rs", "/demo/index.html", "/client/"] {
        let (status, ..) = get(server.http, path).await;
        assert_eq!(status, 404, "{path}");
    }
}
