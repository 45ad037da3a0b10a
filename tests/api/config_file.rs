//! `--config`: the TOML file sits under flags and environment variables and over the built-in
//! defaults; every refusal names the file, the line and the reason; namespaces come from it;
//! the real binary refuses a bad file before it listens.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rtgate::config::{
    Config, FileError, LoadError, LogFormat, NamespaceConfig, Namespaces, SubscribeMode,
};
use serde_json::json;

use crate::helpers::{Client, Kind, SECRET};

/// A file in its own temporary directory, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("rtgate-conf-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load_with(file: &TempFile, args: &[&str]) -> Result<Config, LoadError> {
    Config::load(["rtgate", "--config", file.path()].into_iter().chain(args.iter().copied()))
}

fn load(text: &str) -> Result<Config, LoadError> {
    load_with(&TempFile::new("rtgate.toml", text), &[])
}

/// The error a file must be refused with.
fn refused(text: &str) -> FileError {
    match load(text) {
        Err(LoadError::File(e)) => e,
        Err(other) => panic!("refused, but not as a file error: {other}\n---\n{text}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn every_kind_of_setting_can_live_in_the_file() {
    let c = load(
        r#"
        http_addr = "127.0.0.1:4000"
        ping_interval = "7s"
        max_connections = 5000
        connect_rate_per_ip = 7
        dev_events = true
        message_events = ["message:send", "x"]
        log_format = "json"
        redis_prefix = "other:"
        trusted_proxies = "10.0.0.0/8"
        sqlite_path = "/tmp/somewhere.sqlite"
        jwt_secret = "from-the-file"
        jwt_leeway = "2s"
        jwt_issuer = "issuer"
        max_subscriptions = 7
        max_presence_list = 8
        max_history_size = 500
        history_meta_ttl = "1day"
        "#,
    )
    .unwrap();
    assert_eq!(c.http_addr, "127.0.0.1:4000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.ping_interval, Duration::from_secs(7));
    assert_eq!((c.max_connections, c.connect_rate_per_ip), (5000, 7));
    assert!(c.dev_events);
    assert_eq!(c.message_events, ["message:send", "x"]);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.redis_prefix, "other:");
    assert_eq!(c.trusted_proxies.0.len(), 1);
    assert_eq!(c.sqlite_path, Path::new("/tmp/somewhere.sqlite"));
    assert_eq!(c.jwt.secret, "from-the-file");
    assert_eq!(c.jwt.leeway, Duration::from_secs(2));
    assert_eq!(c.jwt.issuer.as_deref(), Some("issuer"));
    assert_eq!((c.max_subscriptions, c.max_presence_list, c.max_history_size), (7, 8, 500));
    assert_eq!(c.history_meta_ttl, Duration::from_secs(86_400));
    // What the file leaves out keeps its built-in default.
    assert_eq!(c.pong_timeout, Duration::from_secs(20));
    assert!(!c.ws_echo);
    assert!(c.config.is_some());
}

/// Flag > file > default, in process; the environment's place is tested through the binary
/// below, since a test cannot set this process's environment safely.
#[test]
fn a_flag_overrides_the_file_and_the_file_overrides_the_default() {
    let with = TempFile::new("with.toml", "ping_interval = \"43s\"\ndev_events = true\n");
    let without = TempFile::new("without.toml", "max_connections = 1\n");
    let secs =
        |file: &TempFile, args: &[&str]| load_with(file, args).unwrap().ping_interval.as_secs();
    assert_eq!(secs(&with, &["--ping-interval", "41s"]), 41);
    assert_eq!(secs(&with, &[]), 43);
    assert_eq!(secs(&without, &["--ping-interval", "41s"]), 41);
    assert_eq!(secs(&without, &[]), 25);
    assert!(load_with(&with, &[]).unwrap().dev_events);
    // A list on the command line replaces the file's, it does not add to it.
    let list = TempFile::new("list.toml", "message_events = [\"a\", \"b\"]\n");
    assert_eq!(load_with(&list, &["--message-events", "c"]).unwrap().message_events, ["c"]);
}

#[test]
fn namespaces_come_from_the_file_with_defaults_filled_in() {
    let c = load(
        r#"
        [namespaces.news]
        history_size = 10
        recover = true
        [namespaces.dm]
        subscribe = "user"
        "#,
    )
    .unwrap();
    let names: Vec<&str> = c.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["dm", "news"]);
    assert_eq!(
        **c.namespaces.get("news").unwrap(),
        NamespaceConfig { history_size: 10, recover: true, ..NamespaceConfig::new("news") }
    );
    assert_eq!(c.namespaces.get("dm").unwrap().subscribe, SubscribeMode::User);

    // No table, no file: the built-ins. An empty table: no namespace at all.
    assert_eq!(load("ping_interval = \"25s\"").unwrap().namespaces, Namespaces::builtin());
    assert_eq!(Config::load(["rtgate"]).unwrap().namespaces, Namespaces::builtin());
    assert_eq!(load("[namespaces]").unwrap().namespaces.iter().count(), 0);
}

#[test]
fn the_example_file_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rtgate.toml");
    let c = Config::load(["rtgate", "--config", example.to_str().unwrap()]).unwrap();
    let ns = |name: &str| c.namespaces.get(name).unwrap_or_else(|| panic!("no {name}")).clone();
    let names: Vec<&str> = c.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["chat", "doc", "news", "notify"]);
    let news = ns("news");
    assert!(news.subscribe == SubscribeMode::Public && news.recover && news.history_size == 50);
    let doc = ns("doc");
    assert!(doc.presence && doc.join_leave && !doc.has_history());
    assert_eq!(ns("notify").subscribe, SubscribeMode::User);
    assert!(ns("notify").history_durable && !news.history_durable);
    assert_eq!(ns("chat").subscribe, SubscribeMode::Token);
    assert_eq!(c.max_connections, 50_000);
    assert_eq!(c.message_events, ["message:send", "reaction:add"]);
}

/// Each class of mistake, with the line (and column) it is reported at.
#[test]
fn mistakes_are_refused_with_their_line() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, usize, &str)] = &[
        // TOML syntax.
        ("ping_interval = \"25s\"\nmax_connections = \n", 2, 19, ""),
        ("a = 1\n[namespaces.news\nrecover = true\n", 2, 17, ""),
        ("ping_interval = \"25s\"\nping_interval = \"30s\"\n", 2, 1, "duplicate key"),
        // Unknown keys, top level and in a namespace.
        ("\n\nping_intreval = \"25s\"\n", 3, 1, "unknown key \"ping_intreval\" (did you mean \"ping_interval\"?)"),
        ("colour = \"red\"\n", 1, 1, "unknown key \"colour\""),
        ("zeta = 1\nalpha = 2\n", 1, 1, "unknown key \"zeta\""), // the first in the file
        ("[jwt]\nsecret = \"x\"\n", 1, 2, "unknown key \"jwt\""),
        ("[namespaces.doc]\npresence = true\nhistroy_size = 5\n", 3, 1, "namespace \"doc\": unknown option \"histroy_size\" (did you mean \"history_size\"?)"),
        ("config = \"other.toml\"\n", 1, 1, "cannot be set in the configuration file"),
        // Values of the wrong type.
        ("max_connections = \"5000\"\n", 1, 19, "max_connections must be an integer, not string"),
        ("dev_events = \"yes\"\n", 1, 14, "dev_events must be true or false, not string"),
        ("message_events = \"a,b\"\n", 1, 18, "message_events must be an array of strings, not string"),
        ("message_events = [\"a\", 1]\n", 1, 18, "message_events must be an array of strings"),
        ("ping_interval = 25\n", 1, 17, "ping_interval must be a duration such as \"25s\", not integer"),
        ("redis_url = 5\n", 1, 13, "redis_url must be a string, not integer"),
        ("namespaces = 5\n", 1, 14, "namespaces must be a table"),
        ("[namespaces.doc]\npresence = \"yes\"\n", 2, 1, "namespace \"doc\": presence must be true or false, not string"),
        // Values out of range or not parseable, through the flags' own parsers.
        ("max_connections = -1\n", 1, 19, "invalid value \"-1\" for max_connections"),
        ("connect_rate_per_ip = 5000000000\n", 1, 23, "invalid value \"5000000000\" for connect_rate_per_ip"),
        ("ping_interval = \"soon\"\n", 1, 17, "invalid value \"soon\" for ping_interval"),
        ("log_format = \"xml\"\n", 1, 14, "invalid value \"xml\" for log_format: expected one of human, json"),
        ("http_addr = \"nowhere\"\n", 1, 13, "invalid value \"nowhere\" for http_addr"),
        ("trusted_proxies = \"lb.internal\"\n", 1, 19, "`lb.internal` is neither an IP address nor a CIDR"),
        ("[namespaces.doc]\nhistory_ttl = \"soon\"\n", 2, 1, "namespace \"doc\": history_ttl: \"soon\" is not a duration"),
        ("[namespaces.\"a.b\"]\n", 1, 13, "namespace name \"a.b\" must be 1 to 64 characters"),
        // Contradictions: a namespace's own rules, then those `Config::check` finds.
        ("[namespaces.doc]\njoin_leave = true\n", 2, 1, "namespace \"doc\": join_leave = true needs presence = true"),
        ("[namespaces.doc]\nsubscribe = \"proxy\"\n", 2, 1, "subscribe asks for a proxy, but none is configured"),
        ("max_history_size = 10\n[namespaces.news]\nhistory_size = 11\n", 3, 1, "history_size 11 is larger than --max-history-size 10"),
        ("\nmax_history_size = 10\n", 2, 1, "namespace \"notify\": history_size 100 is larger than --max-history-size 10"),
        ("instance_id = \"no spaces\"\n", 1, 1, "--instance-id must be 1 to 64 characters"),
        ("\nredis_url = \"redis://127.0.0.1:1\"\n", 2, 1, "REDIS_URL is set but DATABASE_URL is not"),
        ("tls_cert = \"cert.pem\"\n", 1, 1, "--tls-cert and --tls-key"),
    ];
    for &(text, line, column, message) in cases {
        let err = refused(text);
        let at = (err.line, err.column);
        assert_eq!(at, (line, column), "{err}\n---\n{text}");
        assert!(err.message.contains(message), "{err}\n---\n{text}");
        assert!(err.path.ends_with("rtgate.toml"));
        let shown = err.to_string();
        assert!(shown.contains(&format!("rtgate.toml:{line}:{column}: ")), "{shown}");
    }
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let gone = std::env::temp_dir().join("rtgate-no-such-dir/rtgate.toml");
    let err = Config::load(["rtgate", "--config", gone.to_str().unwrap()]).unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("{}: ", gone.display())), "{err}");
}

/// A rule broken by a flag, not by the file, is not blamed on a line of the file.
#[test]
fn a_flag_that_breaks_a_rule_is_not_blamed_on_the_file() {
    let file = TempFile::new("rtgate.toml", "instance_id = \"fine\"\n");
    let err = load_with(&file, &["--instance-id", "not fine"]).unwrap_err();
    assert!(matches!(err, LoadError::Config(_)), "{err:?}");
    // The file's own value is still checked, even where a flag overrides it.
    let file = TempFile::new("rtgate.toml", "ping_interval = \"soon\"\n");
    assert!(matches!(load_with(&file, &["--ping-interval", "1s"]), Err(LoadError::File(_))));
}

// ---- the real binary ----

/// `rtgate serve` on ephemeral ports, with no configuration from this process's environment,
/// keeping its SQLite file in `dir`'s directory (removed with it).
fn rtgate(dir: &TempFile) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtgate"));
    let sqlite = dir.dir.join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()));
    cmd.args(["serve", "--http-addr", "127.0.0.1:0", "--wt-addr", "127.0.0.1:0"])
        .env("RTGATE_JWT_SECRET", SECRET)
        .env("RTGATE_LOG", "warn")
        .env("RTGATE_SQLITE_PATH", sqlite)
        .env_remove("RTGATE_CONFIG")
        .env_remove("RTGATE_PING_INTERVAL")
        .env_remove("REDIS_URL");
    cmd
}

/// Starts `cmd`, connects, and returns the heartbeat interval the server announced.
async fn announced_ping_interval(mut cmd: Command) -> u64 {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("READY "))
    })
    .await
    .unwrap();
    let Some(ready) = ready else {
        let _ = child.kill();
        panic!("the server exited before READY: {:?}", child.wait());
    };
    let field = |name: &str| -> String {
        ready.split(' ').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap().to_owned()
    };
    let mut client = Client::open(
        Kind::Ws,
        field("http").parse().unwrap(),
        field("wt").parse().unwrap(),
        [0; 32],
    )
    .await;
    let jwt = Config::from_env().unwrap().jwt;
    let jwt = rtgate::config::JwtConfig { secret: SECRET.into(), ..jwt };
    let token =
        rtgate::auth::mint_dev_token(&jwt, "alice", Duration::from_secs(60), None, vec![]).unwrap();
    client.send(&json!({"type": "connect", "v": 1, "token": token})).await;
    let connected = client.recv().await.expect("connected");
    let _ = child.kill();
    let _ = child.wait();
    connected["heartbeat"]["intervalMs"].as_u64().unwrap_or_else(|| panic!("{connected}"))
}

/// `--ping-interval` set by flag, environment variable and file in each of the eight
/// combinations (the default always underneath): the highest of them wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_is_flag_then_env_then_file_then_default() {
    let with = TempFile::new("with.toml", "ping_interval = \"43s\"\n");
    let without = TempFile::new("without.toml", "max_connections = 1000\n");
    for combination in 0..8u8 {
        let (flag, env, file) = (combination & 1 != 0, combination & 2 != 0, combination & 4 != 0);
        let mut cmd = rtgate(&with);
        cmd.args(["--config", if file { with.path() } else { without.path() }]);
        if flag {
            cmd.args(["--ping-interval", "41s"]);
        }
        if env {
            cmd.env("RTGATE_PING_INTERVAL", "42s");
        }
        let want = if flag {
            41
        } else if env {
            42
        } else if file {
            43
        } else {
            25
        };
        let got = announced_ping_interval(cmd).await;
        assert_eq!(got, want * 1000, "flag {flag}, env {env}, file {file}");
    }
    // The file may be named by RTGATE_CONFIG instead of --config.
    let mut cmd = rtgate(&with);
    cmd.env("RTGATE_CONFIG", with.path());
    assert_eq!(announced_ping_interval(cmd).await, 43_000);
}

/// Runs `cmd` to its end (killing it if it is still running after 10 s: it should never
/// have started) and returns its status and stderr.
fn run_to_refusal(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rtgate serve kept running with a bad configuration file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_binary_refuses_a_bad_file_with_its_line() {
    let bad = TempFile::new("bad.toml", "ping_interval = \"25s\"\nping_intreval = \"30s\"\n");
    for by_env in [false, true] {
        let mut cmd = rtgate(&bad);
        if by_env {
            cmd.env("RTGATE_CONFIG", bad.path());
        } else {
            cmd.args(["--config", bad.path()]);
        }
        let (status, stderr) = run_to_refusal(cmd);
        assert!(!status.success(), "{status:?}");
        let want = format!("{}:2:1: unknown key \"ping_intreval\"", bad.path());
        assert!(stderr.contains(&want), "stderr: {stderr}");
    }
    let (status, stderr) = run_to_refusal({
        let mut cmd = rtgate(&bad);
        cmd.args(["--config", "/nonexistent/rtgate.toml"]);
        cmd
    });
    assert!(!status.success() && stderr.contains("/nonexistent/rtgate.toml: "), "{stderr}");
}
