//! A device reconnecting to one instance while its old connection is torn down on another:
//! the `offline` of the old connection and the `online` of the new one are announced from two
//! instances and can reach a watcher in either order. Whatever the order, the last update a
//! watcher is sent must say `online` (the user is), and versions must only go up.
//!
//! Run hundreds of times: several racers at once, each with its own user and watcher, each
//! reconnecting back and forth between the two instances.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    cluster::{Backend, Cluster},
    helpers::{Client, Kind, TestServer},
    redis_util::cleanup,
};

const RACERS: usize = 6;
const ROUNDS: usize = 50;

/// Opens a session of `user` on `device`.
async fn open(server: &TestServer, kind: Kind, user: &str, device: &str) -> Client {
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": server.token(user), "device": device})).await;
    let f = c.recv().await.expect("connected");
    assert_eq!(f["type"], "connected", "{f}");
    c
}

/// What a watcher was told about one user, in the order it was told.
#[derive(Default)]
struct Told {
    last_status: Option<String>,
    last_version: u64,
    updates: usize,
}

impl Told {
    fn take(&mut self, f: &Value, user: &str, label: &str) {
        if f["type"] != "event" || f["event"] != "presence:update" {
            return;
        }
        let d = &f["data"];
        assert_eq!(d["userId"], user, "{label}: {f}");
        let version = d["version"].as_u64().unwrap_or_else(|| panic!("{label}: no version: {f}"));
        assert!(
            version > self.last_version,
            "{label}: version {version} after {}",
            self.last_version
        );
        self.last_version = version;
        self.last_status = d["status"].as_str().map(str::to_owned);
        self.updates += 1;
    }
}

/// Reads whatever the watcher has been sent, until it has been quiet for `quiet`.
async fn drain(watcher: &mut Client, told: &mut Told, user: &str, label: &str, quiet: Duration) {
    while let Ok(Some(f)) = tokio::time::timeout(quiet, watcher.recv()).await {
        told.take(&f, user, label);
    }
}

async fn racer(cluster: &Cluster, r: usize) -> usize {
    let user = format!("racer{r}");
    let kind = if r.is_multiple_of(2) { Kind::Ws } else { Kind::Wt };
    // The watcher sits on instance 1, where the reported failure was seen; the device moves
    // between 0 and 1 each round, so both directions race.
    let mut watcher = open(cluster.at(1), Kind::Ws, &format!("watcher{r}"), "w").await;
    let ack = watcher.request(1, "presence:subscribe", json!({"userIds": [&user]})).await;
    let mut told = Told {
        last_version: ack["data"]["users"][0]["version"].as_u64().unwrap_or(0),
        ..Told::default()
    };
    let mut old = open(cluster.at(0), kind, &user, "d0").await;
    let mut races = 0;
    for round in 1..=ROUNDS {
        let label = format!("{user} round {round}");
        let to = cluster.at(round);
        // The old connection vanishes (no `disconnect` frame) while the device reconnects.
        let device = format!("d{round}");
        let (new, ()) = tokio::join!(open(to, kind, &user, &device), async move { drop(old) });
        old = new;
        // Settled: the old connection is unregistered (one device left) and the user online.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut id = 100 + round as u64 * 10;
        loop {
            id += 1;
            watcher.send(&json!({"type": "event", "event": "presence:query", "id": id, "data": {"userIds": [&user]}})).await;
            let reply = loop {
                let f = watcher.recv().await.unwrap_or_else(|| panic!("{label}: watcher closed"));
                if f["id"] == id {
                    break f;
                }
                told.take(&f, &user, &label);
            };
            let u = &reply["data"]["users"][0];
            if u["online"] == true && u["devices"] == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{label}: never settled: {reply}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The teardown announces right after it unregisters; give it a moment to arrive.
        drain(&mut watcher, &mut told, &user, &label, Duration::from_millis(60)).await;
        assert_eq!(told.last_status.as_deref(), Some("online"), "{label}: the last word is wrong");
        races += 1;
    }
    assert!(told.updates >= 1, "{user}: the watcher was never told anything");
    races
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_racing_its_own_teardown_never_ends_shown_offline(#[case] backend: Backend) {
    let cluster = Cluster::start(backend, "presence-race", |_| {}).await;
    let runs = futures_util::future::join_all((0..RACERS).map(|r| racer(&cluster, r))).await;
    assert_eq!(runs.iter().sum::<usize>(), RACERS * ROUNDS);
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}
