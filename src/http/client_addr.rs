//! Who the client of an HTTP request is. The TCP peer, unless that peer is a configured
//! trusted proxy: then the address it reports (in a PROXY protocol header, read by
//! `front`, or in the one forwarded header `--forwarded-header` names). Whatever counts or
//! records a client's address — the per-IP connect rate, a session's `PeerInfo::remote`,
//! history's `ip_address` — takes it from here, through the `ClientAddr` request extension.
//!
//! A chain of hops is walked from the right (the hop nearest to us) and each trusted hop's word
//! is taken for the one before it; the first untrusted address is the client. A hop that is not
//! an address (`unknown`, an obfuscated name, garbage) ends the walk at the trusted proxy that
//! passed it on, so a malformed header never names anyone the proxies did not vouch for.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, StatusCode, header::FORWARDED, request::Parts},
};
use ipnet::IpNet;

use crate::config::{Config, ForwardedHeader};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Which peers are believed when they name the client, and how they name it.
#[derive(Debug, Clone)]
pub struct Proxies {
    trusted: Vec<IpNet>,
    proxy_protocol: bool,
    header: ForwardedHeader,
}

impl Proxies {
    pub fn from_config(config: &Config) -> Self {
        Proxies {
            trusted: config.trusted_proxies.0.clone(),
            proxy_protocol: config.proxy_protocol,
            header: config.forwarded_header,
        }
    }

    /// Trusts nobody: every client is its TCP peer.
    pub fn none() -> Self {
        Proxies { trusted: Vec::new(), proxy_protocol: false, header: ForwardedHeader::None }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Whether a connection from `peer` must start with a PROXY protocol header.
    pub fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.trusts(peer)
    }

    /// The client of one request on the connection `conn`.
    pub fn resolve(&self, conn: &ConnAddr, headers: &HeaderMap) -> ClientAddr {
        let mut client = conn.addr;
        if self.trusts(client.ip()) {
            client = self.walk(client, self.hops(headers).into_iter().rev());
        }
        ClientAddr { addr: client, counted: conn.counted }
    }

    /// The chain in the configured header, leftmost (farthest) first; `None` for a hop that is
    /// not an address. Several lines of the header are one list, in order.
    fn hops(&self, headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
        let name = match self.header {
            ForwardedHeader::None => return Vec::new(),
            ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => FORWARDED.as_str(),
        };
        let mut hops = Vec::new();
        for value in headers.get_all(name) {
            let Ok(list) = value.to_str() else {
                hops.push(None);
                continue;
            };
            match self.header {
                ForwardedHeader::Forwarded => {
                    hops.extend(split_unquoted(list, ',').into_iter().map(forwarded_for))
                }
                _ => hops.extend(list.split(',').map(parse_hop)),
            }
        }
        hops
    }

    /// From `nearest` leftwards while the current hop is trusted; a `None` hop ends the walk.
    fn walk(
        &self,
        nearest: SocketAddr,
        hops: impl Iterator<Item = Option<SocketAddr>>,
    ) -> SocketAddr {
        let mut client = nearest;
        for hop in hops {
            if !self.trusts(client.ip()) {
                break;
            }
            match hop {
                Some(addr) => client = addr,
                None => break,
            }
        }
        client
    }
}

/// What a connection says about its client, fixed when it is accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnAddr {
    /// The TCP peer, or the source of its PROXY header when a trusted peer sent one.
    pub addr: SocketAddr,
    /// Whether `addr` was counted against the per-IP connect rate at accept. It is not when
    /// `addr` is a trusted proxy: the client behind it is known only per request.
    pub counted: bool,
}

/// The client of one HTTP request, as handlers see it (a request extension set by `front`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// Port 0 when a forwarded header named no port.
    pub addr: SocketAddr,
    /// True when this connection was counted against the per-IP connect rate when it was
    /// accepted; anything that counts per new connection (the `/ws` upgrade) counts only
    /// otherwise, so no connection is counted twice.
    pub counted: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only a router served without the front door lacks it: a bug, not the client's fault.
        parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "client address unknown"))
    }
}

/// One hop of a forwarded chain: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:4711`. `None` for anything else (`unknown`, `_hidden`, garbage).
fn parse_hop(hop: &str) -> Option<SocketAddr> {
    let hop = hop.trim();
    let addr = if let Ok(ip) = hop.parse::<IpAddr>() {
        SocketAddr::new(ip, 0)
    } else if let Ok(addr) = hop.parse::<SocketAddr>() {
        addr
    } else {
        let ip = hop.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok()?;
        SocketAddr::new(ip, 0)
    };
    Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
/// `None` when it has none or it is not an address.
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_hop(&unquote(value.trim())?)
    })
}

/// Splits on `sep` outside RFC 7230 quoted strings. An unterminated quote yields one last
/// piece that fails to parse as anything downstream.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                pieces.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push(&s[start..]);
    pieces
}

/// A token as is, or a quoted string without its quotes and escapes.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies(header: ForwardedHeader, trusted: &[&str]) -> Proxies {
        Proxies {
            trusted: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            proxy_protocol: false,
            header,
        }
    }

    fn resolve(p: &Proxies, peer: &str, headers: &[(&str, &str)]) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let conn = ConnAddr { addr: peer.parse().unwrap(), counted: false };
        p.resolve(&conn, &map).addr.to_string()
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;
    const LB: &str = "10.0.0.1:5000";

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(XFF, &["10.0.0.0/8"]);
        assert_eq!(
            resolve(&p, "192.0.2.9:1", &[("x-forwarded-for", "203.0.113.7")]),
            "192.0.2.9:1"
        );
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right_skipping_trusted_hops() {
        let p = proxies(XFF, &["10.0.0.0/8"]);
        let h = [("x-forwarded-for", "198.51.100.1, 203.0.113.7 , 10.9.9.9")];
        assert_eq!(resolve(&p, LB, &h), "203.0.113.7:0", "the spoofable left part is ignored");
        // Several header lines are one list, in order.
        let h = [("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "10.2.2.2")];
        assert_eq!(resolve(&p, LB, &h), "198.51.100.1:0");
        // Every hop trusted: the leftmost is all we know.
        assert_eq!(resolve(&p, LB, &[("x-forwarded-for", "10.1.1.1")]), "10.1.1.1:0");
        // No header: the proxy itself.
        assert_eq!(resolve(&p, LB, &[]), LB);
    }

    #[test]
    fn x_forwarded_for_accepts_ports_brackets_and_mapped_addresses() {
        let p = proxies(XFF, &["10.0.0.0/8"]);
        for (value, client) in [
            ("203.0.113.7:4711", "203.0.113.7:4711"),
            ("2001:db8::1", "[2001:db8::1]:0"),
            ("[2001:db8::1]", "[2001:db8::1]:0"),
            ("[2001:db8::1]:4711", "[2001:db8::1]:4711"),
            ("::ffff:203.0.113.7", "203.0.113.7:0"),
        ] {
            assert_eq!(resolve(&p, LB, &[("x-forwarded-for", value)]), client, "{value}");
        }
    }

    #[test]
    fn a_malformed_hop_stops_at_the_proxy_that_passed_it() {
        let p = proxies(XFF, &["10.0.0.0/8"]);
        for value in ["unknown", "203.0.113.7, not-an-ip", "", "203.0.113.7,,"] {
            assert_eq!(resolve(&p, LB, &[("x-forwarded-for", value)]), LB, "{value:?}");
        }
        // Behind a second trusted hop, that hop is the answer.
        let h = [("x-forwarded-for", "garbage, 10.3.3.3")];
        assert_eq!(resolve(&p, LB, &h), "10.3.3.3:0");
    }

    #[test]
    fn forwarded_for_values_quoted_ported_and_obfuscated() {
        let p = proxies(FWD, &["10.0.0.0/8"]);
        for (value, client) in [
            ("for=203.0.113.7", "203.0.113.7:0"),
            ("For=\"[2001:db8:cafe::17]:4711\"", "[2001:db8:cafe::17]:4711"),
            ("for=198.51.100.1;proto=https;by=10.0.0.1, for=203.0.113.7", "203.0.113.7:0"),
            ("proto=https;for=\"203.0.113.7\", for=10.5.5.5", "203.0.113.7:0"),
            ("for=\"_hidden\"", LB),
            ("for=unknown", LB),
            ("proto=https", LB),
            ("for=\"203.0.113.7", LB),
            ("for=\"a,b\", for=203.0.113.7", "203.0.113.7:0"),
        ] {
            assert_eq!(resolve(&p, LB, &[("forwarded", value)]), client, "{value}");
        }
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let both = [("x-forwarded-for", "203.0.113.1"), ("forwarded", "for=203.0.113.2")];
        assert_eq!(resolve(&proxies(XFF, &["10.0.0.0/8"]), LB, &both), "203.0.113.1:0");
        assert_eq!(resolve(&proxies(FWD, &["10.0.0.0/8"]), LB, &both), "203.0.113.2:0");
        let none = proxies(ForwardedHeader::None, &["10.0.0.0/8"]);
        assert_eq!(resolve(&none, LB, &both), LB);
    }

    #[test]
    fn mapped_peers_match_ipv4_networks() {
        let p = proxies(XFF, &["10.0.0.0/8"]);
        assert!(p.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.trusts("::ffff:11.1.2.3".parse().unwrap()));
        assert!(!Proxies::none().trusts("127.0.0.1".parse().unwrap()));
    }
}
