//! The broker suite: every case runs on `MemoryBroker` and on `RedisBroker`, over one Redis
//! (classic pub/sub) and over the Redis Cluster (sharded pub/sub). The tests at the end
//! (`redis_*`) are Redis-specific: several instances on one Redis or cluster, and a Redis
//! restart.
//! Pub/sub writes no keys; the one `cleanup` call only keeps the suite's end-of-test convention.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rstest::rstest;
use rtgate::state::broker::memory::MemoryBroker;
use rtgate::state::broker::redis::RedisBroker;
use rtgate::state::broker::{Broker, Channel, Message};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use crate::common::{Backend, cleanup, unique_prefix};

/// How long a message that should arrive may take.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long we watch for a message that should not arrive, after a marker proved the path
/// is flowing.
const QUIET: Duration = Duration::from_millis(100);

async fn broker(backend: Backend, prefix: &str) -> Box<dyn Broker> {
    match backend {
        Backend::Memory => Box::new(MemoryBroker::new()),
        Backend::Redis | Backend::Cluster => {
            Box::new(RedisBroker::connect(&backend.url(), prefix).await.unwrap())
        }
    }
}

fn chan(name: &str) -> Channel {
    Channel::Chan(name.into())
}

async fn recv(rx: &mut UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(ARRIVAL, rx.recv())
        .await
        .expect("no message within the deadline")
        .expect("receiver closed")
}

/// Asserts nothing more arrives. Call it after receiving a marker published last: on both
/// backends one channel's messages arrive in publish order, so anything wrongly delivered
/// would have shown up before the marker.
async fn assert_quiet(rx: &mut UnboundedReceiver<Message>) {
    assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
    if let Ok(extra) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("unexpected message: {extra:?}");
    }
}

/// Publishes on `ch`, where nothing should be received, then proves it: a marker published
/// after it on a subscribed channel arrives, and nothing else does.
async fn assert_not_delivered(b: &dyn Broker, rx: &mut UnboundedReceiver<Message>, ch: &Channel) {
    let marker = chan("marker");
    b.subscribe(&marker).await.unwrap();
    b.publish(ch, Bytes::from_static(b"must not arrive")).await.unwrap();
    b.publish(&marker, Bytes::from_static(b"marker")).await.unwrap();
    assert_eq!(recv(rx).await, msg(&marker, b"marker"));
    assert_quiet(rx).await;
}

fn msg(channel: &Channel, payload: &'static [u8]) -> Message {
    Message { channel: channel.clone(), payload: Bytes::from_static(payload) }
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn subscribed_channel_receives_payload_byte_for_byte(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-bytes");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    let ch = chan("bytes");
    b.subscribe(&ch).await.unwrap();

    let every_byte: Bytes = (0..=255u8).collect::<Vec<_>>().into();
    let not_utf8 = Bytes::from_static(b"\xff\xfe\x00\xc3\x28 frame \x80");
    let empty = Bytes::new();
    for payload in [every_byte, not_utf8, empty] {
        b.publish(&ch, payload.clone()).await.unwrap();
        let got = recv(&mut rx).await;
        assert_eq!(got.channel, ch);
        assert_eq!(got.payload, payload);
    }
    assert_quiet(&mut rx).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn unsubscribed_channel_receives_nothing(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-unsubscribed");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    assert_not_delivered(b.as_ref(), &mut rx, &chan("other")).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn unsubscribe_stops_delivery(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-unsubscribe");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    let leaving = chan("leaving");
    b.subscribe(&leaving).await.unwrap();

    b.publish(&leaving, Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(recv(&mut rx).await, msg(&leaving, b"before"));

    b.unsubscribe(&leaving).await.unwrap();
    // Idempotent: a second unsubscribe is a no-op, not an error.
    b.unsubscribe(&leaving).await.unwrap();
    assert_not_delivered(b.as_ref(), &mut rx, &leaving).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn subscribing_twice_delivers_once(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-idempotent");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    let ch = chan("twice");
    b.subscribe(&ch).await.unwrap();
    b.subscribe(&ch).await.unwrap();

    b.publish(&ch, Bytes::from_static(b"one")).await.unwrap();
    b.publish(&ch, Bytes::from_static(b"two")).await.unwrap();

    assert_eq!(recv(&mut rx).await, msg(&ch, b"one"));
    assert_eq!(recv(&mut rx).await, msg(&ch, b"two"));
    assert_quiet(&mut rx).await;

    // One unsubscribe undoes both subscribes: there is no reference counting.
    b.unsubscribe(&ch).await.unwrap();
    assert_not_delivered(b.as_ref(), &mut rx, &ch).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn chan_instance_watch_and_cluster_channels_are_distinct(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-distinct");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    // The same name as a channel, an instance and a watched user must not collide.
    let as_chan = chan("x");
    let as_instance = Channel::Instance("x".into());
    let as_user = Channel::Watch("x".into());

    b.subscribe(&as_chan).await.unwrap();
    b.publish(&as_instance, Bytes::from_static(b"instance")).await.unwrap();
    b.publish(&Channel::Cluster, Bytes::from_static(b"cluster")).await.unwrap();
    b.publish(&as_user, Bytes::from_static(b"user")).await.unwrap();
    b.publish(&as_chan, Bytes::from_static(b"chan")).await.unwrap();
    assert_eq!(recv(&mut rx).await, msg(&as_chan, b"chan"));
    assert_quiet(&mut rx).await;

    b.subscribe(&as_instance).await.unwrap();
    b.subscribe(&Channel::Cluster).await.unwrap();
    b.subscribe(&as_user).await.unwrap();
    b.unsubscribe(&as_chan).await.unwrap();
    b.publish(&as_chan, Bytes::from_static(b"chan")).await.unwrap();
    b.publish(&as_instance, Bytes::from_static(b"instance")).await.unwrap();
    b.publish(&Channel::Cluster, Bytes::from_static(b"cluster")).await.unwrap();
    b.publish(&as_user, Bytes::from_static(b"user")).await.unwrap();

    // Different channels may interleave on the way; compare as a set.
    let mut got = vec![recv(&mut rx).await, recv(&mut rx).await, recv(&mut rx).await];
    got.sort_by(|a, b| a.payload.cmp(&b.payload));
    assert_eq!(
        got,
        vec![
            msg(&Channel::Cluster, b"cluster"),
            msg(&as_instance, b"instance"),
            msg(&as_user, b"user")
        ]
    );
    assert_quiet(&mut rx).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn one_channel_preserves_publish_order(#[case] backend: Backend) {
    const COUNT: u32 = 1000;
    let prefix = unique_prefix("broker-order");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    let ch = chan("ordered");
    b.subscribe(&ch).await.unwrap();

    for i in 0..COUNT {
        b.publish(&ch, Bytes::copy_from_slice(&i.to_be_bytes())).await.unwrap();
    }
    for i in 0..COUNT {
        let got = recv(&mut rx).await;
        assert_eq!(got.channel, ch);
        assert_eq!(got.payload.as_ref(), i.to_be_bytes(), "message {i}");
    }
    assert_quiet(&mut rx).await;
}

/// A burst (`publish_all`, one pipeline on one Redis, one sequence per channel on a cluster)
/// keeps each channel's order, with the channels interleaved.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn a_burst_keeps_each_channels_order(#[case] backend: Backend) {
    const COUNT: u32 = 300;
    let prefix = unique_prefix("broker-burst");
    let b = broker(backend, &prefix).await;
    let mut rx = b.take_receiver().unwrap();
    let (one, two) = (chan("burst-1"), chan("burst-2"));
    b.subscribe(&one).await.unwrap();
    b.subscribe(&two).await.unwrap();

    let burst: Vec<(Channel, Bytes)> = (0..COUNT)
        .map(|i| {
            let ch = if i % 3 == 0 { &two } else { &one };
            (ch.clone(), Bytes::copy_from_slice(&i.to_be_bytes()))
        })
        .collect();
    b.publish_all(&burst).await.unwrap();
    let mut got: Vec<Message> = Vec::new();
    for _ in 0..COUNT {
        got.push(recv(&mut rx).await);
    }
    for ch in [&one, &two] {
        let sent: Vec<&Bytes> = burst.iter().filter(|(c, _)| c == ch).map(|(_, p)| p).collect();
        let received: Vec<&Bytes> =
            got.iter().filter(|m| m.channel == *ch).map(|m| &m.payload).collect();
        assert_eq!(received, sent, "{ch:?}");
    }
    assert_quiet(&mut rx).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn receiver_is_handed_out_once_and_ping_succeeds(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-receiver");
    let b = broker(backend, &prefix).await;
    assert!(b.take_receiver().is_some());
    assert!(b.take_receiver().is_none());
    b.ping().await.unwrap();
}

// ---- Redis-specific: several instances on one Redis, and a Redis restart. ----

/// Two brokers are two instances: a publish on one reaches the other's subscription, and a
/// broker under another prefix (another cluster) hears nothing.
#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn redis_two_brokers_are_two_instances(#[case] backend: Backend) {
    let prefix = unique_prefix("broker-two-instances");
    let a = broker(backend, &prefix).await;
    let b = broker(backend, &prefix).await;
    let other_cluster = broker(backend, &unique_prefix("broker-other-cluster")).await;
    let mut rx_a = a.take_receiver().unwrap();
    let mut rx_b = b.take_receiver().unwrap();
    let mut rx_other = other_cluster.take_receiver().unwrap();

    let shared = chan("shared");
    let inst_b = Channel::Instance("b".into());
    b.subscribe(&shared).await.unwrap();
    b.subscribe(&inst_b).await.unwrap();
    other_cluster.subscribe(&shared).await.unwrap();

    a.publish(&shared, Bytes::from_static(b"to the channel")).await.unwrap();
    a.publish(&inst_b, Bytes::from_static(b"to instance b")).await.unwrap();
    assert_eq!(recv(&mut rx_b).await, msg(&shared, b"to the channel"));
    assert_eq!(recv(&mut rx_b).await, msg(&inst_b, b"to instance b"));

    // A publishes to itself too once it has local interest.
    a.subscribe(&shared).await.unwrap();
    a.publish(&shared, Bytes::from_static(b"both")).await.unwrap();
    assert_eq!(recv(&mut rx_a).await, msg(&shared, b"both"));
    assert_eq!(recv(&mut rx_b).await, msg(&shared, b"both"));

    // Reaching the other cluster would have arrived before this marker.
    other_cluster.subscribe(&chan("marker")).await.unwrap();
    other_cluster.publish(&chan("marker"), Bytes::from_static(b"marker")).await.unwrap();
    assert_eq!(recv(&mut rx_other).await, msg(&chan("marker"), b"marker"));
    assert_quiet(&mut rx_other).await;
    assert_quiet(&mut rx_a).await;
    assert_quiet(&mut rx_b).await;
    cleanup(backend, &prefix).await;
}

/// A private `redis-server` on a free port, killed when dropped.
struct RedisProcess {
    port: u16,
    child: Option<Child>,
}

impl RedisProcess {
    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        let process = Self { port, child: Some(child) };
        process.wait_ready().await;
        process
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<()>(&mut con).await.is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// After Redis restarts, `ping` brings the connections back and the subscriptions come back
/// by themselves. `past_retry_budget` keeps Redis down longer than the connection manager's
/// own reconnection attempts last, so recovery has to be driven by `ping`.
#[rstest]
#[case::brief(Duration::ZERO)]
#[case::past_retry_budget(Duration::from_secs(8))]
#[tokio::test]
async fn redis_resubscribes_after_restart(#[case] outage: Duration) {
    let port = RedisProcess::free_port();
    let mut server = RedisProcess::start(port).await;
    let b = RedisBroker::connect(&server.url(), unique_prefix("broker-restart")).await.unwrap();
    let mut rx = b.take_receiver().unwrap();
    let ch = chan("survivor");
    b.subscribe(&ch).await.unwrap();
    b.publish(&ch, Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(recv(&mut rx).await, msg(&ch, b"before"));

    server.stop();
    assert!(
        b.publish(&ch, Bytes::from_static(b"lost")).await.is_err(),
        "publishing with Redis down must report the failure"
    );
    tokio::time::sleep(outage).await;
    let _server = RedisProcess::start(port).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = b.ping().await {
        assert!(tokio::time::Instant::now() < deadline, "broker did not reconnect: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    b.publish(&ch, Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(recv(&mut rx).await, msg(&ch, b"after"));
    assert_quiet(&mut rx).await;
}
