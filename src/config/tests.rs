//! `Config`: flags, defaults and `check`.

use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let argv = std::iter::once("rtgate").chain(args.iter().copied());
    DefaultsOnly::try_parse_from(argv).map(|d| d.config)
}

#[test]
fn trusted_proxies_take_addresses_and_cidrs() {
    let c = parse(&["--trusted-proxies", "10.0.0.0/8, 127.0.0.1,::1"]).unwrap();
    let nets: Vec<String> = c.trusted_proxies.0.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
    assert!(parse(&["--trusted-proxies", "lb.internal"]).is_err());
    assert!(parse(&["--trusted-proxies", "10.0.0.0/33"]).is_err());
}

#[test]
fn proxy_settings_default_to_trusting_nobody() {
    let c = parse(&[]).unwrap();
    assert!(c.trusted_proxies.0.is_empty() && !c.proxy_protocol);
    assert_eq!(parse(&["--trusted-proxies", ""]).unwrap().trusted_proxies.0, []);
    assert_eq!(c.forwarded_header, ForwardedHeader::XForwardedFor);
    assert_eq!(c.http_header_timeout, Duration::from_secs(10));
}

#[test]
fn channel_settings_have_defaults_and_bound_the_namespaces() {
    let c = parse(&[]).unwrap();
    assert_eq!((c.max_subscriptions, c.max_presence_list, c.max_history_size), (128, 1000, 1000));
    assert_eq!(c.history_meta_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(c.namespaces, Namespaces::builtin());
    c.check().unwrap();
    // The built-ins keep 100 publications for 5 minutes.
    let err = parse(&["--max-history-size", "99"]).unwrap().check().unwrap_err();
    assert!(matches!(err, ConfigError::Namespace(NamespaceError::HistoryTooLarge { .. })), "{err}");
    let err = parse(&["--history-meta-ttl", "5m"]).unwrap().check().unwrap_err();
    assert!(
        matches!(err, ConfigError::Namespace(NamespaceError::HistoryOutlivesMeta { .. })),
        "{err}"
    );
    parse(&["--max-history-size", "100", "--history-meta-ttl", "6m"]).unwrap().check().unwrap();
}

#[test]
fn a_tls_cert_needs_its_key_and_the_other_way_round() {
    for args in [&["--tls-cert", "c.pem"][..], &["--tls-key", "k.pem"]] {
        assert_eq!(parse(args).unwrap().check(), Err(ConfigError::TlsPair), "{args:?}");
    }
    parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap().check().unwrap();
}

#[test]
fn redis_tls_files_need_a_tls_redis_and_a_client_cert_its_key() {
    let tls = |url: &str, extra: &[&str]| {
        let mut args = vec!["--redis-url", url, "--allow-local-database"];
        args.extend_from_slice(extra);
        parse(&args).unwrap().check()
    };
    for url in ["rediss://r:6379", "rediss+cluster://r1:6379,r2:6379"] {
        tls(url, &["--redis-tls-ca", "ca.pem"]).unwrap();
        tls(url, &["--redis-tls-cert", "c.pem", "--redis-tls-key", "k.pem"]).unwrap();
        tls(url, &[]).unwrap();
        let err = tls(url, &["--redis-tls-cert", "c.pem"]).unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
    }
    // Set for a plain Redis they would be silently unused: refused instead.
    for url in ["redis://r:6379", "redis+cluster://r1:6379"] {
        let err = tls(url, &["--redis-tls-ca", "ca.pem"]).unwrap_err();
        assert!(
            matches!(err, ConfigError::RedisTls(_)) && err.to_string().contains("rediss://"),
            "{err}"
        );
    }
    let err = parse(&["--redis-tls-ca", "ca.pem"]).unwrap().check().unwrap_err();
    assert!(matches!(err, ConfigError::RedisTls(_)), "{err}");
}
