//! The shared-state backends' test suite: every test runs against the in-memory backend, the
//! real Redis at `REDIS_TEST_URL` (default `redis://127.0.0.1:6379`) and the Redis Cluster at
//! `REDIS_CLUSTER_TEST_URL` (default `redis+cluster://127.0.0.1:7101,…`, the one
//! `scripts/services.sh` starts). Each test uses its own key prefix, so tests run in parallel
//! and leave nothing behind. A missing Redis or cluster fails those cases; it never skips them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod api_state;
mod broker;
mod channel_presence;
mod cluster_failover;
mod cluster_frozen;
mod common;
mod history;
mod local_redis;
mod presence;
mod ratelimit;
mod redis_tls;
