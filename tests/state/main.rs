//! The shared-state backends' test suite: every test runs against the in-memory backend and
//! against the real Redis at `REDIS_TEST_URL` (default `redis://127.0.0.1:6379`). Each test uses
//! its own key prefix, so tests run in parallel and leave nothing behind. A missing Redis
//! fails the Redis cases; it never skips them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod api_state;
mod broker;
mod channel_presence;
mod common;
mod history;
mod presence;
mod ratelimit;
