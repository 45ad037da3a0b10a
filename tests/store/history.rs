//! History reads: newest-first order, `[from, to)` ranges, limits, and `before_id` paging, for
//! both connection and presence rows.

use rstest::rstest;
use rtgate::store::{HistoryQuery, Store};

use crate::common::{Backend, MINUTE, T0, everything, opened, presence, store};

fn range(user: &str, from_ms: i64, to_ms: i64) -> HistoryQuery {
    HistoryQuery { from_ms, to_ms, ..everything(user) }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn presence_history_is_newest_first(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    // Written out of time order, as batches from two instances can arrive; two transitions
    // share a millisecond and then come newest id first.
    let rows = [
        presence("u1", "phone", "offline", T0 + 2 * MINUTE),
        presence("u1", "phone", "online", T0),
        presence("u1", "laptop", "online", T0 + 3 * MINUTE),
        presence("u1", "laptop", "offline", T0 + 3 * MINUTE),
        presence("u1", "phone", "online", T0 + MINUTE),
        presence("u2", "phone", "online", T0 + 4 * MINUTE),
    ];
    store.insert_presence(&rows).await.unwrap();
    store.insert_presence(&[]).await.unwrap();

    let got = store.presence_history(&everything("u1")).await.unwrap();
    let logs: Vec<_> = got.iter().map(|r| r.log.clone()).collect();
    assert_eq!(
        logs,
        vec![rows[3].clone(), rows[2].clone(), rows[0].clone(), rows[4].clone(), rows[1].clone(),]
    );
    assert!(got[0].id > got[1].id);
    assert_eq!(store.presence_history(&everything("u2")).await.unwrap()[0].log, rows[5]);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn time_range_includes_from_and_excludes_to(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let times: Vec<i64> = (0..4).map(|i| T0 + i * MINUTE).collect();
    let logs: Vec<_> = times.iter().map(|&t| presence("u1", "phone", "online", t)).collect();
    let conns: Vec<_> =
        times.iter().enumerate().map(|(i, &t)| opened(&format!("s{i}"), "u1", "i1", t)).collect();
    store.insert_presence(&logs).await.unwrap();
    store.insert_connections(&conns).await.unwrap();

    let q = range("u1", times[1], times[3]);
    let presence_times: Vec<i64> =
        store.presence_history(&q).await.unwrap().iter().map(|r| r.log.at_ms).collect();
    assert_eq!(presence_times, vec![times[2], times[1]]);
    let connection_times: Vec<i64> =
        store.connections(&q).await.unwrap().iter().map(|r| r.opened.connected_at_ms).collect();
    assert_eq!(connection_times, vec![times[2], times[1]]);

    // One millisecond either side of a row's time decides whether it is in.
    let just_before = range("u1", times[0] + 1, times[1]);
    assert!(store.presence_history(&just_before).await.unwrap().is_empty());
    assert!(store.connections(&just_before).await.unwrap().is_empty());
    let empty = range("u1", times[3] + 1, times[3] + 1);
    assert!(store.presence_history(&empty).await.unwrap().is_empty());

    let newest_two = HistoryQuery { limit: 2, ..everything("u1") };
    let limited: Vec<i64> = store
        .connections(&newest_two)
        .await
        .unwrap()
        .iter()
        .map(|r| r.opened.connected_at_ms)
        .collect();
    assert_eq!(limited, vec![times[3], times[2]]);
    guard.cleanup().await;
}

/// Walks `read` page by page (page size 3, cursor = the last id of the previous page) and
/// checks the pages are consecutive slices of the unpaged list.
async fn assert_pages_cover<F, Fut>(read: F)
where
    F: Fn(HistoryQuery) -> Fut,
    Fut: std::future::Future<Output = Vec<i64>>,
{
    let full = read(everything("u1")).await;
    assert_eq!(full.len(), 7);
    let mut pages = Vec::new();
    let mut before_id = None;
    loop {
        let page = read(HistoryQuery { before_id, limit: 3, ..everything("u1") }).await;
        let Some(&last) = page.last() else { break };
        before_id = Some(last);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 1]);
    assert_eq!(pages.concat(), full);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn paging_with_before_id_is_disjoint_and_complete(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let conns: Vec<_> =
        (0..7).map(|i| opened(&format!("s{i}"), "u1", "i1", T0 + i * MINUTE)).collect();
    let logs: Vec<_> = (0..7).map(|i| presence("u1", "phone", "online", T0 + i * MINUTE)).collect();
    store.insert_connections(&conns).await.unwrap();
    store.insert_connections(&[opened("other", "u2", "i1", T0)]).await.unwrap();
    store.insert_presence(&logs).await.unwrap();

    let store: &dyn Store = store.as_ref();
    assert_pages_cover(|q| async move {
        let rows = store.connections(&q).await.unwrap();
        rows.iter().map(|r| r.id).collect()
    })
    .await;
    assert_pages_cover(|q| async move {
        let rows = store.presence_history(&q).await.unwrap();
        rows.iter().map(|r| r.id).collect()
    })
    .await;
    guard.cleanup().await;
}
