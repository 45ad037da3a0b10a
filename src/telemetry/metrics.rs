//! Prometheus metrics: the one place that names every series, installs the recorder and hands
//! out the handles the rest of the server increments. `GET /metrics` (in `http::metrics`)
//! renders them.
//!
//! **One recorder per process.** The `metrics` facade has one global recorder; it is installed
//! the first time anything here is touched (`init`, called by `Node::with_store`), guarded by a
//! `OnceLock`, so any number of nodes in one process (the integration tests run hundreds) share
//! it and installing never fails or panics. Series are therefore process-wide: counters and the
//! connection gauge sum over every node in the process (in production, one). If some other
//! recorder was installed first, the series go to it and `/metrics` answers 503.
//!
//! **Cheap on the hot path.** Every fixed-label handle is registered once, at installation, and
//! kept in `Series`; per-event counters are cached per (event, outcome) in `EventMetrics`, built
//! from the router's names, so counting an event is a map lookup and an atomic add, with no
//! allocation and no lock. Values that would need a lock per frame (outbound queue bytes, writer
//! queue depth, live tasks) are sampled when `/metrics` is scraped instead.
//!
//! **Bounded labels.** Every label value comes from a closed set: transports, protocol codes,
//! event names registered in the router (anything else is `unknown`), fixed operation names.

use std::{
    collections::HashMap,
    sync::OnceLock,
    time::{Duration, Instant},
};

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{protocol::Code, proxy::ProxyKind, transport::TransportKind};

/// Every series name, in one place. README.md documents each one.
pub mod names {
    pub const CONNECTIONS: &str = "rtgate_connections";
    pub const CONNECTS: &str = "rtgate_connects_total";
    pub const DISCONNECTS: &str = "rtgate_disconnects_total";
    pub const REFUSALS: &str = "rtgate_handshake_refusals_total";
    pub const EVENTS: &str = "rtgate_events_total";
    pub const RATE_LIMITED: &str = "rtgate_rate_limited_total";
    pub const VALIDATION_ERRORS: &str = "rtgate_validation_errors_total";
    pub const PING_TIMEOUTS: &str = "rtgate_ping_timeouts_total";
    pub const SLOW_CONSUMERS: &str = "rtgate_slow_consumer_closes_total";
    pub const OUTBOUND_BYTES: &str = "rtgate_outbound_queue_bytes";
    pub const OUTBOUND_BYTES_MAX: &str = "rtgate_outbound_queue_bytes_max";
    pub const WRITER_QUEUE: &str = "rtgate_db_writer_queue_depth";
    pub const WRITER_DROPPED: &str = "rtgate_db_writer_dropped_total";
    pub const REDIS_DURATION: &str = "rtgate_redis_command_duration_seconds";
    pub const REDIS_ERRORS: &str = "rtgate_redis_errors_total";
    pub const PROXY_DURATION: &str = "rtgate_proxy_duration_seconds";
    pub const PROXY_ERRORS: &str = "rtgate_proxy_errors_total";
    pub const FANOUT_PUBLISHES: &str = "rtgate_fanout_publishes_total";
    pub const FANOUT_DELIVERIES: &str = "rtgate_fanout_deliveries_total";
    pub const SESSION_TASKS: &str = "rtgate_session_tasks";
    pub const RUNTIME_TASKS: &str = "rtgate_runtime_alive_tasks";

    /// Every series, for the docs test that keeps README.md's table complete.
    pub const ALL: &[&str] = &[
        CONNECTIONS,
        CONNECTS,
        DISCONNECTS,
        REFUSALS,
        EVENTS,
        RATE_LIMITED,
        VALIDATION_ERRORS,
        PING_TIMEOUTS,
        SLOW_CONSUMERS,
        OUTBOUND_BYTES,
        OUTBOUND_BYTES_MAX,
        WRITER_QUEUE,
        WRITER_DROPPED,
        REDIS_DURATION,
        REDIS_ERRORS,
        PROXY_DURATION,
        PROXY_ERRORS,
        FANOUT_PUBLISHES,
        FANOUT_DELIVERIES,
        SESSION_TASKS,
        RUNTIME_TASKS,
    ];
}

/// The `outcome` label of a successful event.
pub const OUTCOME_OK: &str = "ok";
/// The `event` label of every event name the router does not know.
pub const UNKNOWN_EVENT: &str = "unknown";

/// Upper bounds of the Redis latency histogram, in seconds: 100 µs to 1 s (the state timeout
/// is far below the last bucket, so every answered call lands in a finite one).
const REDIS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// How often histogram samples are folded into their buckets between scrapes, so an
/// instance nobody scrapes does not accumulate raw samples.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Who asked for a rate-limit refusal: the per-connection or the per-user budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    Socket,
    User,
}

/// What failed validation: a frame that is not protocol JSON, or an event payload that fails
/// its DTO's schema or rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Frame,
    Payload,
}

/// Which fanout target a publish was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutKind {
    User,
    Socket,
    Watchers,
    /// Chat: messages, removals and typing on a conversation's channel.
    Conversation,
    /// Channels: publications and join/leave notices.
    Channel,
}

impl FanoutKind {
    const ALL: [FanoutKind; 5] = [
        FanoutKind::User,
        FanoutKind::Socket,
        FanoutKind::Watchers,
        FanoutKind::Conversation,
        FanoutKind::Channel,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FanoutKind::User => "user",
            FanoutKind::Socket => "socket",
            FanoutKind::Watchers => "watchers",
            FanoutKind::Conversation => "conversation",
            FanoutKind::Channel => "channel",
        }
    }
}

/// Where the frames a fanout delivery queued came from: published on this instance, or
/// received from another one through the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Remote,
}

/// Every Redis call that is timed, one `op` label each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisOp {
    PresenceRegister,
    PresenceUnregister,
    PresenceQuery,
    PresenceSocket,
    PresenceReaped,
    PresenceSocketsOfUser,
    PresenceSocketsOfInstance,
    PresenceHeartbeat,
    PresenceReap,
    PresenceLeave,
    PresenceInstances,
    HistoryAppend,
    HistoryRead,
    HistoryRemove,
    ChannelPresenceAdd,
    ChannelPresenceRemove,
    ChannelPresenceList,
    ChannelPresenceStats,
    ChannelPresenceRefresh,
    LimiterCheck,
    LimiterForget,
    BrokerPublish,
    BrokerSubscribe,
    BrokerUnsubscribe,
    BrokerPing,
    Revoke,
    RevocationsLoad,
    IdempotencyClaim,
    IdempotencyComplete,
    IdempotencyRelease,
    OccupancyAdd,
    OccupancyList,
    OccupancyForget,
}

impl RedisOp {
    pub const ALL: [RedisOp; 33] = [
        RedisOp::PresenceRegister,
        RedisOp::PresenceUnregister,
        RedisOp::PresenceQuery,
        RedisOp::PresenceSocket,
        RedisOp::PresenceReaped,
        RedisOp::PresenceSocketsOfUser,
        RedisOp::PresenceSocketsOfInstance,
        RedisOp::PresenceHeartbeat,
        RedisOp::PresenceReap,
        RedisOp::PresenceLeave,
        RedisOp::PresenceInstances,
        RedisOp::HistoryAppend,
        RedisOp::HistoryRead,
        RedisOp::HistoryRemove,
        RedisOp::ChannelPresenceAdd,
        RedisOp::ChannelPresenceRemove,
        RedisOp::ChannelPresenceList,
        RedisOp::ChannelPresenceStats,
        RedisOp::ChannelPresenceRefresh,
        RedisOp::LimiterCheck,
        RedisOp::LimiterForget,
        RedisOp::BrokerPublish,
        RedisOp::BrokerSubscribe,
        RedisOp::BrokerUnsubscribe,
        RedisOp::BrokerPing,
        RedisOp::Revoke,
        RedisOp::RevocationsLoad,
        RedisOp::IdempotencyClaim,
        RedisOp::IdempotencyComplete,
        RedisOp::IdempotencyRelease,
        RedisOp::OccupancyAdd,
        RedisOp::OccupancyList,
        RedisOp::OccupancyForget,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RedisOp::PresenceRegister => "presence_register",
            RedisOp::PresenceUnregister => "presence_unregister",
            RedisOp::PresenceQuery => "presence_query",
            RedisOp::PresenceSocket => "presence_socket",
            RedisOp::PresenceReaped => "presence_reaped",
            RedisOp::PresenceSocketsOfUser => "presence_sockets_of_user",
            RedisOp::PresenceSocketsOfInstance => "presence_sockets_of_instance",
            RedisOp::PresenceHeartbeat => "presence_heartbeat",
            RedisOp::PresenceReap => "presence_reap",
            RedisOp::PresenceLeave => "presence_leave",
            RedisOp::PresenceInstances => "presence_instances",
            RedisOp::HistoryAppend => "history_append",
            RedisOp::HistoryRead => "history_read",
            RedisOp::HistoryRemove => "history_remove",
            RedisOp::ChannelPresenceAdd => "channel_presence_add",
            RedisOp::ChannelPresenceRemove => "channel_presence_remove",
            RedisOp::ChannelPresenceList => "channel_presence_list",
            RedisOp::ChannelPresenceStats => "channel_presence_stats",
            RedisOp::ChannelPresenceRefresh => "channel_presence_refresh",
            RedisOp::LimiterCheck => "limiter_check",
            RedisOp::LimiterForget => "limiter_forget",
            RedisOp::BrokerPublish => "broker_publish",
            RedisOp::BrokerSubscribe => "broker_subscribe",
            RedisOp::BrokerUnsubscribe => "broker_unsubscribe",
            RedisOp::BrokerPing => "broker_ping",
            RedisOp::Revoke => "revoke",
            RedisOp::RevocationsLoad => "revocations_load",
            RedisOp::IdempotencyClaim => "idempotency_claim",
            RedisOp::IdempotencyComplete => "idempotency_complete",
            RedisOp::IdempotencyRelease => "idempotency_release",
            RedisOp::OccupancyAdd => "occupancy_add",
            RedisOp::OccupancyList => "occupancy_list",
            RedisOp::OccupancyForget => "occupancy_forget",
        }
    }
}

/// The transports a connection gauge exists for (`Channel` is the unit tests' transport).
const TRANSPORTS: [TransportKind; 3] =
    [TransportKind::WebSocket, TransportKind::WebTransport, TransportKind::Channel];

fn transport_index(kind: TransportKind) -> usize {
    match kind {
        TransportKind::WebSocket => 0,
        TransportKind::WebTransport => 1,
        TransportKind::Channel => 2,
    }
}

/// Handles of every series whose labels are known up front, registered once.
struct Series {
    connections: [Gauge; 3],
    connects: [Counter; 3],
    rate_limited: [Counter; 2],
    validation: [Counter; 2],
    ping_timeouts: Counter,
    slow_consumers: Counter,
    outbound_bytes: Gauge,
    outbound_bytes_max: Gauge,
    writer_queue: Gauge,
    writer_dropped: Counter,
    redis_duration: [Histogram; RedisOp::ALL.len()],
    redis_errors: [Counter; RedisOp::ALL.len()],
    proxy_duration: [Histogram; ProxyKind::ALL.len()],
    proxy_errors: [[Counter; PROXY_REASONS.len()]; ProxyKind::ALL.len()],
    fanout_publishes: [Counter; 5],
    fanout_deliveries: [Counter; 2],
    session_tasks: Gauge,
    runtime_tasks: Gauge,
}

impl Series {
    fn register() -> Self {
        use names::*;
        describe();
        Series {
            connections: TRANSPORTS.map(|t| gauge!(CONNECTIONS, "transport" => t.as_str())),
            connects: TRANSPORTS.map(|t| counter!(CONNECTS, "transport" => t.as_str())),
            rate_limited: ["socket", "user"].map(|s| counter!(RATE_LIMITED, "scope" => s)),
            validation: ["frame", "payload"].map(|k| counter!(VALIDATION_ERRORS, "kind" => k)),
            ping_timeouts: counter!(PING_TIMEOUTS),
            slow_consumers: counter!(SLOW_CONSUMERS),
            outbound_bytes: gauge!(OUTBOUND_BYTES),
            outbound_bytes_max: gauge!(OUTBOUND_BYTES_MAX),
            writer_queue: gauge!(WRITER_QUEUE),
            writer_dropped: counter!(WRITER_DROPPED),
            redis_duration: RedisOp::ALL.map(|op| histogram!(REDIS_DURATION, "op" => op.as_str())),
            redis_errors: RedisOp::ALL.map(|op| counter!(REDIS_ERRORS, "op" => op.as_str())),
            proxy_duration: ProxyKind::ALL
                .map(|k| histogram!(PROXY_DURATION, "kind" => k.as_str())),
            proxy_errors: ProxyKind::ALL.map(|k| {
                PROXY_REASONS.map(|r| counter!(PROXY_ERRORS, "kind" => k.as_str(), "reason" => r))
            }),
            fanout_publishes: FanoutKind::ALL
                .map(|k| counter!(FANOUT_PUBLISHES, "kind" => k.as_str())),
            fanout_deliveries: ["local", "remote"]
                .map(|o| counter!(FANOUT_DELIVERIES, "origin" => o)),
            session_tasks: gauge!(SESSION_TASKS),
            runtime_tasks: gauge!(RUNTIME_TASKS),
        }
    }
}

/// `# HELP` lines; Prometheus shows them next to each series.
fn describe() {
    use names::*;
    describe_gauge!(CONNECTIONS, "Open authenticated sessions, by transport");
    describe_counter!(CONNECTS, "Sessions that completed the handshake, by transport");
    describe_counter!(DISCONNECTS, "Sessions that ended, by disconnect reason");
    describe_counter!(
        REFUSALS,
        "Connections that ended before the session went live, by transport and reason"
    );
    describe_counter!(EVENTS, "Client events, by event name and outcome (ok or error code)");
    describe_counter!(RATE_LIMITED, "Events refused by a rate limit, by scope (socket, user)");
    describe_counter!(VALIDATION_ERRORS, "Frames or event payloads that failed validation");
    describe_counter!(PING_TIMEOUTS, "Sessions closed because no pong arrived in time");
    describe_counter!(SLOW_CONSUMERS, "Sessions closed because their outbound queue overflowed");
    describe_gauge!(OUTBOUND_BYTES, Unit::Bytes, "Bytes queued to all sessions, at scrape time");
    describe_gauge!(OUTBOUND_BYTES_MAX, Unit::Bytes, "Largest single session queue, at scrape");
    describe_gauge!(WRITER_QUEUE, "History records waiting for the database writer");
    describe_counter!(WRITER_DROPPED, "History records dropped because the writer buffer was full");
    describe_histogram!(REDIS_DURATION, Unit::Seconds, "Latency of shared-state calls on Redis");
    describe_counter!(REDIS_ERRORS, "Shared-state calls on Redis that failed");
    describe_histogram!(
        PROXY_DURATION,
        Unit::Seconds,
        "Latency of proxy calls to the application's backend"
    );
    describe_counter!(
        PROXY_ERRORS,
        "Proxy calls that failed or were refused by the backend, by reason"
    );
    describe_counter!(FANOUT_PUBLISHES, "Fanout messages published to the broker, by target kind");
    describe_counter!(FANOUT_DELIVERIES, "Frames queued to local sessions by fanout, by origin");
    describe_gauge!(SESSION_TASKS, "Session tasks (and their teardowns) still running");
    describe_gauge!(RUNTIME_TASKS, "Tasks alive on the tokio runtime serving /metrics");
}

struct Installed {
    /// `None` when another recorder was installed first.
    handle: Option<PrometheusHandle>,
    series: Series,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn installed() -> &'static Installed {
    INSTALLED.get_or_init(|| {
        let handle = install_recorder();
        // Registered after installing, so the handles point at our recorder.
        Installed { handle, series: Series::register() }
    })
}

fn series() -> &'static Series {
    &installed().series
}

fn install_recorder() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new();
    let builder = match builder
        .set_buckets_for_metric(Matcher::Full(names::REDIS_DURATION.into()), REDIS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(names::PROXY_DURATION.into()), REDIS_BUCKETS)
        }) {
        Ok(b) => b,
        // Only an empty bucket list fails; fall back to summaries rather than no metrics.
        Err(_) => PrometheusBuilder::new(),
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if ::metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("another metrics recorder is installed; /metrics is unavailable");
        return None;
    }
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        // Rendering also folds samples in; only an unscraped instance's memory grows.
        tracing::warn!(error = %e, "metrics upkeep thread did not start");
    }
    Some(handle)
}

/// Installs the recorder and registers every series, once per process. Idempotent.
pub fn init() {
    installed();
}

/// The Prometheus text exposition of every series, or `None` when another recorder owns the
/// process.
pub fn render() -> Option<String> {
    installed().handle.as_ref().map(PrometheusHandle::render)
}

/// A session completed its handshake.
pub fn connected(kind: TransportKind) {
    let s = series();
    s.connects[transport_index(kind)].increment(1);
    s.connections[transport_index(kind)].increment(1.0);
}

/// A connected session ended with `reason` (a protocol code, `client_disconnect`,
/// `connection_lost`, `server_error`): always one of a fixed set.
pub fn disconnected(kind: TransportKind, reason: &'static str) {
    series().connections[transport_index(kind)].decrement(1.0);
    counter!(names::DISCONNECTS, "reason" => reason).increment(1);
}

/// A connection ended before its session went live: refused (a protocol code such as
/// `invalid_token`, `handshake_timeout`, `server_busy`) or gone (`connection_lost`).
pub fn refused(kind: TransportKind, reason: &'static str) {
    counter!(names::REFUSALS, "transport" => kind.as_str(), "reason" => reason).increment(1);
}

pub fn rate_limited(scope: RateScope) {
    series().rate_limited[scope as usize].increment(1);
}

pub fn invalid(kind: Invalid) {
    series().validation[kind as usize].increment(1);
}

pub fn ping_timeout() {
    series().ping_timeouts.increment(1);
}

pub fn slow_consumer() {
    series().slow_consumers.increment(1);
}

pub fn writer_dropped(n: u64) {
    series().writer_dropped.increment(n);
}

pub fn fanout_published(kind: FanoutKind) {
    series().fanout_publishes[kind as usize].increment(1);
}

pub fn fanout_delivered(origin: Origin, frames: usize) {
    if frames > 0 {
        series().fanout_deliveries[origin as usize].increment(frames as u64);
    }
}

/// Records how long one Redis call took and whether it failed.
pub fn redis_call(op: RedisOp, started: Instant, ok: bool) {
    let s = series();
    s.redis_duration[op as usize].record(started.elapsed().as_secs_f64());
    if !ok {
        s.redis_errors[op as usize].increment(1);
    }
}

/// Why a proxy call failed: `proxy::ProxyError::reason`'s closed set.
pub const PROXY_REASONS: [&str; 8] = [
    "refused",
    "timeout",
    "unreachable",
    "status",
    "bad_reply",
    "overloaded",
    "circuit_open",
    "not_configured",
];

/// Records one proxy call: its time, and why it failed when it did (`refused` is the
/// backend's own answer, counted so a backend's refusal rate shows).
pub fn proxy_call(kind: ProxyKind, started: Instant, failed: Option<&str>) {
    let s = series();
    s.proxy_duration[kind as usize].record(started.elapsed().as_secs_f64());
    if let Some(i) = failed.and_then(|r| PROXY_REASONS.iter().position(|x| *x == r)) {
        s.proxy_errors[kind as usize][i].increment(1);
    }
}

/// Counts a call failed at once because Redis is known to be down: an error, with no time.
pub fn redis_skipped(op: RedisOp) {
    series().redis_errors[op as usize].increment(1);
}

/// Values sampled when `/metrics` is scraped: cheap to read once, costly to track per frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub outbound_bytes: usize,
    pub outbound_bytes_max: usize,
    pub writer_queue: usize,
    pub session_tasks: usize,
    pub runtime_tasks: usize,
}

/// Sets the sampled gauges (just before rendering).
pub fn set_sample(sample: Sample) {
    let s = series();
    s.outbound_bytes.set(sample.outbound_bytes as f64);
    s.outbound_bytes_max.set(sample.outbound_bytes_max as f64);
    s.writer_queue.set(sample.writer_queue as f64);
    s.session_tasks.set(sample.session_tasks as f64);
    s.runtime_tasks.set(sample.runtime_tasks as f64);
}

/// The number of distinct outcomes: `ok` plus every protocol code.
const OUTCOMES: usize = Code::ALL.len() + 1;

/// Outcome counters of one event name, each registered the first time it is used (so an
/// event that never failed shows no error series).
struct EventSeries {
    name: &'static str,
    outcomes: [OnceLock<Counter>; OUTCOMES],
}

impl EventSeries {
    fn new(name: &'static str) -> Self {
        Self { name, outcomes: std::array::from_fn(|_| OnceLock::new()) }
    }

    fn counter(&self, outcome: Option<Code>) -> &Counter {
        let (index, label) = match outcome {
            None => (0, OUTCOME_OK),
            Some(code) => (code as usize + 1, code.as_str()),
        };
        // `Code as usize` is its position in the table, so the index is always in range;
        // the fallback only guards against that changing.
        let slot = self.outcomes.get(index).unwrap_or(&self.outcomes[0]);
        slot.get_or_init(|| counter!(names::EVENTS, "event" => self.name, "outcome" => label))
    }
}

/// Per-event counters for the names one router serves, built once per node. Names the router
/// does not know are counted under `unknown`, so a client cannot mint label values.
pub struct EventMetrics {
    known: HashMap<&'static str, EventSeries>,
    unknown: EventSeries,
}

impl EventMetrics {
    pub fn new(names: impl IntoIterator<Item = &'static str>) -> Self {
        init();
        let known = names.into_iter().map(|n| (n, EventSeries::new(n))).collect();
        Self { known, unknown: EventSeries::new(UNKNOWN_EVENT) }
    }

    /// Counts one event `name` that ended with `outcome` (`None` = ok, else the error code).
    pub fn record(&self, name: &str, outcome: Option<Code>) {
        self.series(name).counter(outcome).increment(1);
    }

    /// The `event` label `name` is counted under.
    pub fn label(&self, name: &str) -> &'static str {
        self.series(name).name
    }

    fn series(&self, name: &str) -> &EventSeries {
        self.known.get(name).unwrap_or(&self.unknown)
    }
}

/// For unit tests elsewhere in the crate: the current value of the series `name` whose labels
/// include every pair in `labels` (0 when absent).
#[cfg(test)]
pub(crate) fn current(name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&render().unwrap_or_default(), name, labels).unwrap_or(0.0)
}

#[cfg(test)]
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_harmless_and_render_lists_fixed_series() {
        init();
        init();
        let text = render().expect("our recorder is the process's");
        for name in [names::CONNECTS, names::PING_TIMEOUTS, names::WRITER_QUEUE] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("# TYPE rtgate_redis_command_duration_seconds histogram"));
    }

    #[test]
    fn unknown_event_names_do_not_become_labels() {
        let events = EventMetrics::new(["unit:known"]);
        let minted = format!("unit:minted-{}", uuid::Uuid::new_v4().simple());
        events.record(&minted, Some(Code::UnknownEvent));
        events.record("unit:known", None);
        assert_eq!(events.label(&minted), UNKNOWN_EVENT);
        assert_eq!(events.label("unit:known"), "unit:known");
        let text = render().expect("rendered");
        assert!(!text.contains(&minted));
        let ok = [("event", "unit:known"), ("outcome", "ok")];
        assert!(value(&text, names::EVENTS, &ok).is_some_and(|v| v >= 1.0));
        let unknown = [("event", UNKNOWN_EVENT), ("outcome", "unknown_event")];
        assert!(value(&text, names::EVENTS, &unknown).is_some_and(|v| v >= 1.0));
    }

    #[test]
    fn every_code_has_its_own_outcome_slot() {
        let events = EventMetrics::new(["unit:codes"]);
        for code in Code::ALL {
            events.record("unit:codes", Some(*code));
        }
        let text = render().expect("rendered");
        for code in Code::ALL {
            let labels = [("event", "unit:codes"), ("outcome", code.as_str())];
            assert!(value(&text, names::EVENTS, &labels).is_some(), "{code:?}");
        }
    }

    #[test]
    fn redis_latency_lands_in_buckets() {
        redis_call(RedisOp::BrokerPing, Instant::now(), false);
        let text = render().expect("rendered");
        let count =
            value(&text, &format!("{}_count", names::REDIS_DURATION), &[("op", "broker_ping")]);
        assert!(count.is_some_and(|c| c >= 1.0), "{text}");
        assert!(
            value(&text, names::REDIS_ERRORS, &[("op", "broker_ping")]).is_some_and(|v| v >= 1.0)
        );
        let bucket = value(
            &text,
            &format!("{}_bucket", names::REDIS_DURATION),
            &[("op", "broker_ping"), ("le", "1")],
        );
        assert!(bucket.is_some_and(|c| c >= 1.0), "{text}");
    }
}
