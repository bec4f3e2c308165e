//! Power actions on instances (document 000's power control, 001's power on every
//! instance, 003's start, stop and terminate), and what an instance is using.
//!
//! An instance started by hand is pinned: it runs until stopped by hand, as a Tutum
//! container does, rather than until the autoscaler finds it idle. The pinned count
//! and the stopped instances are stored before an action is accepted, so a restart
//! of the runtime brings back as many pinned instances, and the stopped ones as
//! stopped, under their ids.

use crate::activator::{Leaving, Refusal};
use crate::error::RuntimeError;
use crate::model::{Caller, ContainerId, ContainerName, InstanceId, InstanceInfo, InstanceState};
use crate::runtime::{ContainerView, Runtime};
use crate::usage::UsageSample;
use ember_sandbox::processes::ProcessInfo;

/// What can be done to an instance by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Starts a stopped instance again, under its id.
    Start,
    /// Stops a running instance; it keeps its id and can start again.
    Stop,
    /// Stops a running instance and starts it again. A stopped one just starts.
    Restart,
    /// As restart: every start of an Ember instance is a fresh sandbox made from the
    /// image, with nothing kept of the filesystem it wrote.
    Rebuild,
    /// Stops an instance for good (irreversible).
    Terminate,
}

impl PowerAction {
    /// The action's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Rebuild => "rebuild",
            Self::Terminate => "terminate",
        }
    }

    /// The states the action applies to.
    pub fn applies_to(self) -> &'static [InstanceState] {
        match self {
            Self::Start => &[InstanceState::Stopped],
            Self::Stop => &[InstanceState::Running],
            Self::Restart | Self::Rebuild | Self::Terminate => {
                &[InstanceState::Running, InstanceState::Stopped]
            }
        }
    }
}

impl Runtime {
    /// Applies `action` to one instance. Returns once the instance shows the
    /// action's first state (Stopping, Starting, Terminating, or Terminated for a
    /// stopped one); the stop or start itself goes on in the background.
    pub async fn power_instance(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
        action: PowerAction,
    ) -> Result<(), RuntimeError> {
        self.edit_container(Some(caller), id, |container, service| {
            let refused =
                |refusal| refusal_error(refusal, instance, action.name(), action.applies_to());
            let taken = match action {
                // Never take a running instance for a start: it would have to go back.
                PowerAction::Start => Err(service.refusal_for(instance)),
                PowerAction::Terminate => service.take_running(instance, Leaving::ToTerminated),
                // A restart or rebuild starts the stopped instance again.
                _ => service.take_running(instance, Leaving::ToStopped),
            };
            match taken {
                Ok(live) => {
                    if action == PowerAction::Stop || action == PowerAction::Terminate {
                        if live.is_pinned() {
                            container.pinned_instances =
                                container.pinned_instances.saturating_sub(1);
                        }
                        if action == PowerAction::Stop {
                            container.stopped_instances.push(live.as_stopped());
                        }
                        self.background().spawn_stop(service.stop_taken(live));
                    } else {
                        // Restart, rebuild: the same instance, pinned or not, as before.
                        let pinned = live.is_pinned();
                        let stop = service.stop_taken(live);
                        let again = service.clone();
                        self.background().spawn_stop(async move {
                            stop.await;
                            if let Err(refusal) = again.start_stopped(instance, pinned) {
                                tracing::warn!(%instance, ?refusal, "an instance stopped for a restart did not start again");
                            }
                        });
                    }
                }
                Err(Refusal::InState(InstanceState::Stopped)) => match action {
                    PowerAction::Terminate => {
                        service.terminate_stopped(instance).map_err(refused)?;
                        container.stopped_instances.retain(|s| s.id != instance);
                    }
                    PowerAction::Start | PowerAction::Restart | PowerAction::Rebuild => {
                        let limit = container.spec.max_instances;
                        if container.pinned_instances >= limit {
                            return Err(RuntimeError::Conflict {
                                code: "too_many_instances",
                                message: format!(
                                    "the container already keeps {limit} instances started by hand (maxInstances)"
                                ),
                            });
                        }
                        service.start_stopped(instance, true).map_err(refused)?;
                        container.pinned_instances += 1;
                        container.stopped_instances.retain(|s| s.id != instance);
                    }
                    PowerAction::Stop => {
                        return Err(refused(Refusal::InState(InstanceState::Stopped)));
                    }
                },
                Err(refusal) => return Err(refused(refusal)),
            }
            Ok(())
        })
        .await
    }

    /// Applies `action` to every instance of a container it applies to; returns
    /// how many it was applied to.
    pub async fn power_all_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
        action: PowerAction,
    ) -> Result<usize, RuntimeError> {
        let instances = self.list_all_instances(caller, id).await?;
        let mut applied = 0;
        for instance in instances {
            if !action.applies_to().contains(&instance.state) {
                continue;
            }
            match self.power_instance(caller, id, instance.id, action).await {
                Ok(()) => applied += 1,
                // It moved on meanwhile (ended on its own, say): not ours to report.
                Err(RuntimeError::Conflict { .. } | RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }

    /// Every instance of a container the runtime knows: running, starting, stopped
    /// by hand and recently terminated.
    pub async fn list_all_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Vec<InstanceInfo>, RuntimeError> {
        self.accessible(caller, id).await?;
        Ok(self
            .containers()
            .get(id)
            .map(|s| s.instances())
            .unwrap_or_default())
    }

    /// Every instance of the caller's containers, with its container's id and
    /// name, ordered by the containers' age, then as each container lists them.
    /// Read from memory: pair it with [`Runtime::views`] for the rows returned.
    pub fn all_instances(
        &self,
        caller: &Caller,
    ) -> Vec<(ContainerId, ContainerName, InstanceInfo)> {
        let mut found: Vec<_> = self
            .services_with_instances()
            .into_iter()
            .map(|service| (service.listing(), service))
            .filter(|(listing, _)| {
                caller
                    .owner_scope()
                    .is_none_or(|user| listing.owner == user)
            })
            .collect();
        found.sort_by_key(|(listing, service)| (listing.created, service.id));
        found
            .into_iter()
            .flat_map(|(listing, service)| {
                let id = service.id;
                service
                    .instances()
                    .into_iter()
                    .map(move |instance| (id, listing.name.clone(), instance))
            })
            .collect()
    }

    /// The caller's views of containers `ids` (those it may not see are left out):
    /// a store read each.
    pub async fn views(
        &self,
        caller: &Caller,
        ids: Vec<ContainerId>,
    ) -> Result<std::collections::HashMap<ContainerId, ContainerView>, RuntimeError> {
        let mut views = std::collections::HashMap::new();
        for id in ids {
            if views.contains_key(&id) {
                continue;
            }
            match self.get_container(caller, id).await {
                Ok(view) => {
                    views.insert(id, view);
                }
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(views)
    }

    /// The instances of a container the caller was shown (its view), read from
    /// memory: those starting, running, stopping or stopped, as
    /// [`Runtime::list_instances`] gives them.
    pub fn instances_of(&self, view: &ContainerView) -> Vec<InstanceInfo> {
        let mut instances = self
            .containers()
            .get(view.container.id)
            .map(|s| s.instances())
            .unwrap_or_default();
        instances.retain(|i| {
            !matches!(
                i.state,
                InstanceState::Terminating | InstanceState::Terminated
            )
        });
        instances
    }

    /// The containers that have an instance to show.
    pub(crate) fn services_with_instances(
        &self,
    ) -> Vec<std::sync::Arc<crate::activator::ContainerTraffic>> {
        self.containers().with_instances()
    }

    /// The caller's instance whose integer id (as the numbered faces show it) is
    /// `number`, with its container.
    pub async fn find_instance_by_number(
        &self,
        caller: &Caller,
        number: u64,
    ) -> Result<(ContainerView, InstanceInfo), RuntimeError> {
        self.find_instance_where(caller, |id| id.number() == number, number.to_string())
            .await
    }

    /// The caller's instance `id`, with its container.
    pub async fn find_instance(
        &self,
        caller: &Caller,
        id: InstanceId,
    ) -> Result<(ContainerView, InstanceInfo), RuntimeError> {
        self.find_instance_where(caller, |i| i == id, id.to_string())
            .await
    }

    /// The caller's instance whose id `matches`, with its container; another user's
    /// is not found, as if it did not exist (`shown` is the id as asked for).
    async fn find_instance_where(
        &self,
        caller: &Caller,
        matches: impl Fn(InstanceId) -> bool,
        shown: String,
    ) -> Result<(ContainerView, InstanceInfo), RuntimeError> {
        let services = self.services_with_instances();
        let not_found = || RuntimeError::NotFound {
            what: "container",
            id: shown.clone(),
        };
        let instance = services
            .iter()
            .flat_map(|s| s.instances())
            .find(|i| matches(i.id))
            .ok_or_else(not_found)?;
        match self.get_container(caller, instance.container_id).await {
            Ok(view) => Ok((view, instance)),
            Err(RuntimeError::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

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
            .map_err(|e| RuntimeError::Storage(format!("listing processes: {e}")))?
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

/// Why `action`, which needs the instance in one of `applies_to`, was refused.
pub(crate) fn refusal_error(
    refusal: Refusal,
    instance: InstanceId,
    action: &str,
    applies_to: &[InstanceState],
) -> RuntimeError {
    match refusal {
        Refusal::NotFound => RuntimeError::NotFound {
            what: "instance",
            id: instance.to_string(),
        },
        Refusal::InState(state) => RuntimeError::Conflict {
            code: "invalid_state",
            message: format!(
                "instance {instance} is {}; {} applies only to an instance that is {}",
                state.name(),
                action,
                applies_to
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        },
        Refusal::NotServing => RuntimeError::Conflict {
            code: "not_serving",
            message: "the container has no revision serving, so nothing can start".into(),
        },
    }
}
