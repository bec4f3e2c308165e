//! What an instance uses: the sampler that reads every running instance's CPU and
//! memory at an interval, the series it keeps, a reading now, and the processes.

use crate::error::RuntimeError;
use crate::model::{Caller, ContainerId, InstanceId};
use crate::runtime::Runtime;
use crate::usage::UsageSample;
use ember_sandbox::processes::ProcessInfo;
impl Runtime {
    /// The CPU and memory samples of an instance, oldest first.
    pub async fn instance_usage(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<Vec<UsageSample>, RuntimeError> {
        self.accessible(caller, id).await?;
        Ok(self.usage().series(instance))
    }

    /// The latest CPU and memory sample of an instance, taken now if none was yet.
    pub async fn instance_usage_now(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<Option<UsageSample>, RuntimeError> {
        self.accessible(caller, id).await?;
        let service = self.container_traffic(id)?;
        if let Some(sample) = self.usage().latest(instance) {
            return Ok(Some(sample));
        }
        Ok(service.running(instance).map(|running| {
            let usage = running.usage();
            UsageSample {
                at: std::time::SystemTime::now(),
                cpu_percent: 0.0,
                memory_bytes: usage.memory_bytes,
                network: usage.network,
            }
        }))
    }

    /// The processes a running instance runs (none for wasm).
    pub async fn instance_processes(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<Vec<ProcessInfo>, RuntimeError> {
        self.accessible(caller, id).await?;
        let Some(running) = self.container_traffic(id)?.running(instance) else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || running.processes())
            .await
            .map_err(RuntimeError::task("listing the instance's processes"))?
            .map_err(RuntimeError::io("listing the instance's processes"))
    }

    /// Samples every running instance's usage at the configured interval.
    pub(crate) fn spawn_usage_sampler(&self) {
        self.spawn_periodic(self.config().usage_sample_interval, |inner| async move {
            let services = inner.containers().all();
            // Reading cgroup files blocks.
            let usages = tokio::task::spawn_blocking(move || {
                services.iter().flat_map(|s| s.usages()).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            inner.usage().record(std::time::SystemTime::now(), &usages);
        });
    }
}
