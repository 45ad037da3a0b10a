//! The channel history suite: offsets, epochs, trimming, expiry, reads in both directions,
//! and concurrent appends from two handles (two instances). Every case runs against both
//! backends.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use rstest::rstest;
use rtgate::state::history::{
    History, HistoryOptions, Range, memory::MemoryHistory, redis::RedisHistory,
};

use crate::common::{self, Backend};

const OPTS: HistoryOptions =
    HistoryOptions { size: 5, ttl: Duration::from_secs(60), meta_ttl: Duration::from_secs(600) };

async fn history(backend: Backend, prefix: &str) -> Arc<dyn History> {
    match backend {
        Backend::Memory => Arc::new(MemoryHistory::new()),
        Backend::Redis => {
            let client = redis::Client::open(common::redis_url()).unwrap();
            Arc::new(RedisHistory::new(ConnectionManager::new(client).await.unwrap(), prefix))
        }
    }
}

/// Two handles on one shared history, as two instances hold: on Redis, two connections.
async fn two(backend: Backend, prefix: &str) -> (Arc<dyn History>, Arc<dyn History>) {
    let a = history(backend, prefix).await;
    let b = match backend {
        Backend::Memory => a.clone(),
        Backend::Redis => history(backend, prefix).await,
    };
    (a, b)
}

async fn finish(backend: Backend, prefix: &str) {
    if backend == Backend::Redis {
        common::cleanup(prefix).await;
    }
}

fn entry(n: u64) -> Bytes {
    Bytes::from(format!(r#","data":{n}"#))
}

fn offsets(entries: &[(u64, Bytes)]) -> Vec<u64> {
    entries.iter().map(|(o, _)| *o).collect()
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn appends_get_gapless_offsets_in_one_epoch(#[case] backend: Backend) {
    let prefix = common::unique_prefix("history-offsets");
    let h = history(backend, &prefix).await;
    // Reading first creates the position: the first append keeps its epoch.
    let empty = h.read("news:a", Range::After(0), 10, &OPTS).await.unwrap();
    assert_eq!((empty.top.offset, empty.entries.len()), (0, 0));
    assert!(!empty.top.epoch.is_empty());
    for n in 1..=3 {
        let p = h.append("news:a", entry(n), &OPTS).await.unwrap();
        assert_eq!((p.offset, &p.epoch), (n, &empty.top.epoch));
    }
    let page = h.read("news:a", Range::After(1), 10, &OPTS).await.unwrap();
    assert_eq!(offsets(&page.entries), [2, 3]);
    assert_eq!(page.entries[0].1, entry(2));
    assert_eq!(page.top.offset, 3);
    // Channels are independent.
    assert_eq!(h.append("news:b", entry(1), &OPTS).await.unwrap().offset, 1);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn history_keeps_the_newest_size_entries_and_reads_both_ways(#[case] backend: Backend) {
    let prefix = common::unique_prefix("history-trim");
    let h = history(backend, &prefix).await;
    for n in 1..=8 {
        h.append("c", entry(n), &OPTS).await.unwrap();
    }
    let all = h.read("c", Range::After(0), 100, &OPTS).await.unwrap();
    assert_eq!(offsets(&all.entries), [4, 5, 6, 7, 8], "the oldest were trimmed");
    let limited = h.read("c", Range::After(5), 2, &OPTS).await.unwrap();
    assert_eq!(offsets(&limited.entries), [6, 7]);
    let newest = h.read("c", Range::Newest, 3, &OPTS).await.unwrap();
    assert_eq!(offsets(&newest.entries), [8, 7, 6]);
    let none = h.read("c", Range::After(0), 0, &OPTS).await.unwrap();
    assert_eq!((none.top.offset, none.entries.len()), (8, 0));
    // Removal drops the entries, not the position.
    h.remove("c").await.unwrap();
    let after = h.read("c", Range::After(0), 100, &OPTS).await.unwrap();
    assert_eq!(
        (after.top.offset, after.top.epoch.clone(), after.entries.len()),
        (8, all.top.epoch, 0)
    );
    assert_eq!(h.append("c", entry(9), &OPTS).await.unwrap().offset, 9);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn entries_expire_before_the_position_and_a_lost_position_changes_the_epoch(
    #[case] backend: Backend,
) {
    let prefix = common::unique_prefix("history-expiry");
    let h = history(backend, &prefix).await;
    let short = HistoryOptions {
        size: 5,
        ttl: Duration::from_millis(150),
        meta_ttl: Duration::from_millis(600),
    };
    let first = h.append("c", entry(1), &short).await.unwrap();
    h.append("c", entry(2), &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = h.read("c", Range::After(0), 10, &short).await.unwrap();
    assert_eq!(
        (quiet.top.offset, quiet.top.epoch.clone(), quiet.entries.len()),
        (2, first.epoch.clone(), 0)
    );
    // Offsets keep counting while the position lives.
    assert_eq!(h.append("c", entry(3), &short).await.unwrap().offset, 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let lost = h.append("c", entry(1), &short).await.unwrap();
    assert_eq!(lost.offset, 1, "a lost position starts again");
    assert_ne!(lost.epoch, first.epoch, "… in a new epoch");
    finish(backend, &prefix).await;
}

/// Two instances appending at once never share or skip an offset.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_two_instances_share_no_offset(#[case] backend: Backend) {
    let prefix = common::unique_prefix("history-race");
    let (a, b) = two(backend, &prefix).await;
    let big = HistoryOptions { size: 1000, ..OPTS };
    let tasks: Vec<_> = (0..400)
        .map(|n| {
            let h = if n % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { h.append("race", entry(n), &big).await.unwrap() })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut epochs = BTreeSet::new();
    for t in tasks {
        let p = t.await.unwrap();
        seen.insert(p.offset);
        epochs.insert(p.epoch);
    }
    assert_eq!(seen, (1..=400).collect::<BTreeSet<u64>>());
    assert_eq!(epochs.len(), 1);
    let page = a.read("race", Range::After(0), 1000, &big).await.unwrap();
    assert_eq!(offsets(&page.entries), (1..=400).collect::<Vec<u64>>());
    finish(backend, &prefix).await;
}

/// On Redis, every key of a channel carries its hash tag (one slot) and an expiry.
#[tokio::test]
async fn redis_keys_are_tagged_and_expire() {
    let prefix = common::unique_prefix("history-keys");
    let h = history(Backend::Redis, &prefix).await;
    h.append("doc:42", entry(1), &OPTS).await.unwrap();
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut con).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [format!("{prefix}ch:{{doc:42}}:hist"), format!("{prefix}ch:{{doc:42}}:meta")]
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
        assert!(ttl > 0, "{key}: {ttl}");
    }
    finish(Backend::Redis, &prefix).await;
}
