//! Channel occupancy: how many subscribers each channel has on each instance, so the cluster
//! knows which channels are active (the server API's `channels`) and when a channel gains its
//! first subscriber anywhere or loses its last (`channel.occupied` / `channel.vacated`).
//!
//! Instances add deltas (+1 on a subscription, −1 when it ends), which commute, so concurrent
//! changes on one instance need no ordering. A crashed instance's counts are removed by the
//! reaper (`forget_instance`), which reports the channels that became vacant.

pub mod memory;
pub mod redis;

use super::StateError;

/// What a change did to the channel, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The channel had no subscriber anywhere and now has one.
    Occupied,
    /// The channel's last subscriber anywhere left.
    Vacated,
    Unchanged,
}

/// One page of active channels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// `(channel, subscribers)`, by name on the memory backend, in Redis' scan order on Redis.
    pub channels: Vec<(String, u64)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

#[async_trait::async_trait]
pub trait Occupancy: Send + Sync + 'static {
    /// Adds `delta` to `instance`'s subscribers of `channel`.
    async fn add(&self, channel: &str, instance: &str, delta: i64) -> Result<Change, StateError>;

    /// Channels with subscribers whose name matches `pattern` (a glob: `*` any run, `?` one
    /// character), about `limit` per page, from `cursor` (a previous page's `next`).
    async fn list(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StateError>;

    /// Removes a dead instance's counts; returns the channels left without subscribers.
    async fn forget_instance(&self, instance: &str) -> Result<Vec<String>, StateError>;
}

/// Whether `name` matches the glob `pattern` (`*`, `?`, everything else literal).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_redis() {
        for (p, n, m) in [
            ("*", "news:a", true),
            ("news:*", "news:a", true),
            ("news:*", "chat:a", false),
            ("n?ws:*", "news:", true),
            ("*:a", "news:a", true),
            ("*:a", "news:b", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
        ] {
            assert_eq!(glob(p, n), m, "{p} {n}");
        }
    }
}
