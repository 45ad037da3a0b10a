//! The conversation feed of one instance: which local sessions have joined which
//! conversation, and the ordered delivery of `message:new` to them.
//!
//! Messages reach an instance in any order (two senders on two instances publish
//! independently) and may not reach it at all (a sender killed between commit and publish, a
//! Redis outage). The store's seqs are gapless, so each conversation keeps the highest seq it
//! delivered and a reorder buffer: a message is delivered only once every lower seq has been,
//! and a gap that does not close within `--chat-gap-timeout` is filled from the store. Every
//! session therefore sees each conversation as one gapless, duplicate-free, ordered stream.
//!
//! A join is two-phase so that recovery and live delivery meet without a gap or a duplicate:
//! `begin_join` registers the session as recovering (live messages are buffered for it),
//! the caller reads the store, and `finish_join` sends the missed messages, then the buffered
//! ones it does not already have, and switches the session to live delivery. No lock is held
//! across the store read.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;

use super::message_frame;
use crate::{
    session::outbound::Outbound,
    store::chat::{ChatStore, Page, Recovery},
};

/// Messages per store read when filling a gap.
const FILL_PAGE: u32 = 200;
/// Most out-of-order messages one conversation holds while waiting for a gap to close.
const MAX_PENDING: usize = 10_000;
/// Longest wait between retries of a failed gap fill.
const MAX_FILL_BACKOFF: Duration = Duration::from_secs(5);

pub struct Feed {
    inner: Mutex<Inner>,
    store: Arc<dyn ChatStore>,
    gap_timeout: Duration,
}

#[derive(Default)]
struct Inner {
    convs: HashMap<Arc<str>, Conv>,
    /// Conversations each local session has joined.
    sockets: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

struct Conv {
    /// Highest seq delivered in order on this instance; `None` until the first join's store
    /// read says where the conversation stands.
    delivered: Option<i64>,
    /// Highest seq known to exist (seen or read from the store).
    known: i64,
    /// Received, not yet deliverable (a lower seq is missing).
    pending: BTreeMap<i64, Bytes>,
    members: HashMap<Arc<str>, Member>,
    /// A fill task is running or scheduled.
    filling: bool,
}

struct Member {
    user_id: Arc<str>,
    outbound: Outbound,
    /// Highest seq sent to this session; lower or equal seqs are never sent again.
    last_sent: i64,
    /// While recovering: what was delivered meanwhile, to be sent after the missed messages.
    buffer: Option<Vec<(i64, Bytes)>>,
    /// The conversation's `delivered` when this member started buffering: the buffer holds
    /// every seq above it.
    floor: Option<i64>,
}

impl Member {
    fn offer(&mut self, seq: i64, frame: &Bytes) {
        match &mut self.buffer {
            Some(buffer) => buffer.push((seq, frame.clone())),
            None if seq > self.last_sent => {
                self.outbound.send(frame.clone());
                self.last_sent = seq;
            }
            None => {}
        }
    }
}

impl Conv {
    fn new() -> Self {
        Conv {
            delivered: None,
            known: 0,
            pending: BTreeMap::new(),
            members: HashMap::new(),
            filling: false,
        }
    }

    /// Delivers every pending message that is next in line.
    fn drain(&mut self) {
        let Some(mut delivered) = self.delivered else { return };
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq <= delivered {
                entry.remove();
                continue;
            }
            if seq != delivered + 1 {
                break;
            }
            let frame = entry.remove();
            for member in self.members.values_mut() {
                member.offer(seq, &frame);
            }
            delivered = seq;
        }
        self.delivered = Some(delivered);
        self.known = self.known.max(delivered);
    }

    /// Whether messages are known to exist that this instance has not delivered.
    fn behind(&self) -> bool {
        self.delivered.is_some_and(|d| d < self.known || !self.pending.is_empty())
    }

    fn initialize(&mut self, last_seq: i64) {
        if self.delivered.is_none() {
            self.delivered = Some(last_seq);
            for member in self.members.values_mut() {
                member.floor.get_or_insert(last_seq);
            }
        }
        self.known = self.known.max(last_seq);
        self.drain();
    }
}

/// How `finish_join` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// The session is live; it was sent this many missed messages.
    Done { recovered: usize },
    /// The session left, was removed, or closed meanwhile.
    Gone,
    /// The store read is older than what the buffer starts from; read again.
    Stale,
}

impl Feed {
    pub fn new(store: Arc<dyn ChatStore>, gap_timeout: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), store, gap_timeout }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing chat delivery; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `socket` as recovering in `conv`. Returns whether it is the first local
    /// member (the caller subscribes the conversation's channel), or the limit when the
    /// socket has joined `max` conversations already.
    pub fn begin_join(
        &self,
        socket: &Arc<str>,
        user: &Arc<str>,
        outbound: &Outbound,
        conv_id: &str,
        max: usize,
    ) -> Result<bool, usize> {
        let mut inner = self.lock();
        let joined = inner.sockets.entry(socket.clone()).or_default();
        if !joined.contains(conv_id) && joined.len() >= max {
            return Err(max);
        }
        let conv_id: Arc<str> = Arc::from(conv_id);
        joined.insert(conv_id.clone());
        let first = !inner.convs.contains_key(&conv_id);
        let conv = inner.convs.entry(conv_id).or_insert_with(Conv::new);
        let floor = conv.delivered;
        conv.members.insert(
            socket.clone(),
            Member {
                user_id: user.clone(),
                outbound: outbound.clone(),
                last_sent: 0,
                buffer: Some(Vec::new()),
                floor,
            },
        );
        Ok(first)
    }

    /// Completes a join with the store's `recovery` read (see the module docs). `since` is
    /// the client's last seen seq; without it nothing older than the read is sent.
    pub fn finish_join(
        self: &Arc<Self>,
        socket: &str,
        conv_id: &str,
        since: Option<i64>,
        recovery: &Recovery,
    ) -> Finish {
        let mut inner = self.lock();
        let Some(conv) = inner.convs.get_mut(conv_id) else { return Finish::Gone };
        conv.initialize(recovery.last_seq);
        let Some(member) = conv.members.get_mut(socket) else { return Finish::Gone };
        if member.floor.is_some_and(|floor| floor > recovery.last_seq) {
            return Finish::Stale;
        }
        let buffer = member.buffer.take().unwrap_or_default();
        member.last_sent = since.map_or(recovery.last_seq, |s| s.clamp(0, recovery.last_seq));
        let mut recovered = 0;
        for message in &recovery.messages {
            if message.seq > member.last_sent {
                member.outbound.send(message_frame(message));
                member.last_sent = message.seq;
                recovered += 1;
            }
        }
        for (seq, frame) in buffer {
            if seq > member.last_sent {
                member.outbound.send(frame);
                member.last_sent = seq;
            }
        }
        self.arm(conv_id, &mut inner);
        Finish::Done { recovered }
    }

    /// Takes `socket` out of `conv`. Returns true when no local member is left (the caller
    /// unsubscribes the channel).
    pub fn leave(&self, socket: &str, conv_id: &str) -> bool {
        let mut inner = self.lock();
        if let Some(joined) = inner.sockets.get_mut(socket) {
            joined.remove(conv_id);
            if joined.is_empty() {
                inner.sockets.remove(socket);
            }
        }
        Self::remove_member(&mut inner, conv_id, socket)
    }

    fn remove_member(inner: &mut Inner, conv_id: &str, socket: &str) -> bool {
        let Some(conv) = inner.convs.get_mut(conv_id) else { return false };
        conv.members.remove(socket);
        if conv.members.is_empty() {
            inner.convs.remove(conv_id);
            return true;
        }
        false
    }

    /// Forgets a closed session. Returns the conversations left without a local member.
    pub fn remove_socket(&self, socket: &str) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let Some(joined) = inner.sockets.remove(socket) else { return Vec::new() };
        joined.into_iter().filter(|conv| Self::remove_member(&mut inner, conv, socket)).collect()
    }

    /// Removes every local session of `user` from `conv` and sends each `frame` (the
    /// `conversation:removed` event). Returns true when no local member is left.
    pub fn kick(&self, conv_id: &str, user: &str, frame: &Bytes) -> bool {
        let mut inner = self.lock();
        let Some(conv) = inner.convs.get_mut(conv_id) else { return false };
        let kicked: Vec<Arc<str>> = conv
            .members
            .iter()
            .filter(|(_, m)| &*m.user_id == user)
            .map(|(socket, _)| socket.clone())
            .collect();
        for socket in &kicked {
            if let Some(member) = conv.members.remove(socket) {
                member.outbound.send(frame.clone());
            }
        }
        let emptied = conv.members.is_empty();
        if emptied {
            inner.convs.remove(conv_id);
        }
        for socket in &kicked {
            if let Some(joined) = inner.sockets.get_mut(socket) {
                joined.remove(conv_id);
            }
        }
        emptied
    }

    /// A message with `seq` of `conv`, from this instance or another: delivered in order.
    pub fn receive(self: &Arc<Self>, conv_id: &str, seq: i64, frame: Bytes) {
        let mut inner = self.lock();
        let Some(conv) = inner.convs.get_mut(conv_id) else { return };
        if conv.delivered.is_some_and(|d| seq <= d) {
            return;
        }
        conv.known = conv.known.max(seq);
        // Past the cap only `known` moves: the fill reads everything up to it from the
        // store, so a long outage costs store reads, not memory.
        if conv.pending.len() < MAX_PENDING {
            conv.pending.insert(seq, frame);
        }
        conv.drain();
        self.arm(conv_id, &mut inner);
    }

    /// A volatile event (typing) to every local member except `exclude`. Never buffered.
    pub fn volatile(&self, conv_id: &str, exclude: Option<&str>, frame: &Bytes) -> usize {
        let inner = self.lock();
        let Some(conv) = inner.convs.get(conv_id) else { return 0 };
        conv.members
            .iter()
            .filter(|(socket, _)| Some(&***socket) != exclude)
            .filter(|(_, m)| m.outbound.send_volatile(frame.clone()))
            .count()
    }

    pub fn is_joined(&self, socket: &str, conv_id: &str) -> bool {
        self.lock().sockets.get(socket).is_some_and(|joined| joined.contains(conv_id))
    }

    /// Whether any local session has joined `conv`.
    pub fn has(&self, conv_id: &str) -> bool {
        self.lock().convs.contains_key(conv_id)
    }

    /// Conversations with a local member.
    pub fn conversations(&self) -> Vec<Arc<str>> {
        self.lock().convs.keys().cloned().collect()
    }

    /// After an outage of the broker: messages may have been published while this instance
    /// was not listening, so check the store for every conversation.
    pub fn catch_up_all(self: &Arc<Self>) {
        let mut inner = self.lock();
        let ids: Vec<Arc<str>> = inner.convs.keys().cloned().collect();
        for id in ids {
            if let Some(conv) = inner.convs.get_mut(&id)
                && !conv.filling
                && conv.delivered.is_some()
            {
                conv.filling = true;
                tokio::spawn(self.clone().fill(id, Duration::ZERO));
            }
        }
    }

    /// Schedules a fill when `conv` is behind and none is running.
    fn arm(self: &Arc<Self>, conv_id: &str, inner: &mut Inner) {
        let Some(conv) = inner.convs.get_mut(conv_id) else { return };
        if conv.behind() && !conv.filling {
            conv.filling = true;
            tokio::spawn(self.clone().fill(Arc::from(conv_id), self.gap_timeout));
        }
    }

    /// Waits `delay` for the gap to close by itself, then reads the store until this
    /// instance has delivered everything it knows of (and, after an outage, everything the
    /// store has).
    async fn fill(self: Arc<Self>, conv_id: Arc<str>, delay: Duration) {
        tokio::time::sleep(delay).await;
        let mut backoff = self.gap_timeout.max(Duration::from_millis(50));
        let mut sweep = delay.is_zero();
        loop {
            let after = {
                let mut inner = self.lock();
                let Some(conv) = inner.convs.get_mut(&conv_id) else { return };
                match conv.delivered {
                    Some(d) if conv.behind() || sweep => d,
                    _ => {
                        conv.filling = false;
                        return;
                    }
                }
            };
            let page = Page::After { after, before: None, limit: FILL_PAGE };
            let read = tokio::time::timeout(MAX_FILL_BACKOFF, self.store.messages(&conv_id, page));
            match read.await {
                Ok(Ok((messages, more))) => {
                    let mut inner = self.lock();
                    let Some(conv) = inner.convs.get_mut(&conv_id) else { return };
                    let read_any = !messages.is_empty();
                    for m in &messages {
                        conv.known = conv.known.max(m.seq);
                        conv.pending.entry(m.seq).or_insert_with(|| message_frame(m));
                    }
                    conv.drain();
                    sweep = more;
                    if !read_any && conv.behind() {
                        // The store has nothing after `delivered`, yet a higher seq was seen:
                        // only possible if rows were deleted. Skip the hole rather than stall.
                        if let Some(next) = conv.pending.keys().next().copied() {
                            tracing::warn!(conversation = %conv_id, from = after, to = next, "skipping a gap the store cannot fill");
                            conv.delivered = Some(next - 1);
                            conv.drain();
                        }
                        conv.known = conv.delivered.unwrap_or(conv.known);
                    }
                    backoff = self.gap_timeout.max(Duration::from_millis(50));
                }
                Ok(Err(e)) => {
                    tracing::warn!(conversation = %conv_id, error = %e, "filling a message gap failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_FILL_BACKOFF);
                }
                Err(_) => {
                    tracing::warn!(conversation = %conv_id, "filling a message gap timed out; retrying");
                    backoff = (backoff * 2).min(MAX_FILL_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The feed against a real (temporary) SQLite store. Real time: the store's reads run on
    //! threads paused time cannot see, and the gap timeout here is short.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{
        store::{
            Store,
            chat::{NewConversation, NewMessage, SendOutcome},
            sqlite::SqliteStore,
        },
        transport::{
            Transport,
            channel::{self, ChannelClient, Written},
        },
    };

    const GAP: Duration = Duration::from_millis(50);

    struct Fixture {
        feed: Arc<Feed>,
        store: Arc<SqliteStore>,
        conv: String,
        _dir: std::path::PathBuf,
    }

    async fn fixture() -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("rtgate-feed-{}", uuid::Uuid::new_v4().simple()));
        let store = Arc::new(SqliteStore::open(&dir.join("chat.sqlite")).await.unwrap());
        store.migrate().await.unwrap();
        let conv = uuid::Uuid::new_v4().to_string();
        let new = NewConversation {
            id: conv.clone(),
            title: None,
            created_by: "alice".into(),
            members: vec!["bob".into()],
            created_at_ms: 1,
        };
        store.create_conversation(&new).await.unwrap();
        Fixture { feed: Arc::new(Feed::new(store.clone(), GAP)), store, conv, _dir: dir }
    }

    impl Fixture {
        async fn send(&self, content: &str) -> crate::store::chat::Message {
            let m = NewMessage {
                id: uuid::Uuid::new_v4().to_string(),
                conversation_id: self.conv.clone(),
                sender_id: "alice".into(),
                content: content.into(),
                reply_to_id: None,
                client_message_id: None,
                created_at_ms: 2,
            };
            match self.store.send_message(&m).await.unwrap() {
                SendOutcome::Stored(m) => m,
                other => panic!("{other:?}"),
            }
        }

        /// A joined, live member reading from `client`.
        async fn member(&self, socket: &str, since: Option<i64>) -> ChannelClient {
            let (transport, client) = channel::pair();
            let (_, _, writer) = transport.split();
            let (outbound, _task) =
                Outbound::spawn(writer, 1 << 20, &tokio_util::sync::CancellationToken::new());
            let (socket, user): (Arc<str>, Arc<str>) = (socket.into(), "bob".into());
            self.feed.begin_join(&socket, &user, &outbound, &self.conv, 10).unwrap();
            let recovery =
                self.store.recovery(&self.conv, "bob", since, 100).await.unwrap().unwrap();
            assert_eq!(
                self.feed.finish_join(&socket, &self.conv, since, &recovery),
                Finish::Done { recovered: recovery.messages.len() }
            );
            client
        }
    }

    async fn seqs(client: &mut ChannelClient) -> Vec<i64> {
        tokio::task::yield_now().await;
        let mut out = Vec::new();
        while let Ok(w) = client.rx.try_recv() {
            let Written::Frame(f) = w else { continue };
            let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
            out.push(v["data"]["seq"].as_i64().unwrap());
        }
        out
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn out_of_order_arrivals_are_delivered_in_seq_order() {
        let f = fixture().await;
        let mut bob = f.member("s1", None).await;
        let (m1, m2, m3) = (f.send("a").await, f.send("b").await, f.send("c").await);
        f.feed.receive(&f.conv, 3, message_frame(&m3));
        f.feed.receive(&f.conv, 2, message_frame(&m2));
        settle().await;
        assert_eq!(seqs(&mut bob).await, Vec::<i64>::new(), "2 and 3 wait for 1");
        f.feed.receive(&f.conv, 1, message_frame(&m1));
        f.feed.receive(&f.conv, 2, message_frame(&m2));
        settle().await;
        assert_eq!(seqs(&mut bob).await, [1, 2, 3], "in order, the duplicate dropped");
    }

    #[tokio::test]
    async fn a_gap_that_does_not_close_is_filled_from_the_store() {
        let f = fixture().await;
        let mut bob = f.member("s1", None).await;
        let _lost = f.send("published by an instance that died").await;
        let m2 = f.send("b").await;
        f.feed.receive(&f.conv, 2, message_frame(&m2));
        settle().await;
        assert!(seqs(&mut bob).await.is_empty());
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !f.feed.lock().convs[f.conv.as_str()].behind() {
                break;
            }
        }
        assert_eq!(seqs(&mut bob).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_join_during_live_traffic_gets_missed_then_live_without_gap_or_duplicate() {
        let f = fixture().await;
        let mut alice = f.member("s-alice", None).await;
        let m1 = f.send("a").await;
        f.feed.receive(&f.conv, 1, message_frame(&m1));

        // Bob begins joining from seq 0; seq 2 is delivered while his store read is "in
        // flight", and his read (taken after 2 was committed) also contains it.
        let (transport, mut bob) = channel::pair();
        let (_, _, writer) = transport.split();
        let (outbound, _task) =
            Outbound::spawn(writer, 1 << 20, &tokio_util::sync::CancellationToken::new());
        let (socket, user): (Arc<str>, Arc<str>) = ("s-bob".into(), "bob".into());
        assert!(!f.feed.begin_join(&socket, &user, &outbound, &f.conv, 10).unwrap());
        let m2 = f.send("b").await;
        let recovery = f.store.recovery(&f.conv, "bob", Some(0), 100).await.unwrap().unwrap();
        f.feed.receive(&f.conv, 2, message_frame(&m2));
        let m3 = f.send("c").await;
        f.feed.receive(&f.conv, 3, message_frame(&m3));
        assert_eq!(
            f.feed.finish_join(&socket, &f.conv, Some(0), &recovery),
            Finish::Done { recovered: 2 }
        );
        let m4 = f.send("d").await;
        f.feed.receive(&f.conv, 4, message_frame(&m4));
        settle().await;
        assert_eq!(seqs(&mut bob).await, [1, 2, 3, 4]);
        assert_eq!(seqs(&mut alice).await, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_kicked_member_gets_the_removal_and_nothing_after() {
        let f = fixture().await;
        let mut bob = f.member("s1", None).await;
        let emptied = f.feed.kick(&f.conv, "bob", &Bytes::from_static(b"removed"));
        assert!(emptied);
        assert!(!f.feed.is_joined("s1", &f.conv));
        let m1 = f.send("a").await;
        f.feed.receive(&f.conv, 1, message_frame(&m1));
        settle().await;
        assert_eq!(bob.rx.try_recv().unwrap(), Written::Frame(Bytes::from_static(b"removed")));
        assert!(bob.rx.try_recv().is_err());
    }
}
