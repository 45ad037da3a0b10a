//! Connection rows: schema setup, insert and close round trips, idempotent retries, and the
//! crashed-instance cleanup.

use rstest::rstest;
use rtgate::store::{ConnectionOpened, ConnectionRow};

use crate::common::{Backend, MINUTE, T0, closed, everything, opened, store};

/// The rows of `user`, newest first, with ids checked to be positive and then dropped so a
/// test can compare whole rows against what it inserted.
fn without_ids(rows: Vec<ConnectionRow>) -> Vec<(ConnectionOpened, Option<i64>, Option<String>)> {
    rows.into_iter()
        .map(|r| {
            assert!(r.id > 0);
            (r.opened, r.disconnected_at_ms, r.disconnect_reason)
        })
        .collect()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn migrate_is_idempotent(#[case] backend: Backend) {
    // The factory has migrated once already.
    let (store, guard) = store(backend).await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();

    store.insert_connections(&[opened("s1", "u1", "i1", T0)]).await.unwrap();
    assert_eq!(store.connections(&everything("u1")).await.unwrap().len(), 1);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn connections_that_ended_within_a_batch_are_written_closed(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let a = opened("a", "u1", "i1", T0);
    // `b` was written open by an earlier attempt of the same batch, `c` open and then closed.
    let b = opened("b", "u1", "i1", T0 + MINUTE);
    let c = opened("c", "u1", "i1", T0 + 2 * MINUTE);
    store.insert_connections(&[b.clone(), c.clone()]).await.unwrap();
    store.close_connections(&[closed("c", T0 + 3 * MINUTE, "ping_timeout")]).await.unwrap();
    let ended = [
        (a.clone(), closed("a", T0 + 4 * MINUTE, "client_disconnect")),
        (b.clone(), closed("b", T0 + 5 * MINUTE, "server_shutdown")),
        (c.clone(), closed("c", T0 + 6 * MINUTE, "client_disconnect")),
    ];
    store.insert_ended_connections(&ended).await.unwrap();
    // A retry of the whole batch changes nothing.
    store.insert_ended_connections(&ended).await.unwrap();

    assert_eq!(
        without_ids(store.connections(&everything("u1")).await.unwrap()),
        vec![
            (c, Some(T0 + 3 * MINUTE), Some("ping_timeout".to_string())),
            (b, Some(T0 + 5 * MINUTE), Some("server_shutdown".to_string())),
            (a, Some(T0 + 4 * MINUTE), Some("client_disconnect".to_string())),
        ]
    );
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn insert_and_close_round_trip_every_field(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let a = ConnectionOpened {
        transport: "webtransport".into(),
        ip_address: "2001:db8::1".into(),
        user_agent: None,
        ..opened("a", "u1", "i1", T0)
    };
    let b = opened("b", "u1", "i1", T0 + MINUTE);
    let c = opened("c", "u1", "i2", T0 + 2 * MINUTE);
    let other = opened("x", "u2", "i1", T0);
    store.insert_connections(&[a.clone(), b.clone(), c.clone(), other.clone()]).await.unwrap();
    store
        .close_connections(&[
            closed("a", T0 + 5 * MINUTE, "client_disconnect"),
            closed("c", T0 + 3 * MINUTE, "ping_timeout"),
        ])
        .await
        .unwrap();

    let rows = store.connections(&everything("u1")).await.unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert!(ids[0] > ids[1] && ids[1] > ids[2], "ids follow insertion: {ids:?}");
    assert_eq!(
        without_ids(rows),
        vec![
            (c, Some(T0 + 3 * MINUTE), Some("ping_timeout".to_string())),
            (b, None, None),
            (a, Some(T0 + 5 * MINUTE), Some("client_disconnect".to_string())),
        ]
    );
    assert_eq!(
        without_ids(store.connections(&everything("u2")).await.unwrap()),
        vec![(other, None, None)]
    );
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn duplicate_socket_insert_is_ignored(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let first = opened("s1", "u1", "i1", T0);
    store.insert_connections(std::slice::from_ref(&first)).await.unwrap();

    // A retried batch, and a batch repeating a socket within itself: the row first written wins.
    let retry = ConnectionOpened {
        user_id: "u1".into(),
        server_instance: "i2".into(),
        connected_at_ms: T0 + MINUTE,
        ..first.clone()
    };
    store.insert_connections(&[retry.clone(), retry]).await.unwrap();
    let second = opened("s2", "u1", "i1", T0 + 2 * MINUTE);
    let second_again = ConnectionOpened { device_id: "another".into(), ..second.clone() };
    store.insert_connections(&[second.clone(), second_again]).await.unwrap();

    assert_eq!(
        without_ids(store.connections(&everything("u1")).await.unwrap()),
        vec![(second, None, None), (first, None, None)]
    );
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn closing_unknown_or_closed_socket_changes_nothing(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let a = opened("a", "u1", "i1", T0);
    let b = opened("b", "u1", "i1", T0 + MINUTE);
    store.insert_connections(&[a.clone(), b.clone()]).await.unwrap();

    store.close_connections(&[]).await.unwrap();
    store
        .close_connections(&[
            closed("unknown", T0 + 2 * MINUTE, "client_disconnect"),
            closed("a", T0 + 2 * MINUTE, "client_disconnect"),
        ])
        .await
        .unwrap();
    // Later closes of a closed row, in a later batch or twice within one, lose to the first.
    store.close_connections(&[closed("a", T0 + 4 * MINUTE, "server_shutdown")]).await.unwrap();
    store
        .close_connections(&[
            closed("b", T0 + 3 * MINUTE, "slow_consumer"),
            closed("b", T0 + 4 * MINUTE, "token_expired"),
        ])
        .await
        .unwrap();

    assert_eq!(
        without_ids(store.connections(&everything("u1")).await.unwrap()),
        vec![
            (b, Some(T0 + 3 * MINUTE), Some("slow_consumer".to_string())),
            (a, Some(T0 + 2 * MINUTE), Some("client_disconnect".to_string())),
        ]
    );
    assert!(store.connections(&everything("unknown")).await.unwrap().is_empty());
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn close_instance_closes_only_its_open_rows(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let lost_1 = opened("lost-1", "u1", "crashed", T0);
    let lost_2 = opened("lost-2", "u1", "crashed", T0 + MINUTE);
    let done = opened("done", "u1", "crashed", T0 + 2 * MINUTE);
    let elsewhere = opened("elsewhere", "u1", "alive", T0 + 3 * MINUTE);
    store
        .insert_connections(&[lost_1.clone(), lost_2.clone(), done.clone(), elsewhere.clone()])
        .await
        .unwrap();
    store.close_connections(&[closed("done", T0 + 4 * MINUTE, "client_disconnect")]).await.unwrap();

    let at = T0 + 10 * MINUTE;
    assert_eq!(store.close_instance("crashed", at, "instance_lost").await.unwrap(), 2);
    assert_eq!(store.close_instance("crashed", at + MINUTE, "instance_lost").await.unwrap(), 0);
    assert_eq!(store.close_instance("never-seen", at, "instance_lost").await.unwrap(), 0);

    let lost = Some("instance_lost".to_string());
    assert_eq!(
        without_ids(store.connections(&everything("u1")).await.unwrap()),
        vec![
            (elsewhere, None, None),
            (done, Some(T0 + 4 * MINUTE), Some("client_disconnect".to_string())),
            (lost_2, Some(at), lost.clone()),
            (lost_1, Some(at), lost),
        ]
    );
    guard.cleanup().await;
}
