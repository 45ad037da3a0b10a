//! What only one backend has: SQLite's file setup, PostgreSQL's lazy pool.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rtgate::store::postgres::PgStore;
use rtgate::store::sqlite::SqliteStore;
use rtgate::store::{Store, StoreError};
use sqlx::{Connection, SqliteConnection};

use crate::common::opened;

/// A fresh directory under the system temp dir; each test removes its own.
fn temp_root() -> PathBuf {
    std::env::temp_dir().join(format!("rtgate-store-test-{}", uuid::Uuid::new_v4().simple()))
}

/// The file's journal mode, read over a connection of its own.
async fn journal_mode(path: &Path) -> String {
    let mut raw = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let (mode,): (String,) =
        sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut raw).await.unwrap();
    raw.close().await.unwrap();
    mode
}

#[tokio::test]
async fn sqlite_open_creates_missing_directories_and_uses_wal() {
    let root = temp_root();
    let path = root.join("nested").join("history.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(path.is_file());

    assert_eq!(journal_mode(&path).await, "wal");
    drop(store);
    std::fs::remove_dir_all(&root).unwrap();
}

/// The SQLite pool opens every connection at start and keeps them: one opened or replaced
/// mid-run brings fresh caches, a step in RSS that reads as a leak.
#[tokio::test]
async fn sqlite_pool_opens_all_connections_at_start() {
    let root = temp_root();
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

/// Instances sharing one file (a cluster on one machine, the api tests) open it at once,
/// while another already writes.
/// Switching a file to WAL takes a lock SQLite's busy timeout does not wait for: every
/// opener must still succeed, and the file end up in WAL.
#[tokio::test]
async fn sqlite_instances_opening_one_file_at_once_all_succeed() {
    let root = temp_root();
    let path = root.join("history.sqlite");
    // One instance is already writing, as in a rolling start.
    let first = SqliteStore::open(&path).await.unwrap();
    first.migrate().await.unwrap();
    let writing = tokio::spawn(async move {
        for i in 0..200 {
            let row = opened(&format!("s{i}"), "u", "i", i);
            first.insert_connections(&[row]).await.unwrap();
        }
    });
    let opens = (0..6).map(|_| {
        let path = path.clone();
        tokio::spawn(async move { SqliteStore::open(&path).await })
    });
    let stores: Vec<SqliteStore> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    writing.await.unwrap();
    for store in &stores {
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
    }
    assert_eq!(journal_mode(&path).await, "wal");
    drop(stores);
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
