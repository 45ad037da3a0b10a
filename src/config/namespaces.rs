//! Channel namespaces: what the part of a channel name before its first `:` allows (who may
//! subscribe, publishing, presence, history, recovery). Owns their types, the built-ins used
//! when no `[namespaces]` table is configured, reading that table, and the rules a namespace
//! must satisfy on its own; `Config::check` adds those that depend on other settings.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Deserialize;

use super::suggest;

mod error;
pub use error::NamespaceError;

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeMode {
    /// Any connected user.
    Public,
    /// Whoever presents a subscription token for the channel.
    Token,
    /// Whoever's connection token lists the channel (or a pattern matching it) in `channels`.
    Claim,
    /// Only the users a user-limited name lists after its last `#` (`notify:#alice`).
    User,
    /// Whoever the application's backend allows, asked per subscription (the subscribe proxy).
    Proxy,
}

/// One namespace's options. Defaults are those of `NamespaceConfig::new`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceConfig {
    /// `default` for channel names without `namespace:`.
    pub name: String,
    pub subscribe: SubscribeMode,
    /// Subscribers may publish with `channel:publish` (otherwise only the backend publishes).
    pub client_publish: bool,
    /// Publications carry `info` about their publisher.
    pub publisher_info: bool,
    /// Keep per-channel presence (`channel:presence`, `channel:presence-stats`).
    pub presence: bool,
    /// Push `channel:join` / `channel:leave` to subscribers (needs `presence`).
    pub join_leave: bool,
    /// Publications kept per channel; 0: no history.
    pub history_size: usize,
    /// How long history is kept after the channel's last publication.
    pub history_ttl: Duration,
    /// History in the database (PostgreSQL or the SQLite file) instead of shared state: it
    /// survives Redis and server restarts, each entry kept `history_ttl` after it was published.
    pub history_durable: bool,
    /// `channel:subscribe` with `since` recovers missed publications (needs history).
    pub recover: bool,
    /// Publications are never stored and travel as datagrams on WebTransport.
    pub volatile: bool,
    /// The subscribe proxy of this namespace (`subscribe = "proxy"`); `--proxy-subscribe-url`
    /// when unset.
    pub subscribe_proxy_url: Option<String>,
    /// Client publications go through the publish proxy, which may refuse or rewrite them.
    pub publish_proxy: bool,
    /// This namespace's publish proxy; `--proxy-publish-url` when unset.
    pub publish_proxy_url: Option<String>,
}

/// The options a `[namespaces.<name>]` table may set, for "unknown option" suggestions.
const OPTIONS: [&str; 13] = [
    "subscribe",
    "client_publish",
    "publisher_info",
    "presence",
    "join_leave",
    "history_size",
    "history_ttl",
    "history_durable",
    "recover",
    "volatile",
    "subscribe_proxy_url",
    "publish_proxy",
    "publish_proxy_url",
];

impl NamespaceConfig {
    /// A namespace with every option at its default: public, no publishing by clients, no
    /// presence, no history (5 min TTL once `history_size` is set), no recovery.
    pub fn new(name: impl Into<String>) -> Self {
        NamespaceConfig {
            name: name.into(),
            subscribe: SubscribeMode::Public,
            client_publish: false,
            publisher_info: false,
            presence: false,
            join_leave: false,
            history_size: 0,
            history_ttl: Duration::from_secs(5 * 60),
            history_durable: false,
            recover: false,
            volatile: false,
            subscribe_proxy_url: None,
            publish_proxy: false,
            publish_proxy_url: None,
        }
    }

    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }

    /// The rules that need nothing but the namespace itself.
    fn validate(&self) -> Result<(), NamespaceError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(NamespaceError::Name(self.name.clone()));
        }
        let conflict = |option, rule| {
            Err(NamespaceError::Conflict { namespace: self.name.clone(), option, rule })
        };
        for (option, url) in [
            ("subscribe_proxy_url", &self.subscribe_proxy_url),
            ("publish_proxy_url", &self.publish_proxy_url),
        ] {
            if let Some(Err(reason)) = url.as_deref().map(super::proxy::check_url) {
                return Err(NamespaceError::BadValue {
                    namespace: self.name.clone(),
                    option,
                    reason,
                });
            }
        }
        if self.publish_proxy && !self.client_publish {
            return conflict("publish_proxy", "publish_proxy = true needs client_publish = true");
        }
        if self.join_leave && !self.presence {
            return conflict("join_leave", "join_leave = true needs presence = true");
        }
        if self.volatile && self.has_history() {
            return conflict(
                "volatile",
                "volatile = true excludes history (history_size > 0): volatile publications are never stored",
            );
        }
        if self.volatile && self.recover {
            return conflict("volatile", "volatile = true excludes recover = true");
        }
        if self.history_durable && !self.has_history() {
            return conflict(
                "history_durable",
                "history_durable = true needs history (history_size > 0)",
            );
        }
        if self.recover && !self.has_history() {
            return conflict("recover", "recover = true needs history (history_size > 0)");
        }
        if self.has_history() && self.history_ttl.is_zero() {
            return conflict(
                "history_ttl",
                "history_ttl must be longer than 0 when history_size > 0",
            );
        }
        Ok(())
    }

    /// Reads one `[namespaces.<name>]` table; options it does not set keep their defaults.
    fn from_options(name: &str, value: &toml::Value) -> Result<Self, NamespaceError> {
        let toml::Value::Table(options) = value else {
            return Err(NamespaceError::NotATable(name.to_owned()));
        };
        let mut ns = NamespaceConfig::new(name);
        for (key, value) in options {
            let Some(option) = OPTIONS.iter().copied().find(|o| o == key) else {
                return Err(NamespaceError::UnknownOption {
                    namespace: name.to_owned(),
                    option: key.clone(),
                    suggestion: suggest::closest(key, OPTIONS),
                });
            };
            let option = OptionValue { namespace: name, option, value };
            match option.option {
                "subscribe" => ns.subscribe = option.subscribe()?,
                "client_publish" => ns.client_publish = option.bool()?,
                "publisher_info" => ns.publisher_info = option.bool()?,
                "presence" => ns.presence = option.bool()?,
                "join_leave" => ns.join_leave = option.bool()?,
                "history_size" => ns.history_size = option.size()?,
                "history_ttl" => ns.history_ttl = option.duration()?,
                "history_durable" => ns.history_durable = option.bool()?,
                "recover" => ns.recover = option.bool()?,
                "subscribe_proxy_url" => ns.subscribe_proxy_url = Some(option.string()?),
                "publish_proxy" => ns.publish_proxy = option.bool()?,
                "publish_proxy_url" => ns.publish_proxy_url = Some(option.string()?),
                _ => ns.volatile = option.bool()?,
            }
        }
        ns.validate()?;
        Ok(ns)
    }
}

/// One option's value on its way to its field, with what an error must name.
struct OptionValue<'a> {
    namespace: &'a str,
    option: &'static str,
    value: &'a toml::Value,
}

impl OptionValue<'_> {
    fn wrong_type(&self, expected: &'static str) -> NamespaceError {
        NamespaceError::WrongType {
            namespace: self.namespace.to_owned(),
            option: self.option,
            expected,
            found: self.value.type_str(),
        }
    }

    fn bad_value(&self, reason: impl ToString) -> NamespaceError {
        NamespaceError::BadValue {
            namespace: self.namespace.to_owned(),
            option: self.option,
            reason: reason.to_string(),
        }
    }

    fn bool(&self) -> Result<bool, NamespaceError> {
        self.value.as_bool().ok_or_else(|| self.wrong_type("true or false"))
    }

    fn string(&self) -> Result<String, NamespaceError> {
        self.value.as_str().map(str::to_owned).ok_or_else(|| self.wrong_type("a string"))
    }

    fn size(&self) -> Result<usize, NamespaceError> {
        let n = self.value.as_integer().ok_or_else(|| self.wrong_type("an integer"))?;
        usize::try_from(n).map_err(|_| self.bad_value(format!("{n} is not 0 or more")))
    }

    fn duration(&self) -> Result<Duration, NamespaceError> {
        let s = self.value.as_str().ok_or_else(|| self.wrong_type("a duration such as \"5m\""))?;
        super::duration(s).map_err(|e| self.bad_value(format!("{s:?} is not a duration: {e}")))
    }

    fn subscribe(&self) -> Result<SubscribeMode, NamespaceError> {
        let s = self.value.as_str().ok_or_else(|| self.wrong_type("a string"))?;
        // The derived `Deserialize` is the one list of names; its error lists them all.
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s);
        SubscribeMode::deserialize(de).map_err(|e| self.bad_value(e))
    }
}

/// The configured namespaces by name, each shared with the subscriptions that use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespaces {
    by_name: BTreeMap<String, Arc<NamespaceConfig>>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Namespaces {
    /// Used when no `[namespaces]` table is configured: `public` (anyone subscribes; presence
    /// with join/leave; 100 publications for 5 min, recoverable) and `notify` (user-limited
    /// names such as `notify:#alice`; 100 publications for 5 min, recoverable).
    pub fn builtin() -> Self {
        let history =
            |ns: NamespaceConfig| NamespaceConfig { history_size: 100, recover: true, ..ns };
        let public = NamespaceConfig {
            presence: true,
            join_leave: true,
            ..history(NamespaceConfig::new("public"))
        };
        let notify = NamespaceConfig {
            subscribe: SubscribeMode::User,
            ..history(NamespaceConfig::new("notify"))
        };
        Self::collect([public, notify])
    }

    /// Namespaces built in code (tests, mostly), held to the same rules as a file's.
    pub fn new(configs: impl IntoIterator<Item = NamespaceConfig>) -> Result<Self, NamespaceError> {
        let mut by_name = BTreeMap::new();
        for ns in configs {
            ns.validate()?;
            if by_name.contains_key(&ns.name) {
                return Err(NamespaceError::Duplicate(ns.name));
            }
            by_name.insert(ns.name.clone(), Arc::new(ns));
        }
        Ok(Namespaces { by_name })
    }

    /// Reads the `[namespaces]` table: one table of options per namespace. It replaces the
    /// built-ins entirely, so an empty table configures no namespace at all.
    pub fn from_table(table: &toml::Table) -> Result<Self, NamespaceError> {
        let configs = table
            .iter()
            .map(|(name, options)| NamespaceConfig::from_options(name, options))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(configs)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NamespaceConfig>> {
        self.by_name.get(name)
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<NamespaceConfig>> {
        self.by_name.values()
    }

    /// The rules that depend on other settings; `Config::check` applies them.
    pub(crate) fn check_limits(
        &self,
        max_history_size: usize,
        history_meta_ttl: Duration,
    ) -> Result<(), NamespaceError> {
        for ns in self.iter().filter(|ns| ns.has_history()) {
            if ns.history_size > max_history_size {
                return Err(NamespaceError::HistoryTooLarge {
                    namespace: ns.name.clone(),
                    size: ns.history_size,
                    max: max_history_size,
                });
            }
            // The offset and epoch must outlive the publications they number.
            if ns.history_ttl >= history_meta_ttl {
                return Err(NamespaceError::HistoryOutlivesMeta {
                    namespace: ns.name.clone(),
                    ttl: humantime::format_duration(ns.history_ttl).to_string(),
                    meta: humantime::format_duration(history_meta_ttl).to_string(),
                });
            }
        }
        Ok(())
    }

    /// Every namespace that asks for a proxy has one: its own URL or the global one.
    pub(crate) fn check_proxies(
        &self,
        subscribe: bool,
        publish: bool,
    ) -> Result<(), NamespaceError> {
        for ns in self.iter() {
            if ns.subscribe == SubscribeMode::Proxy
                && ns.subscribe_proxy_url.is_none()
                && !subscribe
            {
                return Err(NamespaceError::NoProxy {
                    namespace: ns.name.clone(),
                    option: "subscribe",
                });
            }
            if ns.publish_proxy && ns.publish_proxy_url.is_none() && !publish {
                return Err(NamespaceError::NoProxy {
                    namespace: ns.name.clone(),
                    option: "publish_proxy",
                });
            }
        }
        Ok(())
    }

    /// For built-ins, which are valid by construction (a unit test holds them to the rules).
    fn collect(configs: impl IntoIterator<Item = NamespaceConfig>) -> Self {
        let by_name = configs.into_iter().map(|ns| (ns.name.clone(), Arc::new(ns))).collect();
        Namespaces { by_name }
    }
}

#[cfg(test)]
mod tests;
