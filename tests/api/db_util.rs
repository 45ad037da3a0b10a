//! Databases for history tests: a fresh SQLite file, or a fresh schema in the PostgreSQL at
//! `DATABASE_TEST_URL`, and a TCP gate in front of PostgreSQL that a test can close and open
//! to simulate an outage.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use rtgate::store::{Store, postgres::PgStore, sqlite::SqliteStore};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn pg_url() -> String {
    std::env::var("DATABASE_TEST_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn admin(sql: &str) {
    let pool = sqlx::PgPool::connect(&pg_url()).await.expect("PostgreSQL at DATABASE_TEST_URL");
    // A server still shutting down may be writing into the schema being dropped; PostgreSQL
    // then picks one side of the lock cycle as a deadlock victim. Retry rather than fail.
    let mut attempt = 0;
    loop {
        match sqlx::query(sql).execute(&pool).await {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("retrying `{sql}` after: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("`{sql}` failed: {e}"),
        }
    }
    pool.close().await;
}

/// Where a test's history lives, and how to configure a server (or process) for it.
pub struct TestDb {
    pub db: Db,
    pub sqlite_path: std::path::PathBuf,
    pub schema: String,
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("rtgate_api_{id}");
        if db == Db::Postgres {
            admin(&format!("CREATE SCHEMA {schema}")).await;
        }
        TestDb {
            db,
            sqlite_path: std::env::temp_dir().join(format!("rtgate-api-{id}.sqlite")),
            schema,
        }
    }

    /// The `DATABASE_URL` for this schema through `addr` (the real server or a gate).
    pub fn pg_url_via(&self, addr: Option<SocketAddr>) -> String {
        let base = match addr {
            Some(a) => format!("postgres://postgres@{a}/test"),
            None => pg_url(),
        };
        format!("{base}?options=-c%20search_path%3D{}", self.schema)
    }

    pub fn apply(&self, c: &mut rtgate::config::Config) {
        c.sqlite_path = self.sqlite_path.clone();
        c.database_url = (self.db == Db::Postgres).then(|| self.pg_url_via(None));
    }

    /// Environment for a server process on this database.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("RTGATE_SQLITE_PATH", self.sqlite_path.display().to_string())];
        if self.db == Db::Postgres {
            env.push(("DATABASE_URL", self.pg_url_via(None)));
        }
        env
    }

    /// A store reading the same database, for assertions.
    pub async fn store(&self) -> Box<dyn Store> {
        match self.db {
            Db::Sqlite => Box::new(SqliteStore::open(&self.sqlite_path).await.unwrap()),
            Db::Postgres => Box::new(PgStore::connect(&self.pg_url_via(None)).await.unwrap()),
        }
    }

    pub async fn cleanup(self) {
        if self.db == Db::Postgres {
            admin(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await;
        }
        let _ = std::fs::remove_file(&self.sqlite_path);
    }
}

/// A TCP gate in front of PostgreSQL or Redis: closed, it refuses new connections and cuts
/// open ones; muted, it still forwards what the client sends but drops every reply (the
/// server acts on a request whose answer never arrives).
pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    muted: Arc<AtomicBool>,
    generation: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Gate {
    pub async fn start(target: SocketAddr, open: bool) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate {
            addr,
            open: Arc::new(AtomicBool::new(open)),
            muted: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(std::sync::Mutex::new(CancellationToken::new())),
        };
        let (flag, muted, generation) =
            (gate.open.clone(), gate.muted.clone(), gate.generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let cut = generation.lock().unwrap().clone();
                let muted = muted.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let requests = tokio::io::copy(&mut cr, &mut uw);
                    let replies = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match ur.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if !muted.load(Ordering::SeqCst)
                                && cw.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        _ = replies => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        gate
    }

    pub fn open(&self) {
        self.muted.store(false, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }

    /// Replies are dropped from now on, on open connections and new ones, until `open`.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }

    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut g = self.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }
}
