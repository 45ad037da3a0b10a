//! The webhook outbox on both databases: enqueueing is idempotent, a claim takes due rows once
//! (two concurrent claimers get disjoint rows) and holds them for its lease, outcomes are
//! recorded and listed, and retention removes only finished rows.

use std::collections::BTreeSet;

use rstest::rstest;
use rtgate::store::outbox::{DeliveryState, NewDelivery};

use crate::common::{Backend, T0, store};

fn row(i: usize) -> NewDelivery {
    NewDelivery {
        id: format!("row-{i:03}"),
        event_id: format!("evt-{i:03}"),
        endpoint: "http://127.0.0.1:9/hook".into(),
        kind: "user.online".into(),
        body: format!(r#"{{"id":"evt-{i:03}"}}"#),
        created_at_ms: T0 + i as i64,
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn rows_are_claimed_once_per_lease_and_finish_delivered_retried_or_dead(
    #[case] backend: Backend,
) {
    let (store, guard) = store(backend).await;
    let outbox = store.outbox();
    let rows: Vec<NewDelivery> = (0..5).map(row).collect();
    outbox.enqueue(&rows).await.unwrap();
    outbox.enqueue(&rows[..2]).await.unwrap(); // a retried writer batch adds nothing
    let now = T0 + 1000;
    let first = outbox.claim(now, 60_000, 3).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["row-000", "row-001", "row-002"], "oldest due first");
    assert_eq!(first[0].body, rows[0].body);
    let rest = outbox.claim(now, 60_000, 10).await.unwrap();
    assert_eq!(rest.len(), 2, "claimed rows are not claimed again within the lease");
    assert!(outbox.claim(now + 1, 60_000, 10).await.unwrap().is_empty());

    outbox.delivered("row-000", 1, now).await.unwrap();
    outbox.retry("row-001", 1, now + 5_000, "HTTP 500").await.unwrap();
    outbox.dead("row-002", 10, now, "HTTP 410").await.unwrap();
    // Row 1 is due again at its time (its claim was released); rows 3 and 4 when the lease
    // runs out (their worker died).
    assert!(outbox.claim(now + 4_000, 60_000, 10).await.unwrap().is_empty());
    let again = outbox.claim(now + 5_000, 60_000, 10).await.unwrap();
    assert_eq!(
        again.iter().map(|d| (d.id.as_str(), d.attempts)).collect::<Vec<_>>(),
        [("row-001", 1)]
    );
    let expired: BTreeSet<String> =
        outbox.claim(now + 61_000, 60_000, 10).await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(expired, BTreeSet::from(["row-003".to_owned(), "row-004".to_owned()]));

    let delivered = outbox.list(DeliveryState::Delivered, 10).await.unwrap();
    assert_eq!((delivered.len(), delivered[0].delivered_at_ms), (1, Some(now)));
    let dead = outbox.list(DeliveryState::Dead, 10).await.unwrap();
    assert_eq!((dead[0].id.as_str(), dead[0].last_error.as_deref()), ("row-002", Some("HTTP 410")));
    assert_eq!(outbox.list(DeliveryState::Pending, 10).await.unwrap().len(), 3);

    // Retention: finished rows created before the cutoff go, pending ones stay.
    assert_eq!(outbox.delete_finished_before(T0 + 10, 100).await.unwrap(), 2);
    assert_eq!(outbox.list(DeliveryState::Pending, 10).await.unwrap().len(), 3);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn concurrent_claimers_never_share_a_row(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    let outbox = store.outbox();
    let rows: Vec<NewDelivery> = (0..200).map(row).collect();
    outbox.enqueue(&rows).await.unwrap();
    let claims = (0..8).map(|_| {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = outbox.claim(T0 + 1000, 60_000, 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        })
    });
    let mut all = Vec::new();
    for c in claims {
        all.extend(c.await.unwrap());
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (200, 200));
    guard.cleanup().await;
}
