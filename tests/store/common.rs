//! Shared helpers for the store suite: the backend factory with its per-test isolation, and
//! record builders.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rtgate::store::postgres::PgStore;
use rtgate::store::sqlite::SqliteStore;
use rtgate::store::{
    ConnectionClosed, ConnectionOpened, HistoryQuery, PresenceLog, Store, chat::ChatStore,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::Arc;

/// Which backend a parametrized case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL the suite runs against.
pub fn pg_url() -> String {
    std::env::var("DATABASE_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A migrated store nothing else sees: SQLite in a fresh temporary directory, PostgreSQL in a
/// fresh schema (every connection of the pool has it as its `search_path`, so the migrations'
/// unqualified tables, and sqlx's own bookkeeping table, land there).
pub async fn store(backend: Backend) -> (Arc<dyn Both>, Guard) {
    open(backend).await
}

/// The chat face of a fresh store (see `store`).
pub async fn chat_store(backend: Backend) -> (Arc<dyn ChatStore>, Guard) {
    let (both, guard) = open(backend).await;
    (both, guard)
}

/// Both traits of one backend (history and chat share the database).
pub trait Both: Store + ChatStore {}
impl<T: Store + ChatStore> Both for T {}

async fn open(backend: Backend) -> (Arc<dyn Both>, Guard) {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir()
                .join(format!("rtgate-store-test-{}", uuid::Uuid::new_v4().simple()));
            let guard = Guard { left: Left::Sqlite { dir: dir.clone() } };
            let store = SqliteStore::open(&dir.join("history.sqlite")).await.unwrap();
            store.migrate().await.unwrap();
            (Arc::new(store), guard)
        }
        Backend::Postgres => {
            let url = pg_url();
            let admin = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
            let schema = format!("rtgate_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE SCHEMA \"{schema}\"")).execute(&admin).await.unwrap();
            let guard =
                Guard { left: Left::Postgres { admin, pool: None, schema: schema.clone() } };
            let options = PgConnectOptions::from_str(&url)
                .unwrap()
                .options([("search_path", schema.as_str())]);
            let pool = PgPoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
            let store = PgStore::new(pool.clone());
            let guard = guard.with_pool(pool);
            store.migrate().await.unwrap();
            (Arc::new(store), guard)
        }
    }
}

/// What a test leaves behind, removed by `cleanup`. A test that panics before `cleanup` still
/// removes it, from `Drop`, so failed runs do not pile up schemas in the test database.
pub struct Guard {
    left: Left,
}

enum Left {
    Sqlite { dir: PathBuf },
    Postgres { admin: PgPool, pool: Option<PgPool>, schema: String },
    Nothing,
}

impl Guard {
    fn with_pool(mut self, new: PgPool) -> Self {
        if let Left::Postgres { pool, .. } = &mut self.left {
            *pool = Some(new);
        }
        self
    }

    pub async fn cleanup(mut self) {
        match std::mem::replace(&mut self.left, Left::Nothing) {
            Left::Sqlite { dir } => remove_dir(&dir),
            Left::Postgres { admin, pool, schema } => {
                if let Some(pool) = pool {
                    pool.close().await;
                }
                drop_schema(&admin, &schema).await;
                admin.close().await;
            }
            Left::Nothing => {}
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.left, Left::Nothing) {
            Left::Sqlite { dir } => remove_dir(&dir),
            // The admin pool belongs to the test's runtime, which may be unwinding; a runtime
            // of its own on a thread of its own can still reach the database.
            Left::Postgres { schema, .. } => {
                let dropped = std::thread::spawn(move || {
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    runtime.block_on(async {
                        let admin = PgPoolOptions::new()
                            .max_connections(1)
                            .connect(&pg_url())
                            .await
                            .unwrap();
                        drop_schema(&admin, &schema).await;
                        admin.close().await;
                    });
                })
                .join();
                if dropped.is_err() {
                    eprintln!("could not drop a test schema");
                }
            }
            Left::Nothing => {}
        }
    }
}

async fn drop_schema(admin: &PgPool, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(admin)
        .await
        .unwrap();
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("removing {}: {e}", dir.display()),
    }
}

/// 2024-11-19T07:06:40.123Z: a realistic time with a millisecond part, so a conversion that
/// drops or rounds milliseconds shows.
pub const T0: i64 = 1_732_000_000_123;
pub const MINUTE: i64 = 60_000;
pub const DAY: i64 = 24 * 60 * MINUTE;

pub fn opened(socket: &str, user: &str, instance: &str, at_ms: i64) -> ConnectionOpened {
    ConnectionOpened {
        socket_id: socket.into(),
        user_id: user.into(),
        device_id: format!("{socket}-device"),
        transport: "websocket".into(),
        ip_address: "203.0.113.7".into(),
        user_agent: Some("rtgate-test/1.0".into()),
        server_instance: instance.into(),
        connected_at_ms: at_ms,
    }
}

pub fn closed(socket: &str, at_ms: i64, reason: &str) -> ConnectionClosed {
    ConnectionClosed { socket_id: socket.into(), disconnected_at_ms: at_ms, reason: reason.into() }
}

pub fn presence(user: &str, device: &str, status: &str, at_ms: i64) -> PresenceLog {
    PresenceLog { user_id: user.into(), device_id: device.into(), status: status.into(), at_ms }
}

/// Every row of `user`, however old or new.
pub fn everything(user: &str) -> HistoryQuery {
    HistoryQuery {
        user_id: user.into(),
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        before_id: None,
        limit: u32::MAX,
    }
}
