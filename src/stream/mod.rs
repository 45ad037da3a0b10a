//! Ordered streams: the one mechanism behind every feature whose entries carry a gapless
//! position (a chat conversation's `seq`, a channel's history `offset`). `feed::Feed` delivers
//! each stream's entries to the local sessions that joined it in position order, once each,
//! with no gap: it reorders what arrives out of order, fills a gap that does not close from the
//! stream's `Source` (the database, the channel history), and joins a session so that the
//! entries it missed and the live ones meet without a gap or a duplicate. Features supply the
//! `Source` and the frames; they never reimplement ordering or recovery.

pub mod feed;

pub use feed::{Deliver, Feed, Finish, Lost, Read, Source, Top};
