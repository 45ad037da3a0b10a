//! Fuzz target: the WebTransport length-prefix splitter (`take_frame`), fed the way
//! `WtReader` feeds it: never more bytes than the current frame still needs, in chunks whose
//! sizes come from the input. Its output is compared with a plain reference parse of the same
//! stream, and the buffer must never hold more than one prefix plus the cap, because that
//! bound is what keeps memory independent of what a client announces.
//!
//! Input layout: `[cap][n][n chunk sizes][stream…]`. The cap is one byte (0–255) so that
//! frames near and over it are easy to reach; chunk sizes cycle, 0 reads as 1, and no sizes
//! means "read all that is wanted".

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rtgate::transport::{
    ReadError,
    webtransport::{LENGTH_PREFIX, take_frame},
};

/// What a correct splitter yields for `stream`, computed without buffering.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Frame(Vec<u8>),
    TooLarge(usize),
    /// The stream ended inside a prefix or a body (the reader reports `Truncated`).
    Truncated,
}

fn reference(mut stream: &[u8], cap: usize) -> Vec<Outcome> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let Some((prefix, rest)) = stream.split_first_chunk::<LENGTH_PREFIX>() else {
            out.push(Outcome::Truncated);
            break;
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > cap {
            out.push(Outcome::TooLarge(len));
            break;
        }
        let Some((body, rest)) = rest.split_at_checked(len) else {
            out.push(Outcome::Truncated);
            break;
        };
        out.push(Outcome::Frame(body.to_vec()));
        stream = rest;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [cap, n, rest @ ..] = data else {
        return;
    };
    let cap = usize::from(*cap);
    let (sizes, stream) = rest.split_at(usize::from(*n).min(rest.len()));

    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut reads = 0;
    loop {
        match take_frame(&mut buf, cap) {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() <= cap,
                    "frame of {} over cap {cap}",
                    frame.len()
                );
                out.push(Outcome::Frame(frame.to_vec()));
                continue;
            }
            Ok(None) => {}
            Err(ReadError::TooLarge { len, max }) => {
                assert!(len > max && max == cap);
                assert_eq!(
                    buf.len(),
                    LENGTH_PREFIX,
                    "buffered past an oversized prefix"
                );
                out.push(Outcome::TooLarge(len));
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        if pos == stream.len() {
            if !buf.is_empty() {
                out.push(Outcome::Truncated);
            }
            break;
        }
        // The reader's rule: finish the prefix, then read at most the rest of this frame.
        let want = match buf.len() {
            n if n < LENGTH_PREFIX => LENGTH_PREFIX - n,
            _ => {
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                LENGTH_PREFIX + len - buf.len()
            }
        };
        let size = match sizes {
            [] => want,
            _ => usize::from(sizes[reads % sizes.len()]).max(1).min(want),
        };
        let size = size.min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + size]);
        pos += size;
        reads += 1;
        assert!(
            buf.len() <= LENGTH_PREFIX + cap,
            "buffer holds {} bytes with cap {cap}",
            buf.len()
        );
    }
    assert_eq!(out, reference(stream, cap));
});
