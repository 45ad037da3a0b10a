//! Batch sizes: a writer-sized batch goes in one call, and a batch past one statement's
//! bind-parameter limit is split without losing or duplicating a row.

use rstest::rstest;
use rtgate::store::Store;

use crate::common::{Backend, MINUTE, T0, closed, everything, opened, presence, store};

async fn insert_close_and_count(store: &dyn Store, n: usize) {
    let conns: Vec<_> =
        (0..n).map(|i| opened(&format!("s{i}"), "u1", "i1", T0 + i as i64)).collect();
    let closes: Vec<_> = (0..n)
        .map(|i| closed(&format!("s{i}"), T0 + MINUTE + i as i64, "server_shutdown"))
        .collect();
    let logs: Vec<_> = (0..n).map(|i| presence("u1", "phone", "online", T0 + i as i64)).collect();
    store.insert_connections(&conns).await.unwrap();
    store.close_connections(&closes).await.unwrap();
    store.insert_presence(&logs).await.unwrap();

    let rows = store.connections(&everything("u1")).await.unwrap();
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|r| r.disconnected_at_ms == Some(r.opened.connected_at_ms + MINUTE)));
    let mut sockets: Vec<_> = rows.into_iter().map(|r| r.opened.socket_id).collect();
    sockets.sort();
    sockets.dedup();
    assert_eq!(sockets.len(), n);
    assert_eq!(store.presence_history(&everything("u1")).await.unwrap().len(), n);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn batch_of_2000_goes_in_one_call(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    insert_close_and_count(store.as_ref(), 2_000).await;
    guard.cleanup().await;
}

/// 17,000 rows is past one statement for every write of both backends except PostgreSQL's
/// closes (one array-bound statement, no limit): 8 columns × 17,000 > 65,535 (PostgreSQL)
/// and > 32,766 (SQLite); 4 × 17,000 > 65,535; 3 × 17,000 > 32,766.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn batch_past_the_parameter_limit_is_split(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    insert_close_and_count(store.as_ref(), 17_000).await;
    guard.cleanup().await;
}

/// Writer batches come in every size, and each size is different SQL to SQLite's multi-row
/// inserts. Kept in sqlx's statement cache they held a compiled statement per size on every
/// pooled connection, the memory the soak saw the server grow by; they must not be cached.
#[tokio::test]
async fn sqlite_batches_of_every_size_stay_out_of_the_statement_cache() {
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let dir =
        std::env::temp_dir().join(format!("rtgate-store-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let options =
        SqliteConnectOptions::new().filename(dir.join("history.sqlite")).create_if_missing(true);
    // One connection, so every batch goes through the cache inspected below.
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    let store = rtgate::store::sqlite::SqliteStore::new(pool.clone());
    store.migrate().await.unwrap();
    let cached = || async { pool.acquire().await.unwrap().cached_statements_size() };

    let before = cached().await;
    for n in 1..=40 {
        let conns: Vec<_> =
            (0..n).map(|i| opened(&format!("s{n}-{i}"), "u1", "i1", T0 + i as i64)).collect();
        let logs: Vec<_> =
            (0..n).map(|i| presence("u1", "phone", "online", T0 + i as i64)).collect();
        store.insert_connections(&conns).await.unwrap();
        store.insert_presence(&logs).await.unwrap();
    }
    let after = cached().await;
    assert!(after <= before + 2, "{before} statements cached before 80 batches, {after} after");

    pool.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
