//! The docs stay true to the code: every protocol code has its row in PROTOCOL.md, and every
//! `serve` flag (with its environment variable) is in the README's configuration table, and
//! every metrics series in its Metrics table.

use clap::Args;
use rtgate::{config::Config, protocol::Code};

fn read(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

#[test]
fn protocol_md_has_a_row_for_every_code() {
    let doc = read("PROTOCOL.md");
    for code in Code::ALL {
        let close = code.close_code().map_or("—".to_owned(), |c| c.to_string());
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", code.as_str())))
            .unwrap_or_else(|| panic!("PROTOCOL.md has no row for `{code}`"));
        assert!(
            row.contains(&format!("| {close} |")),
            "row for `{code}` lacks close code {close}: {row}"
        );
    }
}

#[test]
fn readme_documents_every_serve_flag_and_its_env_var() {
    let doc = read("README.md");
    let cmd = Config::augment_args(clap::Command::new("serve"));
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}` |")))
            .unwrap_or_else(|| panic!("README has no row for --{long}"));
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(row.contains(&format!("`{env}`")), "README row for --{long} lacks {env}");
        }
    }
}

#[test]
fn readme_documents_every_metrics_series() {
    let doc = read("README.md");
    for name in rtgate::telemetry::metrics::names::ALL {
        assert!(
            doc.lines().any(|l| l.starts_with(&format!("| `{name}` |"))),
            "README's Metrics table has no row for {name}"
        );
    }
}
