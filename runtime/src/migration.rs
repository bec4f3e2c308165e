//! Instance tasks: migrating an instance to another server, and undoing that. On a
//! node of one, the only server is this one: a migration recreates the instance in
//! a new sandbox here, under the same id, while the old one keeps serving until the
//! new one does (see `ContainerTraffic::replace_instance`).

use crate::activator::Refusal;
use crate::error::RuntimeError;
use crate::instances::instance_not_found;
use crate::model::{Caller, ContainerId, InstanceId, InstanceState, Job, ServerId};
use crate::power::refusal_error;
use crate::runtime::Runtime;

/// What an instance task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceTask {
    /// Move the instance to `server` (this node's when `None`).
    MigrationStart {
        /// Where to.
        server: Option<ServerId>,
    },
    /// Move the instance back to where its last migration took it from.
    MigrationRevert,
}

impl InstanceTask {
    /// The action's name, as the API takes it.
    pub fn action(self) -> &'static str {
        match self {
            Self::MigrationStart { .. } => "migration.start",
            Self::MigrationRevert => "migration.revert",
        }
    }
}

impl Runtime {
    /// Starts `task` on the caller's running instance, as a job.
    pub async fn run_instance_task(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
        task: InstanceTask,
    ) -> Result<Job, RuntimeError> {
        let here = self.server_id();
        let revert = task == InstanceTask::MigrationRevert;
        if let Some(to) = self.member_to_move_to(caller, id, instance, task).await? {
            return self.move_to_member(caller, id, instance, to, revert).await;
        }
        if let InstanceTask::MigrationStart {
            server: Some(server),
        } = task
            && server != here
        {
            return Err(RuntimeError::invalid(
                "contents.server_id",
                format!("there is no server {server}; this runtime's server is {here}"),
            ));
        }
        let work = self
            .edit_container(Some(caller), id, |_, service| {
                let remembered = self.migrations().lock().contains_key(&instance);
                if revert && !remembered {
                    let listed = service.instances().iter().any(|i| {
                        i.id == instance
                            && !matches!(
                                i.state,
                                InstanceState::Terminating | InstanceState::Terminated
                            )
                    });
                    if !listed {
                        return Err(instance_not_found(instance));
                    }
                    return Err(RuntimeError::Conflict {
                        code: "no_migration",
                        message: format!("instance {instance} has no migration to revert"),
                    });
                }
                service
                    .replace_instance(instance)
                    .map_err(|refusal| refused(refusal, instance, task.action()))
            })
            .await?;
        let job = self.new_migration_job(caller, id, instance, revert).await?;
        let runtime = self.clone();
        self.spawn_job(job.id, async move {
            work.await.map_err(|e| vec![e])?;
            let mut migrations = runtime.migrations().lock();
            if revert {
                migrations.remove(&instance);
            } else {
                migrations.insert(instance, here);
            }
            Ok(())
        });
        Ok(job)
    }
}

/// A refused migration: one of an instance on its way out is not found (the
/// instances API lists no such instances), the rest as any action on an instance.
fn refused(refusal: Refusal, instance: InstanceId, action: &str) -> RuntimeError {
    match refusal {
        Refusal::InState(InstanceState::Terminating | InstanceState::Terminated) => {
            instance_not_found(instance)
        }
        other => refusal_error(other, instance, action, &[InstanceState::Running]),
    }
}
