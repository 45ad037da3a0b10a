use super::*;

fn table(text: &str) -> toml::Table {
    toml::from_str(text).expect("test TOML parses")
}

fn parse(text: &str) -> Result<Namespaces, NamespaceError> {
    Namespaces::from_table(&table(text))
}

const MIN5: Duration = Duration::from_secs(300);

#[test]
fn builtins_are_public_and_notify() {
    let ns = Namespaces::builtin();
    let names: Vec<&str> = ns.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["notify", "public"]);
    let public = ns.get("public").unwrap();
    assert_eq!(
        **public,
        NamespaceConfig {
            name: "public".into(),
            subscribe: SubscribeMode::Public,
            client_publish: false,
            publisher_info: false,
            presence: true,
            join_leave: true,
            history_size: 100,
            history_ttl: MIN5,
            history_durable: false,
            recover: true,
            volatile: false,
            subscribe_proxy_url: None,
            publish_proxy: false,
            publish_proxy_url: None,
        }
    );
    let notify = ns.get("notify").unwrap();
    assert_eq!(
        **notify,
        NamespaceConfig {
            subscribe: SubscribeMode::User,
            history_size: 100,
            recover: true,
            ..NamespaceConfig::new("notify")
        }
    );
    assert!(notify.has_history() && !notify.presence && !notify.client_publish);
    assert_eq!(Namespaces::default(), ns);
    assert!(ns.get("default").is_none());
    // Built without validation, so held to the rules here.
    let again = Namespaces::new(ns.iter().map(|n| (**n).clone())).unwrap();
    assert_eq!(again, ns);
    again.check_limits(1000, Duration::from_secs(30 * 86_400)).unwrap();
}

#[test]
fn a_table_fills_in_defaults_and_replaces_the_builtins() {
    let ns = parse(
        r#"
        [news]
        history_size = 10
        history_ttl = "1h"
        recover = true
        [chat]
        subscribe = "token"
        client_publish = true
        publisher_info = true
        [live-feed_2]
        volatile = true
        subscribe = "claim"
        "#,
    )
    .unwrap();
    let names: Vec<&str> = ns.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["chat", "live-feed_2", "news"]);
    assert_eq!(
        **ns.get("news").unwrap(),
        NamespaceConfig {
            history_size: 10,
            history_ttl: Duration::from_secs(3600),
            recover: true,
            ..NamespaceConfig::new("news")
        }
    );
    assert_eq!(
        **ns.get("chat").unwrap(),
        NamespaceConfig {
            subscribe: SubscribeMode::Token,
            client_publish: true,
            publisher_info: true,
            ..NamespaceConfig::new("chat")
        }
    );
    let live = ns.get("live-feed_2").unwrap();
    assert!(live.volatile && !live.has_history() && live.subscribe == SubscribeMode::Claim);
    assert!(ns.get("public").is_none(), "a [namespaces] table replaces the built-ins");

    let defaults = parse("[default]").unwrap();
    assert_eq!(**defaults.get("default").unwrap(), NamespaceConfig::new("default"));
    assert_eq!(parse("").unwrap().iter().count(), 0);
}

#[test]
fn names_are_1_to_64_of_letters_digits_dash_underscore() {
    let long = "a".repeat(64);
    assert!(parse(&format!("[{long}]")).is_ok());
    for bad in
        [String::new(), "a".repeat(65), "a.b".into(), "news:x".into(), "é".into(), " a".into()]
    {
        let err = parse(&format!("[{bad:?}]")).unwrap_err();
        assert_eq!(err, NamespaceError::Name(bad.clone()), "{bad:?}");
    }
    let err = Namespaces::new([NamespaceConfig::new("x"), NamespaceConfig::new("x")]).unwrap_err();
    assert_eq!(err, NamespaceError::Duplicate("x".into()));
}

/// Every rule refuses with the namespace and the option at fault, and says why.
#[test]
fn contradictions_are_refused_naming_the_option() {
    let cases = [
        ("join_leave = true", "join_leave", "needs presence"),
        ("recover = true", "recover", "needs history"),
        ("recover = true\nhistory_size = 0", "recover", "needs history"),
        ("volatile = true\nhistory_size = 5", "volatile", "excludes history"),
        ("volatile = true\nrecover = true", "volatile", "excludes recover"),
        ("history_durable = true", "history_durable", "needs history"),
        ("history_size = 5\nhistory_ttl = \"0s\"", "history_ttl", "longer than 0"),
        ("publish_proxy = true", "publish_proxy", "needs client_publish"),
        ("subscribe_proxy_url = \"ftp://backend\"", "subscribe_proxy_url", "must be an http"),
    ];
    for (options, option, why) in cases {
        let err = parse(&format!("[doc]\n{options}")).unwrap_err();
        assert_eq!((err.namespace(), err.option()), ("doc", Some(option)), "{options}: {err}");
        let msg = err.to_string();
        assert!(msg.starts_with("namespace \"doc\": ") && msg.contains(why), "{options}: {msg}");
    }
    // The same options are fine once the rule is met.
    parse("[doc]\njoin_leave = true\npresence = true").unwrap();
    parse("[doc]\nrecover = true\nhistory_size = 1").unwrap();
    assert!(
        parse("[doc]\nhistory_durable = true\nhistory_size = 1")
            .unwrap()
            .get("doc")
            .unwrap()
            .history_durable
    );
    parse("[doc]\nhistory_ttl = \"0s\"").unwrap();
}

#[test]
fn bad_options_and_values_are_refused() {
    let cases = [
        (
            "histroy_size = 5",
            "histroy_size",
            "unknown option \"histroy_size\" (did you mean \"history_size\"?)",
        ),
        ("colour = \"red\"", "colour", "unknown option \"colour\""),
        ("presence = \"yes\"", "presence", "presence must be true or false, not string"),
        ("history_size = \"10\"", "history_size", "history_size must be an integer, not string"),
        ("history_size = -1", "history_size", "-1 is not 0 or more"),
        (
            "history_ttl = 300",
            "history_ttl",
            "history_ttl must be a duration such as \"5m\", not integer",
        ),
        ("history_ttl = \"5 parsecs\"", "history_ttl", "\"5 parsecs\" is not a duration"),
        ("subscribe = \"everyone\"", "subscribe", "unknown variant `everyone`, expected one of"),
        ("subscribe = true", "subscribe", "subscribe must be a string, not boolean"),
    ];
    for (options, option, want) in cases {
        let err = parse(&format!("[doc]\n{options}")).unwrap_err();
        assert_eq!(err.option(), Some(option), "{options}: {err}");
        assert!(err.to_string().contains(want), "{options}: {err}");
    }
    let err = parse("doc = 5").unwrap_err();
    assert_eq!((err.namespace(), err.option()), ("doc", None));
    assert_eq!(err.to_string(), "namespace \"doc\" must be a table of options");
}

#[test]
fn limits_from_other_settings() {
    let ns = parse("[news]\nhistory_size = 100\nhistory_ttl = \"1h\"").unwrap();
    let day = Duration::from_secs(86_400);
    ns.check_limits(100, day).unwrap();
    let err = ns.check_limits(99, day).unwrap_err();
    assert_eq!(
        err,
        NamespaceError::HistoryTooLarge { namespace: "news".into(), size: 100, max: 99 }
    );
    assert_eq!(err.option(), Some("history_size"));
    let err = ns.check_limits(100, Duration::from_secs(3600)).unwrap_err();
    assert_eq!(err.option(), Some("history_ttl"));
    assert!(err.to_string().contains("shorter than --history-meta-ttl 1h"), "{err}");
    // Without history, neither limit applies.
    parse("[plain]\nhistory_ttl = \"100days\"").unwrap().check_limits(0, day).unwrap();
}
