//! Reaching one running instance from outside: its console and telemetry streams
//! (opened with a single-use token) and SSH credentials. The caller's access is
//! checked when the grant is made; the stream or session then holds only the grant.

use crate::error::RuntimeError;
use crate::grants::{GrantTarget, SshCredentials, StreamGrant, StreamPurpose};
use crate::instances::instance_not_found;
use crate::logs::LogEntry;
use crate::model::{Caller, ContainerId, ContainerSpec, InstanceId, InstanceState};
use crate::runtime::Runtime;
use ember_sandbox::{EnterRequest, EnteredProcess, Instance, ResourceUsage, WorkloadKind};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::broadcast;

/// What a telemetry stream shows of an instance at one moment.
#[derive(Debug, Clone)]
pub struct TelemetryReading {
    /// When it was read.
    pub at: SystemTime,
    /// The instance's state.
    pub state: InstanceState,
    /// What it has used (CPU time since its start; memory, network and storage now).
    pub usage: ResourceUsage,
    /// The container's limits.
    pub spec: ContainerSpec,
}

impl Runtime {
    /// The caller's running instance, as a grant target; a stopped one conflicts.
    async fn grant_target(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<GrantTarget, RuntimeError> {
        let info = self.get_instance(caller, id, instance).await?;
        if info.state != InstanceState::Running {
            return Err(RuntimeError::Conflict {
                code: "invalid_state",
                message: format!(
                    "instance {instance} is {}; only a running instance can be reached",
                    info.state.name()
                ),
            });
        }
        Ok(GrantTarget {
            container: id,
            instance,
            user: caller.user_id,
        })
    }

    /// A single-use token for `purpose`'s WebSocket of the caller's running instance.
    pub async fn grant_stream(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
        purpose: StreamPurpose,
    ) -> Result<StreamGrant, RuntimeError> {
        let target = self.grant_target(caller, id, instance).await?;
        Ok(self
            .grants()
            .grant_stream(purpose, target, SystemTime::now()))
    }

    /// Uses up a stream token: the instance it opens, if it is live and for `purpose`.
    pub fn redeem_stream(&self, token: &str, purpose: StreamPurpose) -> Option<GrantTarget> {
        self.grants()
            .redeem_stream(token, purpose, SystemTime::now())
    }

    /// The instance a grant opens, while it runs (and its container is there).
    fn granted_instance(&self, target: &GrantTarget) -> Option<Arc<dyn Instance>> {
        self.container_traffic(target.container)
            .ok()?
            .running(target.instance)
    }

    /// Whether the instance a grant opens still runs.
    pub fn grant_is_running(&self, target: &GrantTarget) -> bool {
        self.granted_instance(target).is_some()
    }

    /// The instance's retained output, then a receiver of the container's new lines
    /// (those of the instance are named by [`GrantTarget::instance`]'s string).
    pub fn console_output(
        &self,
        target: &GrantTarget,
    ) -> (Vec<LogEntry>, broadcast::Receiver<LogEntry>) {
        let (mut recent, lines) = self.logs().follow(target.container, SystemTime::UNIX_EPOCH);
        let name = target.instance.to_string();
        recent.retain(|entry| entry.instance == name);
        (recent, lines)
    }

    /// Writes console input to the instance's standard input.
    pub async fn console_input(
        &self,
        target: &GrantTarget,
        data: &[u8],
    ) -> Result<(), RuntimeError> {
        let running = self
            .granted_instance(target)
            .ok_or_else(|| instance_not_found(target.instance))?;
        Ok(running.write_input(data).await?)
    }

    /// The instance's usage now, read live (not from the sampler's series), with its
    /// container's limits; `None` once it no longer runs.
    pub async fn telemetry_reading(&self, target: &GrantTarget) -> Option<TelemetryReading> {
        let container = self.store().container(target.container).await.ok()??;
        let running = self.granted_instance(target)?;
        Some(TelemetryReading {
            at: SystemTime::now(),
            state: InstanceState::Running,
            usage: running.usage(),
            spec: container.spec,
        })
    }

    /// New SSH credentials for the caller's running instance. A wasm instance runs no
    /// processes, so it has no shell to log in to.
    pub async fn grant_ssh(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<SshCredentials, RuntimeError> {
        let target = self.grant_target(caller, id, instance).await?;
        if self.container_traffic(id)?.running_kind(instance) == Some(WorkloadKind::Wasm) {
            return Err(RuntimeError::Unprocessable(format!(
                "instance {instance} is a WebAssembly component: it runs no processes, so there is no shell to log in to"
            )));
        }
        let lifetime = self.config().ssh_credential_lifetime;
        Ok(self.grants().grant_ssh(target, lifetime, SystemTime::now()))
    }

    /// Expires every SSH credential of the caller's instance (running or not);
    /// returns how many were still valid.
    pub async fn expire_ssh(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<usize, RuntimeError> {
        self.get_instance(caller, id, instance).await?;
        Ok(self.grants().expire_ssh(instance, SystemTime::now()))
    }

    /// The instance that `user` and `secret` log in to, if they are live credentials
    /// and the container is still there.
    pub fn check_ssh(&self, user: &str, secret: &str) -> Option<GrantTarget> {
        let target = self.grants().check_ssh(user, secret, SystemTime::now())?;
        self.container_traffic(target.container)
            .ok()
            .map(|_| target)
    }

    /// Runs a command (or a shell) inside the instance a login opened.
    pub fn enter_instance(
        &self,
        target: &GrantTarget,
        request: &EnterRequest,
    ) -> Result<EnteredProcess, RuntimeError> {
        let running = self
            .granted_instance(target)
            .ok_or_else(|| RuntimeError::Conflict {
                code: "invalid_state",
                message: format!("instance {} no longer runs", target.instance),
            })?;
        Ok(running.enter(request)?)
    }
}
