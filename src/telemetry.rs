//! The tracing subscriber, built once at start-up. Session fields (`socket_id`, `user_id`,
//! `device_id`, `transport`, `remote`) live on the session span, so every line inside a session
//! carries them without repeating them at call sites. `metrics` owns the Prometheus series.
//!
//! Every line goes to stdout. Human lines are coloured only when stdout is a terminal (a file
//! or a pipe gets plain text); with `--log-format json` every stdout line is one JSON object,
//! the start-up banner and the `READY` line included (`server::serve` logs them as events).

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), which
/// lets tests call it from every test.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Human => registry
            .with(fmt::layer().with_target(false).with_ansi(std::io::stdout().is_terminal()))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(false))
            .try_init(),
    };
}
