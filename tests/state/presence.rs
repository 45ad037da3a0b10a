//! The presence suite: registry, multi-device transitions, concurrency, liveness and reaping,
//! and (Redis only) key hygiene. Every case runs against every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use rstest::rstest;
use rtgate::state::now_ms;
use rtgate::state::presence::memory::MemoryPresence;
use rtgate::state::presence::redis::RedisPresence;
use rtgate::state::presence::{
    PresenceStore, Registered, SocketRecord, Status, Transition, UserPresence,
};

use crate::common::{self, Backend};

/// Long enough that a live instance never expires during a test.
const LIVE_TTL: Duration = Duration::from_secs(30);
/// Short enough to wait out; the tests sleep just past it.
const SHORT_TTL: Duration = Duration::from_millis(200);
const PAST_SHORT_TTL: Duration = Duration::from_millis(260);
/// Rounds of each race; enough to hit both interleavings on a multi-threaded runtime.
const RACE_ROUNDS: usize = 50;

async fn store(backend: Backend, prefix: &str) -> Box<dyn PresenceStore> {
    match backend {
        Backend::Memory => Box::new(MemoryPresence::new()),
        Backend::Redis | Backend::Cluster => {
            Box::new(RedisPresence::new(backend.conn().await, prefix))
        }
    }
}

/// Two handles on one shared state, as two instances would hold: for Redis each has its own
/// connection, so their commands really race at the server.
async fn two_instances(
    backend: Backend,
    prefix: &str,
) -> (Arc<dyn PresenceStore>, Arc<dyn PresenceStore>) {
    let a: Arc<dyn PresenceStore> = Arc::from(store(backend, prefix).await);
    let b = match backend {
        Backend::Memory => a.clone(),
        Backend::Redis | Backend::Cluster => Arc::from(store(backend, prefix).await),
    };
    (a, b)
}

async fn finish(backend: Backend, prefix: &str) {
    common::cleanup(backend, prefix).await;
}

fn socket(user: &str, device: &str, instance: &str) -> SocketRecord {
    SocketRecord {
        socket_id: uuid::Uuid::new_v4().to_string(),
        user_id: user.into(),
        device_id: device.into(),
        transport: "websocket".into(),
        instance_id: instance.into(),
        connected_at_ms: now_ms(),
    }
}

/// The socket ids `instance` has registered, by id.
async fn ids_of_instance(store: &dyn PresenceStore, instance: &str) -> Vec<String> {
    store.sockets_of_instance(instance).await.unwrap().into_iter().map(|(id, _)| id).collect()
}

fn assert_transition(got: Option<Transition>, user: &str, device: &str, status: Status) {
    let got = got.unwrap_or_else(|| panic!("expected {status:?} for {user}"));
    assert_eq!((got.user_id.as_str(), got.device_id.as_str(), got.status), (user, device, status));
    assert!(got.at_ms > 0);
}

async fn presence_of(store: &dyn PresenceStore, user: &str) -> UserPresence {
    store.query(&[user.to_owned()]).await.unwrap().remove(0)
}

fn by_id(mut records: Vec<SocketRecord>) -> Vec<SocketRecord> {
    records.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
    records
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn first_socket_goes_online_and_last_goes_offline_once(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-transitions");
    let store = store(backend, &prefix).await;
    let phone = socket("alice", "phone", "i1");
    let laptop = socket("alice", "laptop", "i2");

    let online = store.register(&phone).await.unwrap();
    assert_transition(online.clone(), "alice", "phone", Status::Online);
    assert_eq!(store.register(&laptop).await.unwrap(), None);
    assert_eq!(store.unregister(&phone).await.unwrap(), None);
    assert!(presence_of(&*store, "alice").await.online);
    let offline = store.unregister(&laptop).await.unwrap();
    assert_transition(offline.clone(), "alice", "laptop", Status::Offline);
    assert_eq!(store.unregister(&laptop).await.unwrap(), None);
    let now = presence_of(&*store, "alice").await;
    assert_eq!(
        (now.user_id.as_str(), now.online, now.devices, now.sockets),
        ("alice", false, 0, 0)
    );
    let (online, offline) = (online.unwrap().version, offline.unwrap().version);
    assert!(online < offline && offline <= now.version, "{online} {offline} {}", now.version);
    finish(backend, &prefix).await;
}

/// On one Redis the transition scripts count the subscribers of the user's watch topic: a
/// transition nobody listens for is marked unwatched (and not published), one with a listener
/// watched. On a cluster (the topic is in a slot of its own) and in memory nothing is counted:
/// every transition is watched.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn transitions_say_whether_anyone_listens_for_the_user(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-watched");
    let topics = format!("{prefix}watch:");
    let store: Box<dyn PresenceStore> = match backend {
        Backend::Memory => Box::new(MemoryPresence::new()),
        Backend::Redis | Backend::Cluster => Box::new(
            RedisPresence::new(backend.conn().await, prefix.as_str())
                .with_watch_topics(Some(topics.clone())),
        ),
    };
    let counted = backend == Backend::Redis;
    let phone = socket("alice", "phone", "i1");
    let laptop = socket("alice", "laptop", "i1");
    let watched = |t: Option<Transition>| t.expect("a transition").watched;

    // Nobody subscribed to alice's topic.
    assert_eq!(watched(store.register(&phone).await.unwrap()), !counted);
    assert_eq!(watched(store.unregister(&phone).await.unwrap()), !counted);

    // A subscriber to another user's topic does not count for alice.
    let listener = (backend != Backend::Memory).then(|| redis::Client::open(common::redis_url()));
    let mut pubsub = match listener {
        Some(client) => Some(client.unwrap().get_async_pubsub().await.unwrap()),
        None => None,
    };
    if let Some(pubsub) = pubsub.as_mut() {
        pubsub.subscribe(format!("{topics}bob")).await.unwrap();
    }
    assert_eq!(watched(store.register(&phone).await.unwrap()), !counted);

    // Subscribed to alice's topic: her next transitions are watched, whichever way they go.
    if let Some(pubsub) = pubsub.as_mut() {
        pubsub.subscribe(format!("{topics}alice")).await.unwrap();
    }
    assert_eq!(store.register(&laptop).await.unwrap(), None, "not a transition");
    assert_eq!(store.unregister(&phone).await.unwrap(), None, "not a transition");
    assert!(watched(store.unregister(&laptop).await.unwrap()));
    assert!(watched(store.register(&laptop).await.unwrap()));

    // The listener gone, nobody is counted again.
    drop(pubsub);
    let gone = async {
        loop {
            let t = store.unregister(&laptop).await.unwrap();
            if !watched(t) || !counted {
                return;
            }
            // The server drops a closed connection's subscriptions when it reads the close.
            store.register(&laptop).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone).await.expect("still counted after close");
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn query_counts_devices_and_sockets_in_the_order_asked(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-query");
    let store = store(backend, &prefix).await;
    // Two tabs on one laptop and a phone on another instance: 2 devices, 3 sockets.
    for s in [
        socket("alice", "laptop", "i1"),
        socket("alice", "laptop", "i1"),
        socket("alice", "phone", "i2"),
        socket("bob", "phone", "i2"),
    ] {
        store.register(&s).await.unwrap();
    }

    let asked = ["nobody", "bob", "alice"].map(String::from);
    let got = store.query(&asked).await.unwrap();
    let summary: Vec<_> =
        got.iter().map(|p| (p.user_id.as_str(), p.online, p.devices, p.sockets)).collect();
    assert_eq!(summary, [("nobody", false, 0, 0), ("bob", true, 1, 1), ("alice", true, 2, 3)]);
    assert!(store.query(&[]).await.unwrap().is_empty());

    // Many users (on a cluster, many buckets and shards), one asked twice: still in order.
    let mut many: Vec<String> = (0..40).map(|n| format!("ghost{n}")).collect();
    many.insert(7, "alice".into());
    many.push("alice".into());
    let online: Vec<usize> = store
        .query(&many)
        .await
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.online)
        .map(|(i, p)| {
            assert_eq!(p.user_id, many[i]);
            i
        })
        .collect();
    assert_eq!(online, [7, many.len() - 1]);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn register_and_unregister_are_idempotent(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-idempotent");
    let store = store(backend, &prefix).await;
    let s = socket("alice", "phone", "i1");

    assert!(store.register(&s).await.unwrap().is_some());
    assert_eq!(store.register(&s).await.unwrap(), None);
    assert_eq!(presence_of(&*store, "alice").await.sockets, 1);
    assert_eq!(ids_of_instance(&*store, "i1").await, std::slice::from_ref(&s.socket_id));

    assert!(store.unregister(&s).await.unwrap().is_some());
    assert_eq!(store.unregister(&s).await.unwrap(), None);
    assert_eq!(store.unregister(&socket("carol", "x", "i1")).await.unwrap(), None);
    assert!(!presence_of(&*store, "alice").await.online);
    assert!(ids_of_instance(&*store, "i1").await.is_empty());
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn a_user_at_the_cap_is_refused_and_nothing_is_written(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-cap");
    let store = store(backend, &prefix).await;
    let phone = socket("alice", "phone", "i1");
    let laptop = socket("alice", "laptop", "i2");
    let tablet = socket("alice", "tablet", "i1");

    let first = store.register_capped(&phone, 2).await.unwrap();
    let Registered::Added(online) = first else { panic!("first socket refused: {first:?}") };
    assert_transition(online, "alice", "phone", Status::Online);
    assert_eq!(store.register_capped(&laptop, 2).await.unwrap(), Registered::Added(None));
    assert_eq!(store.register_capped(&tablet, 2).await.unwrap(), Registered::Full);
    // A socket already registered is not a new one: registering it again at the cap is fine.
    assert_eq!(store.register_capped(&laptop, 2).await.unwrap(), Registered::Added(None));
    assert_eq!(presence_of(&*store, "alice").await.sockets, 2);
    assert_eq!(store.socket(&tablet.user_id, &tablet.socket_id).await.unwrap(), None);
    assert!(!ids_of_instance(&*store, "i1").await.contains(&tablet.socket_id));
    // A cap of 0 refuses even a user's first socket, and leaves them offline.
    assert_eq!(
        store.register_capped(&socket("bob", "x", "i1"), 0).await.unwrap(),
        Registered::Full
    );
    assert!(!presence_of(&*store, "bob").await.online);

    store.unregister(&phone).await.unwrap();
    assert_eq!(store.register_capped(&tablet, 2).await.unwrap(), Registered::Added(None));
    assert_eq!(presence_of(&*store, "alice").await.sockets, 2);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connects_racing_on_two_instances_never_pass_the_cap(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-cap-race");
    let (i1, i2) = two_instances(backend, &prefix).await;
    const CAP: usize = 3;

    for round in 0..RACE_ROUNDS / 5 {
        let user = format!("user{round}");
        let attempts = (0..4 * CAP).map(|n| {
            let store = if n % 2 == 0 { i1.clone() } else { i2.clone() };
            let s = socket(&user, &format!("d{n}"), if n % 2 == 0 { "i1" } else { "i2" });
            tokio::spawn(async move { store.register_capped(&s, CAP).await.unwrap() })
        });
        let mut added = 0;
        let mut online = 0;
        for attempt in attempts.collect::<Vec<_>>() {
            if let Registered::Added(t) = attempt.await.unwrap() {
                added += 1;
                online += usize::from(t.is_some());
            }
        }
        assert_eq!((added, online), (CAP, 1), "round {round}");
        assert_eq!(presence_of(&*i1, &user).await.sockets, CAP, "round {round}");
    }
    finish(backend, &prefix).await;
}

/// One instance's connects and disconnects arriving together (on Redis they share script calls,
/// `redis_batch`): each is still its own decision, in the order the store took them — the cap
/// holds per user, each user goes online once and offline once with increasing versions, and
/// nothing is left in the registry or the instance's index.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_connects_and_disconnects_decides_each_on_its_own(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-burst");
    let store: Arc<dyn PresenceStore> = Arc::from(store(backend, &prefix).await);
    const USERS: usize = 40;
    const CAP: usize = 2;

    let connects = (0..USERS * (CAP + 1)).map(|n| {
        let (store, s) = (store.clone(), socket(&format!("user{}", n % USERS), "d", "i1"));
        tokio::spawn(async move { (store.register_capped(&s, CAP).await.unwrap(), s) })
    });
    let mut admitted = Vec::new();
    let mut online = std::collections::HashMap::new();
    for connect in connects.collect::<Vec<_>>() {
        let (outcome, s) = connect.await.unwrap();
        if let Registered::Added(t) = outcome {
            if let Some(t) = t {
                assert_eq!((t.user_id.as_str(), t.status), (s.user_id.as_str(), Status::Online));
                assert!(online.insert(t.user_id.clone(), t.version).is_none(), "{t:?}");
            }
            admitted.push(s);
        }
    }
    assert_eq!((admitted.len(), online.len()), (USERS * CAP, USERS));
    let users: Vec<String> = (0..USERS).map(|n| format!("user{n}")).collect();
    for now in store.query(&users).await.unwrap() {
        assert_eq!((now.online, now.sockets), (true, CAP), "{now:?}");
    }
    assert_eq!(ids_of_instance(&*store, "i1").await.len(), USERS * CAP);

    let disconnects = admitted.into_iter().map(|s| {
        let store = store.clone();
        tokio::spawn(async move { store.unregister(&s).await.unwrap() })
    });
    let mut offline = std::collections::HashMap::new();
    for disconnect in disconnects.collect::<Vec<_>>() {
        if let Some(t) = disconnect.await.unwrap() {
            assert_eq!(t.status, Status::Offline);
            assert!(offline.insert(t.user_id.clone(), t.version).is_none(), "{t:?}");
        }
    }
    assert_eq!(offline.len(), USERS);
    for (user, version) in &offline {
        assert!(online[user] < *version, "{user}: {} then {version}", online[user]);
    }
    for now in store.query(&users).await.unwrap() {
        assert_eq!((now.online, now.sockets), (false, 0), "{now:?}");
    }
    assert!(ids_of_instance(&*store, "i1").await.is_empty());
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_devices_leaving_at_once_yield_exactly_one_offline(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-leave-race");
    let (i1, i2) = two_instances(backend, &prefix).await;

    for round in 0..RACE_ROUNDS {
        let user = format!("user{round}");
        let phone = socket(&user, "phone", "i1");
        let laptop = socket(&user, "laptop", "i2");
        i1.register(&phone).await.unwrap();
        i2.register(&laptop).await.unwrap();

        let leave_phone = tokio::spawn({
            let i1 = i1.clone();
            async move { i1.unregister(&phone).await.unwrap() }
        });
        let leave_laptop = tokio::spawn({
            let i2 = i2.clone();
            async move { i2.unregister(&laptop).await.unwrap() }
        });
        let (a, b) = tokio::join!(leave_phone, leave_laptop);
        let offline: Vec<Transition> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();

        assert_eq!(offline.len(), 1, "round {round}: {offline:?}");
        assert_eq!(offline[0].status, Status::Offline);
        assert_eq!(offline[0].user_id, user);
        assert!(!presence_of(&*i1, &user).await.online);
    }
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnect_racing_disconnect_leaves_the_user_online(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-reconnect-race");
    let (i1, i2) = two_instances(backend, &prefix).await;

    for round in 0..RACE_ROUNDS {
        let user = format!("user{round}");
        let old = socket(&user, "phone", "i1");
        let new = socket(&user, "phone", "i2");
        i1.register(&old).await.unwrap();

        let disconnect = tokio::spawn({
            let i1 = i1.clone();
            async move { i1.unregister(&old).await.unwrap() }
        });
        let reconnect = tokio::spawn({
            let (i2, new) = (i2.clone(), new.clone());
            async move { i2.register(&new).await.unwrap() }
        });
        let (gone, back) = tokio::join!(disconnect, reconnect);
        let (gone, back) = (gone.unwrap(), back.unwrap());

        // Either the new socket landed first (no transition at all) or the old one left first
        // (Offline, then Online): the transitions always add up to "still online".
        let statuses = (gone.as_ref().map(|t| t.status), back.as_ref().map(|t| t.status));
        assert!(
            matches!(statuses, (None, None) | (Some(Status::Offline), Some(Status::Online))),
            "round {round}: {statuses:?}"
        );
        // The versions say which came last, whichever instance announces first.
        let now = presence_of(&*i2, &user).await;
        if let (Some(gone), Some(back)) = (gone, back) {
            assert!(gone.version < back.version, "round {round}: {gone:?} {back:?}");
            assert!(back.version <= now.version, "round {round}: {back:?} {now:?}");
        }
        assert!(now.online && now.sockets == 1, "round {round}: {now:?}");
        assert_eq!(i1.sockets_of_user(&user).await.unwrap(), [new]);
    }
    finish(backend, &prefix).await;
}

/// A user's transitions, decided on two instances, carry increasing versions, and a snapshot
/// sits between the transitions it reflects and the ones after it.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn versions_order_transitions_and_snapshots(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-versions");
    let (i1, i2) = two_instances(backend, &prefix).await;
    let mut last = presence_of(&*i1, "carol").await.version;
    for round in 0..20 {
        let (on, off) = if round % 2 == 0 { (&i1, &i2) } else { (&i2, &i1) };
        let s = socket("carol", "phone", if round % 2 == 0 { "i1" } else { "i2" });
        let up = on.register(&s).await.unwrap().expect("online").version;
        assert!(up > last, "round {round}: {up} after {last}");
        let seen = presence_of(&**off, "carol").await;
        assert!(seen.online && seen.version >= up, "round {round}: {seen:?} after {up}");
        let down = off.unregister(&s).await.unwrap().expect("offline").version;
        assert!(down > seen.version, "round {round}: {down} after snapshot {}", seen.version);
        last = down;
    }
    // Versions are exact in JavaScript.
    assert!(last < (1 << 53));
    finish(backend, &prefix).await;
}

/// A bucket's stored version watermark ahead of the clock (the clock stepped back, or a
/// failover to a replica whose clock is behind) is still passed, by both transitions, and
/// kept (it has no expiry): versions never go backwards.
#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn versions_pass_a_stored_version_ahead_of_the_clock(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-ahead");
    let store = store(backend, &prefix).await;
    let first = socket("frank", "phone", "i1");
    store.register(&first).await.unwrap();
    store.unregister(&first).await.unwrap();
    let key = redis_keys(backend, &prefix)
        .await
        .into_iter()
        .find(|k| k.ends_with(&format!("{}:ver", bucket_tag(backend, "frank"))))
        .expect("the version watermark of frank's bucket");
    let key = format!("{prefix}{key}");
    // An hour ahead of the clock, in µs.
    let ahead = now_ms() * 1000 + 3_600_000_000;
    let mut con = backend.conn().await;
    let () = redis::cmd("SET").arg(&key).arg(ahead).query_async(&mut con).await.unwrap();

    let again = socket("frank", "laptop", "i1");
    let up = store.register(&again).await.unwrap().expect("online").version;
    assert_eq!(up, ahead + 1);
    let down = store.unregister(&again).await.unwrap().expect("offline").version;
    assert_eq!(down, ahead + 2);
    let stored: u64 = redis::cmd("GET").arg(&key).query_async(&mut con).await.unwrap();
    assert_eq!(stored, down);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
    assert_eq!(ttl, -1, "the watermark never expires");
    finish(backend, &prefix).await;
}

/// A graceful exit forgets the instance at once, alive or not, and removes what it left.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn leave_forgets_a_live_instance_and_its_leftovers(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-leave");
    let store = store(backend, &prefix).await;
    store.heartbeat("leaving", LIVE_TTL).await.unwrap();
    store.heartbeat("staying", LIVE_TTL).await.unwrap();
    let left_behind = socket("dave", "phone", "leaving");
    let elsewhere = socket("erin", "phone", "staying");
    store.register(&left_behind).await.unwrap();
    store.register(&elsewhere).await.unwrap();

    let gone = store.leave("leaving").await.unwrap().expect("known instance");
    assert_eq!(gone.sockets, [left_behind]);
    assert_eq!(gone.offline.len(), 1);
    assert_transition(gone.offline.into_iter().next(), "dave", "phone", Status::Offline);
    assert!(!presence_of(&*store, "dave").await.online);
    assert!(presence_of(&*store, "erin").await.online);
    assert_eq!(store.leave("leaving").await.unwrap(), None);
    // Nothing left for a reaper: the live instance was not taken for a dead one either.
    assert!(store.reap_dead_instances().await.unwrap().is_empty());
    assert_eq!(ids_of_instance(&*store, "staying").await, [elsewhere.socket_id]);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn sockets_are_indexed_by_user_and_by_instance(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-indexes");
    let store = store(backend, &prefix).await;
    let alice_phone = socket("alice", "phone", "i1");
    let mut alice_laptop = socket("alice", "laptop", "i2");
    alice_laptop.transport = "webtransport".into();
    let bob_phone = socket("bob", "phone", "i1");
    for s in [&alice_phone, &alice_laptop, &bob_phone] {
        store.register(s).await.unwrap();
    }

    assert_eq!(
        by_id(store.sockets_of_user("alice").await.unwrap()),
        by_id(vec![alice_phone.clone(), alice_laptop.clone()])
    );
    assert_eq!(store.sockets_of_user("bob").await.unwrap(), std::slice::from_ref(&bob_phone));
    assert!(store.sockets_of_user("nobody").await.unwrap().is_empty());
    let on_i1: BTreeSet<(String, String)> =
        store.sockets_of_instance("i1").await.unwrap().into_iter().collect();
    let pair = |s: &SocketRecord| (s.socket_id.clone(), s.user_id.clone());
    assert_eq!(on_i1, BTreeSet::from([pair(&alice_phone), pair(&bob_phone)]));
    assert_eq!(ids_of_instance(&*store, "i2").await, [alice_laptop.socket_id.clone()]);
    assert!(ids_of_instance(&*store, "i3").await.is_empty());

    store.unregister(&alice_phone).await.unwrap();
    assert_eq!(store.sockets_of_user("alice").await.unwrap(), [alice_laptop]);
    assert_eq!(ids_of_instance(&*store, "i1").await, [bob_phone.socket_id]);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn heartbeats_keep_an_instance_from_being_reaped(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-heartbeat");
    let store = store(backend, &prefix).await;
    // Longer than SHORT_TTL so scheduling jitter cannot eat the margin (a quarter of it).
    let ttl = Duration::from_millis(400);
    store.heartbeat("i1", ttl).await.unwrap();
    let s = socket("alice", "phone", "i1");
    store.register(&s).await.unwrap();

    // Refreshed halfway, so by the time the first TTL has passed the second still holds.
    tokio::time::sleep(ttl / 2).await;
    store.heartbeat("i1", ttl).await.unwrap();
    tokio::time::sleep(ttl * 3 / 4).await;

    assert!(store.reap_dead_instances().await.unwrap().is_empty());
    assert!(presence_of(&*store, "alice").await.online);
    assert_eq!(ids_of_instance(&*store, "i1").await, [s.socket_id]);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn an_expired_instance_is_reaped_with_its_sockets(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-reap");
    let store = store(backend, &prefix).await;
    store.heartbeat("live", LIVE_TTL).await.unwrap();
    store.heartbeat("dead", SHORT_TTL).await.unwrap();
    // alice only on the dead instance (two devices), bob on both, carol only on the live one.
    let alice_phone = socket("alice", "phone", "dead");
    let alice_laptop = socket("alice", "laptop", "dead");
    let bob_dead = socket("bob", "phone", "dead");
    let bob_live = socket("bob", "laptop", "live");
    let carol = socket("carol", "phone", "live");
    for s in [&alice_phone, &alice_laptop, &bob_dead, &bob_live, &carol] {
        store.register(s).await.unwrap();
    }
    tokio::time::sleep(PAST_SHORT_TTL).await;

    let reaped = store.reap_dead_instances().await.unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    let dead = &reaped[0];
    assert_eq!(dead.instance_id, "dead");
    assert_eq!(by_id(dead.sockets.clone()), by_id(vec![alice_phone, alice_laptop, bob_dead]));
    assert_eq!(dead.offline.len(), 1, "{:?}", dead.offline);
    assert_eq!(dead.offline[0].user_id, "alice");
    assert_eq!(dead.offline[0].status, Status::Offline);
    assert!(["phone", "laptop"].contains(&dead.offline[0].device_id.as_str()));

    let users = ["alice", "bob", "carol"].map(String::from);
    let sockets: Vec<usize> =
        store.query(&users).await.unwrap().iter().map(|p| p.sockets).collect();
    assert_eq!(sockets, [0, 1, 1]);
    assert_eq!(store.sockets_of_user("bob").await.unwrap(), [bob_live]);
    assert!(ids_of_instance(&*store, "dead").await.is_empty());
    assert_eq!(ids_of_instance(&*store, "live").await.len(), 2);
    // Forgotten: a second pass finds nothing left to report.
    assert!(store.reap_dead_instances().await.unwrap().is_empty());
    finish(backend, &prefix).await;
}

/// An instance back after an outage tells the sockets a reaper took (their offline was
/// announced) from those its own unregister removed (`cluster::resync`).
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn reaped_sockets_are_told_from_unregistered_ones(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-reaped");
    let store = store(backend, &prefix).await;
    store.heartbeat("live", LIVE_TTL).await.unwrap();
    store.heartbeat("dead", SHORT_TTL).await.unwrap();
    let taken = socket("alice", "phone", "dead");
    let left = socket("bob", "phone", "dead");
    let elsewhere = socket("carol", "phone", "live");
    for s in [&taken, &left, &elsewhere] {
        store.register(s).await.unwrap();
    }
    store.unregister(&left).await.unwrap();
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let reaped = store.reap_dead_instances().await.unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].sockets, std::slice::from_ref(&taken));

    assert!(store.reaped(&taken).await.unwrap());
    assert!(!store.reaped(&left).await.unwrap(), "unregistered before the reap");
    assert!(!store.reaped(&elsewhere).await.unwrap(), "on a live instance");
    assert!(!store.reaped(&socket("alice", "phone", "dead")).await.unwrap(), "never registered");
    assert_eq!(store.unregister(&taken).await.unwrap(), None, "gone with the reap");
    // An instance that leaves does not come back to ask: nothing is kept of its sockets.
    let leaving = socket("dave", "phone", "live");
    store.register(&leaving).await.unwrap();
    assert_eq!(store.leave("live").await.unwrap().map(|r| r.sockets.len()), Some(2));
    assert!(!store.reaped(&leaving).await.unwrap(), "removed by a leave");
    finish(backend, &prefix).await;
}

/// An instance with more sockets than one reap step takes (500 on Redis) leaves with all of
/// them: every socket removed and reported once, every user offline once.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn a_large_instance_leaves_with_every_socket(#[case] backend: Backend) {
    const SOCKETS: usize = 1_200;
    let prefix = common::unique_prefix("presence-leave-large");
    let store = store(backend, &prefix).await;
    store.heartbeat("big", LIVE_TTL).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..SOCKETS {
        // Two devices for some users: only their last socket takes them offline.
        let s = socket(&format!("user{}", n % 1_000), &format!("d{n}"), "big");
        ids.push(s.socket_id.clone());
        store.register(&s).await.unwrap();
    }

    let gone = store.leave("big").await.unwrap().expect("known instance");
    let mut reported: Vec<String> = gone.sockets.into_iter().map(|s| s.socket_id).collect();
    reported.sort();
    ids.sort();
    assert_eq!(reported, ids, "every socket reported once");
    let mut offline: Vec<String> = gone.offline.into_iter().map(|t| t.user_id).collect();
    offline.sort();
    offline.dedup();
    assert_eq!(offline.len(), 1_000, "every user offline once");
    assert!(ids_of_instance(&*store, "big").await.is_empty());
    let sample: Vec<String> = (0..1_000).step_by(97).map(|n| format!("user{n}")).collect();
    assert!(store.query(&sample).await.unwrap().iter().all(|p| !p.online));
    assert_eq!(store.leave("big").await.unwrap(), None);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reapers_reap_each_dead_instance_once(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-reapers");
    let (i1, i2) = two_instances(backend, &prefix).await;
    let dead = ["d1", "d2", "d3"];
    let users_per_instance = 10;
    for instance in dead {
        i1.heartbeat(instance, SHORT_TTL).await.unwrap();
        for n in 0..users_per_instance {
            let user = format!("{instance}-user{n}");
            i1.register(&socket(&user, "phone", instance)).await.unwrap();
        }
    }
    tokio::time::sleep(PAST_SHORT_TTL).await;

    let reapers: Vec<_> = [i1.clone(), i2.clone(), i1, i2]
        .into_iter()
        .map(|store| tokio::spawn(async move { store.reap_dead_instances().await.unwrap() }))
        .collect();
    let mut reaped = Vec::new();
    for reaper in reapers {
        reaped.extend(reaper.await.unwrap());
    }

    let mut instances: Vec<&str> = reaped.iter().map(|r| r.instance_id.as_str()).collect();
    instances.sort();
    assert_eq!(instances, dead, "each dead instance reported by exactly one reaper");
    let offline: usize = reaped.iter().map(|r| r.offline.len()).sum();
    let sockets: usize = reaped.iter().map(|r| r.sockets.len()).sum();
    assert_eq!(offline, dead.len() * users_per_instance);
    assert_eq!(sockets, dead.len() * users_per_instance);
    finish(backend, &prefix).await;
}

/// Presence keys under `prefix`, without it.
async fn redis_keys(backend: Backend, prefix: &str) -> BTreeSet<String> {
    let keys = common::keys(backend, prefix).await;
    keys.into_iter().map(|k| k.strip_prefix(prefix).unwrap().to_owned()).collect()
}

/// The hash tag of `user`'s bucket, as the Redis backend documents it: FNV-1a of the user id
/// modulo the buckets (256 on a cluster, 1 on a single Redis).
fn bucket_tag(backend: Backend, user: &str) -> String {
    let buckets = if matches!(backend, Backend::Cluster) { 256 } else { 1 };
    let hash =
        user.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{{pb:{}}}", hash % buckets)
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn redis_keys_return_to_the_liveness_baseline(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-hygiene");
    let store = store(backend, &prefix).await;
    store.heartbeat("live", LIVE_TTL).await.unwrap();
    store.heartbeat("crashed", SHORT_TTL).await.unwrap();
    let baseline = BTreeSet::from(["{presence}:liveness".to_owned()]);

    // Clean disconnects on the live instance, abrupt drops (never unregistered) on the crashed one.
    let mut clean = Vec::new();
    for n in 0..40 {
        let user = format!("user{}", n % 7);
        let device = format!("device{}", n % 3);
        let live = socket(&user, &device, "live");
        store.register(&live).await.unwrap();
        store.register(&socket(&user, &device, "crashed")).await.unwrap();
        clean.push(live);
    }
    // A hash per online user holds their sockets' records (no key per socket).
    let during = redis_keys(backend, &prefix).await;
    assert_eq!(during.iter().filter(|k| k.ends_with(":sockets")).count(), 7, "{during:?}");
    for s in &clean {
        store.unregister(s).await.unwrap();
    }
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let reaped = store.reap_dead_instances().await.unwrap();
    assert_eq!(reaped.iter().map(|r| r.sockets.len()).sum::<usize>(), 40);

    // Besides the instance list, the version watermark of each bucket the users are in
    // remains (one key per bucket, kept), and the crashed instance's reaped sets (one per
    // bucket it had sockets in, expiring). Nothing per user.
    let keys = redis_keys(backend, &prefix).await;
    let (reaped_sets, versions): (BTreeSet<String>, BTreeSet<String>) =
        keys.difference(&baseline).cloned().partition(|k| k.ends_with(":r:crashed"));
    assert!(!reaped_sets.is_empty(), "{keys:?}");
    let buckets: BTreeSet<String> =
        (0..7).map(|n| format!("{}:ver", bucket_tag(backend, &format!("user{n}")))).collect();
    assert_eq!(versions, buckets, "{keys:?}");
    assert!(keys.is_superset(&baseline), "{keys:?}");
    let mut con = backend.conn().await;
    for key in &versions {
        let ttl: i64 =
            redis::cmd("PTTL").arg(format!("{prefix}{key}")).query_async(&mut con).await.unwrap();
        assert_eq!(ttl, -1, "{key}: PTTL {ttl}");
    }
    for key in &reaped_sets {
        let ttl: i64 =
            redis::cmd("PTTL").arg(format!("{prefix}{key}")).query_async(&mut con).await.unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: PTTL {ttl}");
    }
    // A graceful exit removes the instance from the list (its last entry: the key goes).
    store.leave("live").await.unwrap();
    assert_eq!(redis_keys(backend, &prefix).await, &versions | &reaped_sets);
    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn instances_lists_the_live_ones_with_their_socket_counts(#[case] backend: Backend) {
    let prefix = common::unique_prefix("presence-instances");
    let store = store(backend, &prefix).await;
    assert!(store.instances().await.unwrap().is_empty());
    store.heartbeat("i1", Duration::from_secs(60)).await.unwrap();
    store.heartbeat("i2", Duration::from_secs(60)).await.unwrap();
    store.heartbeat("dead", Duration::from_millis(1)).await.unwrap();
    for s in [socket("a", "d", "i1"), socket("b", "d", "i1"), socket("c", "d", "i2")] {
        store.register(&s).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.instances().await.unwrap(), [("i1".to_owned(), 2), ("i2".to_owned(), 1)]);
    finish(backend, &prefix).await;
}

/// On a Redis Cluster presence spreads over the shards: users' keys (and the scripts that
/// decide their transitions) land on every master, not on one.
#[tokio::test]
async fn presence_keys_spread_over_every_cluster_master() {
    let backend = Backend::Cluster;
    let prefix = common::unique_prefix("presence-spread");
    let store = store(backend, &prefix).await;
    store.heartbeat("i1", LIVE_TTL).await.unwrap();
    for n in 0..60 {
        store.register(&socket(&format!("user{n}"), "phone", "i1")).await.unwrap();
    }
    let mut con = backend.conn().await;
    let slots: Vec<Vec<Value>> =
        redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut con).await.unwrap();
    // Each entry: start, end, [master ip, port, …], replicas…
    let master_of = |slot: i64| -> Option<i64> {
        slots.iter().find_map(|range| match (&range[0], &range[1], &range[2]) {
            (Value::Int(a), Value::Int(b), Value::Array(m)) if (*a..=*b).contains(&slot) => {
                match m.get(1) {
                    Some(Value::Int(port)) => Some(*port),
                    _ => None,
                }
            }
            _ => None,
        })
    };
    let mut masters = BTreeSet::new();
    for key in common::keys(backend, &prefix).await {
        let slot: i64 =
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query_async(&mut con).await.unwrap();
        masters.insert(master_of(slot).expect("every slot has a master"));
    }
    let all: BTreeSet<i64> = slots
        .iter()
        .filter_map(|r| match r.get(2) {
            Some(Value::Array(m)) => match m.get(1) {
                Some(Value::Int(port)) => Some(*port),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(masters, all, "presence keys on {masters:?} of the masters {all:?}");
    store.leave("i1").await.unwrap();
    finish(backend, &prefix).await;
}
