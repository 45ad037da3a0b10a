//! Redis for cluster tests: the shared server at `REDIS_TEST_URL`, unique key prefixes per
//! test, key counting, and private `redis-server` processes that a test may kill and restart.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub fn redis_url() -> String {
    std::env::var("REDIS_TEST_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn unique_prefix(test: &str) -> String {
    format!("rtgate-test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// Keys under `prefix` on the Redis at `url`.
pub async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut con).await.unwrap();
    keys.sort();
    keys
}

/// How many connections are subscribed to the pub/sub channel `name` (`PUBSUB NUMSUB`).
pub async fn subscribers(name: &str) -> u64 {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let (_, n): (String, u64) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(name).query_async(&mut con).await.unwrap();
    n
}

pub async fn cleanup(prefix: &str) {
    let url = redis_url();
    let found = keys(&url, prefix).await;
    if !found.is_empty() {
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("DEL").arg(found).query_async(&mut con).await.unwrap();
    }
}

/// A `redis-server` of this test's own, killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = PrivateRedis { port, child: None };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the running server (if any) and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis did not start on port {}", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
