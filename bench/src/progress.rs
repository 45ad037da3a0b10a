//! A one-line progress display on stderr for long runs, only when stderr is a terminal (so
//! scripts and logs get just the results).

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// A counter a scenario bumps; a background task shows it with the elapsed time and rate.
#[derive(Clone)]
pub struct Progress {
    pub count: Arc<AtomicU64>,
    stop: Arc<tokio::sync::Notify>,
}

impl Progress {
    pub fn start(label: &'static str, total: Option<u64>) -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        if std::io::stderr().is_terminal() {
            let (count2, stop2) = (count.clone(), stop.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop2.notified() => break,
                    }
                    let n = count2.load(Ordering::Relaxed);
                    let el = start.elapsed().as_secs_f64();
                    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                    eprint!("\r{label}: {n}{of}  elapsed {el:.1}s  {:.0}/s   ", n as f64 / el);
                    let _ = std::io::stderr().flush();
                }
                eprintln!();
            });
        }
        Self { count, stop }
    }

    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.stop.notify_one();
    }
}
