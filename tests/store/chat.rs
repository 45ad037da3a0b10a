//! Chat persistence: conversations and membership, gapless seqs under concurrent senders,
//! idempotent sends, reply checks, pages and recovery reads.

use std::{collections::BTreeSet, sync::Arc};

use rstest::rstest;
use rtgate::store::chat::{
    ChatStore, Message, NewConversation, NewMessage, Page, Role, SendOutcome,
};

use crate::common::{Backend, T0, chat_store};

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn conversation(store: &dyn ChatStore, owner: &str, members: &[&str]) -> String {
    let c = NewConversation {
        id: uuid(),
        title: Some("general".into()),
        created_by: owner.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        created_at_ms: T0,
    };
    store.create_conversation(&c).await.unwrap().id
}

fn message(conv: &str, sender: &str, content: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        id: uuid(),
        conversation_id: conv.into(),
        sender_id: sender.into(),
        content: content.into(),
        reply_to_id: None,
        client_message_id: key.map(str::to_owned),
        created_at_ms: T0 + 1,
    }
}

async fn stored(store: &dyn ChatStore, m: &NewMessage) -> Message {
    match store.send_message(m).await.unwrap() {
        SendOutcome::Stored(m) => m,
        other => panic!("expected Stored, got {other:?}"),
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn conversations_and_membership(#[case] backend: Backend) {
    let (store, guard) = chat_store(backend).await;
    let id = conversation(&*store, "alice", &["bob", "bob", "alice"]).await;

    let seen = store.conversation(&id, "alice").await.unwrap().unwrap();
    assert_eq!(
        (seen.role, seen.last_seq, seen.title.as_deref()),
        (Role::Owner, 0, Some("general"))
    );
    assert_eq!(seen.created_at_ms, T0);
    assert_eq!(store.conversation(&id, "bob").await.unwrap().unwrap().role, Role::Member);
    assert_eq!(store.conversation(&id, "mallory").await.unwrap(), None);
    assert_eq!(store.conversation(&uuid(), "alice").await.unwrap(), None);

    let members: Vec<(String, Role)> =
        store.members(&id).await.unwrap().into_iter().map(|m| (m.user_id, m.role)).collect();
    assert_eq!(members, [("alice".into(), Role::Owner), ("bob".into(), Role::Member)]);

    assert!(store.add_member(&id, "carol", T0 + 5).await.unwrap());
    assert!(!store.add_member(&id, "carol", T0 + 6).await.unwrap(), "already a member");
    assert_eq!(store.conversations_of("carol", 10).await.unwrap().len(), 1);
    assert!(store.remove_member(&id, "carol").await.unwrap());
    assert!(!store.remove_member(&id, "carol").await.unwrap());
    assert!(store.conversations_of("carol", 10).await.unwrap().is_empty());

    let other = conversation(&*store, "bob", &[]).await;
    let mine: Vec<String> =
        store.conversations_of("bob", 10).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(mine.iter().collect::<BTreeSet<_>>(), [&id, &other].into_iter().collect());
    assert_eq!(store.conversations_of("bob", 1).await.unwrap().len(), 1);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn only_members_send_and_replies_must_be_in_the_conversation(#[case] backend: Backend) {
    let (store, guard) = chat_store(backend).await;
    let id = conversation(&*store, "alice", &["bob"]).await;
    let elsewhere = conversation(&*store, "alice", &[]).await;

    assert_eq!(
        store.send_message(&message(&id, "mallory", "hi", None)).await.unwrap(),
        SendOutcome::NotMember
    );
    assert_eq!(
        store.send_message(&message(&uuid(), "alice", "hi", None)).await.unwrap(),
        SendOutcome::NotMember
    );

    let first = stored(&*store, &message(&id, "alice", "first", None)).await;
    assert_eq!(first.seq, 1);
    let foreign = stored(&*store, &message(&elsewhere, "alice", "other", None)).await;

    let mut reply = message(&id, "bob", "re", None);
    reply.reply_to_id = Some(foreign.id.clone());
    assert_eq!(store.send_message(&reply).await.unwrap(), SendOutcome::ReplyNotFound);
    reply.reply_to_id = Some(first.id.clone());
    let r = stored(&*store, &reply).await;
    assert_eq!((r.seq, r.reply_to_id.as_deref()), (2, Some(first.id.as_str())));

    // Refusals consumed no seq.
    assert_eq!(store.conversation(&id, "alice").await.unwrap().unwrap().last_seq, 2);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_retried_client_message_id_returns_the_original(#[case] backend: Backend) {
    let (store, guard) = chat_store(backend).await;
    let id = conversation(&*store, "alice", &["bob"]).await;
    let original = stored(&*store, &message(&id, "alice", "once", Some("k1"))).await;

    let retry = message(&id, "alice", "once", Some("k1"));
    assert_eq!(store.send_message(&retry).await.unwrap(), SendOutcome::Duplicate(original.clone()));
    // The same key from another sender is another message.
    assert_eq!(stored(&*store, &message(&id, "bob", "mine", Some("k1"))).await.seq, 2);

    // Concurrent retries of one key store it once.
    let sends = (0..8).map(|_| {
        let store = store.clone();
        let m = message(&id, "alice", "racy", Some("k2"));
        tokio::spawn(async move { store.send_message(&m).await.unwrap() })
    });
    let outcomes = futures_util::future::join_all(sends).await;
    let stored_once =
        outcomes.iter().filter(|o| matches!(o.as_ref().unwrap(), SendOutcome::Stored(_))).count();
    assert_eq!(stored_once, 1, "{outcomes:?}");
    let (all, _) =
        store.messages(&id, Page::After { after: 0, before: None, limit: 100 }).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(store.conversation(&id, "alice").await.unwrap().unwrap().last_seq, 3);
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn concurrent_senders_get_gapless_unique_seqs(#[case] backend: Backend) {
    let (store, guard) = chat_store(backend).await;
    let senders = ["a", "b", "c", "d"];
    let id = conversation(&*store, "a", &senders[1..]).await;
    let per_sender = 25;
    let tasks = senders.iter().map(|sender| {
        let store: Arc<dyn ChatStore> = store.clone();
        let id = id.clone();
        let sender = sender.to_string();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_sender {
                let m = message(&id, &sender, &format!("{sender}{i}"), None);
                seqs.push(stored(&*store, &m).await.seq);
            }
            seqs
        })
    });
    let mut all = Vec::new();
    for seqs in futures_util::future::join_all(tasks).await {
        let seqs = seqs.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one sender's seqs increase: {seqs:?}");
        all.extend(seqs);
    }
    all.sort_unstable();
    let n = (senders.len() * per_sender) as i64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>());

    let (page, _) =
        store.messages(&id, Page::After { after: 0, before: None, limit: 200 }).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
    guard.cleanup().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn pages_and_recovery_reads(#[case] backend: Backend) {
    let (store, guard) = chat_store(backend).await;
    let id = conversation(&*store, "alice", &["bob"]).await;
    for i in 1..=10 {
        stored(&*store, &message(&id, "alice", &format!("m{i}"), None)).await;
    }
    let seqs = |page: &[Message]| page.iter().map(|m| m.seq).collect::<Vec<_>>();

    let (p, more) =
        store.messages(&id, Page::After { after: 3, before: None, limit: 4 }).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![4, 5, 6, 7], true));
    let (p, more) =
        store.messages(&id, Page::After { after: 3, before: Some(6), limit: 4 }).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![4, 5], false));
    let (p, more) = store.messages(&id, Page::Before { before: None, limit: 3 }).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![8, 9, 10], true));
    let (p, more) = store.messages(&id, Page::Before { before: Some(3), limit: 5 }).await.unwrap();
    assert_eq!((seqs(&p), more), (vec![1, 2], false));
    assert_eq!(p[0].content, "m1");
    assert_eq!(p[0].created_at_ms, T0 + 1);

    let r = store.recovery(&id, "bob", Some(7), 5).await.unwrap().unwrap();
    assert_eq!((r.last_seq, seqs(&r.messages), r.has_more), (10, vec![8, 9, 10], false));
    let r = store.recovery(&id, "bob", Some(2), 5).await.unwrap().unwrap();
    assert_eq!((seqs(&r.messages), r.has_more), (vec![6, 7, 8, 9, 10], true));
    let r = store.recovery(&id, "bob", None, 5).await.unwrap().unwrap();
    assert_eq!((r.last_seq, r.messages.len(), r.has_more), (10, 0, false));
    let r = store.recovery(&id, "bob", Some(99), 5).await.unwrap().unwrap();
    assert_eq!((r.last_seq, r.messages.len()), (10, 0));
    assert_eq!(store.recovery(&id, "mallory", Some(0), 5).await.unwrap(), None);
    guard.cleanup().await;
}
