//! Fuzz target: arbitrary bytes as an event payload, parsed and validated as every DTO the
//! server registers (`validate::parse`). Parsing must never panic; a DTO that passes must
//! satisfy its own rules, and a refusal must name at least one field error, because the
//! client is answered `validation_failed` with that list.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtgate::{
    dispatch::sys::Publish,
    presence::{MAX_USERS_PER_REQUEST, UserIds},
    validate::{Dto, parse},
};
use serde_json::value::RawValue;

/// Runs one DTO and checks the refusal shape; returns the DTO when it passed.
fn check<T: Dto>(raw: &RawValue) -> Option<T> {
    match parse::<T>(raw) {
        Ok(dto) => Some(dto),
        Err(errors) => {
            assert!(!errors.is_empty(), "refused with no field errors");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The session hands handlers the `data` of a decoded frame, which is always valid JSON;
    // bytes that are not JSON never reach `parse`.
    let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(data) else {
        return;
    };
    if let Some(echo) = check::<Box<RawValue>>(&raw) {
        assert_eq!(echo.get(), raw.get(), "pass-through payload changed");
    }
    if let Some(ids) = check::<UserIds>(&raw) {
        assert!((1..=MAX_USERS_PER_REQUEST).contains(&ids.user_ids.len()));
        assert!(ids.user_ids.iter().all(|id| (1..=128).contains(&id.len())));
    }
    let _ = check::<Publish>(&raw);
});
