//! The OCI instances running now, by sandbox id: written when one starts and
//! removed when it stops, so that a runtime started after this one was killed
//! knows whose each instance it finds still running is.

use super::{InstanceRecords, SledStore, decode, encode};
use crate::error::RuntimeError;
use crate::model::RunningInstance;

#[async_trait::async_trait]
impl InstanceRecords for SledStore {
    /// Records that `sandbox` runs `instance`.
    async fn record_running(
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
    async fn forget_running(&self, sandbox: String) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                t.running.remove(sandbox.as_bytes())?;
                Ok(())
            })
            .await
    }

    /// Every instance recorded as running, by sandbox id. Blocks.
    fn running_blocking(&self) -> Result<Vec<(String, RunningInstance)>, RuntimeError> {
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
