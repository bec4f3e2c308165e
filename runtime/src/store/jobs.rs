//! Jobs in the store: written by the runtime as they progress, read by clients
//! that poll them, removed a day after they finish.

use super::{JobChange, JobStore, SledStore, decode, encode, get};
use crate::error::RuntimeError;
use crate::model::{Job, JobId};

#[async_trait::async_trait]
impl JobStore for SledStore {
    /// Writes a job (new or changed).
    async fn save_job(&self, job: Job) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                t.jobs.insert(job.id.as_bytes(), encode(&job)?)?;
                Ok(())
            })
            .await
    }

    /// Changes job `id` with `change`, if it exists; the job as changed.
    async fn update_job(&self, id: JobId, change: JobChange) -> Result<Option<Job>, RuntimeError> {
        self.writer
            .write(move |t| {
                let Some(mut job) = get::<Job>(&t.jobs, id.as_bytes())? else {
                    return Ok(None);
                };
                change(&mut job);
                t.jobs.insert(id.as_bytes(), encode(&job)?)?;
                Ok(Some(job))
            })
            .await
    }

    /// One job.
    async fn job(&self, id: JobId) -> Result<Option<Job>, RuntimeError> {
        self.read(move |t| get(&t.jobs, id.as_bytes())).await
    }

    /// Marks every job still under way as failed with `error`: at start, for the
    /// jobs a stopped runtime left. Returns how many.
    async fn fail_unfinished_jobs(
        &self,
        error: String,
        now: std::time::SystemTime,
    ) -> Result<usize, RuntimeError> {
        self.writer
            .write(move |t| {
                let mut failed = 0;
                for value in t.jobs.iter().values() {
                    let mut job: Job = decode(&value?)?;
                    if !job.is_finished() {
                        job.state = crate::model::JobState::Error;
                        job.error = Some(error.clone());
                        job.date_updated = now;
                        t.jobs.insert(job.id.as_bytes(), encode(&job)?)?;
                        failed += 1;
                    }
                }
                Ok(failed)
            })
            .await
    }

    /// Removes the jobs that finished before `cutoff`; returns how many.
    async fn remove_jobs_finished_before(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<usize, RuntimeError> {
        self.writer
            .write(move |t| {
                let mut removed = 0;
                for value in t.jobs.iter().values() {
                    let job: Job = decode(&value?)?;
                    if job.is_finished() && job.date_updated < cutoff {
                        t.jobs.remove(job.id.as_bytes())?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await
    }
}
