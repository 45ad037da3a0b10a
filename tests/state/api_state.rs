//! The server API's shared state, against every backend: revocations (stored, loaded whole
//! into an instance's copy; a user's tokens up to a time, never narrowed by a later call; one
//! token by `jti`; both forgotten after `until`) and
//! idempotency keys (claimed once, pending, done with the first result, released on failure,
//! forgotten after the window), and channel occupancy (counted across instances, first and
//! last subscriber reported, a dead instance's counts removed, active channels paged).

use std::{sync::Arc, time::Duration};

use rstest::rstest;
use rtgate::state::{
    idempotency::{Claim, Idempotency, memory::MemoryIdempotency, redis::RedisIdempotency},
    now_ms,
    occupancy::{Change, Occupancy, memory::MemoryOccupancy, redis::RedisOccupancy},
    revocation::{
        Known, Mark, Revocations, TokenRef, memory::MemoryRevocations, redis::RedisRevocations,
    },
};

use crate::common::{self, Backend};

async fn revocations(backend: Backend, prefix: &str) -> Arc<dyn Revocations> {
    match backend {
        Backend::Memory => Arc::new(MemoryRevocations::new()),
        Backend::Redis | Backend::Cluster => {
            Arc::new(RedisRevocations::new(backend.conn().await, prefix.to_owned()))
        }
    }
}

async fn idempotency(backend: Backend, prefix: &str) -> Arc<dyn Idempotency> {
    match backend {
        Backend::Memory => Arc::new(MemoryIdempotency::new()),
        Backend::Redis | Backend::Cluster => {
            Arc::new(RedisIdempotency::new(backend.conn().await, prefix.to_owned()))
        }
    }
}

fn token<'a>(user: &'a str, issued_at: Option<u64>, jti: Option<&'a str>) -> TokenRef<'a> {
    TokenRef { user, issued_at, jti }
}

/// What an instance that loads the store now knows.
async fn loaded(r: &Arc<dyn Revocations>) -> Known {
    let known = Known::new();
    known.merge_all(&r.marks().await.unwrap());
    known
}

fn user(user: &str, before: u64, until_ms: u64) -> Mark {
    Mark::User { user: user.into(), before, until_ms }
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn a_user_revocation_covers_tokens_up_to_its_time(#[case] backend: Backend) {
    let prefix = common::unique_prefix("revoke-user");
    let r = revocations(backend, &prefix).await;
    let until = now_ms() + 60_000;
    assert!(r.marks().await.unwrap().is_empty());
    r.revoke(&user("ann", 100, until)).await.unwrap();
    let k = loaded(&r).await;
    assert!(k.is_revoked(token("ann", Some(99), None)));
    assert!(k.is_revoked(token("ann", Some(100), None)));
    assert!(!k.is_revoked(token("ann", Some(101), None)));
    assert!(k.is_revoked(token("ann", None, None)), "no iat: covered");
    assert!(!k.is_revoked(token("bob", Some(1), None)));
    // An earlier time or a shorter keep never narrows it; a later one widens it.
    r.revoke(&user("ann", 50, until - 30_000)).await.unwrap();
    let k = loaded(&r).await;
    assert!(k.is_revoked(token("ann", Some(100), None)));
    assert_eq!(k.marks(), vec![user("ann", 100, until)]);
    r.revoke(&user("ann", 200, until)).await.unwrap();
    assert!(loaded(&r).await.is_revoked(token("ann", Some(150), None)));
    common::cleanup(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn a_token_revocation_covers_that_jti_until_it_lapses(#[case] backend: Backend) {
    let prefix = common::unique_prefix("revoke-jti");
    let r = revocations(backend, &prefix).await;
    let jti = |jti: &str, until_ms| Mark::Token { jti: jti.into(), until_ms };
    let until = now_ms() + 60_000;
    r.revoke(&jti("j1", until)).await.unwrap();
    // A second revocation never shortens the first.
    r.revoke(&jti("j1", until - 30_000)).await.unwrap();
    let k = loaded(&r).await;
    assert!(k.is_revoked(token("ann", Some(1), Some("j1"))));
    assert!(!k.is_revoked(token("ann", Some(1), Some("j2"))));
    assert!(!k.is_revoked(token("ann", Some(1), None)));
    assert_eq!(k.marks(), vec![jti("j1", until)]);
    // Both kinds are forgotten after `until`: not loaded, and not counted by a copy that
    // loaded them before.
    r.revoke(&jti("short", now_ms() + 150)).await.unwrap();
    r.revoke(&user("brief", 10, now_ms() + 150)).await.unwrap();
    let k = loaded(&r).await;
    assert!(k.is_revoked(token("x", Some(1), Some("short"))));
    assert!(k.is_revoked(token("brief", Some(1), None)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!k.is_revoked(token("x", Some(1), Some("short"))));
    assert!(!k.is_revoked(token("brief", Some(1), None)));
    let mut left = r.marks().await.unwrap();
    left.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(left, vec![jti("j1", until)]);
    common::cleanup(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn an_idempotency_key_is_claimed_once_then_answers_with_its_result(#[case] backend: Backend) {
    let prefix = common::unique_prefix("idem");
    let i = idempotency(backend, &prefix).await;
    let window = Duration::from_secs(60);
    assert_eq!(i.claim("k", window).await.unwrap(), Claim::Fresh);
    assert_eq!(i.claim("k", window).await.unwrap(), Claim::Pending);
    i.complete("k", r#"{"offset":3}"#, window).await.unwrap();
    assert_eq!(i.claim("k", window).await.unwrap(), Claim::Done(r#"{"offset":3}"#.into()));
    // A released key (the work failed) can be claimed again.
    assert_eq!(i.claim("f", window).await.unwrap(), Claim::Fresh);
    i.release("f").await.unwrap();
    assert_eq!(i.claim("f", window).await.unwrap(), Claim::Fresh);
    // After the window the key is new again.
    let short = Duration::from_millis(100);
    assert_eq!(i.claim("w", short).await.unwrap(), Claim::Fresh);
    i.complete("w", "{}", short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(i.claim("w", window).await.unwrap(), Claim::Fresh);
    common::cleanup(backend, &prefix).await;
}

async fn occupancy(backend: Backend, prefix: &str) -> Arc<dyn Occupancy> {
    match backend {
        Backend::Memory => Arc::new(MemoryOccupancy::new()),
        Backend::Redis | Backend::Cluster => {
            Arc::new(RedisOccupancy::new(backend.conn().await, prefix.to_owned()))
        }
    }
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn occupancy_counts_subscribers_across_instances_and_reports_first_and_last(
    #[case] backend: Backend,
) {
    let prefix = common::unique_prefix("occupancy");
    let o = occupancy(backend, &prefix).await;
    assert_eq!(o.add("news:a", "i1", 1).await.unwrap(), Change::Occupied);
    assert_eq!(o.add("news:a", "i1", 1).await.unwrap(), Change::Unchanged);
    assert_eq!(o.add("news:a", "i2", 1).await.unwrap(), Change::Unchanged);
    assert_eq!(o.add("news:b", "i2", 1).await.unwrap(), Change::Occupied);
    assert_eq!(o.add("chat:x", "i1", 1).await.unwrap(), Change::Occupied);
    let page = o.list("news:*", None, 100).await.unwrap();
    let mut got = page.channels.clone();
    got.sort();
    assert_eq!(got, [("news:a".to_owned(), 3), ("news:b".to_owned(), 1)]);
    assert_eq!(o.add("news:a", "i1", -2).await.unwrap(), Change::Unchanged);
    assert_eq!(o.add("news:a", "i2", -1).await.unwrap(), Change::Vacated);
    // A dead instance's counts go; the channels it alone held are vacated.
    assert_eq!(o.add("news:b", "i1", 1).await.unwrap(), Change::Unchanged);
    assert_eq!(o.forget_instance("i2").await.unwrap(), Vec::<String>::new());
    assert_eq!(o.forget_instance("i1").await.unwrap().len(), 2, "news:b and chat:x");
    assert!(o.list("*", None, 100).await.unwrap().channels.is_empty());
    common::cleanup(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn active_channels_page_through_every_one_once(#[case] backend: Backend) {
    let prefix = common::unique_prefix("occupancy-pages");
    let o = occupancy(backend, &prefix).await;
    for i in 0..50 {
        o.add(&format!("doc:{i:02}"), "i1", 1).await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = o.list("doc:*", cursor.as_deref(), 10).await.unwrap();
        seen.extend(page.channels.into_iter().map(|(c, _)| c));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 50);
    common::cleanup(backend, &prefix).await;
}
