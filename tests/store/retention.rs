//! Retention: bounded deletes take only rows older than the cutoff, never open connections.

use rstest::rstest;

use crate::common::{Backend, DAY, MINUTE, T0, closed, everything, opened, presence, store};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn connection_retention_deletes_only_old_closed_rows_in_batches(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let cutoff = T0;
    let mut rows = Vec::new();
    let mut closes = Vec::new();
    for i in 0..5 {
        let id = format!("old-{i}");
        rows.push(opened(&id, "u1", "i1", cutoff - 10 * DAY + i));
        closes.push(closed(&id, cutoff - 9 * DAY + i, "client_disconnect"));
    }
    // Open for weeks: still a live session, whatever its age.
    rows.push(opened("open-1", "u1", "i1", cutoff - 20 * DAY));
    rows.push(opened("open-2", "u1", "i1", cutoff - 20 * DAY));
    // Connected before the cutoff but ended at or after it: retention is by end time.
    rows.push(opened("ended-at-cutoff", "u1", "i1", cutoff - 2 * DAY));
    closes.push(closed("ended-at-cutoff", cutoff, "ping_timeout"));
    rows.push(opened("ended-after", "u1", "i1", cutoff - 2 * DAY));
    closes.push(closed("ended-after", cutoff + MINUTE, "ping_timeout"));
    store.insert_connections(&rows).await.unwrap();
    store.close_connections(&closes).await.unwrap();

    let mut deleted = Vec::new();
    loop {
        let n = store.delete_connections_before(cutoff, 2).await.unwrap();
        deleted.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(deleted, vec![2, 2, 1, 0]);

    let mut left: Vec<String> = store
        .connections(&everything("u1"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.opened.socket_id)
        .collect();
    left.sort();
    assert_eq!(left, vec!["ended-after", "ended-at-cutoff", "open-1", "open-2"]);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn presence_retention_deletes_only_old_rows_in_batches(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let cutoff = T0;
    let mut rows: Vec<_> =
        (0..5).map(|i| presence("u1", "phone", "online", cutoff - 31 * DAY + i)).collect();
    rows.push(presence("u1", "phone", "offline", cutoff));
    rows.push(presence("u1", "phone", "online", cutoff + MINUTE));
    store.insert_presence(&rows).await.unwrap();

    let mut deleted = Vec::new();
    loop {
        let n = store.delete_presence_before(cutoff, 2).await.unwrap();
        deleted.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(deleted, vec![2, 2, 1, 0]);

    let left: Vec<i64> = store
        .presence_history(&everything("u1"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.log.at_ms)
        .collect();
    assert_eq!(left, vec![cutoff + MINUTE, cutoff]);
    guard.cleanup().await;
}
