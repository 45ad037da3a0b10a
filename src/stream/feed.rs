//! The feed of one instance: which local sessions joined which stream, and the ordered
//! delivery of each stream's entries to them.
//!
//! Entries reach an instance in any order (two publishers on two instances publish
//! independently) and may not reach it at all (a publisher killed between storing and
//! publishing, a Redis outage). Positions are gapless, so each stream keeps the highest
//! position it delivered and a reorder buffer: an entry is delivered only once every lower
//! position has been, and a gap that does not close within the gap timeout is filled from the
//! `Source`. Every session therefore sees each stream as one gapless, duplicate-free, ordered
//! sequence.
//!
//! A join is two-phase so that recovery and live delivery meet without a gap or a duplicate:
//! `begin_join` registers the session as recovering (live entries are buffered for it), the
//! caller reads the source, and `finish_join` either sends the missed entries, then the
//! buffered ones it does not already have, and switches the session to live (`Deliver::Now`),
//! or records where the session stands and keeps buffering until `go_live` (`Deliver::Later`:
//! the caller answers with the missed entries first, then lets live ones follow). No lock is
//! held across the source read.
//!
//! A stream also has an epoch, which changes when its source lost its state (a channel's
//! history expired or its Redis restarted empty): positions of another epoch mean nothing
//! here. When the feed sees a stream's epoch change, or a hole the source can no longer fill
//! where the source says that ends the state, it removes the stream's live members and tells
//! the `Source` (`state_lost`), which tells the sessions.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;

use crate::session::outbound::Outbound;

/// Entries per source read when filling a gap.
const FILL_PAGE: u32 = 200;
/// Most out-of-order entries one stream holds while waiting for a gap to close.
const MAX_PENDING: usize = 10_000;
/// Longest wait between retries of a failed gap fill.
const MAX_FILL_BACKOFF: Duration = Duration::from_secs(5);

/// Where a stream stood when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    pub pos: u64,
    pub epoch: Arc<str>,
}

/// One read from a source: the stream's epoch, entries after the position asked (oldest first,
/// as frames ready to send) and whether more follow them.
#[derive(Debug, Default)]
pub struct Read {
    pub epoch: Arc<str>,
    pub entries: Vec<(u64, Bytes)>,
    pub more: bool,
}

/// Where a stream's entries are kept, for filling gaps.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// Entries of `stream` after `after`, at most `limit`.
    async fn read_after(&self, stream: &str, after: u64, limit: u32) -> anyhow::Result<Read>;

    /// Whether entries the source no longer has (a hole it cannot fill) end the stream's
    /// state, as an epoch change does. When not, the feed skips the hole (the entries were
    /// deleted on purpose).
    fn hole_ends_state(&self) -> bool {
        false
    }

    /// The stream's state was lost: `members` (each session's id and outbound queue) were
    /// removed from it (`emptied`: no local member is left). Called outside the feed's lock.
    async fn state_lost(&self, _stream: Arc<str>, _members: Vec<Lost>, _emptied: bool) {}
}

/// A session taken out of a stream whose state was lost: its id and its outbound queue (to
/// tell it).
pub type Lost = (Arc<str>, Outbound);

/// How `finish_join` hands over the missed entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Send the missed entries, then the buffered ones, and go live now.
    Now,
    /// The caller sends the missed entries (in its reply); buffer until `go_live`.
    Later,
}

/// How `finish_join` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// The session is joined; it was handed this many missed entries.
    Done { recovered: usize },
    /// The session left, was removed, or closed meanwhile.
    Gone,
    /// The source read is older than what the buffer starts from; read again.
    Stale,
}

pub struct Feed<S: Source> {
    inner: Mutex<Inner>,
    source: S,
    gap_timeout: Duration,
}

#[derive(Default)]
struct Inner {
    streams: HashMap<Arc<str>, Stream>,
    /// Streams each local session has joined.
    sockets: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

struct Stream {
    /// Highest position delivered in order on this instance; `None` until the first join's
    /// source read says where the stream stands.
    delivered: Option<u64>,
    /// The epoch `delivered` belongs to; `None` with it.
    epoch: Option<Arc<str>>,
    /// Highest position known to exist (seen or read).
    known: u64,
    /// Received, not yet deliverable (a lower position is missing).
    pending: BTreeMap<u64, Bytes>,
    members: HashMap<Arc<str>, Member>,
    /// A fill task is running or scheduled.
    filling: bool,
}

struct Member {
    user_id: Arc<str>,
    outbound: Outbound,
    /// Highest position sent to this session; lower or equal ones are never sent again.
    last_sent: u64,
    /// While joining: what was delivered meanwhile, to be sent after the missed entries.
    buffer: Option<Vec<(u64, Bytes)>>,
    /// The stream's `delivered` when this member started buffering: the buffer holds every
    /// position above it.
    floor: Option<u64>,
}

impl Member {
    fn offer(&mut self, pos: u64, frame: &Bytes) {
        match &mut self.buffer {
            Some(buffer) => buffer.push((pos, frame.clone())),
            None if pos > self.last_sent => {
                self.outbound.send(frame.clone());
                self.last_sent = pos;
            }
            None => {}
        }
    }

    /// Sends what was buffered above `last_sent` and switches to live delivery.
    fn go_live(&mut self) {
        for (pos, frame) in self.buffer.take().unwrap_or_default() {
            if pos > self.last_sent {
                self.outbound.send(frame);
                self.last_sent = pos;
            }
        }
    }
}

impl Stream {
    fn new() -> Self {
        Stream {
            delivered: None,
            epoch: None,
            known: 0,
            pending: BTreeMap::new(),
            members: HashMap::new(),
            filling: false,
        }
    }

    /// Delivers every pending entry that is next in line.
    fn drain(&mut self) {
        let Some(mut delivered) = self.delivered else { return };
        while let Some(entry) = self.pending.first_entry() {
            let pos = *entry.key();
            if pos <= delivered {
                entry.remove();
                continue;
            }
            if pos != delivered + 1 {
                break;
            }
            let frame = entry.remove();
            for member in self.members.values_mut() {
                member.offer(pos, &frame);
            }
            delivered = pos;
        }
        self.delivered = Some(delivered);
        self.known = self.known.max(delivered);
    }

    /// Whether entries are known to exist that this instance has not delivered.
    fn behind(&self) -> bool {
        self.delivered.is_some_and(|d| d < self.known || !self.pending.is_empty())
    }

    fn initialize(&mut self, top: &Top) {
        if self.delivered.is_none() {
            self.delivered = Some(top.pos);
            self.epoch = Some(top.epoch.clone());
            for member in self.members.values_mut() {
                member.floor.get_or_insert(top.pos);
            }
        }
        self.known = self.known.max(top.pos);
        self.drain();
    }

    /// Forgets where the stream stood (its state was lost) and takes out its live members;
    /// members still joining stay, and their own read initializes the stream again.
    fn reset(&mut self) -> Vec<Lost> {
        self.delivered = None;
        self.epoch = None;
        self.known = 0;
        self.pending.clear();
        let live: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(_, m)| m.buffer.is_none())
            .map(|(socket, _)| socket.clone())
            .collect();
        let live: Vec<Lost> = live
            .into_iter()
            .filter_map(|socket| self.members.remove(&socket).map(|m| (socket, m.outbound)))
            .collect();
        for member in self.members.values_mut() {
            member.floor = None;
            member.buffer = Some(Vec::new());
        }
        live
    }
}

impl<S: Source> Feed<S> {
    pub fn new(source: S, gap_timeout: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), source, gap_timeout }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing delivery; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `socket` as joining `stream`. Returns whether it is the first local member
    /// (the caller subscribes the stream's broker channel), or the limit when the socket has
    /// joined `max` streams already.
    pub fn begin_join(
        &self,
        socket: &Arc<str>,
        user: &Arc<str>,
        outbound: &Outbound,
        stream: &str,
        max: usize,
    ) -> Result<bool, usize> {
        let mut inner = self.lock();
        let joined = inner.sockets.entry(socket.clone()).or_default();
        if !joined.contains(stream) && joined.len() >= max {
            return Err(max);
        }
        let stream: Arc<str> = Arc::from(stream);
        joined.insert(stream.clone());
        let first = !inner.streams.contains_key(&stream);
        let state = inner.streams.entry(stream).or_insert_with(Stream::new);
        let floor = state.delivered;
        state.members.insert(
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

    /// Completes a join with the source read `top` and the entries it returned after
    /// `since` (the client's last seen position; without it nothing older than the read is
    /// handed over). See the module docs for `deliver`.
    pub fn finish_join(
        self: &Arc<Self>,
        socket: &str,
        stream: &str,
        since: Option<u64>,
        top: &Top,
        recovered: &[(u64, Bytes)],
        deliver: Deliver,
    ) -> Finish {
        let mut inner = self.lock();
        let Some(state) = inner.streams.get_mut(stream) else { return Finish::Gone };
        let mut lost = Vec::new();
        if state.epoch.as_ref().is_some_and(|e| *e != top.epoch) {
            // The source's state changed since this instance last looked: what it delivered
            // belongs to another epoch.
            lost = state.reset();
        }
        state.initialize(top);
        let Some(member) = state.members.get_mut(socket) else { return Finish::Gone };
        if member.floor.is_some_and(|floor| floor > top.pos) {
            return Finish::Stale;
        }
        member.last_sent = since.map_or(top.pos, |s| s.min(top.pos));
        let mut handed = 0;
        for (pos, frame) in recovered {
            if *pos > member.last_sent {
                if deliver == Deliver::Now {
                    member.outbound.send(frame.clone());
                }
                member.last_sent = *pos;
                handed += 1;
            }
        }
        if deliver == Deliver::Now {
            member.go_live();
        }
        self.arm(stream, &mut inner);
        if !lost.is_empty() {
            self.report_lost(&mut inner, stream, lost);
        }
        Finish::Done { recovered: handed }
    }

    /// Ends a `Deliver::Later` join: sends what was buffered since and delivers live.
    pub fn go_live(&self, socket: &str, stream: &str) {
        let mut inner = self.lock();
        if let Some(member) = inner.streams.get_mut(stream).and_then(|s| s.members.get_mut(socket))
        {
            member.go_live();
        }
    }

    /// Takes `socket` out of `stream`. Returns true when no local member is left (the caller
    /// unsubscribes the broker channel).
    pub fn leave(&self, socket: &str, stream: &str) -> bool {
        let mut inner = self.lock();
        if let Some(joined) = inner.sockets.get_mut(socket) {
            joined.remove(stream);
            if joined.is_empty() {
                inner.sockets.remove(socket);
            }
        }
        Self::remove_member(&mut inner, stream, socket)
    }

    fn remove_member(inner: &mut Inner, stream: &str, socket: &str) -> bool {
        let Some(state) = inner.streams.get_mut(stream) else { return false };
        state.members.remove(socket);
        if state.members.is_empty() {
            inner.streams.remove(stream);
            return true;
        }
        false
    }

    /// Forgets a closed session. Returns the streams left without a local member.
    pub fn remove_socket(&self, socket: &str) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let Some(joined) = inner.sockets.remove(socket) else { return Vec::new() };
        joined.into_iter().filter(|s| Self::remove_member(&mut inner, s, socket)).collect()
    }

    /// Removes every local session of `user` from `stream` and sends each `frame`. Returns
    /// true when no local member is left.
    pub fn kick(&self, stream: &str, user: &str, frame: &Bytes) -> bool {
        let mut inner = self.lock();
        let Some(state) = inner.streams.get_mut(stream) else { return false };
        let kicked: Vec<Arc<str>> = state
            .members
            .iter()
            .filter(|(_, m)| &*m.user_id == user)
            .map(|(socket, _)| socket.clone())
            .collect();
        for socket in &kicked {
            if let Some(member) = state.members.remove(socket) {
                member.outbound.send(frame.clone());
            }
        }
        let emptied = state.members.is_empty();
        if emptied {
            inner.streams.remove(stream);
        }
        for socket in &kicked {
            if let Some(joined) = inner.sockets.get_mut(socket) {
                joined.remove(stream);
            }
        }
        emptied
    }

    /// An entry of `stream` at `pos` in `epoch`, from this instance or another: delivered in
    /// order.
    pub fn receive(self: &Arc<Self>, stream: &str, epoch: &str, pos: u64, frame: Bytes) {
        let mut inner = self.lock();
        let Some(state) = inner.streams.get_mut(stream) else { return };
        if state.epoch.as_deref().is_some_and(|e| e != epoch) {
            // Another epoch: either a late entry of an old one, or the source lost its state.
            // Only the source can tell; look now rather than after the gap timeout.
            if !state.filling {
                state.filling = true;
                tokio::spawn(self.clone().fill(Arc::from(stream), Duration::ZERO));
            }
            return;
        }
        if state.delivered.is_some_and(|d| pos <= d) {
            return;
        }
        state.known = state.known.max(pos);
        // Past the cap only `known` moves: the fill reads everything up to it from the
        // source, so a long outage costs reads, not memory.
        if state.pending.len() < MAX_PENDING {
            state.pending.insert(pos, frame);
        }
        state.drain();
        self.arm(stream, &mut inner);
    }

    /// A frame outside the stream's order (typing, join/leave notices, entries of a stream
    /// without positions) to every live local member except `exclude`. Never buffered;
    /// `volatile` frames may be dropped (and go as datagrams on WebTransport).
    pub fn broadcast(
        &self,
        stream: &str,
        exclude: Option<&str>,
        frame: &Bytes,
        volatile: bool,
    ) -> usize {
        let inner = self.lock();
        let Some(state) = inner.streams.get(stream) else { return 0 };
        state
            .members
            .iter()
            .filter(|(socket, m)| Some(&***socket) != exclude && m.buffer.is_none())
            .filter(|(_, m)| {
                if volatile {
                    m.outbound.send_volatile(frame.clone())
                } else {
                    m.outbound.send(frame.clone())
                }
            })
            .count()
    }

    pub fn is_joined(&self, socket: &str, stream: &str) -> bool {
        self.lock().sockets.get(socket).is_some_and(|joined| joined.contains(stream))
    }

    /// How many streams `socket` has joined.
    pub fn joined_count(&self, socket: &str) -> usize {
        self.lock().sockets.get(socket).map_or(0, HashSet::len)
    }

    /// Whether any local session has joined `stream`.
    pub fn has(&self, stream: &str) -> bool {
        self.lock().streams.contains_key(stream)
    }

    /// Streams with a local member.
    pub fn streams(&self) -> Vec<Arc<str>> {
        self.lock().streams.keys().cloned().collect()
    }

    /// After an outage of the broker: entries may have been published while this instance
    /// was not listening, so check the source for every stream.
    pub fn catch_up_all(self: &Arc<Self>) {
        let mut inner = self.lock();
        let ids: Vec<Arc<str>> = inner.streams.keys().cloned().collect();
        for id in ids {
            if let Some(state) = inner.streams.get_mut(&id)
                && !state.filling
                && state.delivered.is_some()
            {
                state.filling = true;
                tokio::spawn(self.clone().fill(id, Duration::ZERO));
            }
        }
    }

    /// Schedules a fill when `stream` is behind and none is running.
    fn arm(self: &Arc<Self>, stream: &str, inner: &mut Inner) {
        let Some(state) = inner.streams.get_mut(stream) else { return };
        if state.behind() && !state.filling {
            state.filling = true;
            tokio::spawn(self.clone().fill(Arc::from(stream), self.gap_timeout));
        }
    }

    /// Removes the `lost` members from the socket index and tells the source, outside the
    /// lock.
    fn report_lost(self: &Arc<Self>, inner: &mut Inner, stream: &str, lost: Vec<Lost>) {
        for (socket, _) in &lost {
            if let Some(joined) = inner.sockets.get_mut(socket) {
                joined.remove(stream);
                if joined.is_empty() {
                    inner.sockets.remove(socket);
                }
            }
        }
        let emptied = inner.streams.get(stream).is_none_or(|s| s.members.is_empty());
        if emptied {
            inner.streams.remove(stream);
        }
        let feed = self.clone();
        let stream: Arc<str> = Arc::from(stream);
        tokio::spawn(async move { feed.source.state_lost(stream, lost, emptied).await });
    }

    /// Waits `delay` for the gap to close by itself, then reads the source until this
    /// instance has delivered everything it knows of (and, after an outage, everything the
    /// source has).
    async fn fill(self: Arc<Self>, stream: Arc<str>, delay: Duration) {
        tokio::time::sleep(delay).await;
        let mut backoff = self.gap_timeout.max(Duration::from_millis(50));
        let mut sweep = delay.is_zero();
        loop {
            let after = {
                let mut inner = self.lock();
                let Some(state) = inner.streams.get_mut(&stream) else { return };
                match state.delivered {
                    Some(d) if state.behind() || sweep => d,
                    _ => {
                        state.filling = false;
                        return;
                    }
                }
            };
            let read = tokio::time::timeout(
                MAX_FILL_BACKOFF,
                self.source.read_after(&stream, after, FILL_PAGE),
            );
            match read.await {
                Ok(Ok(read)) => {
                    let mut inner = self.lock();
                    let Some(state) = inner.streams.get_mut(&stream) else { return };
                    let hole = read.entries.first().is_some_and(|(pos, _)| *pos > after + 1)
                        || (read.entries.is_empty() && state.behind() && !read.more);
                    let epoch_changed = state.epoch.as_ref().is_some_and(|e| *e != read.epoch);
                    if epoch_changed || (hole && self.source.hole_ends_state()) {
                        tracing::warn!(%stream, epoch_changed, "stream state lost; its members must rejoin");
                        let lost = state.reset();
                        state.filling = false;
                        self.report_lost(&mut inner, &stream, lost);
                        return;
                    }
                    let read_any = !read.entries.is_empty();
                    for (pos, frame) in read.entries {
                        state.known = state.known.max(pos);
                        state.pending.entry(pos).or_insert(frame);
                    }
                    if hole && read_any {
                        // Entries were deleted on purpose (the source says the hole is not
                        // a loss): continue from what exists.
                        if let Some(next) = state.pending.keys().next().copied() {
                            tracing::warn!(%stream, from = after, to = next, "skipping a gap the source cannot fill");
                            state.delivered = Some(next - 1);
                        }
                    }
                    state.drain();
                    sweep = read.more;
                    if !read_any && state.behind() {
                        // The source has nothing after `delivered`, yet a higher position was
                        // seen: skip the hole rather than stall.
                        if let Some(next) = state.pending.keys().next().copied() {
                            tracing::warn!(%stream, from = after, to = next, "skipping a gap the source cannot fill");
                            state.delivered = Some(next - 1);
                            state.drain();
                        }
                        state.known = state.delivered.unwrap_or(state.known);
                    }
                    backoff = self.gap_timeout.max(Duration::from_millis(50));
                }
                Ok(Err(e)) => {
                    tracing::warn!(%stream, error = %e, "filling a gap failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_FILL_BACKOFF);
                }
                Err(_) => {
                    tracing::warn!(%stream, "filling a gap timed out; retrying");
                    backoff = (backoff * 2).min(MAX_FILL_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The feed over an in-memory source: the paths chat never takes (deferred delivery,
    //! epochs, holes that end the state). Chat's own tests run it against SQLite.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::transport::{
        Transport,
        channel::{self, ChannelClient, Written},
    };

    /// A `state_lost` report: the stream and the sockets taken out of it.
    type Report = (Arc<str>, Vec<Arc<str>>);

    #[derive(Default)]
    struct Mem {
        epoch: Mutex<Arc<str>>,
        entries: Mutex<Vec<(u64, Bytes)>>,
        lost: Mutex<Vec<Report>>,
        holes_end_state: bool,
    }

    #[async_trait::async_trait]
    impl Source for Arc<Mem> {
        async fn read_after(&self, _: &str, after: u64, limit: u32) -> anyhow::Result<Read> {
            let entries: Vec<_> = self
                .entries
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| *p > after)
                .take(limit as usize)
                .cloned()
                .collect();
            Ok(Read { epoch: self.epoch.lock().unwrap().clone(), entries, more: false })
        }
        fn hole_ends_state(&self) -> bool {
            self.holes_end_state
        }
        async fn state_lost(&self, stream: Arc<str>, members: Vec<Lost>, _: bool) {
            let sockets = members.into_iter().map(|(s, _)| s).collect();
            self.lost.lock().unwrap().push((stream, sockets));
        }
    }

    fn frame(pos: u64) -> Bytes {
        Bytes::from(pos.to_string())
    }

    fn member() -> (Outbound, ChannelClient) {
        let (transport, client) = channel::pair();
        let (_, _, writer) = transport.split();
        let (outbound, _task) =
            Outbound::spawn(writer, 1 << 20, &tokio_util::sync::CancellationToken::new());
        (outbound, client)
    }

    async fn received(client: &mut ChannelClient) -> Vec<u64> {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        while let Ok(Written::Frame(f)) = client.rx.try_recv() {
            out.push(std::str::from_utf8(&f).unwrap().parse().unwrap());
        }
        out
    }

    fn top(pos: u64, epoch: &str) -> Top {
        Top { pos, epoch: Arc::from(epoch) }
    }

    /// `Deliver::Later`: the caller hands the missed entries over itself; what arrives
    /// meanwhile waits for `go_live`, then follows without a gap or a duplicate.
    #[tokio::test]
    async fn a_deferred_join_holds_live_entries_until_go_live() {
        let feed = Arc::new(Feed::new(Arc::new(Mem::default()), Duration::from_millis(50)));
        let (outbound, mut client) = member();
        let (socket, user): (Arc<str>, Arc<str>) = ("s".into(), "u".into());
        assert!(feed.begin_join(&socket, &user, &outbound, "c", 8).unwrap());
        feed.receive("c", "e1", 3, frame(3));
        let missed = [(2, frame(2)), (3, frame(3))];
        let done = feed.finish_join("s", "c", Some(1), &top(3, "e1"), &missed, Deliver::Later);
        assert_eq!(done, Finish::Done { recovered: 2 });
        feed.receive("c", "e1", 4, frame(4));
        assert_eq!(received(&mut client).await, Vec::<u64>::new(), "nothing before go_live");
        feed.go_live("s", "c");
        feed.receive("c", "e1", 5, frame(5));
        assert_eq!(received(&mut client).await, [4, 5]);
    }

    /// An entry of another epoch makes the feed check the source; a changed epoch takes the
    /// live members out and reports them.
    #[tokio::test]
    async fn an_epoch_change_ends_the_live_members_state() {
        let source = Arc::new(Mem { epoch: Mutex::new(Arc::from("e1")), ..Mem::default() });
        let feed = Arc::new(Feed::new(source.clone(), Duration::from_millis(20)));
        let (outbound, mut client) = member();
        let (socket, user): (Arc<str>, Arc<str>) = ("s".into(), "u".into());
        feed.begin_join(&socket, &user, &outbound, "c", 8).unwrap();
        feed.finish_join("s", "c", None, &top(7, "e1"), &[], Deliver::Now);
        // A late entry of the same epoch is nothing special.
        feed.receive("c", "e1", 8, frame(8));
        assert_eq!(received(&mut client).await, [8]);
        *source.epoch.lock().unwrap() = Arc::from("e2");
        feed.receive("c", "e2", 1, frame(1));
        for _ in 0..100 {
            if !source.lost.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lost = source.lost.lock().unwrap().clone();
        assert_eq!(lost, [(Arc::from("c"), vec![Arc::<str>::from("s")])]);
        assert!(!feed.is_joined("s", "c") && !feed.has("c"));
        assert!(received(&mut client).await.is_empty(), "nothing of the new epoch leaked");
    }

    /// A gap the source can no longer fill (history trimmed past it) ends the state where the
    /// source says so.
    #[tokio::test]
    async fn a_hole_ends_the_state_when_the_source_says_so() {
        let source = Arc::new(Mem {
            epoch: Mutex::new(Arc::from("e")),
            holes_end_state: true,
            ..Mem::default()
        });
        *source.entries.lock().unwrap() = vec![(5, frame(5)), (6, frame(6))];
        let feed = Arc::new(Feed::new(source.clone(), Duration::from_millis(10)));
        let (outbound, mut client) = member();
        let (socket, user): (Arc<str>, Arc<str>) = ("s".into(), "u".into());
        feed.begin_join(&socket, &user, &outbound, "c", 8).unwrap();
        feed.finish_join("s", "c", None, &top(2, "e"), &[], Deliver::Now);
        feed.receive("c", "e", 6, frame(6));
        for _ in 0..100 {
            if !source.lost.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(source.lost.lock().unwrap().len(), 1);
        assert!(
            received(&mut client).await.is_empty(),
            "3 and 4 are gone: nothing is sent past them"
        );
    }

    #[tokio::test]
    async fn the_per_socket_limit_counts_streams() {
        let feed = Arc::new(Feed::new(Arc::new(Mem::default()), Duration::from_millis(50)));
        let (outbound, _client) = member();
        let (socket, user): (Arc<str>, Arc<str>) = ("s".into(), "u".into());
        feed.begin_join(&socket, &user, &outbound, "a", 2).unwrap();
        feed.begin_join(&socket, &user, &outbound, "b", 2).unwrap();
        assert_eq!(feed.begin_join(&socket, &user, &outbound, "c", 2), Err(2));
        assert_eq!(feed.joined_count("s"), 2);
        assert_eq!(feed.remove_socket("s").len(), 2);
    }
}
