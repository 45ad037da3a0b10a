//! Instances sharing state through a Redis that speaks only TLS and requires client
//! certificates, configured as an operator would (`rediss://`, `--redis-tls-ca`,
//! `--redis-tls-cert`, `--redis-tls-key`): presence and channel fanout cross instances, and a
//! server whose CA is not the configured one stops start-up with the reason.

use std::time::Duration;

use rtgate::{config::RedisTlsConfig, server::Server};
use serde_json::json;

use crate::{
    cluster::{next_event, no_event},
    helpers::{FAN, Kind, fan_namespaces, spawn, subscribe, test_config},
    local_redis::{LocalRedis, Pki},
    redis_util::unique_prefix,
};

fn files(pki: &Pki) -> RedisTlsConfig {
    RedisTlsConfig {
        ca: Some(pki.ca.clone().into()),
        cert: Some(pki.client_cert.clone().into()),
        key: Some(pki.client_key.clone().into()),
    }
}

#[tokio::test]
async fn instances_share_state_through_a_tls_only_redis() {
    let dir = LocalRedis::dir("api-tls");
    let pki = Pki::write(&dir, "ours");
    let other = Pki::write(&dir, "other");
    let redis = LocalRedis::start(dir, 1, |port| pki.server_args(port, true), pki.cli_args());
    let url = format!("rediss://127.0.0.1:{}", redis.ports()[0]);
    let prefix = unique_prefix("tls");
    let mut servers = Vec::new();
    for _ in 0..2 {
        servers.push(
            spawn(|c| {
                c.redis_url = Some(url.clone());
                c.redis_prefix = prefix.clone();
                c.redis_tls = files(&pki);
                c.dev_events = true;
                c.namespaces = fan_namespaces();
            })
            .await,
        );
    }

    let (mut bob, _) = servers[1].connect(Kind::Ws, "bob").await;
    bob.request(1, "presence:subscribe", json!({"userIds": ["alice"]})).await;
    let (_alice, _) = servers[0].connect(Kind::Wt, "alice").await;
    let up = next_event(&mut bob, "presence:update").await;
    assert_eq!((up["userId"].as_str(), up["status"].as_str()), (Some("alice"), Some("online")));

    let lobby = format!("{FAN}:lobby");
    subscribe(&mut bob, 2, &lobby).await;
    let (mut publisher, _) = servers[0].connect(Kind::Ws, "backend").await;
    let ack =
        publisher.request(1, "sys:channel-publish", json!({"channel": lobby, "data": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let p = next_event(&mut bob, "channel:publication").await;
    assert_eq!(p, json!({"channel": lobby, "data": 1}));
    no_event(&mut bob, "channel:publication", Duration::from_millis(200)).await;

    // The same Redis with another CA configured: start-up fails, saying why.
    let mut config = test_config();
    config.redis_url = Some(url.clone());
    config.redis_prefix = prefix;
    config.redis_tls = files(&other);
    config.redis_tls.cert = files(&pki).cert;
    config.redis_tls.key = files(&pki).key;
    let err = match Server::bind(config).await {
        Ok(_) => panic!("started against a Redis its CA did not sign"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("invalid peer certificate"), "{err}");
}
