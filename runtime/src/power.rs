//! Power actions on instances: start, stop, restart, rebuild and terminate, one
//! instance or all of a container's, as every face offers them.
//!
//! An instance started by hand is pinned: it runs until stopped by hand, as a Tutum
//! container does, rather than until the autoscaler finds it idle. The pinned count
//! and the stopped instances are stored before an action is accepted, so a restart
//! of the runtime brings back as many pinned instances, and the stopped ones as
//! stopped, under their ids.

use crate::activator::{Leaving, Refusal};
use crate::error::RuntimeError;
use crate::model::{Caller, ContainerId, InstanceId, InstanceState};
use crate::runtime::Runtime;

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
                            container.unpin_one(self.server_id());
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
                        container.pin(self.server_id(), 1);
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
