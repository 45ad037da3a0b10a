//! What the server API does to sessions, on every instance: disconnect (with and without
//! reconnect advice), token revocation by user and by `jti` (within a second, and refused at
//! the next connect), server-side subscribe and unsubscribe; and, for every session, token
//! refresh while connected.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::json;

use crate::{
    api_util::{KEY, call},
    cluster::{Backend, next_event, no_event},
    helpers::{Client, Kind, spawn, subscribe},
    redis_util::{cleanup, redis_url, unique_prefix},
    server_api::start,
};

/// Reads until the server's `disconnect` frame; returns it.
async fn disconnect_frame(c: &mut Client) -> serde_json::Value {
    loop {
        let f = c.recv().await.expect("closed without a disconnect frame");
        if f["type"] == "disconnect" {
            return f;
        }
    }
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn disconnect_ends_a_users_sessions_everywhere_or_just_one(#[case] backend: Backend) {
    let cluster = start(backend, "api_disconnect").await;
    let (mut a, ca) = cluster.at(0).connect(Kind::Ws, "dana").await;
    let (mut b, _) = cluster.at(1).connect(Kind::Wt, "dana").await;
    let (mut other, _) = cluster.at(1).connect(Kind::Ws, "olaf").await;
    let api = cluster.at(1).http;
    // One session, told to reconnect.
    let one = json!({"user": "dana", "session": ca["sessionId"], "reconnect": true});
    call(api, "disconnect", one).await;
    let d = disconnect_frame(&mut a).await;
    assert_eq!(
        (d["code"].clone(), d["reason"].clone(), d["reconnect"].clone()),
        (json!(3010), json!("force_reconnect"), json!(true)),
        "{d}"
    );
    assert_eq!(b.request(1, "sys:echo", json!(1)).await["type"], "ack");
    // Every session, told to stay away.
    call(api, "disconnect", json!({"user": "dana", "message": "account closed"})).await;
    let d = disconnect_frame(&mut b).await;
    assert_eq!(
        (d["code"].clone(), d["reason"].clone(), d["reconnect"].clone()),
        (json!(3504), json!("force_disconnect"), json!(false)),
        "{d}"
    );
    assert_eq!(d["message"], "account closed");
    assert_eq!(other.request(1, "sys:echo", json!(1)).await["type"], "ack");
    let prefix = cluster.prefix.clone();
    cluster.stop().await;
    cleanup(&prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn revoked_tokens_end_their_sessions_within_a_second_and_stay_out(#[case] backend: Backend) {
    let cluster = start(backend, "api_revoke").await;
    let (s0, s1) = (cluster.at(0), cluster.at(1));
    let token = s0.token("rita");
    let connect = |server: &crate::helpers::TestServer, token: String| {
        let (http, wt, cert) = (server.http, server.wt, server.cert);
        async move {
            let mut c = Client::open(Kind::Ws, http, wt, cert).await;
            c.send(&json!({"type": "connect", "v": 1, "token": token})).await;
            let first = c.recv().await.unwrap();
            (c, first)
        }
    };
    let (mut a, first) = connect(s0, token.clone()).await;
    assert_eq!(first["type"], "connected");
    let (mut b, _) = connect(s1, token.clone()).await;
    let started = Instant::now();
    call(s1.http, "revoke-user", json!({"user": "rita"})).await;
    for c in [&mut a, &mut b] {
        let d = disconnect_frame(c).await;
        assert_eq!((d["code"].clone(), d["reason"].clone()), (json!(3505), json!("token_revoked")));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // The same token is refused at connect, on both instances.
    for server in [s0, s1] {
        let (_, refused) = connect(server, token.clone()).await;
        assert_eq!(refused["code"], "token_revoked", "{refused}");
    }
    // A token issued after the revocation (the next second) is fine.
    let next_second = 1000 - (rtgate::state::now_ms() % 1000) + 20;
    tokio::time::sleep(Duration::from_millis(next_second)).await;
    let (_, ok) = connect(s1, s1.token("rita")).await;
    assert_eq!(ok["type"], "connected", "{ok}");

    // One token by its jti: only the session that uses it ends.
    let (t1, t2) = (s0.token("tom"), s0.token("tom"));
    let jti = jti_of(&t1);
    let (mut c1, _) = connect(s0, t1).await;
    let (mut c2, _) = connect(s1, t2).await;
    call(s0.http, "revoke-token", json!({"jti": jti})).await;
    assert_eq!(disconnect_frame(&mut c1).await["code"], 3505);
    assert_eq!(c2.request(1, "sys:echo", json!(1)).await["type"], "ack");
    let prefix = cluster.prefix.clone();
    cluster.stop().await;
    cleanup(&prefix).await;
}

/// An instance checks revocations against its own copy, loaded from the store: one started
/// after a revocation refuses the token at once, and one that missed a revocation's
/// announcement (stored without one here) learns it at its next cleanup run.
#[tokio::test]
async fn instances_load_revocations_they_were_not_told_of() {
    use rtgate::state::{
        redis_conn::RedisConn,
        revocation::{Mark, Revocations, redis::RedisRevocations},
    };
    let prefix = unique_prefix("api_revoke_load");
    let on_redis = |c: &mut rtgate::config::Config| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.api.keys = vec![KEY.into()];
        c.cleanup_interval = Duration::from_millis(200);
    };
    let a = spawn(on_redis).await;
    let connect = |server: &crate::helpers::TestServer, token: String| {
        let (http, wt, cert) = (server.http, server.wt, server.cert);
        async move {
            let mut c = Client::open(Kind::Ws, http, wt, cert).await;
            c.send(&json!({"type": "connect", "v": 1, "token": token})).await;
            c.recv().await.unwrap()
        }
    };
    let token = a.token("rosa");
    call(a.http, "revoke-user", json!({"user": "rosa"})).await;
    let b = spawn(on_redis).await;
    assert_eq!(connect(&b, token).await["code"], "token_revoked");

    let token = b.token("ravi");
    assert_eq!(connect(&b, token.clone()).await["type"], "connected");
    let store =
        RedisRevocations::new(RedisConn::connect(&redis_url()).await.unwrap(), prefix.clone());
    let until_ms = rtgate::state::now_ms() + 60_000;
    store.revoke(&Mark::Token { jti: jti_of(&token), until_ms }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let first = connect(&b, token.clone()).await;
        if first["code"] == "token_revoked" {
            break;
        }
        assert_eq!(first["type"], "connected", "{first}");
        assert!(Instant::now() < deadline, "the stored revocation was never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in [a, b] {
        s.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
    }
    cleanup(&prefix).await;
}

/// The `jti` claim of a token (its payload, unverified).
fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn server_side_subscribe_and_unsubscribe(#[case] backend: Backend) {
    let cluster = start(backend, "api_subscribe").await;
    let (mut a, _) = cluster.at(0).connect(Kind::Ws, "sam").await;
    let (mut b, _) = cluster.at(1).connect(Kind::Wt, "sam").await;
    let api = cluster.at(1).http;
    call(api, "publish", json!({"channel": "news:srv", "data": 0})).await;
    call(api, "subscribe", json!({"user": "sam", "channel": "news:srv"})).await;
    for c in [&mut a, &mut b] {
        let s = next_event(c, "channel:subscribed").await;
        assert_eq!(
            (s["channel"].clone(), s["offset"].clone()),
            (json!("news:srv"), json!(1)),
            "{s}"
        );
    }
    call(api, "publish", json!({"channel": "news:srv", "data": 1})).await;
    for c in [&mut a, &mut b] {
        assert_eq!(next_event(c, "channel:publication").await["offset"], 2);
    }
    // Subscribing again changes nothing.
    call(api, "subscribe", json!({"user": "sam", "channel": "news:srv"})).await;
    no_event(&mut a, "channel:subscribed", Duration::from_millis(200)).await;

    call(cluster.at(0).http, "unsubscribe", json!({"user": "sam", "channel": "news:srv"})).await;
    for c in [&mut a, &mut b] {
        let u = next_event(c, "channel:unsubscribed").await;
        assert_eq!(
            (u["code"].clone(), u["resubscribe"].clone()),
            (json!("unsubscribed"), json!(false))
        );
    }
    call(api, "publish", json!({"channel": "news:srv", "data": 2})).await;
    no_event(&mut a, "channel:publication", Duration::from_millis(300)).await;
    // A client subscription the backend ends is gone too; the client may subscribe again.
    subscribe(&mut a, 7, "news:srv").await;
    let prefix = cluster.prefix.clone();
    cluster.stop().await;
    cleanup(&prefix).await;
}

#[rstest]
#[case::ws(Kind::Ws)]
#[case::wt(Kind::Wt)]
#[tokio::test]
async fn a_session_refreshes_its_token_before_it_expires(#[case] kind: Kind) {
    let s = spawn(|c| {
        c.jwt.leeway = Duration::ZERO;
        c.jwt.refresh_notice = Duration::from_millis(1500);
        c.api.keys = vec![KEY.into()];
    })
    .await;
    let mut c = s.open(kind).await;
    c.send(
        &json!({"type": "connect", "v": 1, "token": s.token_for("ivy", Duration::from_secs(3))}),
    )
    .await;
    let connected = c.recv().await.unwrap();
    assert_eq!(connected["type"], "connected");
    let notice = next_event(&mut c, "sys:token-expiring").await;
    assert_eq!(notice["expiresAt"], connected["expiresAt"]);
    // Refusals leave the session up: another user's token, garbage.
    let other = c.request(1, "sys:refresh", json!({"token": s.token("eve")})).await;
    assert_eq!(other["code"], "forbidden", "{other}");
    let junk = c.request(2, "sys:refresh", json!({"token": "x.y.z"})).await;
    assert_eq!(junk["code"], "forbidden", "{junk}");
    let ack = c.request(3, "sys:refresh", json!({"token": s.token("ivy")})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(ack["data"]["expiresAt"].as_u64().unwrap() > connected["expiresAt"].as_u64().unwrap());
    // Past the first token's expiry the session lives on.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(c.request(4, "sys:echo", json!("still here")).await["data"], "still here");

    // Without a refresh the session still ends with token_expired.
    let mut d = s.open(kind).await;
    d.send(
        &json!({"type": "connect", "v": 1, "token": s.token_for("ivy", Duration::from_secs(2))}),
    )
    .await;
    assert_eq!(d.recv().await.unwrap()["type"], "connected");
    next_event(&mut d, "sys:token-expiring").await;
    assert_eq!(disconnect_frame(&mut d).await["reason"], "token_expired");
    // A refreshed token that is then revoked ends the session as revoked.
    call(s.http, "revoke-user", json!({"user": "ivy"})).await;
    assert_eq!(disconnect_frame(&mut c).await["reason"], "token_revoked");
}
