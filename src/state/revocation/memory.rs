//! In-memory revocations (single node): two maps, each mark with its expiry, pruned as new
//! marks arrive.

use std::{collections::HashMap, sync::Mutex};

use super::{Revocations, TokenRef, covers};
use crate::state::{StateError, now_ms};

#[derive(Default)]
struct Marks {
    /// user → (before, until ms).
    users: HashMap<String, (u64, u64)>,
    /// jti → until ms.
    tokens: HashMap<String, u64>,
}

#[derive(Default)]
pub struct MemoryRevocations {
    marks: Mutex<Marks>,
}

impl MemoryRevocations {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets marks past their `until` (called by the cleanup job and on every write).
    pub fn prune(&self) {
        let now = now_ms();
        let mut marks = self.lock();
        marks.users.retain(|_, (_, until)| *until > now);
        marks.tokens.retain(|_, until| *until > now);
    }
}

#[async_trait::async_trait]
impl Revocations for MemoryRevocations {
    async fn revoke_user(&self, user: &str, before: u64, until_ms: u64) -> Result<(), StateError> {
        self.prune();
        let mut marks = self.lock();
        let mark = marks.users.entry(user.to_owned()).or_insert((before, until_ms));
        *mark = (mark.0.max(before), mark.1.max(until_ms));
        Ok(())
    }

    async fn revoke_token(&self, jti: &str, until_ms: u64) -> Result<(), StateError> {
        self.prune();
        let mut marks = self.lock();
        let until = marks.tokens.entry(jti.to_owned()).or_insert(until_ms);
        *until = (*until).max(until_ms);
        Ok(())
    }

    async fn is_revoked(&self, token: TokenRef<'_>) -> Result<bool, StateError> {
        let now = now_ms();
        let marks = self.lock();
        let by_user = marks
            .users
            .get(token.user)
            .is_some_and(|&(before, until)| until > now && covers(before, token.issued_at));
        let by_jti = token.jti.and_then(|j| marks.tokens.get(j)).is_some_and(|&until| until > now);
        Ok(by_user || by_jti)
    }
}
