//! The instances API: instances started and stopped by hand, each operation a job
//! that a client polls. The pinned instance count is stored before a job is
//! accepted, so a restart brings the instances back.

use crate::activator::StartOutcome;
use crate::error::RuntimeError;
use crate::model::{
    Caller, ContainerId, InstanceId, InstanceInfo, InstanceState, Job, JobAction, JobId, JobState,
    ServerId,
};
use crate::runtime::Runtime;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::time::{Duration, SystemTime};

/// How long a finished job stays for clients to poll; older ones are removed when
/// the runtime starts and whenever a job is created.
pub(crate) const FINISHED_JOB_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

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
        let server_id = self.server_id();
        let mut count = 0u32;
        for (i, (server, n)) in requests.iter().enumerate() {
            if *server != server_id {
                return Err(RuntimeError::invalid(
                    &format!("[{i}].server_id"),
                    format!("there is no server {server}; this runtime's server is {server_id}"),
                ));
            }
            count = count.saturating_add(*n);
        }
        let service = self
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
            container.pinned_instances = pinned;
            Ok(traffic.clone())
        })
            .await?;
        let job = self
            .new_job(caller, id, JobAction::CreateInstances { count }, count)
            .await?;
        let Some(outcomes) = service.add_pinned(count) else {
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
                container.pinned_instances = 0;
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
                    .instances()
                    .into_iter()
                    .find(|i| i.id == instance)
                    .ok_or_else(|| instance_not_found(instance))?;
                match info.state {
                    InstanceState::Starting => {
                        return Err(RuntimeError::Unprocessable(format!(
                            "instance {instance} is still starting; delete it once it runs"
                        )));
                    }
                    InstanceState::Running => {
                        if info.pinned {
                            container.pinned_instances =
                                container.pinned_instances.saturating_sub(1);
                        }
                    }
                    // Holds nothing and no longer counts as pinned: it is only forgotten.
                    InstanceState::Stopped => {
                        service
                            .terminate_stopped(instance)
                            .map_err(|_| instance_not_found(instance))?;
                        container.stopped_instances.retain(|s| s.id != instance);
                    }
                    // Document 004 does not list instances on their way out.
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

    /// One job, if the caller may see its container (or made it).
    pub async fn get_job(&self, caller: &Caller, id: JobId) -> Result<Job, RuntimeError> {
        let not_found = || RuntimeError::NotFound {
            what: "job",
            id: id.to_string(),
        };
        let job = self.store().job(id).await?.ok_or_else(not_found)?;
        let visible = caller.user_id == job.created_by
            || caller.role == crate::model::Role::Admin
            || self.accessible(caller, job.container_id).await.is_ok();
        if visible { Ok(job) } else { Err(not_found()) }
    }

    /// Jobs that were under way when the runtime stopped end with an error that says
    /// so; what they asked for (the pinned count) was stored and stands.
    pub(crate) async fn finish_interrupted_jobs(&self) -> Result<(), RuntimeError> {
        self.store()
            .fail_unfinished_jobs(
                "the runtime stopped before the job finished; pinned instances it asked for start again with the runtime".into(),
                SystemTime::now(),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn new_job(
        &self,
        caller: &Caller,
        id: ContainerId,
        action: JobAction,
        steps: u32,
    ) -> Result<Job, RuntimeError> {
        let job = Job::new(action, id, caller.user_id, steps, SystemTime::now());
        self.store().save_job(job.clone()).await?;
        Ok(job)
    }

    /// Runs `work` as job `id`: running now, completed or failed when it ends.
    pub(crate) fn spawn_job(
        &self,
        id: JobId,
        work: impl Future<Output = Result<(), Vec<String>>> + Send + 'static,
    ) {
        let runtime = self.clone();
        tokio::spawn(async move {
            runtime
                .update_job(id, |job| job.state = JobState::Running)
                .await;
            let error = work.await.err().map(|errors| errors.join("; "));
            runtime.finish_job(id, error).await;
        });
    }

    /// Counts job `id`'s steps as they are done, for clients that poll it.
    fn job_progress(&self, id: JobId) -> JobProgress {
        JobProgress {
            runtime: self.clone(),
            id,
        }
    }

    async fn finish_job(&self, id: JobId, error: Option<String>) {
        self.update_job(id, |job| {
            job.state = if error.is_some() {
                JobState::Error
            } else {
                JobState::Completed
            };
            if error.is_none() {
                job.steps_done = job.steps_total;
            }
            job.error = error;
        })
        .await;
    }

    async fn update_job(&self, id: JobId, change: impl FnOnce(&mut Job) + Send + 'static) {
        let result = self
            .store()
            .update_job(id, move |job| {
                change(job);
                job.date_updated = SystemTime::now();
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(job = %id, error = %e, "recording a job's progress failed");
        }
    }
}

/// A job's step counter.
struct JobProgress {
    runtime: Runtime,
    id: JobId,
}

impl JobProgress {
    /// One more step is done (never more than the job has); recorded in the
    /// background, since steps are counted from code that cannot wait.
    fn step(&self) {
        let (runtime, id) = (self.runtime.clone(), self.id);
        tokio::spawn(async move {
            runtime
                .update_job(id, |job| {
                    job.steps_done = (job.steps_done + 1).min(job.steps_total);
                })
                .await;
        });
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
