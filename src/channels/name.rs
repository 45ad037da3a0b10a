//! Channel names: `namespace:rest`, 1–255 bytes of `[A-Za-z0-9_.:@#,=/-]`; a name without `:`
//! is in the namespace `default`. A user-limited name lists its users after its last `#`.

/// Longest channel name, in bytes.
pub const MAX_NAME: usize = 255;
/// The namespace of names without `namespace:`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A valid channel name, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    pub full: &'a str,
    pub namespace: &'a str,
}

/// Why a name was refused, for the `bad_channel` message.
pub fn parse(name: &str) -> Result<ChannelName<'_>, String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a channel name is 1 to {MAX_NAME} bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@#,=/-".contains(&b)) {
        return Err("a channel name is made of [A-Za-z0-9_.:@#,=/-]".into());
    }
    let namespace = match name.split_once(':') {
        Some((ns, _)) => {
            let ok = (1..=64).contains(&ns.len())
                && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err("a namespace is 1 to 64 characters of [A-Za-z0-9_-]".into());
            }
            ns
        }
        None => DEFAULT_NAMESPACE,
    };
    Ok(ChannelName { full: name, namespace })
}

impl ChannelName<'_> {
    /// The users a user-limited name allows: what follows its last `#`, split at `,`. `None`
    /// when the name has no `#` after its namespace.
    pub fn users(&self) -> Option<impl Iterator<Item = &str>> {
        let rest = match self.full.split_once(':') {
            Some((_, rest)) => rest,
            None => self.full,
        };
        let (_, users) = rest.rsplit_once('#')?;
        Some(users.split(',').filter(|u| !u.is_empty()))
    }

    /// Whether `user` is one of the users this name is limited to.
    pub fn allows_user(&self, user: &str) -> bool {
        self.users().is_some_and(|mut users| users.any(|u| u == user))
    }
}

/// Whether a `channels` claim entry matches `channel`: exactly, or as a prefix when the entry
/// ends in `*`.
pub fn claim_matches(entry: &str, channel: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => entry == channel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_their_namespace() {
        assert_eq!(parse("news:sports").unwrap().namespace, "news");
        assert_eq!(parse("lobby").unwrap().namespace, DEFAULT_NAMESPACE);
        assert_eq!(parse("a:b:c").unwrap().namespace, "a");
        assert_eq!(parse(&"x".repeat(MAX_NAME)).map(|n| n.full.len()), Ok(MAX_NAME));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            String::new(),
            "x".repeat(MAX_NAME + 1),
            "news sports".into(),
            "news:é".into(),
            "news:{x}".into(),
            ":x".into(),
            "a*b:x".into(),
            "news:\u{0}".into(),
            format!("{}:x", "n".repeat(65)),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_limited_names_list_their_users() {
        let dm = parse("dm:#alice,bob").unwrap();
        assert!(dm.allows_user("alice") && dm.allows_user("bob") && !dm.allows_user("carol"));
        assert!(parse("doc:42#alice").unwrap().allows_user("alice"));
        assert!(!parse("notify:alice").unwrap().allows_user("alice"), "no # means no users");
        assert!(!parse("notify:#").unwrap().allows_user(""), "an empty list allows no one");
        // Only the part after the last # counts.
        let nested = parse("x:#mallory#alice").unwrap();
        assert!(nested.allows_user("alice") && !nested.allows_user("mallory"));
    }

    #[test]
    fn claim_entries_match_exactly_or_by_prefix() {
        assert!(claim_matches("doc:42", "doc:42"));
        assert!(!claim_matches("doc:42", "doc:420"));
        assert!(claim_matches("doc:*", "doc:420"));
        assert!(!claim_matches("doc:*", "docs:1"));
        assert!(claim_matches("*", "anything"));
    }
}
