//! `rtgate client`: a line-oriented protocol client for a terminal, so a first session needs no
//! other tool. It connects over WebSocket, sends `connect` with the given (or a freshly minted)
//! token, then writes every server frame to stdout as one line and sends every stdin line as
//! one frame. It answers the server's `ping` itself, which a hand-typed session cannot do in
//! time, and sends `disconnect` when stdin ends.

use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

/// What `rtgate client` connects to and as whom.
pub struct ClientArgs {
    pub url: String,
    pub token: String,
    pub device: Option<String>,
    /// Print the server's pings (they are answered either way).
    pub show_pings: bool,
}

fn connect_frame(token: &str, device: Option<&str>) -> String {
    let mut frame = serde_json::json!({"type": "connect", "v": crate::protocol::PROTOCOL_VERSION, "token": token});
    if let Some(device) = device {
        frame["device"] = device.into();
    }
    frame.to_string()
}

/// Runs the session until the server closes it or stdin ends. Returns the close code the
/// server sent, if any.
pub async fn run(args: ClientArgs) -> anyhow::Result<Option<u16>> {
    let (ws, _) =
        tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(&args.url))
            .await
            .with_context(|| format!("connecting to {}: timed out", args.url))?
            .with_context(|| format!("connecting to {}", args.url))?;
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(connect_frame(&args.token, args.device.as_deref()))).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let is_ping = text.as_str() == r#"{"type":"ping"}"#;
                    if is_ping {
                        tx.send(Message::text(r#"{"type":"pong"}"#)).await?;
                    }
                    if !is_ping || args.show_pings {
                        stdout.write_all(text.as_bytes()).await?;
                        stdout.write_all(b"\n").await?;
                        stdout.flush().await?;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(frame.map(|CloseFrame { code, .. }| code.into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading from the server"),
                None => return Ok(None),
            },
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => tx.send(Message::text(line)).await?,
                None => {
                    // Leave politely; the server answers with the close.
                    stdin_open = false;
                    tx.send(Message::text(r#"{"type":"disconnect"}"#)).await?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_frame_is_a_valid_connect() {
        let frame = connect_frame("t", Some("laptop"));
        match crate::protocol::decode_client_frame(frame.as_bytes()) {
            Ok(crate::protocol::ClientFrame::Connect(c)) => {
                assert_eq!((c.token.as_deref(), c.device.as_deref()), (Some("t"), Some("laptop")));
            }
            other => panic!("{frame}: {other:?}"),
        }
    }
}
