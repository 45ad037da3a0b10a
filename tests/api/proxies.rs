//! The client behind a load balancer: from a trusted proxy (here 127.0.0.1) the PROXY protocol
//! header or the forwarded header names the client, and that address is what the session
//! records (history's `ipAddress`) and what the per-IP connect rate counts. From anyone else
//! both are ignored.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use rstest::rstest;
use rtgate::config::{Config, ForwardedHeader, TrustedProxies};

use crate::{
    helpers::{TestServer, spawn},
    raw_http::{proxy_v1, proxy_v2, request, session, ws},
};

fn trust(c: &mut Config, nets: &[&str]) {
    c.trusted_proxies = TrustedProxies(nets.iter().map(|n| n.parse().unwrap()).collect());
    c.db_flush_interval = Duration::from_millis(20);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The `ipAddress` of `user`'s newest connection row, read through the history API over a
/// connection that first sends `prefix` (the PROXY header a trusted peer must send).
async fn recorded_ip(server: &TestServer, prefix: &[u8], user: &str) -> String {
    let auth = format!("Bearer {}", server.token(user));
    let path = format!("/api/users/{user}/connections");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = request(server.http, prefix, &path, &[("Authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("history API: {e}"));
        assert_eq!(status, 200, "{body}");
        if let Some(ip) = body["items"][0]["ipAddress"].as_str() {
            return ip.to_owned();
        }
        assert!(Instant::now() < deadline, "no connection row for {user}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn proxy_protocol_from_a_trusted_proxy_names_the_client() {
    let server = spawn(|c| {
        trust(c, &["127.0.0.1/32"]);
        c.proxy_protocol = true;
    })
    .await;
    let api = proxy_v2(addr("198.51.100.1:1"), server.http);
    let v2 = proxy_v2(addr("203.0.113.7:40000"), server.http);
    let _a = session(server.http, &v2, &[], &server.token("pp-v2")).await.unwrap();
    assert_eq!(recorded_ip(&server, &api, "pp-v2").await, "203.0.113.7");

    let v6 = proxy_v2(addr("[2001:db8::7]:40000"), addr("[::1]:3000"));
    let _b = session(server.http, &v6, &[], &server.token("pp-v6")).await.unwrap();
    assert_eq!(recorded_ip(&server, &api, "pp-v6").await, "2001:db8::7");

    let v1 = proxy_v1(addr("203.0.113.8:40001"), server.http);
    let _c = session(server.http, &v1, &[], &server.token("pp-v1")).await.unwrap();
    assert_eq!(recorded_ip(&server, &api, "pp-v1").await, "203.0.113.8");

    // Required from a trusted peer: without it, or with a broken one, no answer at all.
    assert!(request(server.http, b"", "/health/live", &[]).await.is_err(), "no header");
    let mut broken = v2.clone();
    broken[12] = 0x27; // version 2, command 7: not LOCAL or PROXY
    assert!(request(server.http, &broken, "/health/live", &[]).await.is_err(), "broken header");
    assert!(request(server.http, b"PROXY TCP4 nonsense\r\n", "/", &[]).await.is_err(), "v1");
}

#[rstest]
#[case::x_forwarded_for(
    ForwardedHeader::XForwardedFor,
    "X-Forwarded-For",
    "198.51.100.9, 10.1.2.3"
)]
#[case::forwarded(
    ForwardedHeader::Forwarded,
    "Forwarded",
    r#"for=198.51.100.9;proto=https, for="10.1.2.3:5555""#
)]
#[tokio::test]
async fn forwarded_header_from_a_trusted_proxy_names_the_client(
    #[case] which: ForwardedHeader,
    #[case] name: &str,
    #[case] value: &str,
) {
    // Two hops we trust (127.0.0.1 and 10.0.0.0/8): walking from the right skips both.
    let server = spawn(|c| {
        trust(c, &["127.0.0.1/32", "10.0.0.0/8"]);
        c.forwarded_header = which;
    })
    .await;
    let _c = session(server.http, b"", &[(name, value)], &server.token("fwd")).await.unwrap();
    assert_eq!(recorded_ip(&server, b"", "fwd").await, "198.51.100.9");
}

/// A server that trusts 10.0.0.0/8 only: 127.0.0.1 is a client like any other, and whatever it
/// claims about someone else is ignored.
#[tokio::test]
async fn headers_from_an_untrusted_peer_are_ignored() {
    let server = spawn(|c| {
        trust(c, &["10.0.0.0/8"]);
        c.proxy_protocol = true;
    })
    .await;
    let spoof = [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7")];
    let _c = session(server.http, b"", &spoof, &server.token("spoofer")).await.unwrap();
    assert_eq!(recorded_ip(&server, b"", "spoofer").await, "127.0.0.1");

    // A PROXY header is not read from an untrusted peer: it is not HTTP, so the request fails
    // and no session (with or without the claimed address) exists.
    let v2 = proxy_v2(addr("203.0.113.7:40000"), server.http);
    assert!(ws(server.http, &v2, &[]).await.is_err(), "upgrade behind a spoofed PROXY header");
    let v1 = proxy_v1(addr("203.0.113.7:40000"), server.http);
    let refused = request(server.http, &v1, "/health/live", &[]).await;
    assert!(!matches!(refused, Ok((200, _))), "{refused:?}");
    // Without one, the untrusted client is served as usual.
    assert_eq!(request(server.http, b"", "/health/live", &[]).await.unwrap().0, 200);
}

#[derive(Debug, Clone, Copy)]
enum Via {
    ProxyProtocol,
    XForwardedFor,
}

/// Two clients behind one proxy each get their own per-IP budget, and the proxy's own
/// connections are not counted against either (nor against the proxy's address).
#[rstest]
#[case::proxy_protocol(Via::ProxyProtocol)]
#[case::x_forwarded_for(Via::XForwardedFor)]
#[tokio::test]
async fn clients_behind_one_trusted_proxy_have_separate_budgets(#[case] via: Via) {
    let server = spawn(|c| {
        trust(c, &["127.0.0.1/32"]);
        c.proxy_protocol = matches!(via, Via::ProxyProtocol);
        c.connect_rate_per_ip = 2;
        c.connect_rate_window = Duration::from_secs(60);
    })
    .await;
    let open = |client: &'static str| {
        let (prefix, header) = match via {
            Via::ProxyProtocol => (proxy_v2(addr(&format!("{client}:1000")), server.http), vec![]),
            Via::XForwardedFor => (vec![], vec![("X-Forwarded-For", client)]),
        };
        let token = server.token("budget");
        let http = server.http;
        async move { session(http, &prefix, &header, &token).await }
    };
    let mut held = Vec::new();
    for client in ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.2"] {
        held.push(open(client).await.unwrap_or_else(|e| panic!("{client}: {e}")));
    }
    for client in ["203.0.113.1", "203.0.113.2"] {
        let third = open(client).await;
        assert!(third.is_err(), "{client} is over its budget");
        if let (Via::XForwardedFor, Err(e)) = (via, &third) {
            // Counted at the upgrade (the proxy's connection was not): a 429 before any session.
            assert!(e.contains("429"), "{e}");
        }
    }
    assert!(open("203.0.113.3").await.is_ok(), "a third client still has its budget");
}
