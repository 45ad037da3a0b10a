//! The value types of `serve` flags that are more than a number, a string or a duration:
//! the enums clap parses by name and the trusted-proxy list with its parser.

use std::net::IpAddr;

use clap::ValueEnum;
use ipnet::IpNet;

/// `--trusted-proxies`: CIDRs (`10.0.0.0/8`) and single addresses (`127.0.0.1`, `::1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// A comma-separated list; empty pieces are skipped, so an empty variable means nobody.
pub(super) fn trusted_proxies(s: &str) -> Result<TrustedProxies, String> {
    let net = |p: &str| {
        p.parse::<IpNet>()
            .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("`{p}` is neither an IP address nor a CIDR"))
    };
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(net)
        .collect::<Result<_, _>>()
        .map(TrustedProxies)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailMode {
    Open,
    Closed,
}

/// Where a trusted proxy names the client of an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
    /// Neither; only a PROXY protocol header (or the TCP peer) names the client.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}
