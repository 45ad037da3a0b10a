//! An instance's in-memory copy of the revocation marks: two maps, each mark with its expiry.
//! Checked on every connect and refresh, so it answers from memory; merged from the cluster
//! commands that announce new marks and from periodic reloads of the store.

use std::{collections::HashMap, sync::Mutex};

use super::{Mark, TokenRef, covers};
use crate::state::now_ms;

#[derive(Default)]
struct Marks {
    /// user → (before, until ms).
    users: HashMap<String, (u64, u64)>,
    /// jti → until ms.
    tokens: HashMap<String, u64>,
}

#[derive(Default)]
pub struct Known {
    marks: Mutex<Marks>,
}

impl Known {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `mark`, widening what is known for its user or token.
    pub fn merge(&self, mark: &Mark) {
        self.merge_all(std::slice::from_ref(mark));
    }

    /// Adds every mark (a reload of the store), then forgets those past their `until`.
    pub fn merge_all(&self, marks: &[Mark]) {
        let mut known = self.lock();
        for mark in marks {
            match mark {
                Mark::User { user, before, until_ms } => {
                    let m = known.users.entry(user.clone()).or_insert((*before, *until_ms));
                    *m = (m.0.max(*before), m.1.max(*until_ms));
                }
                Mark::Token { jti, until_ms } => {
                    let u = known.tokens.entry(jti.clone()).or_insert(*until_ms);
                    *u = (*u).max(*until_ms);
                }
            }
        }
        prune(&mut known);
    }

    /// Forgets marks past their `until`.
    pub fn prune(&self) {
        prune(&mut self.lock());
    }

    pub fn is_revoked(&self, token: TokenRef<'_>) -> bool {
        let now = now_ms();
        let known = self.lock();
        let by_user = known
            .users
            .get(token.user)
            .is_some_and(|&(before, until)| until > now && covers(before, token.issued_at));
        let by_jti = token.jti.and_then(|j| known.tokens.get(j)).is_some_and(|&until| until > now);
        by_user || by_jti
    }

    /// Every live mark, one per user and token.
    pub fn marks(&self) -> Vec<Mark> {
        let now = now_ms();
        let known = self.lock();
        let users =
            known.users.iter().filter(|(_, m)| m.1 > now).map(|(user, &(before, until))| {
                Mark::User { user: user.clone(), before, until_ms: until }
            });
        let tokens = known
            .tokens
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(jti, &until)| Mark::Token { jti: jti.clone(), until_ms: until });
        users.chain(tokens).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let known = self.lock();
        known.users.len() + known.tokens.len()
    }
}

fn prune(marks: &mut Marks) {
    let now = now_ms();
    marks.users.retain(|_, (_, until)| *until > now);
    marks.tokens.retain(|_, until| *until > now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token<'a>(user: &'a str, issued_at: Option<u64>, jti: Option<&'a str>) -> TokenRef<'a> {
        TokenRef { user, issued_at, jti }
    }

    #[test]
    fn a_merge_only_widens() {
        let k = Known::new();
        let until = now_ms() + 60_000;
        k.merge(&Mark::User { user: "ann".into(), before: 100, until_ms: until });
        k.merge(&Mark::User { user: "ann".into(), before: 50, until_ms: until - 10 });
        assert!(k.is_revoked(token("ann", Some(100), None)));
        assert!(!k.is_revoked(token("ann", Some(101), None)));
        assert_eq!(
            k.marks(),
            vec![Mark::User { user: "ann".into(), before: 100, until_ms: until }]
        );
    }

    #[test]
    fn past_marks_count_for_nothing_and_are_pruned() {
        let k = Known::new();
        k.merge_all(&[
            Mark::Token { jti: "old".into(), until_ms: now_ms() - 1 },
            Mark::Token { jti: "new".into(), until_ms: now_ms() + 60_000 },
        ]);
        assert!(!k.is_revoked(token("x", None, Some("old"))));
        assert!(k.is_revoked(token("x", None, Some("new"))));
        assert_eq!(k.len(), 1);
    }
}
