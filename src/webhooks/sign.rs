//! Webhook signatures, in the Standard Webhooks scheme: `webhook-signature: v1,<base64 of
//! HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>`. The timestamp is the
//! attempt's, so a receiver can refuse anything older than its replay window (README: 5
//! minutes) even for a retry.

use base64::Engine;

/// The `webhook-signature` value for one attempt.
pub fn signature(secret: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    let tag = ctx.sign();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

/// Whether `header` (space-separated signatures) holds a valid one for this attempt: what a
/// receiver checks (the tests' receiver uses it; README shows the same in Python and Node).
pub fn verify(secret: &[u8], id: &str, timestamp: u64, body: &str, header: &str) -> bool {
    let expected = signature(secret, id, timestamp, body);
    header.split(' ').any(|s| {
        use subtle::ConstantTimeEq;
        s.len() == expected.len() && bool::from(s.as_bytes().ct_eq(expected.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_own_id_time_and_body() {
        let s = signature(b"secret-0123456789", "evt_1", 1_700_000_000, r#"{"a":1}"#);
        assert!(s.starts_with("v1,"));
        assert!(verify(b"secret-0123456789", "evt_1", 1_700_000_000, r#"{"a":1}"#, &s));
        assert!(verify(
            b"secret-0123456789",
            "evt_1",
            1_700_000_000,
            r#"{"a":1}"#,
            &format!("v1,old {s}")
        ));
        assert!(!verify(b"secret-0123456789", "evt_2", 1_700_000_000, r#"{"a":1}"#, &s));
        assert!(!verify(b"secret-0123456789", "evt_1", 1_700_000_001, r#"{"a":1}"#, &s));
        assert!(!verify(b"secret-0123456789", "evt_1", 1_700_000_000, r#"{"a":2}"#, &s));
        assert!(!verify(b"another-secret-01", "evt_1", 1_700_000_000, r#"{"a":1}"#, &s));
    }

    /// A vector computed independently (Python's `hmac`), the one README's snippets check.
    #[test]
    fn the_documented_vector_holds() {
        let body = r#"{"type":"user.online"}"#;
        let s = signature(b"whsec-test-0123456789", "evt_test", 1_700_000_000, body);
        assert_eq!(s, "v1,lIGmJ/FR4T8/VE8ePcu9mhsHzw7r8TCkbwwYTit4wt0=");
    }
}
