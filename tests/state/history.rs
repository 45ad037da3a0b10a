//! The channel history suite: offsets, epochs, trimming, reads in both directions, and
//! concurrent appends from two handles (two instances). The shared cases run against every
//! implementation: memory, Redis, Redis Cluster, and the durable history in SQLite and PostgreSQL; what
//! expires differs (shared state: everything after `ttl`, the position after `meta_ttl`;
//! durable: each entry `ttl` after its append, the position until retention), and has a case
//! per kind.

use std::{collections::BTreeSet, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use bytes::Bytes;
use rstest::rstest;
use rtgate::{
    state::history::{History, HistoryOptions, Range, memory::MemoryHistory, redis::RedisHistory},
    store::{Store, postgres::PgStore, sqlite::SqliteStore},
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{self, Backend};

const OPTS: HistoryOptions = HistoryOptions {
    size: 5,
    ttl: Duration::from_secs(60),
    meta_ttl: Duration::from_secs(600),
    durable: false,
};

/// Which implementation a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Redis,
    Cluster,
    Sqlite,
    Postgres,
}

/// One test's history, and what it leaves behind.
struct Fixture {
    kind: Kind,
    prefix: String,
    sqlite_dir: PathBuf,
    schema: String,
}

impl Fixture {
    async fn new(kind: Kind, test: &str) -> Fixture {
        let prefix = common::unique_prefix(test);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let fixture = Fixture {
            kind,
            prefix,
            sqlite_dir: std::env::temp_dir().join(format!("rtgate-history-test-{id}")),
            schema: format!("rtgate_history_{id}"),
        };
        if kind == Kind::Postgres {
            let admin =
                sqlx::PgPool::connect(&pg_url()).await.expect("PostgreSQL at DATABASE_TEST_URL");
            sqlx::query(&format!("CREATE SCHEMA {}", fixture.schema))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
        fixture
    }

    /// A handle on the test's history. Every call gives another handle on the same shared or
    /// stored history (a connection of its own, as another instance has), except in memory,
    /// where one handle is all an instance has.
    async fn handle(&self) -> Arc<dyn History> {
        match self.kind {
            Kind::Memory => unreachable!("memory handles come from `two`"),
            Kind::Redis => {
                Arc::new(RedisHistory::new(Backend::Redis.conn().await, self.prefix.as_str()))
            }
            Kind::Cluster => {
                Arc::new(RedisHistory::new(Backend::Cluster.conn().await, self.prefix.as_str()))
            }
            Kind::Sqlite => self.store().await.channel_history(),
            Kind::Postgres => self.store().await.channel_history(),
        }
    }

    /// The test's migrated database (SQL kinds only).
    async fn store(&self) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = match self.kind {
            Kind::Sqlite => {
                Arc::new(SqliteStore::open(&self.sqlite_dir.join("h.sqlite")).await.unwrap())
            }
            Kind::Postgres => {
                let options = PgConnectOptions::from_str(&pg_url())
                    .unwrap()
                    .options([("search_path", self.schema.as_str())]);
                let pool =
                    PgPoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
                Arc::new(PgStore::new(pool))
            }
            _ => unreachable!("only the SQL kinds have a store"),
        };
        store.migrate().await.unwrap();
        store
    }

    async fn one(&self) -> Arc<dyn History> {
        self.two().await.0
    }

    async fn two(&self) -> (Arc<dyn History>, Arc<dyn History>) {
        if self.kind == Kind::Memory {
            let h: Arc<dyn History> = Arc::new(MemoryHistory::new());
            return (h.clone(), h);
        }
        (self.handle().await, self.handle().await)
    }

    fn opts(&self, opts: HistoryOptions) -> HistoryOptions {
        HistoryOptions { durable: matches!(self.kind, Kind::Sqlite | Kind::Postgres), ..opts }
    }

    async fn finish(self) {
        match self.kind {
            Kind::Memory => {}
            Kind::Redis => common::cleanup(Backend::Redis, &self.prefix).await,
            Kind::Cluster => common::cleanup(Backend::Cluster, &self.prefix).await,
            Kind::Sqlite => {
                let _ = std::fs::remove_dir_all(&self.sqlite_dir);
            }
            Kind::Postgres => {
                let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
                sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
            }
        }
    }
}

fn pg_url() -> String {
    std::env::var("DATABASE_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn entry(n: u64) -> Bytes {
    Bytes::from(format!(r#","data":{n}"#))
}

fn offsets(entries: &[(u64, Bytes)]) -> Vec<u64> {
    entries.iter().map(|(o, _)| *o).collect()
}

#[rstest]
#[case::memory(Kind::Memory)]
#[case::redis(Kind::Redis)]
#[case::cluster(Kind::Cluster)]
#[case::sqlite(Kind::Sqlite)]
#[case::postgres(Kind::Postgres)]
#[tokio::test]
async fn appends_get_gapless_offsets_in_one_epoch(#[case] kind: Kind) {
    let f = Fixture::new(kind, "history-offsets").await;
    let h = f.one().await;
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
    f.finish().await;
}

#[rstest]
#[case::memory(Kind::Memory)]
#[case::redis(Kind::Redis)]
#[case::cluster(Kind::Cluster)]
#[case::sqlite(Kind::Sqlite)]
#[case::postgres(Kind::Postgres)]
#[tokio::test]
async fn history_keeps_the_newest_size_entries_and_reads_both_ways(#[case] kind: Kind) {
    let f = Fixture::new(kind, "history-trim").await;
    let h = f.one().await;
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
    f.finish().await;
}

#[rstest]
#[case::memory(Kind::Memory)]
#[case::redis(Kind::Redis)]
#[case::cluster(Kind::Cluster)]
#[tokio::test]
async fn entries_expire_before_the_position_and_a_lost_position_changes_the_epoch(
    #[case] kind: Kind,
) {
    let f = Fixture::new(kind, "history-expiry").await;
    let h = f.one().await;
    let short = HistoryOptions {
        size: 5,
        ttl: Duration::from_millis(150),
        meta_ttl: Duration::from_millis(600),
        durable: false,
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
    f.finish().await;
}

/// Two instances appending at once never share or skip an offset.
#[rstest]
#[case::memory(Kind::Memory)]
#[case::redis(Kind::Redis)]
#[case::cluster(Kind::Cluster)]
#[case::sqlite(Kind::Sqlite)]
#[case::postgres(Kind::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_two_instances_share_no_offset(#[case] kind: Kind) {
    let f = Fixture::new(kind, "history-race").await;
    let (a, b) = f.two().await;
    let big = f.opts(HistoryOptions { size: 1000, ..OPTS });
    // 16 publishers on each instance, 400 appends in all, every one racing the others: the
    // contention is on one channel's position, as a hot channel has it. (Not 400 at once: the
    // durable kinds would then measure their connection pools' queue against the database
    // timeout, which is not what this case is about.)
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let h = if t % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..400 / 32 + u64::from(t < 400 % 32) {
                    got.push(h.append("race", entry(t * 100 + n), &big).await.unwrap());
                }
                got
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut epochs = BTreeSet::new();
    for t in tasks {
        for p in t.await.unwrap() {
            seen.insert(p.offset);
            epochs.insert(p.epoch);
        }
    }
    assert_eq!(seen, (1..=400).collect::<BTreeSet<u64>>());
    assert_eq!(epochs.len(), 1);
    let page = a.read("race", Range::After(0), 1000, &big).await.unwrap();
    assert_eq!(offsets(&page.entries), (1..=400).collect::<Vec<u64>>());
    f.finish().await;
}

/// On Redis, every key of a channel carries its hash tag (one slot) and an expiry.
#[rstest]
#[case::redis(Kind::Redis, Backend::Redis)]
#[case::cluster(Kind::Cluster, Backend::Cluster)]
#[tokio::test]
async fn redis_keys_are_tagged_and_expire(#[case] kind: Kind, #[case] backend: Backend) {
    let f = Fixture::new(kind, "history-keys").await;
    let prefix = f.prefix.clone();
    let h = f.one().await;
    h.append("doc:42", entry(1), &OPTS).await.unwrap();
    let mut con = backend.conn().await;
    let keys = common::keys(backend, &prefix).await;
    assert_eq!(
        keys,
        [format!("{prefix}ch:{{doc:42}}:hist"), format!("{prefix}ch:{{doc:42}}:meta")]
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
        assert!(ttl > 0, "{key}: {ttl}");
    }
    f.finish().await;
}

/// Durable history: each entry expires `ttl` after its own append (an expired prefix, never a
/// hole), the position and epoch stay, a restarted server (a new store on the same database)
/// finds them, and retention deletes expired entries and then unused positions.
#[rstest]
#[case::sqlite(Kind::Sqlite)]
#[case::postgres(Kind::Postgres)]
#[tokio::test]
async fn durable_entries_expire_one_by_one_and_the_position_outlives_restarts(#[case] kind: Kind) {
    let f = Fixture::new(kind, "history-durable").await;
    let store = f.store().await;
    let h = store.channel_history();
    let short = f.opts(HistoryOptions { ttl: Duration::from_millis(300), ..OPTS });
    let first = h.append("c", entry(1), &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    h.append("c", entry(2), &short).await.unwrap();
    let page = h.read("c", Range::After(0), 10, &short).await.unwrap();
    assert_eq!((offsets(&page.entries), page.top.offset), (vec![2], 2), "entry 1 expired alone");
    assert_eq!(page.top.epoch, first.epoch);

    // Another store on the same database, as after a restart of every instance.
    let reopened = f.store().await.channel_history();
    let again = reopened.read("c", Range::After(1), 10, &short).await.unwrap();
    assert_eq!((offsets(&again.entries), again.top.epoch.clone()), (vec![2], first.epoch.clone()));
    assert_eq!(reopened.append("c", entry(3), &short).await.unwrap().offset, 3);

    // Retention: expired entries first; a position only once unused for the meta TTL.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let now = rtgate::state::now_ms() as i64;
    let gone = store.delete_expired_channel_history(now, now - 60_000, 100).await.unwrap();
    assert_eq!(gone, 3, "entries 1 to 3, expired");
    assert_eq!(h.read("c", Range::After(0), 10, &short).await.unwrap().top.offset, 3);
    let gone = store.delete_expired_channel_history(now, now + 1, 100).await.unwrap();
    assert_eq!(gone, 1, "the position, unused");
    let fresh = h.append("c", entry(1), &short).await.unwrap();
    assert_eq!(fresh.offset, 1, "a deleted position starts again");
    assert_ne!(fresh.epoch, first.epoch, "… in a new epoch");
    f.finish().await;
}
