//! Rebuilds when a migration changes: `sqlx::migrate!` embeds the files at compile time, and
//! without this an edited or added migration would not reach the binary until some Rust
//! source changed too.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
