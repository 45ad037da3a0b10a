//! Text from clients and tokens reaches the database only as bound parameters: hostile and
//! non-ASCII strings round-trip byte for byte and execute nothing.

use rstest::rstest;
use rtgate::store::ConnectionOpened;

use crate::common::{Backend, MINUTE, T0, closed, everything, presence, store};

const NASTY: &[&str] = &[
    "O'Brien \"quoted\" `backtick` \\backslash",
    "'; DROP TABLE socket_connections; --",
    "\"); DELETE FROM presence_logs; --",
    "<script>alert('x')</script>",
    "😀🎉 naïve 中文 \u{200b}zero-width",
    "$1 ?1 ? :name %s",
];

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn hostile_text_round_trips_byte_for_byte(#[case] backend: Backend) {
    let (store, guard) = store(backend).await;
    for (i, &s) in NASTY.iter().enumerate() {
        let row = ConnectionOpened {
            socket_id: format!("{s}#{i}"),
            user_id: s.into(),
            device_id: s.into(),
            transport: "websocket".into(),
            ip_address: s.into(),
            user_agent: Some(s.into()),
            server_instance: s.into(),
            connected_at_ms: T0,
        };
        store.insert_connections(std::slice::from_ref(&row)).await.unwrap();
        store.close_connections(&[closed(&row.socket_id, T0 + MINUTE, s)]).await.unwrap();
        assert_eq!(store.close_instance(s, T0, s).await.unwrap(), 0);
        store.insert_presence(&[presence(s, s, "online", T0)]).await.unwrap();

        let got = store.connections(&everything(s)).await.unwrap();
        assert_eq!(got.len(), 1, "{s}");
        assert_eq!(got[0].opened, row);
        assert_eq!(got[0].disconnect_reason.as_deref(), Some(s));
        let logs = store.presence_history(&everything(s)).await.unwrap();
        assert_eq!(logs.len(), 1, "{s}");
        assert_eq!(logs[0].log, presence(s, s, "online", T0));
    }
    // Every table is still there and holds exactly what was written.
    let mut total = 0;
    for &s in NASTY {
        total += store.connections(&everything(s)).await.unwrap().len();
        total += store.presence_history(&everything(s)).await.unwrap().len();
    }
    assert_eq!(total, 2 * NASTY.len());
    guard.cleanup().await;
}
