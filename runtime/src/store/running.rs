//! The OCI instances running now, by sandbox id: written when one starts and
//! removed when it stops, so that a runtime started after this one was killed
//! knows whose each instance it finds still running is.

use super::{Store, decode, encode};
use crate::error::RuntimeError;
use crate::model::RunningInstance;

impl Store {
    /// Records that `sandbox` runs `instance`.
    pub async fn record_running(
        &self,
        sandbox: String,
        instance: RunningInstance,
    ) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                t.running.insert(sandbox.as_bytes(), encode(&instance)?)?;
                Ok(())
            })
            .await
    }

    /// Forgets `sandbox`: its instance stopped.
    pub async fn forget_running(&self, sandbox: String) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                t.running.remove(sandbox.as_bytes())?;
                Ok(())
            })
            .await
    }

    /// Every instance recorded as running, by sandbox id. Blocks.
    pub fn running_blocking(&self) -> Result<Vec<(String, RunningInstance)>, RuntimeError> {
        self.slot
            .trees()
            .running
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((String::from_utf8_lossy(&key).into_owned(), decode(&value)?))
            })
            .collect()
    }
}
