//! What a scenario prints: one JSON line on stdout (for scripts) and the same numbers as a
//! human table on stderr. Also the latency histogram and the server RSS probe they use.

use std::{io::Write, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// An ordered set of named results; printed as JSON and as a table.
pub struct Report {
    fields: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &str, target: &str, transport: crate::client::Transport) -> Self {
        let mut fields = Map::new();
        fields.insert("scenario".into(), json!(scenario));
        fields.insert("target".into(), json!(target));
        fields.insert("protocol".into(), json!(crate::frames::protocol()));
        fields.insert("transport".into(), json!(transport));
        Self { fields }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// `p50_us`, `p99_us`, `p999_us`, `max_us`, `mean_us` and the sample count.
    pub fn latency(&mut self, prefix: &str, h: &Latency) -> &mut Self {
        let h = &h.0;
        let key = |s: &str| if prefix.is_empty() { s.to_owned() } else { format!("{prefix}_{s}") };
        if h.is_empty() {
            self.set(&key("samples"), 0);
            return self;
        }
        self.set(&key("samples"), h.len());
        self.set(&key("p50_us"), h.value_at_quantile(0.5));
        self.set(&key("p99_us"), h.value_at_quantile(0.99));
        self.set(&key("p999_us"), h.value_at_quantile(0.999));
        self.set(&key("max_us"), h.max());
        self.set(&key("mean_us"), (h.mean() * 10.0).round() / 10.0);
        self
    }

    pub fn print(&self) {
        let line = Value::Object(self.fields.clone()).to_string();
        println!("{line}");
        let _ = std::io::stdout().flush();
        let width = self.fields.keys().map(String::len).max().unwrap_or(0);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", "-".repeat(width + 24));
        for (k, v) in &self.fields {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(err, "{k:<width$}  {v}");
        }
        let _ = writeln!(err, "{}", "-".repeat(width + 24));
    }
}

/// Latencies in microseconds, 1 µs to 60 s at 3 significant digits.
pub struct Latency(pub Histogram<u64>);

impl Latency {
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
        }))
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros() as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// Resident set size of a process in bytes, from `/proc/PID/status` (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Rounds a rate for the report.
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 { 0.0 } else { (count as f64 / s * 10.0).round() / 10.0 }
}
