//! The scenarios, one module each. Each takes its own `Args`, is bounded in count and time,
//! and prints one `Report`.

pub mod apipublish;
pub mod churn;
pub mod connect;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod lossy;
pub mod recover;
pub mod relay;
pub mod rpc;
pub mod webhooks;

use crate::{pool, report::Report};

/// Measures the server's CPU time over a scenario's measured phase, when its PID is known.
pub struct ServerCpu(Option<(u32, f64)>);

impl ServerCpu {
    pub fn start(pid: Option<u32>) -> Self {
        Self(pid.and_then(|p| pool::cpu_secs(p).map(|c| (p, c))))
    }

    pub fn finish(self, report: &mut Report) {
        if let Some((pid, before)) = self.0
            && let Some(after) = pool::cpu_secs(pid)
        {
            report.set("server_cpu_s", ((after - before) * 100.0).round() / 100.0);
        }
    }
}

/// Adds the failure count and the first failure messages to a report.
pub fn failures(report: &mut Report, failures: u64, errors: &[String]) {
    report.set("failures", failures);
    if !errors.is_empty() {
        report.set("first_errors", errors.to_vec());
    }
}
