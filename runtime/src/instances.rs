//! The instances API: a container's instances listed and found, and instances
//! started and removed by hand, each such change a job that a client polls. The
//! pinned instance count is stored before a job is accepted, so a restart brings
//! the instances back.

use crate::activator::StartOutcome;
use crate::error::RuntimeError;
use crate::model::{
    Caller, ContainerId, ContainerName, InstanceId, InstanceInfo, InstanceState, Job, JobAction,
    ServerId,
};
use crate::runtime::{ContainerView, Runtime};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

impl Runtime {
    /// A container's instances, but for those terminating or terminated: those
    /// starting, running, and stopping or stopped by hand.
    pub async fn list_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Vec<InstanceInfo>, RuntimeError> {
        use crate::model::InstanceState::{Terminated, Terminating};
        let mut instances = self.list_all_instances(caller, id).await?;
        instances.retain(|i| !matches!(i.state, Terminating | Terminated));
        Ok(instances)
    }
}

impl Runtime {
    /// One instance of a container.
    pub async fn get_instance(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<InstanceInfo, RuntimeError> {
        self.list_instances(caller, id)
            .await?
            .into_iter()
            .find(|i| i.id == instance)
            .ok_or_else(|| instance_not_found(instance))
    }

    /// Starts pinned instances on the given servers: `(server, count)` pairs. They
    /// serve traffic like the others but the autoscaler neither counts nor stops them.
    pub async fn create_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
        requests: &[(ServerId, u32)],
    ) -> Result<Job, RuntimeError> {
        let here = self.server_id();
        let live = self.live_servers();
        let mut count = 0u32;
        for (i, (server, n)) in requests.iter().enumerate() {
            if !live.contains(server) && *server != here {
                let servers: Vec<String> = live.iter().map(ToString::to_string).collect();
                return Err(RuntimeError::invalid(
                    &format!("[{i}].server_id"),
                    format!(
                        "there is no server {server}; the servers are {} (GET /v1/servers)",
                        servers.join(", ")
                    ),
                ));
            }
            count = count.saturating_add(*n);
        }
        let (service, target) = self
            .edit_container(Some(caller), id, |container, traffic| {
            let limit = container.spec.max_instances;
            let pinned = container.pinned_instances.saturating_add(count);
            if pinned > limit {
                return Err(RuntimeError::invalid(
                    "new_instances",
                    format!(
                        "{count} more would make {pinned} pinned instances; the container allows {limit} (maxInstances)"
                    ),
                ));
            }
            if container.serving_revision.is_none() {
                return Err(RuntimeError::Unprocessable(
                    "the container has not deployed yet; create instances once it has".into(),
                ));
            }
            for (server, n) in requests {
                container.pin(*server, *n);
            }
            let target = crate::model::pinned_share(
                container.id,
                &container.pinned_on,
                container.pinned_instances,
                here,
                &live,
            );
            Ok((traffic.clone(), target))
        })
            .await?;
        let job = self
            .new_job(caller, id, JobAction::CreateInstances { count }, count)
            .await?;
        // Those of other servers are started by their nodes when the record
        // reaches them; this job follows the ones started here.
        let Some(outcomes) = service.add_pinned_up_to(target) else {
            // Unavailable since: the job says so; the count stands for when it serves.
            self.finish_job(job.id, Some("the container stopped serving".into()))
                .await;
            return Ok(job);
        };
        let progress = self.job_progress(job.id);
        self.spawn_job(job.id, async move {
            wait_for_starts(outcomes, || progress.step()).await
        });
        Ok(job)
    }

    /// Stops every instance of a container and forgets its pinned instances.
    pub async fn delete_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Job, RuntimeError> {
        let service = self
            .edit_container(Some(caller), id, |container, traffic| {
                container.unpin_all();
                container.stopped_instances.clear();
                Ok(traffic.clone())
            })
            .await?;
        let running = service.instance_count() as u32;
        let job = self
            .new_job(caller, id, JobAction::DeleteInstances, running)
            .await?;
        let progress = self.job_progress(job.id);
        self.spawn_job(job.id, async move {
            service.remove_all_instances(|| progress.step()).await;
            Ok(())
        });
        Ok(job)
    }

    /// Stops one instance (a pinned one is not replaced), or forgets a stopped one.
    pub async fn delete_instance(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<Job, RuntimeError> {
        let (service, was_stopped) = self
            .edit_container(Some(caller), id, |container, service| {
                let info = service
                    .instance(instance)
                    .ok_or_else(|| instance_not_found(instance))?;
                match info.state {
                    InstanceState::Starting => {
                        return Err(RuntimeError::Unprocessable(format!(
                            "instance {instance} is still starting; delete it once it runs"
                        )));
                    }
                    InstanceState::Running => {
                        if info.pinned {
                            container.unpin_one(self.server_id());
                        }
                    }
                    // Holds nothing and no longer counts as pinned: it is only forgotten.
                    InstanceState::Stopped => {
                        service
                            .terminate_stopped(instance)
                            .map_err(|_| instance_not_found(instance))?;
                        container.stopped_instances.retain(|s| s.id != instance);
                    }
                    // The instances API does not list instances on their way out.
                    InstanceState::Terminating | InstanceState::Terminated => {
                        return Err(instance_not_found(instance));
                    }
                    InstanceState::Stopping => {
                        return Err(RuntimeError::Conflict {
                            code: "invalid_state",
                            message: format!(
                                "instance {instance} is {}; wait until it has stopped",
                                info.state.name()
                            ),
                        });
                    }
                }
                Ok((service.clone(), info.state == InstanceState::Stopped))
            })
            .await?;
        let job = self
            .new_job(
                caller,
                id,
                JobAction::DeleteInstance {
                    instance_id: instance,
                },
                1,
            )
            .await?;
        if was_stopped {
            self.finish_job(job.id, None).await;
            return self.get_job(caller, job.id).await;
        }
        self.spawn_job(job.id, async move {
            service
                .remove_instance(instance)
                .await
                .ok_or_else(|| vec![format!("instance {instance} had already stopped")])
        });
        Ok(job)
    }
}

impl Runtime {
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
}

/// Waits for every start, calling `started` as each one succeeds, in the order
/// they end; the errors of those that failed.
async fn wait_for_starts(
    outcomes: Vec<StartOutcome>,
    started: impl Fn(),
) -> Result<(), Vec<String>> {
    let mut ends: FuturesUnordered<_> = outcomes
        .into_iter()
        .map(|mut outcome| async move {
            match outcome.wait_for(Option::is_some).await {
                Ok(result) => match &*result {
                    Some(Err(reason)) => Err(reason.to_string()),
                    _ => Ok(()),
                },
                Err(_) => Err("the start was abandoned".to_string()),
            }
        })
        .collect();
    let mut errors = Vec::new();
    while let Some(end) = ends.next().await {
        match end {
            Ok(()) => started(),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub(crate) fn instance_not_found(id: InstanceId) -> RuntimeError {
    RuntimeError::NotFound {
        what: "instance",
        id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::watch;

    #[tokio::test]
    async fn starts_are_counted_as_each_one_ends() {
        let (senders, outcomes): (Vec<_>, Vec<_>) = (0..3).map(|_| watch::channel(None)).unzip();
        let started = Arc::new(AtomicUsize::new(0));
        let counted = started.clone();
        let waiting = tokio::spawn(wait_for_starts(outcomes, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        // The last start ends first, and is counted before the others end.
        senders[2].send_replace(Some(Ok(())));
        while started.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        senders[0].send_replace(Some(Err(Arc::from("no room"))));
        senders[1].send_replace(Some(Ok(())));
        let errors = waiting.await.unwrap().unwrap_err();
        assert_eq!(errors, vec!["no room".to_string()]);
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }
}
