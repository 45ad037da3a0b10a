//! Broker channel names in Redis: the one place that writes and reads them. Every name starts
//! with the instance's prefix:
//! - `{prefix}ch:inst:{id}`: [`Channel::Instance`]
//! - `{prefix}ch:cluster`: [`Channel::Cluster`]
//! - `{prefix}ch:watch:{user}`: [`Channel::Watch`]
//! - `{prefix}ch:conv:{id}`: [`Channel::Conversation`]
//! - `{prefix}ch:chan:{name}`: [`Channel::Chan`]

use crate::state::broker::Channel;

const INSTANCE: &str = "ch:inst:";
const CLUSTER: &str = "ch:cluster";
const WATCH: &str = "ch:watch:";
const CONVERSATION: &str = "ch:conv:";
const CHAN: &str = "ch:chan:";

/// What a user's watch topic is named up to the user id (the presence scripts append it).
pub(super) fn watch_topic_base(prefix: &str) -> String {
    format!("{prefix}{WATCH}")
}

pub(super) fn channel_name(prefix: &str, channel: &Channel) -> String {
    match channel {
        Channel::Instance(id) => format!("{prefix}{INSTANCE}{id}"),
        Channel::Cluster => format!("{prefix}{CLUSTER}"),
        Channel::Watch(user) => format!("{}{user}", watch_topic_base(prefix)),
        Channel::Conversation(id) => format!("{prefix}{CONVERSATION}{id}"),
        Channel::Chan(name) => format!("{prefix}{CHAN}{name}"),
    }
}

pub(super) fn parse_channel_name(prefix: &str, name: &[u8]) -> Option<Channel> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix(prefix)?;
    if rest == CLUSTER {
        Some(Channel::Cluster)
    } else if let Some(user) = rest.strip_prefix(WATCH) {
        Some(Channel::Watch(user.to_owned()))
    } else if let Some(name) = rest.strip_prefix(CHAN) {
        Some(Channel::Chan(name.to_owned()))
    } else if let Some(id) = rest.strip_prefix(CONVERSATION) {
        Some(Channel::Conversation(id.to_owned()))
    } else {
        rest.strip_prefix(INSTANCE).map(|id| Channel::Instance(id.to_owned()))
    }
}
