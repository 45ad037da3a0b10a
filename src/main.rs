//! The `rtgate` binary: `serve`, `token`, `client`, `migrate`, `cert`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use rtgate::config::{Config, JwtConfig, LoadError};

// glibc's malloc spent a tenth of the server's CPU in a churn run (arena locks, chunk
// consolidation); jemalloc is faster there and holds idle sessions in less memory.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "rtgate",
    version,
    about = "WebTransport-first realtime server with WebSocket fallback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (WebSocket + HTTP on TCP, WebTransport on UDP).
    Serve(Box<Config>),
    /// Mint a development JWT signed with the configured HS256 secret.
    Token {
        /// User id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Pin the device id (`device_id` claim).
        #[arg(long)]
        device: Option<String>,
        /// Add the `admin` role.
        #[arg(long)]
        admin: bool,
        /// Mint a subscription token for this channel instead of a connection token.
        #[arg(long)]
        channel: Option<String>,
        /// The `channels` claim of a connection token (comma-separated; `prefix*` patterns).
        #[arg(long, value_delimiter = ',', conflicts_with = "channel")]
        channels: Vec<String>,
        #[command(flatten)]
        jwt: JwtConfig,
    },
    /// Open a session from the terminal: mints a token for `--sub` (or takes `--token`), sends
    /// `connect`, prints every server frame as a line, sends every stdin line as a frame, and
    /// answers the server's pings itself.
    Client {
        /// The server's WebSocket endpoint.
        #[arg(long, default_value = "ws://127.0.0.1:3000/ws")]
        url: String,
        /// Mint a development token for this user (`sub` claim) with the configured secret.
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        sub: Option<String>,
        /// Use this token instead of minting one.
        #[arg(long, env = "RTGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Device id sent in `connect`.
        #[arg(long)]
        device: Option<String>,
        /// Also print the server's pings (they are answered either way).
        #[arg(long)]
        show_pings: bool,
        #[command(flatten)]
        jwt: JwtConfig,
    },
    /// Apply database migrations (PostgreSQL with DATABASE_URL, else the SQLite file) and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, env = "RTGATE_SQLITE_PATH", default_value = "rtgate.sqlite")]
        sqlite_path: PathBuf,
    },
    /// Write a self-signed development certificate (ECDSA P-256, 14 days) as cert.pem/key.pem.
    Cert {
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Serve(config) = &mut cli.command {
        // Again, with the configuration file (if one is named) under the flags and variables.
        // `serve` is always the first argument: `rtgate` takes no options of its own.
        match Config::load(std::env::args_os().skip(1)) {
            Ok(loaded) => **config = loaded,
            Err(LoadError::Args(e)) => e.exit(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(config) => {
                rtgate::telemetry::init(config.log_format, &config.log);
                rtgate::server::serve(*config).await
            }
            Command::Token { sub, ttl, device, admin, channel, channels, jwt } => {
                let roles = if admin { vec!["admin".to_owned()] } else { vec![] };
                let token = match channel {
                    Some(channel) => {
                        rtgate::auth::mint_subscription_token(&jwt, &sub, &channel, ttl, None)?
                    }
                    None => rtgate::auth::mint_dev_token_with_channels(
                        &jwt, &sub, ttl, device, roles, channels,
                    )?,
                };
                println!("{token}");
                Ok(())
            }
            Command::Client { url, sub, token, device, show_pings, jwt } => {
                let token = match (token, sub) {
                    (Some(token), _) => token,
                    (None, Some(sub)) => rtgate::auth::mint_dev_token(
                        &jwt,
                        &sub,
                        Duration::from_secs(3600),
                        None,
                        vec![],
                    )?,
                    (None, None) => anyhow::bail!("--sub or --token is required"),
                };
                let args = rtgate::client::ClientArgs { url, token, device, show_pings };
                if let Some(code) = rtgate::client::run(args).await? {
                    eprintln!("closed by the server with code {code}");
                }
                Ok(())
            }
            Command::Migrate { database_url, sqlite_path } => {
                use rtgate::store::Store;
                let store: Box<dyn Store> = match &database_url {
                    Some(url) => Box::new(rtgate::store::postgres::PgStore::connect(url).await?),
                    None => Box::new(rtgate::store::sqlite::SqliteStore::open(&sqlite_path).await?),
                };
                store.migrate().await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Cert { out } => {
                let hash = rtgate::certs::write_dev_cert(&out).await?;
                println!(
                    "wrote {}/cert.pem and {}/key.pem (sha-256 {hash}, valid 14 days)",
                    out.display(),
                    out.display()
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
