//! Why a namespace configuration cannot start a server.

use super::super::suggest;

/// A namespace the server must not start with. Each names the namespace, and
/// `NamespaceError::option` the option at fault, so a file reader can point at its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace name {0:?} must be 1 to 64 characters of [A-Za-z0-9_-]")]
    Name(String),
    #[error("namespace {0:?} is configured twice")]
    Duplicate(String),
    #[error("namespace {0:?} must be a table of options")]
    NotATable(String),
    #[error("namespace {namespace:?}: unknown option {option:?}{}", suggest::hint(*.suggestion))]
    UnknownOption { namespace: String, option: String, suggestion: Option<&'static str> },
    #[error("namespace {namespace:?}: {option} must be {expected}, not {found}")]
    WrongType {
        namespace: String,
        option: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("namespace {namespace:?}: {option}: {reason}")]
    BadValue { namespace: String, option: &'static str, reason: String },
    #[error("namespace {namespace:?}: {rule}")]
    Conflict { namespace: String, option: &'static str, rule: &'static str },
    #[error(
        "namespace {namespace:?}: {option} asks for a proxy, but none is configured: set the \
         namespace's subscribe_proxy_url / publish_proxy_url, or --proxy-subscribe-url / \
         --proxy-publish-url"
    )]
    NoProxy { namespace: String, option: &'static str },
    #[error("namespace {namespace:?}: history_size {size} is larger than --max-history-size {max}")]
    HistoryTooLarge { namespace: String, size: usize, max: usize },
    #[error(
        "namespace {namespace:?}: history_ttl {ttl} must be shorter than --history-meta-ttl \
         {meta}, or offsets would start over while history is still kept"
    )]
    HistoryOutlivesMeta { namespace: String, ttl: String, meta: String },
}

impl NamespaceError {
    /// The namespace at fault.
    pub fn namespace(&self) -> &str {
        match self {
            NamespaceError::Name(n)
            | NamespaceError::Duplicate(n)
            | NamespaceError::NotATable(n) => n,
            NamespaceError::UnknownOption { namespace, .. }
            | NamespaceError::WrongType { namespace, .. }
            | NamespaceError::BadValue { namespace, .. }
            | NamespaceError::Conflict { namespace, .. }
            | NamespaceError::NoProxy { namespace, .. }
            | NamespaceError::HistoryTooLarge { namespace, .. }
            | NamespaceError::HistoryOutlivesMeta { namespace, .. } => namespace,
        }
    }

    /// The option at fault, when one is.
    pub fn option(&self) -> Option<&str> {
        match self {
            NamespaceError::Name(_)
            | NamespaceError::Duplicate(_)
            | NamespaceError::NotATable(_) => None,
            NamespaceError::UnknownOption { option, .. } => Some(option),
            NamespaceError::WrongType { option, .. }
            | NamespaceError::BadValue { option, .. }
            | NamespaceError::Conflict { option, .. } => Some(option),
            NamespaceError::NoProxy { option, .. } => Some(option),
            NamespaceError::HistoryTooLarge { .. } => Some("history_size"),
            NamespaceError::HistoryOutlivesMeta { .. } => Some("history_ttl"),
        }
    }
}
