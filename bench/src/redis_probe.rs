//! What a Redis spends on the connections a scenario holds: a snapshot of `INFO memory`,
//! `INFO commandstats` and `DBSIZE`, and the per-connection difference between two snapshots.
//! Feeds the capacity model in BENCHMARKS.md (memory per connection, commands per connect,
//! per held connection and minute, per disconnect).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

/// One reading of the Redis the server under test uses.
#[derive(Debug, Clone)]
pub struct Snapshot {
    used_memory: u64,
    keys: u64,
    /// Calls per command name (`evalsha`, `hset`, …), as `INFO commandstats` counts them.
    calls: BTreeMap<String, u64>,
    at: std::time::Instant,
}

pub struct Probe {
    conn: redis::aio::MultiplexedConnection,
}

impl Probe {
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).context("the --redis-info URL")?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self { conn })
    }

    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        let memory: String = redis::cmd("INFO").arg("memory").query_async(&mut self.conn).await?;
        let stats: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut self.conn).await?;
        let keys: u64 = redis::cmd("DBSIZE").query_async(&mut self.conn).await?;
        let used_memory = info_field(&memory, "used_memory")
            .and_then(|v| v.parse().ok())
            .context("INFO memory has no used_memory")?;
        Ok(Snapshot {
            used_memory,
            keys,
            calls: parse_commandstats(&stats),
            at: std::time::Instant::now(),
        })
    }
}

impl Snapshot {
    fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Commands between `self` and a later snapshot, per connection; the INFO and DBSIZE calls
    /// this probe itself made (3 per snapshot) are left out.
    pub fn calls_per_conn(&self, later: &Snapshot, n: u64) -> f64 {
        let own = 3;
        let calls = later.total_calls().saturating_sub(self.total_calls()).saturating_sub(own);
        per(calls, n)
    }

    /// The same, per command name (the ones that moved), for finding what a step costs.
    pub fn calls_by_command(&self, later: &Snapshot, n: u64) -> Value {
        let mut out = Map::new();
        for (name, after) in &later.calls {
            let before = self.calls.get(name).copied().unwrap_or(0);
            let own = match name.as_str() {
                "info" => 2,
                "dbsize" => 1,
                _ => 0,
            };
            let d = after.saturating_sub(before).saturating_sub(own);
            if d > 0 {
                out.insert(name.clone(), json!(round2(per(d, n))));
            }
        }
        Value::Object(out)
    }

    pub fn memory_per_conn(&self, later: &Snapshot, n: u64) -> u64 {
        later.used_memory.saturating_sub(self.used_memory).checked_div(n).unwrap_or(0)
    }

    pub fn keys_per_conn(&self, later: &Snapshot, n: u64) -> f64 {
        round2(per(later.keys.saturating_sub(self.keys), n))
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }

    pub fn secs_until(&self, later: &Snapshot) -> f64 {
        later.at.duration_since(self.at).as_secs_f64()
    }
}

fn per(v: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { v as f64 / n as f64 }
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// `cmdstat_evalsha:calls=12,usec=…` lines into {"evalsha": 12}. Subcommands (Redis 7:
/// `cmdstat_client|setname`) keep their full name.
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commandstats_and_fields() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=30,usec_per_call=2.5,rejected_calls=0,failed_calls=0\r\ncmdstat_client|setname:calls=2,usec=1\r\n";
        let calls = parse_commandstats(info);
        assert_eq!(calls.get("evalsha"), Some(&12));
        assert_eq!(calls.get("client|setname"), Some(&2));
        assert_eq!(
            info_field("# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\n", "used_memory"),
            Some("1024")
        );
    }
}
