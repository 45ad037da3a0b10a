//! In-memory revocation store (single node): the same maps an instance's copy keeps.

use super::{Known, Mark, Revocations};
use crate::state::StateError;

#[derive(Default)]
pub struct MemoryRevocations {
    marks: Known,
}

impl MemoryRevocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets marks past their `until` (called by the cleanup job).
    pub fn prune(&self) {
        self.marks.prune();
    }
}

#[async_trait::async_trait]
impl Revocations for MemoryRevocations {
    async fn revoke(&self, mark: &Mark) -> Result<(), StateError> {
        self.marks.merge(mark);
        Ok(())
    }

    async fn marks(&self) -> Result<Vec<Mark>, StateError> {
        Ok(self.marks.marks())
    }
}
