//! The channel presence suite: add, replace, remove, list with a limit, stats with distinct
//! users, expiry and refresh (an entry not refreshed disappears; one refreshed stays; a removed
//! one is not brought back). Every case runs against every backend.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bytes::Bytes;
use rstest::rstest;
use rtgate::state::channel_presence::{
    ChannelPresence, Stats, memory::MemoryChannelPresence, redis::RedisChannelPresence,
};

use crate::common::{self, Backend};

const TTL: Duration = Duration::from_secs(60);

async fn presence(backend: Backend, prefix: &str) -> Arc<dyn ChannelPresence> {
    match backend {
        Backend::Memory => Arc::new(MemoryChannelPresence::new()),
        Backend::Redis | Backend::Cluster => {
            Arc::new(RedisChannelPresence::new(backend.conn().await, prefix))
        }
    }
}

async fn finish(backend: Backend, prefix: &str) {
    common::cleanup(backend, prefix).await;
}

fn info(client: &str, user: &str) -> Bytes {
    Bytes::from(format!(r#"{{"clientId":"{client}","userId":"{user}"}}"#))
}

async fn listed(p: &dyn ChannelPresence, channel: &str) -> BTreeSet<Bytes> {
    p.list(channel, 100).await.unwrap().into_iter().collect()
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn clients_are_listed_and_counted_until_removed(#[case] backend: Backend) {
    let prefix = common::unique_prefix("chpres-basic");
    let p = presence(backend, &prefix).await;
    p.add("doc:1", "c1", "alice", info("c1", "alice"), TTL).await.unwrap();
    p.add("doc:1", "c2", "alice", info("c2", "alice"), TTL).await.unwrap();
    p.add("doc:1", "c3", "bob", info("c3", "bob"), TTL).await.unwrap();
    p.add("doc:2", "c1", "alice", info("c1", "alice"), TTL).await.unwrap();
    assert_eq!(p.stats("doc:1").await.unwrap(), Stats { clients: 3, users: 2 });
    assert_eq!(
        listed(&*p, "doc:1").await,
        [info("c1", "alice"), info("c2", "alice"), info("c3", "bob")].into_iter().collect()
    );
    assert_eq!(p.list("doc:1", 2).await.unwrap().len(), 2, "the list is capped");
    // Adding again replaces the entry.
    let updated = Bytes::from_static(br#"{"clientId":"c3","userId":"bob","data":{"x":1}}"#);
    p.add("doc:1", "c3", "bob", updated.clone(), TTL).await.unwrap();
    assert!(listed(&*p, "doc:1").await.contains(&updated));
    assert_eq!(p.stats("doc:1").await.unwrap().clients, 3);
    p.remove("doc:1", "c1").await.unwrap();
    p.remove("doc:1", "c1").await.unwrap();
    p.remove("doc:1", "c2").await.unwrap();
    assert_eq!(p.stats("doc:1").await.unwrap(), Stats { clients: 1, users: 1 });
    assert_eq!(p.stats("nobody:here").await.unwrap(), Stats::default());
    assert!(p.list("nobody:here", 10).await.unwrap().is_empty());
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn entries_expire_unless_refreshed(#[case] backend: Backend) {
    let prefix = common::unique_prefix("chpres-ttl");
    let p = presence(backend, &prefix).await;
    let short = Duration::from_millis(300);
    p.add("c", "kept", "u1", info("kept", "u1"), short).await.unwrap();
    p.add("c", "dropped", "u2", info("dropped", "u2"), short).await.unwrap();
    p.add("c", "removed", "u3", info("removed", "u3"), short).await.unwrap();
    p.remove("c", "removed").await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let keep = [("c".to_owned(), "kept".to_owned()), ("c".to_owned(), "removed".to_owned())];
        p.refresh(&keep, short).await.unwrap();
    }
    assert_eq!(listed(&*p, "c").await, [info("kept", "u1")].into_iter().collect());
    assert_eq!(p.stats("c").await.unwrap(), Stats { clients: 1, users: 1 });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(p.stats("c").await.unwrap(), Stats::default());
    finish(backend, &prefix).await;
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn redis_keys_are_tagged_and_expire(#[case] backend: Backend) {
    let prefix = common::unique_prefix("chpres-keys");
    let p = presence(backend, &prefix).await;
    p.add("doc:42", "c1", "alice", info("c1", "alice"), TTL).await.unwrap();
    let mut con = backend.conn().await;
    let keys = common::keys(backend, &prefix).await;
    assert_eq!(
        keys,
        [format!("{prefix}ch:{{doc:42}}:pexp"), format!("{prefix}ch:{{doc:42}}:pres")]
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{key}: {ttl}");
    }
    p.remove("doc:42", "c1").await.unwrap();
    let left = common::keys(backend, &prefix).await;
    assert!(left.is_empty(), "{left:?}");
    finish(backend, &prefix).await;
}
