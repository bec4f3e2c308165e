//! Jobs: long operations (instance starts, removals, migrations) recorded so that
//! a client can poll them, with their progress, and ended with an error when the
//! runtime stopped before they finished.

use crate::error::RuntimeError;
use crate::model::{Caller, ContainerId, Job, JobAction, JobId, JobState};
use crate::runtime::Runtime;
use std::time::{Duration, SystemTime};

/// How long a finished job stays for clients to poll; older ones are removed when
/// the runtime starts and whenever a job is created.
pub(crate) const FINISHED_JOB_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

impl Runtime {
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

    /// A new job that moves `instance` of container `id` (or moves it back).
    pub(crate) async fn new_migration_job(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: crate::model::InstanceId,
        revert: bool,
    ) -> Result<Job, RuntimeError> {
        let action = JobAction::MigrateInstance {
            instance_id: instance,
            revert,
        };
        self.new_job(caller, id, action, 1).await
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
    pub(crate) fn job_progress(&self, id: JobId) -> JobProgress {
        JobProgress {
            runtime: self.clone(),
            id,
        }
    }

    pub(crate) async fn finish_job(&self, id: JobId, error: Option<String>) {
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
            .update_job(
                id,
                Box::new(move |job| {
                    change(job);
                    job.date_updated = SystemTime::now();
                }),
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(job = %id, error = %e, "recording a job's progress failed");
        }
    }
}

/// A job's step counter.
pub(crate) struct JobProgress {
    runtime: Runtime,
    id: JobId,
}

impl JobProgress {
    /// One more step is done (never more than the job has); recorded in the
    /// background, since steps are counted from code that cannot wait.
    pub(crate) fn step(&self) {
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
