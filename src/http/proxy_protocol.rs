//! The PROXY protocol header (v1 text or v2 binary) a trusted load balancer puts before the
//! bytes of each TCP connection, naming the client it accepted. This module frames the header
//! off the stream, reading exactly its bytes and none of the request behind it; `ppp` (a
//! small, fuzzed parser of the HAProxy specification) validates it and extracts the addresses.
//! `front` calls it only for peers in `--trusted-proxies`, with `--proxy-protocol` on, under
//! the header timeout.

use std::net::SocketAddr;

use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2: signature, version/command, family/protocol, then a big-endian u16 length.
const V2_FIXED: usize = 16;
/// The longest v1 header the specification allows, CRLF included.
const V1_MAX: usize = 107;
/// Both versions can be told apart from their first 8 bytes; v1's shortest header is 15.
const SNIFF: usize = 8;

#[derive(Debug, thiserror::Error)]
pub(super) enum ProxyHeaderError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Reads one PROXY header and returns the client it names: `None` when it names none (v2
/// `LOCAL`, v1 `UNKNOWN`, unspecified or UNIX addresses), which is the proxy's own connection,
/// such as a health check.
pub(super) async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; SNIFF];
    stream.read_exact(&mut buf).await?;
    if buf[..] == V2_SIGNATURE[..SNIFF] {
        buf.resize(V2_FIXED, 0);
        stream.read_exact(&mut buf[SNIFF..]).await?;
        let len = usize::from(u16::from_be_bytes([buf[V2_FIXED - 2], buf[V2_FIXED - 1]]));
        buf.resize(V2_FIXED + len, 0);
        stream.read_exact(&mut buf[V2_FIXED..]).await?;
        v2_source(&buf)
    } else if buf.starts_with(b"PROXY ") {
        // No length field, and reading past the CRLF would eat the request: a byte at a time,
        // for at most 107 bytes. v2 is the cheaper one to configure.
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n") {
            if buf.len() == V1_MAX {
                return Err(ProxyHeaderError::Malformed("v1 header longer than 107 bytes".into()));
            }
            stream.read_exact(&mut byte).await?;
            buf.push(byte[0]);
        }
        v1_source(&buf)
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

fn v2_source(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header =
        v2::Header::try_from(bytes).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    if header.command == v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    })
}

fn v1_source(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header =
        v1::Header::try_from(bytes).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a header off `input`; returns the result and the bytes left for HTTP.
    async fn read(input: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut stream = input;
        let result = read_header(&mut stream).await;
        (result, stream.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x20 | command, family]);
        h.extend((addresses.len() as u16).to_be_bytes());
        h.extend(addresses);
        h
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[tokio::test]
    async fn v2_proxy_names_the_source_and_leaves_the_request() {
        let addrs = [203, 0, 113, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x0b, 0xb8];
        let mut input = v2(1, 0x11, &addrs);
        // A TLV after the addresses (here a 3-byte NOOP) is skipped with the header.
        let tlv = [4u8, 0, 0];
        input[15] += tlv.len() as u8;
        input.extend(tlv);
        input.extend(GET);
        let (result, rest) = read(&input).await;
        assert_eq!(result.unwrap(), Some("203.0.113.7:40000".parse().unwrap()));
        assert_eq!(rest, GET);
    }

    #[tokio::test]
    async fn v2_local_and_unspecified_name_nobody() {
        assert_eq!(read(&v2(0, 0x00, &[])).await.0.unwrap(), None);
        assert_eq!(read(&v2(1, 0x00, &[])).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn v1_names_the_source_and_leaves_the_request() {
        for (line, source) in [
            ("PROXY TCP4 203.0.113.7 10.0.0.1 40000 3000\r\n", Some("203.0.113.7:40000")),
            ("PROXY TCP6 2001:db8::7 ::1 40000 3000\r\n", Some("[2001:db8::7]:40000")),
            ("PROXY UNKNOWN\r\n", None),
        ] {
            let mut input = line.as_bytes().to_vec();
            input.extend(GET);
            let (result, rest) = read(&input).await;
            assert_eq!(result.unwrap(), source.map(|s| s.parse().unwrap()), "{line}");
            assert_eq!(rest, GET, "{line}");
        }
    }

    #[tokio::test]
    async fn malformed_missing_and_truncated_headers_are_errors() {
        let v4 = [203, 0, 113, 7, 10, 0, 0, 1, 0, 1, 0, 2];
        for (input, what) in [
            (GET.to_vec(), "plain HTTP"),
            (v2(7, 0x11, &v4), "unknown command"),
            (v2(1, 0x11, &v4[..4]), "addresses shorter than the family needs"),
            (v2(1, 0x11, &v4)[..20].to_vec(), "truncated v2"),
            (b"PROXY TCP4 300.0.0.1 10.0.0.1 1 2\r\n".to_vec(), "bad v1 address"),
            (b"PROXY TCP4 203.0.113.7".to_vec(), "v1 without CRLF"),
            ([b"PROXY ".as_slice(), &[b'x'; 200]].concat(), "v1 too long"),
        ] {
            assert!(read(&input).await.0.is_err(), "{what}");
        }
    }
}
