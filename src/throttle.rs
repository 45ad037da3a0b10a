//! The throttling stage of the pipeline: decides whether an event may proceed under the
//! per-socket and per-user budgets.
//!
//! Until the shared-state backends land this stage admits everything; it exists now so the
//! pipeline's order (auth → throttle → validate → dispatch) is fixed and later limits plug in
//! here without touching the session loop.

use crate::dispatch::EventError;

#[derive(Debug, Default)]
pub struct Throttle;

impl Throttle {
    /// Admits or refuses one event from `socket_id`/`user_id`.
    pub async fn check(
        &self,
        _socket_id: &str,
        _user_id: &str,
        _event: &str,
    ) -> Result<(), EventError> {
        Ok(())
    }
}
