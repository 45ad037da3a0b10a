//! What only one backend has: SQLite's file setup, PostgreSQL's lazy pool.

use std::time::{Duration, Instant};

use rtgate::store::postgres::PgStore;
use rtgate::store::sqlite::SqliteStore;
use rtgate::store::{Store, StoreError};
use sqlx::{Connection, SqliteConnection};

#[tokio::test]
async fn sqlite_open_creates_missing_directories_and_uses_wal() {
    let root =
        std::env::temp_dir().join(format!("rtgate-store-test-{}", uuid::Uuid::new_v4().simple()));
    let path = root.join("nested").join("history.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(path.is_file());

    let url = format!("sqlite://{}", path.display());
    let mut raw = SqliteConnection::connect(&url).await.unwrap();
    let (mode,): (String,) =
        sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut raw).await.unwrap();
    assert_eq!(mode, "wal");
    raw.close().await.unwrap();
    drop(store);
    std::fs::remove_dir_all(&root).unwrap();
}

/// The SQLite pool opens every connection at start and keeps them: one opened or replaced
/// mid-run brings fresh caches, a step in RSS that reads as a leak.
#[tokio::test]
async fn sqlite_pool_opens_all_connections_at_start() {
    let root =
        std::env::temp_dir().join(format!("rtgate-store-test-{}", uuid::Uuid::new_v4().simple()));
    let store = SqliteStore::open(&root.join("history.sqlite")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.connections() < 4 {
        assert!(Instant::now() < deadline, "pool holds {} connections", store.connections());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.migrate().await.unwrap();
    for _ in 0..20 {
        store.ping().await.unwrap();
    }
    assert_eq!(store.connections(), 4);
    drop(store);
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn postgres_connect_is_lazy_and_fails_only_when_used() {
    // Nothing listens on port 1: construction must still succeed, so the server starts during
    // an outage; the first use fails within the acquire timeout instead of hanging.
    let store = PgStore::connect("postgres://postgres@127.0.0.1:1/test").await.unwrap();
    let started = Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    assert!(PgStore::connect("not a url").await.is_err());
}
