//! Browsers of each revision of draft-ietf-webtrans-http3 against /wt. `scripts/wt-draft-check`
//! runs an aioquic client (tests/wt_drafts/wt_client.py) that sends the SETTINGS a browser of that
//! revision sends and, like that browser, refuses a server whose SETTINGS lack what the revision
//! requires (draft02: Chrome and Firefox; draft13: what Safari 26.4+ looks for; draft16: the
//! current draft, with the `webtransport-h3` upgrade token); then it opens a session, one
//! bidirectional stream, and speaks the frame protocol on it. docs/webtransport-drafts.md has the
//! table of settings per draft.
//!
//! The client needs python3 with its venv module (the script installs the pinned aioquic into
//! target/aioquic-venv on first use, from PyPI). Where it cannot be installed the tests are
//! skipped with a note, except in CI (`CI=true`), where that fails them.

use std::process::Command;

use rstest::rstest;
use serde_json::Value;

use crate::helpers::{TestServer, spawn};

/// What `scripts/wt-draft-check` exits with when the client cannot be installed or run here.
const CLIENT_UNAVAILABLE: i32 = 5;

/// `invalid_token`'s close code (PROTOCOL.md, Codes).
const INVALID_TOKEN: u32 = 3501;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Runs the draft client against `server`'s WebTransport address with `args`; returns its exit
/// code, its JSON report and its stderr. `None` when the client is unavailable here (outside CI).
async fn wt_draft_check(server: &TestServer, args: &[&str]) -> Option<(i32, Value, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/wt-draft-check");
    let mut cmd = Command::new("bash");
    cmd.arg(script).args(["--addr", &server.wt.to_string()]).args(args);
    // Blocking wait on its own thread: the server runs on this test's runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap();
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            assert!(!in_ci(), "cannot run {script} in CI: {e}");
            eprintln!("skipped: cannot run {script}: {e}");
            return None;
        }
    };
    let code = output.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if code == CLIENT_UNAVAILABLE {
        assert!(
            !in_ci(),
            "the WebTransport draft client cannot be installed or run in CI:\n{stderr}"
        );
        eprintln!("skipped: the WebTransport draft client is unavailable here:\n{stderr}");
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the client printed no JSON line ({e}): {stdout}\n{stderr}"));
    Some((code, report, stderr))
}

#[rstest]
#[case::draft02("draft02")]
#[case::draft13("draft13")]
#[case::draft16("draft16")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_of_each_draft_accepts_the_server_and_echoes(#[case] profile: &str) {
    let server = spawn(|_| {}).await;
    let token = server.token("alice");
    let Some((code, report, stderr)) =
        wt_draft_check(&server, &["--profile", profile, "--token", &token]).await
    else {
        return;
    };
    // Exit 3: the server's SETTINGS lack what this draft requires (`refused` says what).
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["connected"], true, "{report}");
    assert_eq!(report["first_frame"]["userId"], "alice", "{report}");
    assert_eq!(report["echo_ok"], true, "{report}");
}

/// A refused handshake ends the session with CLOSE_WEBTRANSPORT_SESSION on the CONNECT stream,
/// carrying the close code and its name, after the `error` and `disconnect` frames.
#[rstest]
#[case::draft02("draft02")]
#[case::draft13("draft13")]
#[case::draft16("draft16")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_closes_the_session_with_the_close_capsule(#[case] profile: &str) {
    let server = spawn(|_| {}).await;
    let code = INVALID_TOKEN.to_string();
    let args = ["--profile", profile, "--token", "not-a-jwt", "--expect-close", &code];
    let Some((exit, report, stderr)) = wt_draft_check(&server, &args).await else {
        return;
    };
    // Exit 4: no capsule, or not this code, or no reason.
    assert_eq!(exit, 0, "{report}\n{stderr}");
    assert_eq!(report["close_capsule"]["code"], INVALID_TOKEN, "{report}");
    assert_eq!(report["close_capsule"]["reason"], "invalid_token", "{report}");
    let frames = report["frames"].as_array().unwrap();
    let last = frames.last().unwrap();
    assert_eq!((last["type"].as_str(), last["code"].as_u64()), (Some("disconnect"), Some(3501)));
    // The CONNECT stream ends right after the capsule (draft-16 s6).
    assert_eq!(report["connect_stream_fin"], true, "{report}");
}
