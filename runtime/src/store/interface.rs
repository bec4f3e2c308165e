//! The state store as the runtime sees it: a few traits, one per kind of record,
//! that any implementation provides (sled is the first; see [`super::SledStore`]).
//! Every implementation must pass the conformance suite in `conformance.rs`.
//!
//! What each call promises, whatever the implementation:
//! - a change is durable before its call returns, and a failed call kept nothing;
//! - a change that touches several records (a container and its name and first
//!   revision, say) is kept whole or not at all;
//! - lists are pages read from an index, so their cost is the rows they return.
//!
//! Calls named `_blocking` block the thread: they serve start-up, on a blocking
//! thread, before anything else runs.

use crate::error::RuntimeError;
use crate::model::{
    Container, ContainerId, ContainerQuery, Job, JobId, Page, PageRequest, Quota, Revision,
    RunningInstance, ServerId, Token, TokenId, UserId, UserName,
};
use ember_sandbox::IdRange;
use std::sync::Arc;
use std::time::SystemTime;

/// The store the runtime holds: cheap to clone, shared by every task.
pub type Store = Arc<dyn StateStore>;

/// A change to a job, applied where the job is stored.
pub type JobChange = Box<dyn FnOnce(&mut Job) + Send>;

/// What became of a write of a container record that expected it unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    /// It was written.
    Written,
    /// The container was deleted meanwhile.
    Gone,
    /// Another writer (another node of a cluster) changed it meanwhile: the
    /// record as it is now.
    Changed(Box<Container>),
}

/// Containers and their revisions.
#[async_trait::async_trait]
pub trait ContainerStore: Send + Sync {
    /// One container.
    async fn container(&self, id: ContainerId) -> Result<Option<Container>, RuntimeError>;

    /// The containers whose integer id (as the numbered faces show it) is
    /// `number`: one, but for a clash of 48-bit numbers.
    async fn containers_numbered(&self, number: u64) -> Result<Vec<Container>, RuntimeError>;

    /// One page of the containers `query` asks for, read from an index.
    async fn list_containers(&self, query: ContainerQuery)
    -> Result<Page<Container>, RuntimeError>;

    /// Stores a new container and its first revision; refuses a name in use
    /// (`RuntimeError::NameTaken`).
    async fn insert_container(
        &self,
        container: Container,
        revision: Revision,
    ) -> Result<(), RuntimeError>;

    /// Stores an updated container with its new revision if its record is still
    /// `before` (whose name is freed when it changed); otherwise nothing is
    /// written, and the answer says why.
    async fn update_container(
        &self,
        before: Container,
        container: Container,
        revision: Revision,
    ) -> Result<Saved, RuntimeError>;

    /// Replaces a container record (status changes) if it is still `before`;
    /// otherwise nothing is written, and the answer says why.
    async fn save_status(&self, before: Container, after: Container)
    -> Result<Saved, RuntimeError>;

    /// Removes a container, its name and its revisions.
    async fn remove_container(&self, container: Container) -> Result<(), RuntimeError>;

    /// Records the artifact a revision's image resolved to.
    async fn save_revision(&self, revision: Revision) -> Result<(), RuntimeError>;

    /// One revision.
    async fn revision(
        &self,
        id: ContainerId,
        number: u32,
    ) -> Result<Option<Revision>, RuntimeError>;

    /// A page of a container's revisions, newest first.
    async fn revisions(
        &self,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError>;

    /// The id range container `id`'s user namespaces map onto: allocated the first
    /// time it is asked for, then kept until the container is removed. Ranges are
    /// numbered in turn and one is given again only once every number was given.
    async fn id_range(&self, id: ContainerId) -> Result<IdRange, RuntimeError>;

    /// Every container, for loading them at start. Blocks.
    fn containers_blocking(&self) -> Result<Vec<Container>, RuntimeError>;

    /// One revision, for start-up work. Blocks.
    fn revision_blocking(
        &self,
        id: ContainerId,
        number: u32,
    ) -> Result<Option<Revision>, RuntimeError>;
}

/// API tokens, by the digest of their secret, and the users they name, with
/// each user's quota.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token under the digest of its secret.
    async fn insert_token(&self, secret_hash: Vec<u8>, token: Token) -> Result<(), RuntimeError>;

    /// The token whose secret has this digest.
    async fn token(&self, secret_hash: Vec<u8>) -> Result<Option<Token>, RuntimeError>;

    /// A page of the tokens, oldest first.
    async fn tokens(&self, page: PageRequest) -> Result<Page<Token>, RuntimeError>;

    /// One token, by id.
    async fn token_by_id(&self, id: TokenId) -> Result<Option<Token>, RuntimeError>;

    /// Removes a token; the token it was, if any.
    async fn remove_token(&self, id: TokenId) -> Result<Option<Token>, RuntimeError>;

    /// The id of user `name`, made with `generate` (and kept) the first time.
    async fn user_id(
        &self,
        name: UserName,
        generate: Box<dyn FnOnce() -> UserId + Send>,
    ) -> Result<UserId, RuntimeError>;

    /// The quota set on user `id`, if one was.
    async fn quota(&self, id: UserId) -> Result<Option<Quota>, RuntimeError>;

    /// Sets user `id`'s quota, replacing the one set before.
    async fn set_quota(&self, id: UserId, quota: Quota) -> Result<(), RuntimeError>;

    /// Every quota set, for loading them at start. Blocks.
    fn quotas_blocking(&self) -> Result<Vec<(UserId, Quota)>, RuntimeError>;
}

/// Jobs: written as they progress, read by clients that poll them.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Writes a job (new or changed).
    async fn save_job(&self, job: Job) -> Result<(), RuntimeError>;

    /// Changes job `id` with `change`, if it exists; the job as changed.
    async fn update_job(&self, id: JobId, change: JobChange) -> Result<Option<Job>, RuntimeError>;

    /// One job.
    async fn job(&self, id: JobId) -> Result<Option<Job>, RuntimeError>;

    /// Marks every job still under way as failed with `error`; how many.
    async fn fail_unfinished_jobs(
        &self,
        error: String,
        now: SystemTime,
    ) -> Result<usize, RuntimeError>;

    /// Removes the jobs that finished before `cutoff`; how many.
    async fn remove_jobs_finished_before(&self, cutoff: SystemTime) -> Result<usize, RuntimeError>;
}

/// The OCI instances running now, by sandbox id, for a later runtime to adopt.
#[async_trait::async_trait]
pub trait InstanceRecords: Send + Sync {
    /// Records that `sandbox` runs `instance`.
    async fn record_running(
        &self,
        sandbox: String,
        instance: RunningInstance,
    ) -> Result<(), RuntimeError>;

    /// Forgets `sandbox`: its instance stopped.
    async fn forget_running(&self, sandbox: String) -> Result<(), RuntimeError>;

    /// Every instance recorded as running, by sandbox id. Blocks.
    fn running_blocking(&self) -> Result<Vec<(String, RunningInstance)>, RuntimeError>;
}

/// The whole store: every kind of record, and the node's identity and health.
pub trait StateStore: ContainerStore + TokenStore + JobStore + InstanceRecords {
    /// This server's id, made on first start.
    fn server_id(&self) -> ServerId;

    /// The admin user's id, made on first start.
    fn admin_user_id(&self) -> UserId;

    /// Why the store cannot make changes durable now, if it cannot.
    fn fault(&self) -> Option<String>;

    /// Changes applied and flushes made since the store opened.
    fn write_counts(&self) -> (u64, u64);
}
