use tokio_util::sync::CancellationToken;

use super::*;
use crate::transport::{Transport, channel};

/// A session of `user` over an in-process channel: its entry, the client end and the
/// writer task.
fn session(user: &str) -> (SessionEntry, channel::ChannelClient, tokio::task::JoinHandle<()>) {
    let (t, client) = channel::pair();
    let (_, _, writer) = t.split();
    let (outbound, task) = Outbound::spawn(writer, 1 << 20, &CancellationToken::new());
    let entry = SessionEntry {
        user_id: user.into(),
        device_id: "d".into(),
        transport: TransportKind::Channel,
        connected_at_ms: 0,
        outbound,
        token: crate::session::SessionToken::for_tests(),
        ctx: std::sync::Weak::new(),
    };
    (entry, client, task)
}

/// A hub with sessions `s0..` (user `u{i % 2}`), each with a client end to read.
fn hub(n: usize) -> (Hub, Vec<channel::ChannelClient>) {
    let hub = Hub::default();
    let clients = (0..n)
        .map(|i| {
            let (entry, client, _task) = session(&format!("u{}", i % 2));
            hub.insert(format!("s{i}").into(), entry);
            client
        })
        .collect();
    (hub, clients)
}

/// Which clients got a frame since the last look.
async fn receivers(clients: &mut [channel::ChannelClient]) -> Vec<usize> {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let mut got = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        while c.rx.try_recv().is_ok() {
            got.push(i);
        }
    }
    got
}

fn frame() -> Bytes {
    Bytes::from_static(b"f")
}

/// Increasing presence versions, as the store hands them out.
fn next_version() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `online` (v2) delivered from this instance, then `offline` (v1) arriving late from
/// another: the late, older one is dropped, so the last word watchers get is the truth.
#[tokio::test]
async fn an_older_presence_update_is_dropped_after_a_newer_one() {
    let (hub, mut clients) = hub(2);
    hub.watch("s0", &["u1".into()], 5).unwrap();
    assert_eq!(hub.deliver_watchers("u1", 20, &frame()), 1);
    assert_eq!(hub.deliver_watchers("u1", 10, &frame()), 0);
    assert_eq!(hub.deliver_watchers("u1", 20, &frame()), 0);
    assert_eq!(receivers(&mut clients).await, vec![0]);
    assert_eq!(hub.deliver_watchers("u1", 21, &frame()), 1);
    assert_eq!(receivers(&mut clients).await, vec![0]);
}

#[tokio::test]
async fn users_and_watchers_reach_every_session_until_removed() {
    let (hub, mut clients) = hub(4);
    assert_eq!(hub.deliver_user("u1", &frame()), 2);
    assert_eq!(receivers(&mut clients).await, vec![1, 3]);
    hub.watch("s0", &["u1".into()], 5).unwrap();
    hub.watch("s2", &["u1".into()], 5).unwrap();
    assert_eq!(hub.deliver_watchers("u1", next_version(), &frame()), 2);
    assert_eq!(receivers(&mut clients).await, vec![0, 2]);
    // s2 still watches u1: the instance keeps listening.
    assert!(hub.unwatch("s0", &["u1".into()]).is_empty());
    assert!(hub.is_watched("u1"));
    assert_eq!(hub.deliver_watchers("u1", next_version(), &frame()), 1);
    assert_eq!(hub.deliver_socket("s3", &frame()), 1);
    assert_eq!(receivers(&mut clients).await, vec![2, 3]);
}

#[tokio::test]
async fn a_removed_session_leaves_every_map() {
    let (hub, mut clients) = hub(2);
    hub.watch("s0", &["u1".into(), "u2".into()], 5).unwrap();
    hub.watch("s1", &["u1".into()], 5).unwrap();
    // s0 was u2's only local watcher, not u1's.
    assert_eq!(hub.remove("s0"), vec![Arc::<str>::from("u2")]);
    assert_eq!(hub.watched_users(), vec![Arc::<str>::from("u1")]);
    assert!(!hub.is_watched("u2"));
    assert_eq!(hub.deliver_watchers("u1", next_version(), &frame()), 1);
    assert_eq!(hub.deliver_user("u0", &frame()), 0);
    assert_eq!(hub.deliver_socket("s0", &frame()), 0);
    assert_eq!(receivers(&mut clients).await, vec![1]);
    assert_eq!((hub.len(), hub.count_user("u0"), hub.contains("s0")), (1, 0, false));
    assert_eq!(hub.unwatch("s1", &["u1".into(), "u9".into()]), vec!["u1"]);
    assert!(hub.watched_users().is_empty());
}

/// The maps hold `Outbound` clones; removing a session must drop every one of them, or
/// its writer task (and connection) would outlive it.
#[tokio::test]
async fn removing_a_session_releases_its_writer() {
    let hub = Hub::default();
    let (entry, _client, task) = session("u");
    hub.insert("s".into(), entry);
    hub.watch("s", &["v".into()], 5).unwrap();
    hub.remove("s");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    assert!(ended.is_ok(), "the writer still runs: an Outbound clone outlived the session");
}
