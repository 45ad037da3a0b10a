//! Every machine-readable code the server can send, in one table.
//!
//! A code appears either in an `error` frame (the session stays up), or in an `error` frame
//! followed by a `disconnect` frame and a transport close carrying `close_code()`. The numeric
//! close codes follow one rule the client can apply without knowing the code: 3000–3499 means
//! "reconnect (with backoff)", 3500–3999 means "do not reconnect until something changes",
//! 4000–4999 is left to applications.

/// What a client should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Reconnect with the usual backoff.
    Yes,
    /// Do not reconnect automatically; the application must act first (e.g. log in again).
    No,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = ($name:literal, $close:expr) ),* $(,)?) => {
        /// A protocol code. `as_str()` is what travels in `error.code` / `disconnect.reason`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in table order (used by docs tests to keep PROTOCOL.md honest).
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The snake_case name sent on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The transport close code when this code ends the session, `None` when the
            /// session stays up after the error.
            pub const fn close_code(self) -> Option<u16> {
                match self { $(Code::$variant => $close,)* }
            }
        }
    };
}

codes! {
    // Errors that leave the session up.
    /// The frame is not valid protocol JSON (syntax, types, missing or unknown fields).
    BadFrame = ("bad_frame", None),
    /// No handler is registered for the event name.
    UnknownEvent = ("unknown_event", None),
    /// The event payload failed its schema or rules; `details.errors` lists each field.
    ValidationFailed = ("validation_failed", None),
    /// Over a rate limit; `details` carries `limit`, `windowMs`, `resetAt`. The event was dropped.
    RateLimitExceeded = ("rate_limit_exceeded", None),
    /// The caller may not do this (e.g. not a member).
    Forbidden = ("forbidden", None),
    /// The target does not exist (or the caller may not know it exists).
    NotFound = ("not_found", None),
    /// Too many events waiting for this session; the event was dropped. Slow down.
    Overloaded = ("overloaded", None),
    /// A second `connect` on an established session.
    AlreadyConnected = ("already_connected", None),
    /// A per-connection limit (conversations, channel or presence subscriptions) would be
    /// exceeded.
    LimitExceeded = ("limit_exceeded", None),
    /// A dependency the event needs is down; retry later.
    Unavailable = ("unavailable", None),
    /// A channel name breaks the naming rules.
    BadChannel = ("bad_channel", None),
    /// The channel may not be subscribed to (or published to, read) by this connection: denied,
    /// an unknown namespace, or not this user's channel, all alike.
    PermissionDenied = ("permission_denied", None),
    /// This connection is already subscribed to the channel.
    AlreadySubscribed = ("already_subscribed", None),
    /// The request needs a subscription to the channel on this connection.
    NotSubscribed = ("not_subscribed", None),
    /// The server failed; the event may be retried.
    InternalError = ("internal_error", None),
    /// The application's backend refused the request (a proxy call); `details.appCode` is its
    /// code (1000–1999) and `message` its message.
    AppError = ("app_error", None),

    // Codes that close the session; the client should reconnect (3000–3499).
    /// The server is shutting down or restarting; reconnect after `retryAfterMs`.
    ServerShutdown = ("server_shutdown", Some(3000)),
    /// No `pong` arrived within the heartbeat timeout.
    PingTimeout = ("ping_timeout", Some(3001)),
    /// The token expired during the session; reconnect with a fresh token.
    TokenExpired = ("token_expired", Some(3002)),
    /// The client did not read fast enough and its outbound queue overflowed.
    SlowConsumer = ("slow_consumer", Some(3003)),
    /// No `connect` frame arrived within the handshake deadline.
    HandshakeTimeout = ("handshake_timeout", Some(3004)),
    /// The server is at its connection limit; reconnect with backoff.
    ServerBusy = ("server_busy", Some(3005)),
    /// The client kept flooding far past its rate limit; reconnect with backoff.
    RateLimitFlood = ("rate_limit_flood", Some(3006)),
    /// A frame exceeded the size limit; the stream cannot be resynchronized.
    PayloadTooLarge = ("payload_too_large", Some(3007)),
    /// The user already has the maximum number of connections.
    TooManyConnections = ("too_many_connections", Some(3008)),
    /// An unexpected server failure ended the session.
    ServerError = ("server_error", Some(3009)),
    /// The application's backend asked this session to reconnect (server API `disconnect`
    /// with `reconnect: true`).
    ForceReconnect = ("force_reconnect", Some(3010)),
    /// The connect proxy did not answer (or failed); reconnect with backoff.
    BackendUnavailable = ("backend_unavailable", Some(3011)),

    // Codes that close the session; the client must not reconnect on its own (3500–3999).
    /// The first frame carried no token.
    AuthRequired = ("auth_required", Some(3500)),
    /// The token is malformed, badly signed, uses another algorithm, or fails iss/aud/nbf.
    InvalidToken = ("invalid_token", Some(3501)),
    /// The first frame was not a valid `connect` frame, or framing was broken.
    ProtocolError = ("protocol_error", Some(3502)),
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion = ("unsupported_version", Some(3503)),
    /// The application's backend disconnected this session or its user (server API
    /// `disconnect`).
    ForceDisconnect = ("force_disconnect", Some(3504)),
    /// The session's token was revoked (server API `revoke`); connect again with a new token.
    TokenRevoked = ("token_revoked", Some(3505)),
    /// The connect proxy refused the connection (its message says why).
    ConnectRefused = ("connect_refused", Some(3506)),
}

impl Code {
    /// Whether a client should reconnect after a close with this code.
    pub const fn reconnect(self) -> Reconnect {
        match self.close_code() {
            Some(c) if c >= 3500 => Reconnect::No,
            _ => Reconnect::Yes,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_close_codes_are_unique() {
        let mut names = std::collections::HashSet::new();
        let mut closes = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(names.insert(c.as_str()), "duplicate name {c}");
            if let Some(n) = c.close_code() {
                assert!(closes.insert(n), "duplicate close code {n}");
                assert!((3000..4000).contains(&n), "{c} outside the protocol range");
            }
        }
    }

    #[test]
    fn reconnect_follows_the_range_rule() {
        assert_eq!(Code::PingTimeout.reconnect(), Reconnect::Yes);
        assert_eq!(Code::InvalidToken.reconnect(), Reconnect::No);
        assert_eq!(Code::UnknownEvent.reconnect(), Reconnect::Yes);
    }
}
