//! Chat's stream source: a conversation is an ordered stream (`stream::Feed`) whose entries
//! are its `message:new` frames at their `seq`, and a gap is filled from the chat store. The
//! ordering, gap filling and join/recovery handshake are the stream feed's; this module only
//! says where messages come from.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::message_frame;
use crate::{
    store::chat::{ChatStore, Page, Recovery},
    stream::{self, Read, Source, Top},
};

pub use crate::stream::{Deliver, Finish};

/// The chat store as a stream source. Every conversation has one epoch, `""`: its seqs are
/// durable, and a hole (rows deleted) is skipped rather than ending anyone's join.
pub struct ChatSource {
    store: Arc<dyn ChatStore>,
}

#[async_trait::async_trait]
impl Source for ChatSource {
    async fn read_after(&self, conv: &str, after: u64, limit: u32) -> anyhow::Result<Read> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let page = Page::After { after, before: None, limit };
        let (messages, more) = self.store.messages(conv, page).await?;
        let entries = messages.iter().map(|m| (seq(m.seq), message_frame(m))).collect();
        Ok(Read { epoch: Arc::from(""), entries, more })
    }
}

/// The conversation feed of this instance.
pub type Feed = stream::Feed<ChatSource>;

pub fn feed(store: Arc<dyn ChatStore>, gap_timeout: Duration) -> Feed {
    Feed::new(ChatSource { store }, gap_timeout)
}

/// Seqs start at 1; a negative one cannot come from the store.
pub fn seq(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// Where a recovery read found the conversation.
pub fn top(recovery: &Recovery) -> Top {
    Top { pos: seq(recovery.last_seq), epoch: Arc::from("") }
}

/// The recovery read's messages as stream entries.
pub fn entries(recovery: &Recovery) -> Vec<(u64, Bytes)> {
    recovery.messages.iter().map(|m| (seq(m.seq), message_frame(m))).collect()
}

#[cfg(test)]
mod tests {
    //! The feed against a real (temporary) SQLite store. Real time: the store's reads run on
    //! threads paused time cannot see, and the gap timeout here is short.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{
        session::outbound::Outbound,
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
        Fixture { feed: Arc::new(feed(store.clone(), GAP)), store, conv, _dir: dir }
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
            let since = since.map(seq);
            assert_eq!(
                self.feed.finish_join(
                    &socket,
                    &self.conv,
                    since,
                    &top(&recovery),
                    &entries(&recovery),
                    Deliver::Now
                ),
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
        f.feed.receive(&f.conv, "", 3, message_frame(&m3));
        f.feed.receive(&f.conv, "", 2, message_frame(&m2));
        settle().await;
        assert_eq!(seqs(&mut bob).await, Vec::<i64>::new(), "2 and 3 wait for 1");
        f.feed.receive(&f.conv, "", 1, message_frame(&m1));
        f.feed.receive(&f.conv, "", 2, message_frame(&m2));
        settle().await;
        assert_eq!(seqs(&mut bob).await, [1, 2, 3], "in order, the duplicate dropped");
    }

    #[tokio::test]
    async fn a_gap_that_does_not_close_is_filled_from_the_store() {
        let f = fixture().await;
        let mut bob = f.member("s1", None).await;
        let _lost = f.send("published by an instance that died").await;
        let m2 = f.send("b").await;
        f.feed.receive(&f.conv, "", 2, message_frame(&m2));
        settle().await;
        assert!(seqs(&mut bob).await.is_empty());
        let mut got = Vec::new();
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            got.extend(seqs(&mut bob).await);
            if got.len() >= 2 {
                break;
            }
        }
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test]
    async fn a_join_during_live_traffic_gets_missed_then_live_without_gap_or_duplicate() {
        let f = fixture().await;
        let mut alice = f.member("s-alice", None).await;
        let m1 = f.send("a").await;
        f.feed.receive(&f.conv, "", 1, message_frame(&m1));

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
        f.feed.receive(&f.conv, "", 2, message_frame(&m2));
        let m3 = f.send("c").await;
        f.feed.receive(&f.conv, "", 3, message_frame(&m3));
        assert_eq!(
            f.feed.finish_join(
                &socket,
                &f.conv,
                Some(0),
                &top(&recovery),
                &entries(&recovery),
                Deliver::Now
            ),
            Finish::Done { recovered: 2 }
        );
        let m4 = f.send("d").await;
        f.feed.receive(&f.conv, "", 4, message_frame(&m4));
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
        f.feed.receive(&f.conv, "", 1, message_frame(&m1));
        settle().await;
        assert_eq!(bob.rx.try_recv().unwrap(), Written::Frame(Bytes::from_static(b"removed")));
        assert!(bob.rx.try_recv().is_err());
    }
}
