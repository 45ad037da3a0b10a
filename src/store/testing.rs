//! A store for unit tests: keeps what it is given in memory and fails while `down` is set.
#![allow(clippy::unwrap_used)]

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use super::{
    ConnectionClosed, ConnectionOpened, ConnectionRow, HistoryQuery, PresenceLog, PresenceRow,
    Store, StoreError,
};

/// A store that keeps what it is given and fails while `down` is set.
#[derive(Default)]
pub struct Fake {
    pub down: AtomicBool,
    pub calls: AtomicUsize,
    pub opened: Mutex<Vec<String>>,
    pub closed: Mutex<Vec<(String, String)>>,
    /// Socket ids written by `insert_ended_connections`.
    pub ended: Mutex<Vec<String>>,
    pub outbox: std::sync::Arc<FakeOutbox>,
}

/// An outbox that keeps what is enqueued (by kind) and delivers nothing.
#[derive(Default)]
pub struct FakeOutbox {
    pub kinds: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl super::outbox::Outbox for FakeOutbox {
    async fn enqueue(&self, rows: &[super::outbox::NewDelivery]) -> Result<(), StoreError> {
        self.kinds.lock().unwrap().extend(rows.iter().map(|r| r.kind.clone()));
        Ok(())
    }
    async fn claim(
        &self,
        _: i64,
        _: i64,
        _: u32,
    ) -> Result<Vec<super::outbox::Delivery>, StoreError> {
        Ok(Vec::new())
    }
    async fn delivered(&self, _: &str, _: i32, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn retry(&self, _: &str, _: i32, _: i64, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn dead(&self, _: &str, _: i32, _: i64, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn list(
        &self,
        _: super::outbox::DeliveryState,
        _: u32,
    ) -> Result<Vec<super::outbox::Delivery>, StoreError> {
        Ok(Vec::new())
    }
    async fn delete_finished_before(&self, _: i64, _: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
}

fn err() -> StoreError {
    StoreError::Database(sqlx::Error::PoolTimedOut)
}

#[async_trait::async_trait]
impl Store for Fake {
    async fn migrate(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) { Err(err()) } else { Ok(()) }
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn insert_connections(&self, rows: &[ConnectionOpened]) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(err());
        }
        let mut o = self.opened.lock().unwrap();
        for r in rows {
            if !o.contains(&r.socket_id) {
                o.push(r.socket_id.clone());
            }
        }
        Ok(())
    }
    async fn close_connections(&self, rows: &[ConnectionClosed]) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(err());
        }
        self.closed
            .lock()
            .unwrap()
            .extend(rows.iter().map(|r| (r.socket_id.clone(), r.reason.clone())));
        Ok(())
    }
    async fn insert_ended_connections(
        &self,
        rows: &[(ConnectionOpened, ConnectionClosed)],
    ) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(err());
        }
        self.ended.lock().unwrap().extend(rows.iter().map(|(o, _)| o.socket_id.clone()));
        Ok(())
    }
    async fn close_instance(&self, _: &str, _: i64, _: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn insert_presence(&self, _: &[PresenceLog]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn connections(&self, _: &HistoryQuery) -> Result<Vec<ConnectionRow>, StoreError> {
        Ok(vec![])
    }
    async fn presence_history(&self, _: &HistoryQuery) -> Result<Vec<PresenceRow>, StoreError> {
        Ok(vec![])
    }
    async fn delete_connections_before(&self, _: i64, _: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn delete_presence_before(&self, _: i64, _: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Unit tests that reach channel history get the in-memory one.
    fn channel_history(&self) -> std::sync::Arc<dyn crate::state::history::History> {
        std::sync::Arc::new(crate::state::history::memory::MemoryHistory::new())
    }
    fn outbox(&self) -> std::sync::Arc<dyn super::outbox::Outbox> {
        self.outbox.clone()
    }
    async fn delete_expired_channel_history(
        &self,
        _: i64,
        _: i64,
        _: u32,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }
}
