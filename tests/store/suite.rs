//! One suite, both backends.

use rstest::rstest;
use rtgate::store::{
    ConnectionClosed, ConnectionOpened, HistoryQuery, PresenceLog, Store, postgres::PgStore,
    sqlite::SqliteStore,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn pg_url() -> String {
    std::env::var("DATABASE_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated store of its own, and what to remove afterwards.
pub struct Fixture {
    pub store: Box<dyn Store>,
    schema: Option<String>,
    file: Option<std::path::PathBuf>,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Fixture {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let f = match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("rtgate-store-{id}.sqlite"));
                Fixture {
                    store: Box::new(SqliteStore::open(&file).await.unwrap()),
                    schema: None,
                    file: Some(file),
                }
            }
            Backend::Postgres => {
                let schema = format!("rtgate_store_{id}");
                admin(&format!("CREATE SCHEMA {schema}")).await;
                let url = format!("{}?options=-c%20search_path%3D{schema}", pg_url());
                Fixture {
                    store: Box::new(PgStore::connect(&url).await.unwrap()),
                    schema: Some(schema),
                    file: None,
                }
            }
        };
        f.store.migrate().await.unwrap();
        f
    }

    pub async fn cleanup(self) {
        if let Some(schema) = self.schema {
            admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
        }
        if let Some(file) = self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn admin(sql: &str) {
    let pool = sqlx::PgPool::connect(&pg_url())
        .await
        .expect("PostgreSQL at DATABASE_TEST_URL");
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

fn opened(socket: &str, user: &str, instance: &str, at: i64) -> ConnectionOpened {
    ConnectionOpened {
        socket_id: socket.into(),
        user_id: user.into(),
        device_id: format!("dev-{socket}"),
        transport: "webtransport".into(),
        ip_address: "::1".into(),
        user_agent: Some("Mozilla/5.0 'quoted' \"double\"".into()),
        server_instance: instance.into(),
        connected_at_ms: at,
    }
}

fn closed(socket: &str, at: i64, reason: &str) -> ConnectionClosed {
    ConnectionClosed {
        socket_id: socket.into(),
        disconnected_at_ms: at,
        reason: reason.into(),
    }
}

fn all(user: &str) -> HistoryQuery {
    HistoryQuery {
        user_id: user.into(),
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        before_id: None,
        limit: 500,
    }
}

/// 2026-01-01T00:00:00Z, a fixed base for times.
const T0: i64 = 1_767_225_600_000;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn migrate_is_idempotent(#[case] backend: Backend) {
    let f = Fixture::new(backend).await;
    f.store.migrate().await.unwrap();
    f.store.ping().await.unwrap();
    f.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn connections_round_trip_and_first_close_wins(#[case] backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = &f.store;
    s.insert_connections(&[
        opened("a", "u1", "i1", T0),
        opened("b", "u1", "i1", T0 + 10),
    ])
    .await
    .unwrap();
    // A retried batch: nothing duplicates.
    s.insert_connections(&[opened("a", "u1", "i1", T0)])
        .await
        .unwrap();
    s.close_connections(&[
        closed("a", T0 + 500, "ping_timeout"),
        closed("ghost", T0, "x"),
    ])
    .await
    .unwrap();
    s.close_connections(&[closed("a", T0 + 900, "client_disconnect")])
        .await
        .unwrap();
    let rows = s.connections(&all("u1")).await.unwrap();
    assert_eq!(rows.len(), 2);
    let (b, a) = (&rows[0], &rows[1]);
    assert_eq!(a.opened, opened("a", "u1", "i1", T0));
    assert_eq!(
        (a.disconnected_at_ms, a.disconnect_reason.as_deref()),
        (Some(T0 + 500), Some("ping_timeout"))
    );
    assert_eq!(
        (b.disconnected_at_ms, b.disconnect_reason.as_deref()),
        (None, None)
    );
    f.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn close_instance_closes_only_its_open_rows(#[case] backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = &f.store;
    s.insert_connections(&[
        opened("x1", "u", "dead", T0),
        opened("x2", "v", "dead", T0),
        opened("x3", "u", "dead", T0),
        opened("y1", "u", "alive", T0),
    ])
    .await
    .unwrap();
    s.close_connections(&[closed("x3", T0 + 1, "client_disconnect")])
        .await
        .unwrap();
    assert_eq!(
        s.close_instance("dead", T0 + 50, "instance_lost")
            .await
            .unwrap(),
        2
    );
    let reasons: Vec<Option<String>> = s
        .connections(&all("u"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.disconnect_reason)
        .collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("client_disconnect".into()),
            Some("instance_lost".into())
        ]
    );
    f.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn presence_history_filters_by_time_and_pages_disjointly(#[case] backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = &f.store;
    let logs: Vec<PresenceLog> = (0..7)
        .map(|i| PresenceLog {
            user_id: "p".into(),
            device_id: format!("d{i}"),
            status: if i % 2 == 0 { "online" } else { "offline" }.into(),
            at_ms: T0 + i * 1000,
        })
        .collect();
    s.insert_presence(&logs).await.unwrap();
    s.insert_presence(&[PresenceLog {
        user_id: "other".into(),
        device_id: "d".into(),
        status: "online".into(),
        at_ms: T0,
    }])
    .await
    .unwrap();
    let newest_first: Vec<i64> = s
        .presence_history(&all("p"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.log.at_ms)
        .collect();
    assert_eq!(
        newest_first,
        (0..7).rev().map(|i| T0 + i * 1000).collect::<Vec<_>>()
    );
    let range = HistoryQuery {
        from_ms: T0 + 2000,
        to_ms: T0 + 5000,
        ..all("p")
    };
    let in_range: Vec<i64> = s
        .presence_history(&range)
        .await
        .unwrap()
        .iter()
        .map(|r| r.log.at_ms)
        .collect();
    assert_eq!(in_range, [T0 + 4000, T0 + 3000, T0 + 2000]);

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .presence_history(&HistoryQuery {
                limit: 3,
                before_id: before,
                ..all("p")
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|r| r.id);
        pages.extend(page.into_iter().map(|r| r.log));
    }
    let mut expected = logs.clone();
    expected.reverse();
    assert_eq!(pages, expected);
    f.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn retention_deletes_old_closed_rows_in_bounded_batches(#[case] backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = &f.store;
    let old: Vec<ConnectionOpened> = (0..5)
        .map(|i| opened(&format!("old{i}"), "r", "i", T0))
        .collect();
    s.insert_connections(&old).await.unwrap();
    s.insert_connections(&[
        opened("open-old", "r", "i", T0),
        opened("new", "r", "i", T0 + 100_000),
    ])
    .await
    .unwrap();
    let closes: Vec<ConnectionClosed> = (0..5)
        .map(|i| closed(&format!("old{i}"), T0 + 10, "client_disconnect"))
        .collect();
    s.close_connections(&closes).await.unwrap();
    s.close_connections(&[closed("new", T0 + 100_500, "client_disconnect")])
        .await
        .unwrap();
    let cutoff = T0 + 50_000;
    let mut calls = Vec::new();
    loop {
        let n = s.delete_connections_before(cutoff, 2).await.unwrap();
        calls.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(calls, [2, 2, 1, 0]);
    let left: Vec<String> = s
        .connections(&all("r"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.opened.socket_id)
        .collect();
    assert_eq!(left, ["new", "open-old"], "open rows and newer rows stay");

    s.insert_presence(&[
        PresenceLog {
            user_id: "r".into(),
            device_id: "d".into(),
            status: "online".into(),
            at_ms: T0,
        },
        PresenceLog {
            user_id: "r".into(),
            device_id: "d".into(),
            status: "offline".into(),
            at_ms: T0 + 100_000,
        },
    ])
    .await
    .unwrap();
    assert_eq!(s.delete_presence_before(cutoff, 10).await.unwrap(), 1);
    assert_eq!(s.presence_history(&all("r")).await.unwrap().len(), 1);
    f.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn large_batches_and_hostile_text_round_trip(#[case] backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = &f.store;
    let batch: Vec<ConnectionOpened> = (0..2000)
        .map(|i| opened(&format!("bulk{i}"), "bulk", "i", T0 + i))
        .collect();
    s.insert_connections(&batch).await.unwrap();
    assert_eq!(
        s.connections(&all("bulk")).await.unwrap().len(),
        500,
        "limit applies"
    );
    let nasty = "'; DROP TABLE socket_connections; -- <script>alert(1)</script> 💥 \u{202e}";
    let mut row = opened("nasty", nasty, nasty, T0);
    row.device_id = nasty.into();
    row.user_agent = Some(nasty.into());
    s.insert_connections(&[row.clone()]).await.unwrap();
    s.close_connections(&[closed("nasty", T0 + 1, nasty)])
        .await
        .unwrap();
    let got = s.connections(&all(nasty)).await.unwrap();
    assert_eq!(got[0].opened, row);
    assert_eq!(got[0].disconnect_reason.as_deref(), Some(nasty));
    assert_eq!(
        s.connections(&all("bulk")).await.unwrap().len(),
        500,
        "the table is still there"
    );
    f.cleanup().await;
}
