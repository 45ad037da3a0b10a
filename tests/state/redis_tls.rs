//! Redis over TLS: one Redis (`rediss://`) that requires a client certificate, and a Redis
//! Cluster (`rediss+cluster://`) whose nodes speak only TLS, to each other as well; both on
//! servers of this test's own with a certificate authority of its own. Keyed calls, a script
//! and a broker delivery must work through `RedisConn` and `RedisBroker` given that CA, and a
//! server the given CA did not sign, or a missing client certificate, must be refused.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionLike;
use rtgate::state::broker::redis::RedisBroker;
use rtgate::state::broker::{Broker, Channel};
use rtgate::state::redis_conn::{RedisConn, RedisTls};

use crate::local_redis::{LocalRedis, Pki};

const WAIT: Duration = Duration::from_secs(5);

async fn call(conn: &mut RedisConn, cmd: &redis::Cmd) -> redis::Value {
    tokio::time::timeout(WAIT, conn.req_packed_command(cmd)).await.unwrap().unwrap()
}

/// Keyed calls on keys of different slots, a script, and one message through the broker.
async fn exercise(url: &str, tls: &RedisTls) {
    let mut conn = RedisConn::connect_with(url, tls).await.unwrap();
    for key in ["{a}:k", "{b}:k", "{c}:k"] {
        call(&mut conn, redis::cmd("SET").arg(key).arg(key)).await;
        let got: String =
            redis::from_redis_value(call(&mut conn, redis::cmd("GET").arg(key)).await).unwrap();
        assert_eq!(got, key);
    }
    let script =
        redis::cmd("EVAL").arg("return redis.call('INCR', KEYS[1])").arg(1).arg("{a}:n").clone();
    let n: i64 = redis::from_redis_value(call(&mut conn, &script).await).unwrap();
    assert_eq!(n, 1);

    let publisher = RedisBroker::connect_with(url, "tls:", tls).await.unwrap();
    let subscriber = RedisBroker::connect_with(url, "tls:", tls).await.unwrap();
    let mut rx = subscriber.take_receiver().unwrap();
    let channel = Channel::Chan("over-tls".into());
    subscriber.subscribe(&channel).await.unwrap();
    publisher.publish(&channel, Bytes::from_static(b"sealed")).await.unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"sealed"));
}

/// Why connecting with `tls` failed: at once, for nothing a retry would fix.
async fn refused(url: &str, tls: &RedisTls) -> String {
    match tokio::time::timeout(WAIT, RedisConn::connect_with(url, tls)).await {
        Ok(Ok(_)) => panic!("{url} was reached with material it should refuse"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("connecting to {url} neither succeeded nor failed within {WAIT:?}"),
    }
}

#[tokio::test]
async fn one_redis_over_tls_with_a_client_certificate() {
    let dir = LocalRedis::dir("tls-single");
    let pki = Pki::write(&dir, "ours");
    let other = Pki::write(&dir, "other");
    let redis = LocalRedis::start(dir, 1, |port| pki.server_args(port, true), pki.cli_args());
    let url = format!("rediss://127.0.0.1:{}", redis.ports()[0]);

    exercise(&url, &pki.rtgate(true)).await;

    // A CA that did not sign the server: the handshake fails on our side.
    let e = refused(&url, &other.rtgate(true)).await;
    assert!(e.contains("invalid peer certificate"), "{e}");
    // No client certificate where the server requires one: the server's alert.
    let e = refused(&url, &pki.rtgate(false)).await;
    assert!(e.contains("CertificateRequired"), "{e}");
    // Plain Redis protocol to a TLS port is no way in either.
    refused(&format!("redis://127.0.0.1:{}", redis.ports()[0]), &RedisTls::default()).await;
}

#[tokio::test]
async fn redis_cluster_over_tls() {
    let dir = LocalRedis::dir("tls-cluster");
    let pki = Pki::write(&dir, "ours");
    let other = Pki::write(&dir, "other");
    let args = |port: u16| {
        let mut args = pki.server_args(port, false);
        args.extend(["--cluster-enabled", "yes"].map(String::from));
        args
    };
    let cluster = LocalRedis::start(dir, 3, args, pki.cli_args());
    cluster.create_cluster(0);
    let seeds: Vec<String> = cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let url = format!("rediss+cluster://{}", seeds.join(","));

    // The CA alone: these nodes do not ask for a client certificate.
    exercise(&url, &pki.rtgate(false)).await;

    let e = refused(&url, &other.rtgate(false)).await;
    assert!(e.contains("invalid peer certificate"), "{e}");
}
