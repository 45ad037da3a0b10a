//! The store backends' test suite: every test runs against SQLite (a fresh file per test) and
//! against the real PostgreSQL at `DATABASE_TEST_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its own. A missing
//! PostgreSQL fails the Postgres cases; it never skips them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod backends;
mod bulk;
mod chat;
mod common;
mod connections;
mod history;
mod outbox;
mod retention;
mod text;
