//! Chat end to end: the REST API and its authorization, and the realtime events across two
//! instances (Redis + PostgreSQL) or one (memory + SQLite) — ordering under concurrent
//! senders, recovery after reconnecting elsewhere, idempotent retries, removal, typing, and
//! the loss of an instance mid-stream.
//!
//! Every receiving client checks the server's promise as it reads: per conversation, each
//! `message:new` has exactly the seq after the previous one (no gap, no duplicate, in order).

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    cluster::{Backend, Cluster, no_event},
    db_util::{Db, TestDb},
    helpers::{Client, Kind, SECRET, ServerProcess, http_request, test_config},
    redis_util::{cleanup, redis_url, unique_prefix},
};

/// Where a client connects: HTTP address, WebTransport address, certificate hash.
#[derive(Clone, Copy)]
struct Addr(SocketAddr, SocketAddr, [u8; 32]);

impl From<&crate::helpers::TestServer> for Addr {
    fn from(s: &crate::helpers::TestServer) -> Self {
        Addr(s.http, s.wt, s.cert)
    }
}

impl From<&ServerProcess> for Addr {
    fn from(s: &ServerProcess) -> Self {
        Addr(s.http, s.wt, s.cert)
    }
}

fn token(user: &str) -> String {
    let mut config = test_config();
    config.jwt.secret = SECRET.into();
    rtgate::auth::mint_dev_token(&config.jwt, user, Duration::from_secs(600), None, vec![]).unwrap()
}

async fn api(at: Addr, method: &str, path: &str, user: &str, body: Option<Value>) -> (u16, Value) {
    http_request(at.0, method, path, Some(&token(user)), body.as_ref()).await
}

async fn create(at: Addr, owner: &str, members: &[&str]) -> String {
    let (status, body) = api(
        at,
        "POST",
        "/api/conversations",
        owner,
        Some(json!({"title": "t", "members": members})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A chat participant: a connection (replaced on reconnect) and everything it has received,
/// checked for order as it arrives.
struct Member {
    user: String,
    kind: Kind,
    c: Option<Client>,
    next_id: u64,
    /// Per conversation: the seqs received, in arrival order, and their contents.
    seen: HashMap<String, Vec<(i64, String)>>,
    /// Per conversation: the seq the stream continues from (set on join).
    base: HashMap<String, i64>,
    typing: Vec<Value>,
    removed: Vec<String>,
    /// While a join is in flight: messages after a gap (more were missed than the server's
    /// recovery bound), held until the gap is read over REST.
    stash: Option<Vec<(i64, String)>>,
    at: Option<Addr>,
}

impl Member {
    async fn connect(at: Addr, kind: Kind, user: &str) -> Member {
        let mut m = Member {
            user: user.into(),
            kind,
            c: None,
            next_id: 0,
            seen: HashMap::new(),
            base: HashMap::new(),
            typing: Vec::new(),
            removed: Vec::new(),
            stash: None,
            at: None,
        };
        m.reconnect(at).await;
        m
    }

    async fn reconnect(&mut self, at: Addr) {
        let mut c = Client::open(self.kind, at.0, at.1, at.2).await;
        c.send(&json!({"type": "connect", "token": token(&self.user)})).await;
        let connected = c.recv().await.unwrap();
        assert_eq!(connected["type"], "connected", "{connected}");
        self.c = Some(c);
        self.at = Some(at);
    }

    fn last(&self, conv: &str) -> i64 {
        self.seen
            .get(conv)
            .and_then(|s| s.last().map(|(seq, _)| *seq))
            .or_else(|| self.base.get(conv).copied())
            .unwrap_or(0)
    }

    fn seqs(&self, conv: &str) -> Vec<i64> {
        self.seen.get(conv).map(|s| s.iter().map(|(seq, _)| *seq).collect()).unwrap_or_default()
    }

    fn absorb(&mut self, f: Value) {
        if f["type"] != "event" {
            return;
        }
        let data = &f["data"];
        match f["event"].as_str() {
            Some("message:new") => {
                let conv = data["conversationId"].as_str().unwrap().to_owned();
                let seq = data["seq"].as_i64().unwrap();
                let expected = self.last(&conv) + 1;
                let content = data["content"].as_str().unwrap().to_owned();
                if let Some(stash) = &mut self.stash
                    && (seq > expected || !stash.is_empty())
                {
                    let next = stash.last().map_or(seq, |(s, _)| s + 1);
                    assert_eq!(seq, next, "{}: gap or duplicate after a gap: {f}", self.user);
                    stash.push((seq, content));
                    return;
                }
                assert_eq!(seq, expected, "{}: gap or duplicate in {conv}: {f}", self.user);
                self.seen.entry(conv).or_default().push((seq, content));
            }
            Some("typing") => self.typing.push(data.clone()),
            Some("conversation:removed") => {
                self.removed.push(data["conversationId"].as_str().unwrap().to_owned())
            }
            _ => {}
        }
    }

    /// Sends `event` and returns its `ack` or `error`, absorbing everything else meanwhile.
    async fn call(&mut self, event: &str, data: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let c = self.c.as_mut().unwrap();
        c.send(&json!({"type": "event", "event": event, "id": id, "data": data})).await;
        loop {
            let f = self.c.as_mut().unwrap().recv().await.expect("closed while waiting for an ack");
            if f["id"] == id && (f["type"] == "ack" || f["type"] == "error") {
                return f;
            }
            self.absorb(f);
        }
    }

    /// Joins `conv`, continuing from the last seq this member has seen; when the server says
    /// more were missed than it sends (`hasMore`), reads the gap over REST as a client must.
    async fn join(&mut self, conv: &str) -> Value {
        let since = self.last(conv);
        self.base.insert(conv.into(), since);
        self.stash = Some(Vec::new());
        let ack = self
            .call("conversation:join", json!({"conversationId": conv, "sinceSeq": since}))
            .await;
        let stash = self.stash.take().unwrap_or_default();
        if ack["type"] != "ack" || ack["data"]["hasMore"] != true {
            assert!(stash.is_empty(), "a gap without hasMore: {ack}");
            return ack;
        }
        let first = stash.first().map_or(i64::MAX, |(s, _)| *s);
        while self.last(conv) + 1 < first {
            let path = format!(
                "/api/conversations/{conv}/messages?after_seq={}&before_seq={first}&limit=200",
                self.last(conv)
            );
            let (status, page) = api(self.at.unwrap(), "GET", &path, &self.user, None).await;
            assert_eq!(status, 200, "{page}");
            for m in page["messages"].as_array().unwrap() {
                self.absorb(json!({"type": "event", "event": "message:new", "data": m}));
            }
        }
        for (seq, content) in stash {
            let m = json!({"conversationId": conv, "seq": seq, "content": content});
            self.absorb(json!({"type": "event", "event": "message:new", "data": m}));
        }
        ack
    }

    async fn send(&mut self, conv: &str, content: &str, key: Option<&str>) -> Value {
        let mut data = json!({"conversationId": conv, "content": content});
        if let Some(key) = key {
            data["clientMessageId"] = json!(key);
        }
        self.call("message:send", data).await
    }

    /// Reads until this member has seen `seq` in `conv`.
    async fn wait_for(&mut self, conv: &str, seq: i64) {
        self.read_until(&format!("seq {seq} in {conv}"), |m| m.last(conv) >= seq).await;
    }

    /// Reads (absorbing every frame) until `done` holds, for at most 15 s.
    async fn read_until(&mut self, what: &str, done: impl Fn(&Member) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(self) {
            assert!(Instant::now() < deadline, "{} never got {what}", self.user);
            let f = self.c.as_mut().unwrap().recv().await.expect("closed while waiting");
            self.absorb(f);
        }
    }

    async fn drop_connection(&mut self) {
        if let Some(Client::Wt(mut wt)) = self.c.take() {
            wt.finish().await;
        }
    }
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["type"], "ack", "{reply}");
    &reply["data"]
}

fn code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["code"].as_str().unwrap()
}

/// Memory + SQLite is one instance; Redis + PostgreSQL is two on one Redis and one schema.
async fn chat_cluster(
    backend: Backend,
    test: &str,
    tweak: impl Fn(&mut rtgate::config::Config),
) -> (Cluster, TestDb) {
    let db = TestDb::new(if backend == Backend::Redis { Db::Postgres } else { Db::Sqlite }).await;
    let cluster = Cluster::start(backend, test, |c| {
        db.apply(c);
        tweak(c);
    })
    .await;
    (cluster, db)
}

async fn finish(cluster: Cluster, db: TestDb) {
    let prefix = cluster.prefix.clone();
    cluster.stop().await;
    cleanup(&prefix).await;
    db.cleanup().await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn rest_api_membership_and_authorization(#[case] backend: Backend) {
    let (cluster, db) = chat_cluster(backend, "chat_rest", |_| {}).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let conv = create(a, "alice", &["bob"]).await;
    let path = format!("/api/conversations/{conv}");

    let (status, list) = api(b, "GET", "/api/conversations", "bob", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["conversations"][0]["id"], conv.as_str());
    assert_eq!(list["conversations"][0]["role"], "member");
    let (status, shown) = api(b, "GET", &path, "alice", None).await;
    assert_eq!((status, shown["members"].as_array().unwrap().len()), (200, 2), "{shown}");

    // A non-member learns nothing: the same 404 as for a conversation that does not exist.
    let missing = format!("/api/conversations/{}", uuid::Uuid::new_v4());
    for (method, p, body) in [
        ("GET", path.clone(), None),
        ("GET", format!("{path}/messages"), None),
        ("POST", format!("{path}/members"), Some(json!({"userId": "mallory"}))),
        ("DELETE", format!("{path}/members/bob"), None),
        ("GET", missing.clone(), None),
        ("GET", "/api/conversations/not-a-uuid".into(), None),
    ] {
        let (status, body) = api(a, method, &p, "mallory", body).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{method} {p}");
    }
    let (status, _) = api(a, "GET", &missing, "alice", None).await;
    assert_eq!(status, 404);
    let (status, body) = http_request(a.0, "GET", &path, None, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("auth_required")));

    // Only the owner adds or removes others; anyone may leave.
    let carol = Some(json!({"userId": "carol"}));
    let (status, body) = api(a, "POST", &format!("{path}/members"), "bob", carol.clone()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(api(a, "POST", &format!("{path}/members"), "alice", carol).await.0, 204);
    assert_eq!(api(b, "DELETE", &format!("{path}/members/carol"), "bob", None).await.0, 403);
    assert_eq!(api(b, "DELETE", &format!("{path}/members/carol"), "carol", None).await.0, 204);
    assert_eq!(api(b, "GET", &path, "carol", None).await.0, 404);

    // Malformed input is a 400 in the API's error shape.
    let (status, body) =
        api(a, "POST", "/api/conversations", "alice", Some(json!({"members": [""]}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    // A body is an object: an array would fill the fields by position.
    let positional = Some(json!(["a title", ["bob"]]));
    let (status, body) = api(a, "POST", "/api/conversations", "alice", positional).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) =
        api(a, "POST", &format!("{path}/members"), "alice", Some(json!(["dave"]))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, _) = api(a, "GET", &format!("{path}/messages?limit=0"), "alice", None).await;
    assert_eq!(status, 400);
    finish(cluster, db).await;
}

#[rstest]
#[case::memory_ws(Backend::Memory, Kind::Ws)]
#[case::memory_wt(Backend::Memory, Kind::Wt)]
#[case::redis_ws(Backend::Redis, Kind::Ws)]
#[case::redis_wt(Backend::Redis, Kind::Wt)]
#[tokio::test]
async fn a_non_member_can_neither_join_send_type_nor_read(
    #[case] backend: Backend,
    #[case] kind: Kind,
) {
    let (cluster, db) = chat_cluster(backend, "chat_nonmember", |_| {}).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let conv = create(a, "alice", &["bob"]).await;
    let mut bob = Member::connect(a, kind, "bob").await;
    ok(&bob.join(&conv).await);

    let mut mallory = Member::connect(b, kind, "mallory").await;
    assert_eq!(code(&mallory.join(&conv).await), "forbidden");
    assert_eq!(code(&mallory.send(&conv, "let me in", None).await), "forbidden");
    let typing = json!({"conversationId": conv, "isTyping": true});
    assert_eq!(code(&mallory.call("typing", typing).await), "forbidden");
    // Nothing reached the member, and the conversation is still empty.
    let (_, page) =
        api(a, "GET", &format!("/api/conversations/{conv}/messages"), "bob", None).await;
    assert_eq!(page["messages"], json!([]));
    no_event(bob.c.as_mut().unwrap(), "message:new", Duration::from_millis(200)).await;
    finish(cluster, db).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn concurrent_senders_on_both_instances_are_seen_in_one_order(#[case] backend: Backend) {
    let (cluster, db) = chat_cluster(backend, "chat_order", |c| c.message_rate_limit = 1000).await;
    let at = |i: usize| Addr::from(cluster.at(i));
    let users = ["s0", "s1", "s2", "s3"];
    let conv = create(at(0), "s0", &users[1..]).await;
    let per_sender = 20;

    // Receivers: one per user on each instance and transport mix, all joined before sending.
    let mut receivers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let kind = if i % 2 == 0 { Kind::Ws } else { Kind::Wt };
        let mut r = Member::connect(at(i), kind, user).await;
        ok(&r.join(&conv).await);
        receivers.push(r);
    }
    // Senders on both instances, concurrently.
    let senders = users.iter().enumerate().map(|(i, user)| {
        let addr = at(i + 1);
        let conv = conv.clone();
        let user = user.to_string();
        tokio::spawn(async move {
            let mut s = Member::connect(addr, Kind::Ws, &user).await;
            let mut acked = Vec::new();
            for n in 0..per_sender {
                let reply = s.send(&conv, &format!("{user}-{n}"), Some(&format!("k{n}"))).await;
                acked.push(ok(&reply)["seq"].as_i64().unwrap());
            }
            acked
        })
    });
    let mut acked: Vec<i64> = Vec::new();
    for seqs in futures_util::future::join_all(senders).await {
        acked.extend(seqs.unwrap());
    }
    acked.sort_unstable();
    let total = (users.len() * per_sender) as i64;
    assert_eq!(acked, (1..=total).collect::<Vec<_>>(), "acked seqs are gapless and unique");

    for r in &mut receivers {
        r.wait_for(&conv, total).await;
        assert_eq!(r.seqs(&conv), (1..=total).collect::<Vec<_>>());
    }
    // Every receiver saw the same content at each seq, and it matches the store.
    let (_, page) = api(
        at(1),
        "GET",
        &format!("/api/conversations/{conv}/messages?after_seq=0&limit=200"),
        "s1",
        None,
    )
    .await;
    let stored: Vec<(i64, String)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_i64().unwrap(), m["content"].as_str().unwrap().to_owned()))
        .collect();
    for r in &receivers {
        assert_eq!(r.seen[&conv], stored);
    }
    finish(cluster, db).await;
}

#[rstest]
#[case::memory_ws(Backend::Memory, Kind::Ws)]
#[case::memory_wt(Backend::Memory, Kind::Wt)]
#[case::redis_ws(Backend::Redis, Kind::Ws)]
#[case::redis_wt(Backend::Redis, Kind::Wt)]
#[tokio::test]
async fn a_client_that_drops_recovers_on_the_other_instance(
    #[case] backend: Backend,
    #[case] kind: Kind,
) {
    let (cluster, db) =
        chat_cluster(backend, "chat_recover", |c| c.message_rate_limit = 1000).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let conv = create(a, "alice", &["bob"]).await;
    let mut alice = Member::connect(b, Kind::Ws, "alice").await;
    let mut bob = Member::connect(a, kind, "bob").await;
    ok(&bob.join(&conv).await);

    for n in 1..=5 {
        ok(&alice.send(&conv, &format!("m{n}"), None).await);
    }
    bob.wait_for(&conv, 5).await;
    bob.drop_connection().await;
    for n in 6..=12 {
        ok(&alice.send(&conv, &format!("m{n}"), None).await);
    }

    bob.reconnect(b).await;
    let ack = bob.join(&conv).await;
    assert_eq!(ok(&ack)["lastSeq"], 12, "{ack}");
    assert_eq!(ok(&ack)["recovered"], 7, "{ack}");
    assert_eq!(ok(&ack)["hasMore"], false);
    ok(&alice.send(&conv, "m13", None).await);
    bob.wait_for(&conv, 13).await;
    assert_eq!(bob.seqs(&conv), (1..=13).collect::<Vec<_>>());
    let contents: Vec<&str> = bob.seen[&conv].iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(contents[5], "m6");
    finish(cluster, db).await;
}

#[tokio::test]
async fn more_missed_than_the_bound_sends_the_newest_and_says_so() {
    let (cluster, db) = chat_cluster(Backend::Memory, "chat_bound", |c| {
        c.chat_recovery_limit = 5;
        c.message_rate_limit = 1000;
    })
    .await;
    let a = Addr::from(cluster.at(0));
    let conv = create(a, "alice", &["bob"]).await;
    let mut alice = Member::connect(a, Kind::Ws, "alice").await;
    for n in 1..=12 {
        ok(&alice.send(&conv, &format!("m{n}"), None).await);
    }
    let mut bob = Member::connect(a, Kind::Ws, "bob").await;
    let c = bob.c.as_mut().unwrap();
    let join = json!({"conversationId": conv, "sinceSeq": 2});
    c.send(&json!({"type": "event", "event": "conversation:join", "id": 1, "data": join})).await;
    let mut pushed = Vec::new();
    let ack = loop {
        let f = c.recv().await.unwrap();
        if f["type"] == "ack" {
            break f;
        }
        if f["event"] == "message:new" {
            pushed.push(f["data"]["seq"].as_i64().unwrap());
        }
    };
    assert_eq!(
        (ok(&ack)["recovered"].as_i64(), ok(&ack)["hasMore"].as_bool()),
        (Some(5), Some(true))
    );
    assert_eq!(pushed, [8, 9, 10, 11, 12], "the newest five, in order, before the ack");
    // The client fills the gap over REST.
    let gap = format!("/api/conversations/{conv}/messages?after_seq=2&before_seq=8");
    let (status, page) = api(a, "GET", &gap, "bob", None).await;
    let seqs: Vec<i64> =
        page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!((status, seqs, page["hasMore"].as_bool()), (200, vec![3, 4, 5, 6, 7], Some(false)));
    finish(cluster, db).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn a_retried_send_returns_the_original_and_is_delivered_once(#[case] backend: Backend) {
    let (cluster, db) = chat_cluster(backend, "chat_idem", |_| {}).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let conv = create(a, "alice", &["bob"]).await;
    let mut bob = Member::connect(b, Kind::Ws, "bob").await;
    ok(&bob.join(&conv).await);
    let mut alice = Member::connect(a, Kind::Wt, "alice").await;
    let first = alice.send(&conv, "only once", Some("retry-1")).await;
    // The ack was "lost": the client retries, from another instance.
    alice.drop_connection().await;
    alice.reconnect(b).await;
    let retry = alice.send(&conv, "only once", Some("retry-1")).await;
    assert_eq!(ok(&first)["id"], ok(&retry)["id"]);
    assert_eq!((ok(&first)["seq"].as_i64(), ok(&retry)["seq"].as_i64()), (Some(1), Some(1)));
    assert_eq!(
        (ok(&first)["duplicate"].as_bool(), ok(&retry)["duplicate"].as_bool()),
        (Some(false), Some(true))
    );

    bob.wait_for(&conv, 1).await;
    no_event(bob.c.as_mut().unwrap(), "message:new", Duration::from_millis(300)).await;
    let (_, page) =
        api(a, "GET", &format!("/api/conversations/{conv}/messages"), "bob", None).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    finish(cluster, db).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn a_removed_member_stops_receiving_on_every_instance(#[case] backend: Backend) {
    let (cluster, db) = chat_cluster(backend, "chat_kick", |_| {}).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let conv = create(a, "alice", &["bob"]).await;
    let mut bob = Member::connect(b, Kind::Wt, "bob").await;
    ok(&bob.join(&conv).await);
    let mut alice = Member::connect(a, Kind::Ws, "alice").await;
    ok(&alice.join(&conv).await);
    ok(&alice.send(&conv, "before", None).await);
    bob.wait_for(&conv, 1).await;

    let (status, _) =
        api(a, "DELETE", &format!("/api/conversations/{conv}/members/bob"), "alice", None).await;
    assert_eq!(status, 204);
    bob.read_until("conversation:removed", |m| !m.removed.is_empty()).await;
    assert_eq!(bob.removed, std::slice::from_ref(&conv));
    ok(&alice.send(&conv, "after", None).await);
    no_event(bob.c.as_mut().unwrap(), "message:new", Duration::from_millis(300)).await;
    assert_eq!(code(&bob.join(&conv).await), "forbidden");
    assert_eq!(code(&bob.send(&conv, "still here?", None).await), "forbidden");
    finish(cluster, db).await;
}

#[rstest]
#[case::ws(Kind::Ws)]
#[case::wt(Kind::Wt)]
#[tokio::test]
async fn typing_reaches_the_other_joined_members_and_is_never_stored(#[case] kind: Kind) {
    let (cluster, db) = chat_cluster(Backend::Redis, "chat_typing", |_| {}).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let conv = create(a, "alice", &["bob"]).await;
    let mut bob = Member::connect(b, kind, "bob").await;
    ok(&bob.join(&conv).await);
    let mut alice = Member::connect(a, Kind::Ws, "alice").await;
    let typing = json!({"conversationId": conv, "isTyping": true});
    assert_eq!(code(&alice.call("typing", typing.clone()).await), "forbidden", "join first");
    ok(&alice.join(&conv).await);
    ok(&alice.call("typing", typing).await);

    let expected = json!({"conversationId": conv, "userId": "alice", "isTyping": true});
    let got = match kind {
        // Volatile: a datagram on WebTransport.
        Kind::Wt => bob.c.as_ref().unwrap().recv_datagram().await,
        Kind::Ws => {
            bob.read_until("typing", |m| !m.typing.is_empty()).await;
            json!({"type": "event", "event": "typing", "data": bob.typing[0]})
        }
    };
    assert_eq!((got["event"].as_str(), &got["data"]), (Some("typing"), &expected), "{got}");
    // The sender does not get its own indicator, and nothing was stored.
    no_event(alice.c.as_mut().unwrap(), "typing", Duration::from_millis(200)).await;
    let (_, conv_now) = api(a, "GET", &format!("/api/conversations/{conv}"), "alice", None).await;
    assert_eq!(conv_now["lastSeq"], 0);
    finish(cluster, db).await;
}

/// `kill -9` of one instance while clients on both send: every acked message is stored, the
/// survivor's members end with one gapless sequence, and the victim's members recover it by
/// reconnecting to the survivor.
#[tokio::test]
async fn killing_an_instance_mid_stream_loses_no_acked_message() {
    let db = TestDb::new(Db::Postgres).await;
    let prefix = unique_prefix("chat_kill");
    let mut env = db.env();
    env.push(("REDIS_URL", redis_url()));
    env.push(("RTGATE_REDIS_PREFIX", prefix.clone()));
    let args = ["--message-rate-limit", "100000", "--chat-gap-timeout", "200ms"];
    let victim = ServerProcess::start(&args, &env).await;
    let survivor = ServerProcess::start(&args, &env).await;
    let (v, s) = (Addr::from(&victim), Addr::from(&survivor));
    let conv = create(s, "alice", &["bob", "carol", "dave"]).await;

    let mut carol = Member::connect(s, Kind::Ws, "carol").await;
    ok(&carol.join(&conv).await);
    let mut dave = Member::connect(v, Kind::Wt, "dave").await;
    ok(&dave.join(&conv).await);

    // Senders on both instances; the victim's sender stops at its first failure.
    let sender = |at: Addr, user: &'static str, kind: Kind| {
        let conv = conv.clone();
        tokio::spawn(async move {
            let mut m = Member::connect(at, kind, user).await;
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                let c = m.c.as_mut().unwrap();
                let frame = json!({"type": "event", "event": "message:send", "id": n,
                    "data": {"conversationId": conv, "content": format!("{user}-{n}")}});
                c.send(&frame).await;
                let reply = loop {
                    match tokio::time::timeout(Duration::from_secs(3), c.recv()).await {
                        Ok(Some(f)) if f["id"] == n => break Some(f),
                        Ok(Some(_)) => continue,
                        _ => break None,
                    }
                };
                match reply {
                    Some(f) if f["type"] == "ack" => acked.push(f["data"]["seq"].as_i64().unwrap()),
                    _ => break,
                }
            }
            acked
        })
    };
    let on_victim = sender(v, "alice", Kind::Ws);
    let on_survivor = sender(s, "bob", Kind::Wt);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let mut acked = on_victim.await.unwrap();
    let survivor_acked = on_survivor.await.unwrap();
    assert!(!acked.is_empty() && !survivor_acked.is_empty(), "both sent before the kill");
    acked.extend(survivor_acked);

    // Every acked message is stored.
    let (_, page) = api(
        s,
        "GET",
        &format!("/api/conversations/{conv}/messages?after_seq=0&limit=200"),
        "carol",
        None,
    )
    .await;
    let mut stored: Vec<i64> =
        page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    let mut more = page["hasMore"].as_bool().unwrap();
    while more {
        let after = stored.last().copied().unwrap();
        let (_, next) = api(
            s,
            "GET",
            &format!("/api/conversations/{conv}/messages?after_seq={after}&limit=200"),
            "carol",
            None,
        )
        .await;
        stored.extend(
            next["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()),
        );
        more = next["hasMore"].as_bool().unwrap();
    }
    let last = *stored.last().unwrap();
    assert_eq!(stored, (1..=last).collect::<Vec<_>>(), "stored seqs are gapless");
    for seq in &acked {
        assert!(stored.contains(seq), "acked seq {seq} is stored");
    }

    // The survivor's member ends with the whole sequence, once, in order (seqs the victim
    // committed but never published are filled from the database).
    carol.wait_for(&conv, last).await;
    assert_eq!(carol.seqs(&conv), stored);
    // The victim's member reconnects to the survivor and recovers what it missed.
    dave.c = None;
    dave.reconnect(s).await;
    ok(&dave.join(&conv).await);
    dave.wait_for(&conv, last).await;
    assert_eq!(dave.seqs(&conv), stored);
    drop(survivor);
    cleanup(&prefix).await;
    db.cleanup().await;
}

/// Done means: two instances, several clients dropped and reconnected at random while they
/// send; at the end every client has every acked message exactly once, in order.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn random_drops_and_reconnects_end_with_every_acked_message_once(#[case] backend: Backend) {
    use rand::{Rng, SeedableRng};
    let (cluster, db) =
        chat_cluster(backend, "chat_chaos", |c| c.message_rate_limit = 100_000).await;
    let at = |i: usize| Addr::from(cluster.at(i));
    let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
    let conv = create(at(0), "u0", &users[1..]).await;
    let seed: u64 = rand::random();
    println!("chaos seed {seed}");

    let tasks = users.iter().enumerate().map(|(i, user)| {
        let addrs = [at(0), at(1)];
        let conv = conv.clone();
        let user = user.to_string();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + i as u64);
            let kind = if i % 2 == 0 { Kind::Ws } else { Kind::Wt };
            let mut m = Member::connect(addrs[rng.random_range(0..2)], kind, &user).await;
            ok(&m.join(&conv).await);
            let mut acked = Vec::new();
            for n in 0..30 {
                if rng.random_bool(0.15) {
                    m.drop_connection().await;
                    m.c = None;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
                    m.reconnect(addrs[rng.random_range(0..2)]).await;
                    ok(&m.join(&conv).await);
                }
                let reply =
                    m.send(&conv, &format!("{user}-{n}"), Some(&format!("{user}-{n}"))).await;
                acked.push(ok(&reply)["seq"].as_i64().unwrap());
            }
            (m, acked)
        })
    });
    let mut members = Vec::new();
    let mut acked = Vec::new();
    for done in futures_util::future::join_all(tasks).await {
        let (m, seqs) = done.unwrap();
        acked.extend(seqs);
        members.push(m);
    }
    acked.sort_unstable();
    let total = acked.len() as i64;
    assert_eq!(acked, (1..=total).collect::<Vec<_>>());
    for m in &mut members {
        m.wait_for(&conv, total).await;
        assert_eq!(m.seqs(&conv), (1..=total).collect::<Vec<_>>(), "{} (seed {seed})", m.user);
    }
    finish(cluster, db).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn an_added_member_is_told_and_can_join_at_once(#[case] backend: Backend) {
    let (cluster, db) = chat_cluster(backend, "chat_added", |_| {}).await;
    let (a, b) = (Addr::from(cluster.at(0)), Addr::from(cluster.at(1)));
    let mut carol = Member::connect(b, Kind::Wt, "carol").await;
    let conv = create(a, "alice", &["bob"]).await;
    let mut alice = Member::connect(a, Kind::Ws, "alice").await;
    ok(&alice.send(&conv, "before carol", None).await);

    let add = Some(json!({"userId": "carol"}));
    assert_eq!(
        api(a, "POST", &format!("/api/conversations/{conv}/members"), "alice", add).await.0,
        204
    );
    let added = crate::cluster::next_event(carol.c.as_mut().unwrap(), "conversation:added").await;
    assert_eq!(added["conversation"]["id"], conv.as_str(), "{added}");
    assert_eq!(added["conversation"]["role"], "member");
    // Joining from 0 brings the history she was added to.
    ok(&carol.join(&conv).await);
    carol.wait_for(&conv, 1).await;
    assert_eq!(carol.seen[&conv][0].1, "before carol");
    finish(cluster, db).await;
}
