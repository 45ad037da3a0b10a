//! What the binary writes to stdout when it is not a terminal: plain text without colour
//! codes by default, and with `--log-format json` nothing but JSON objects, the banner and
//! the `READY` line included.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// Starts `rtgate serve` with `args`, stdout piped, and returns its lines up to and including
/// the one for which `is_ready` holds. The default (development) JWT secret is left in place
/// so that the server logs its warning about it: at least one log line besides the banner.
fn lines_until_ready(
    args: &[&str],
    is_ready: impl Fn(&str) -> bool + Send + 'static,
) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtgate"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--wt-addr", "127.0.0.1:0"])
        .args(args)
        .env_remove("RTGATE_JWT_SECRET")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("RTGATE_LOG", "info")
        .env(
            "RTGATE_SQLITE_PATH",
            std::env::temp_dir().join(format!("rtgate-logs-{}.sqlite", uuid::Uuid::new_v4())),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = is_ready(&line);
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    lines.expect("the server printed its READY line")
}

#[test]
fn human_logs_to_a_pipe_carry_no_colour_codes() {
    let lines = lines_until_ready(&[], |l| l.starts_with("READY "));
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains("development JWT secret")),
        "{lines:?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
}

#[test]
fn json_logs_are_json_on_every_line() {
    let lines = lines_until_ready(&["--log-format", "json"], |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["fields"]["message"] == "READY")
    });
    assert!(lines.len() >= 3, "banner, the secret warning and READY: {lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
    let ready: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let http = ready["fields"]["http"].as_str().unwrap();
    assert!(http.parse::<std::net::SocketAddr>().is_ok(), "{ready}");
    assert_eq!(ready["fields"]["cert_sha256"].as_str().map(str::len), Some(64), "{ready}");
}
