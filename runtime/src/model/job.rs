//! Jobs: asynchronous operations on instances that a client polls.

use super::{ContainerId, InstanceId, JobId, UserId};
use std::time::SystemTime;

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum JobAction {
    /// Start pinned instances.
    CreateInstances {
        /// How many.
        count: u32,
    },
    /// Stop every instance of the container.
    DeleteInstances,
    /// Stop one instance.
    DeleteInstance {
        /// Which.
        instance_id: InstanceId,
    },
    /// Move one instance to another server (on a node of one, into a new sandbox
    /// here), or back where a migration took it from.
    MigrateInstance {
        /// Which.
        instance_id: InstanceId,
        /// Whether this undoes an earlier migration.
        revert: bool,
    },
}

impl JobAction {
    /// The action's name, as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            JobAction::CreateInstances { .. } => "container.instances.create",
            JobAction::DeleteInstances => "container.instances.delete",
            JobAction::DeleteInstance { .. } => "container.instance.delete",
            JobAction::MigrateInstance { revert: false, .. } => {
                "container.instance.migration.start"
            }
            JobAction::MigrateInstance { revert: true, .. } => {
                "container.instance.migration.revert"
            }
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, not started.
    Queued,
    /// Under way.
    Running,
    /// Done.
    Completed,
    /// Ended with an error (see the job's error).
    Error,
}

/// One job, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it does.
    pub action: JobAction,
    /// The container it acts on.
    pub container_id: ContainerId,
    /// Who asked for it.
    pub created_by: UserId,
    /// Where it is.
    pub state: JobState,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Steps it has (instances to start or stop).
    pub steps_total: u32,
    /// Steps done.
    pub steps_done: u32,
    /// When it was accepted.
    pub date_created: SystemTime,
    /// When it last changed state.
    pub date_updated: SystemTime,
}

impl Job {
    /// A job just accepted.
    pub fn new(
        action: JobAction,
        container_id: ContainerId,
        created_by: UserId,
        steps_total: u32,
        now: SystemTime,
    ) -> Self {
        Self {
            id: JobId::generate(),
            action,
            container_id,
            created_by,
            state: JobState::Queued,
            error: None,
            steps_total,
            steps_done: 0,
            date_created: now,
            date_updated: now,
        }
    }

    /// Whether it has ended, one way or the other.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, JobState::Completed | JobState::Error)
    }
}
