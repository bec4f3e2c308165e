//! Instances moved between the nodes of a cluster: 004's `migration.start` with
//! another member's `server_id`, and `migration.revert` of such a move. The move
//! is recorded on the container; the target starts the instance under the same
//! identity when the record reaches it (see `following.rs`), and once it runs
//! there this node stops its own. Requests are served throughout: by this node's
//! instance until it stops, then by the target's (relayed to it when they reach
//! this node).

use super::*;
use crate::activator::Leaving;
use crate::instances::instance_not_found;
use crate::migration::InstanceTask;
use crate::model::{InstanceId, InstanceMove, InstanceState, Job, StoppedInstance};

/// Longest the target may take to run a moved instance.
const MOVE_LIMIT: Duration = Duration::from_secs(60);
/// How long the source's copy serves on after the target runs the instance: a
/// member record's period, and some.
const WARM_RECORD_DELAY: Duration = Duration::from_millis(1_500);

impl Runtime {
    /// The member `task` sends `instance` to, when it is another member of the
    /// cluster: the server `migration.start` names, or for `migration.revert` the
    /// server a move between members brought it from. `None` on one machine, or
    /// for a migration within this node.
    pub(crate) async fn member_to_move_to(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
        task: InstanceTask,
    ) -> Result<Option<ServerId>, RuntimeError> {
        if self.inner.peers.is_none() {
            return Ok(None);
        }
        let here = self.server_id();
        let live = self.live_servers();
        match task {
            InstanceTask::MigrationStart {
                server: Some(server),
            } if server != here => {
                if live.contains(&server) {
                    Ok(Some(server))
                } else {
                    let servers: Vec<String> = live.iter().map(ToString::to_string).collect();
                    Err(RuntimeError::invalid(
                        "contents.server_id",
                        format!(
                            "there is no server {server}; the servers are {} (GET /v1/servers)",
                            servers.join(", ")
                        ),
                    ))
                }
            }
            InstanceTask::MigrationRevert => {
                let container = self.accessible(caller, id).await?;
                match container.moved_from.get(&instance) {
                    Some(from) if *from != here && live.contains(from) => Ok(Some(*from)),
                    Some(from) if *from != here => Err(RuntimeError::Conflict {
                        code: "server_gone",
                        message: format!(
                            "instance {instance} came from server {from}, which is not a member now"
                        ),
                    }),
                    _ => Ok(None),
                }
            }
            InstanceTask::MigrationStart { .. } => Ok(None),
        }
    }

    /// Moves this node's running `instance` of container `id` to member `to`, as a
    /// job that ends once `to` runs it and this node's is stopping.
    pub(crate) async fn move_to_member(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
        to: ServerId,
        revert: bool,
    ) -> Result<Job, RuntimeError> {
        let here = self.server_id();
        let peers = self
            .inner
            .peers
            .clone()
            .ok_or_else(|| RuntimeError::Unprocessable("this node is in no cluster".into()))?;
        let api = peers.api_of(to).ok_or_else(|| {
            RuntimeError::invalid(
                "contents.server_id",
                format!("server {to} left the cluster"),
            )
        })?;
        let (service, pinned) = self
            .edit_container(Some(caller), id, |container, service| {
                let info = service
                    .instance(instance)
                    .ok_or_else(|| instance_not_found(instance))?;
                if info.state != InstanceState::Running {
                    return Err(RuntimeError::Conflict {
                        code: "invalid_state",
                        message: format!(
                            "instance {instance} is {}; only a running instance moves",
                            info.state.name()
                        ),
                    });
                }
                container.moves.retain(|m| m.instance.id != instance);
                container.moves.push(InstanceMove {
                    instance: StoppedInstance {
                        id: instance,
                        ordinal: info.ordinal,
                        created: info.created,
                        revision: info.revision,
                    },
                    pinned: info.pinned,
                    from: here,
                    to,
                });
                Ok((service.clone(), info.pinned))
            })
            .await?;
        let job = self.new_migration_job(caller, id, instance, revert).await?;
        let runtime = self.clone();
        self.spawn_job(job.id, async move {
            let arrived = peers.wait_running(api, id, instance, MOVE_LIMIT).await;
            let recorded = runtime
                .edit_container(None, id, |container, _| {
                    container.moves.retain(|m| m.instance.id != instance);
                    if arrived.is_ok() {
                        if pinned {
                            container.unpin_one(here);
                            container.pin(to, 1);
                        }
                        if revert {
                            container.moved_from.remove(&instance);
                        } else {
                            container.moved_from.insert(instance, here);
                        }
                    }
                    Ok(())
                })
                .await;
            arrived.map_err(|e| vec![e])?;
            recorded.map_err(|e| vec![e.to_string()])?;
            // The members learn that the target holds it warm from its next
            // record (published every second); until then this node's copy
            // serves, so that none of them cold-starts another meanwhile.
            tokio::time::sleep(WARM_RECORD_DELAY).await;
            // The target serves it now: this node's copy stops once its requests
            // are done.
            if let Ok(live) = service.take_running(instance, Leaving::ToTerminated) {
                runtime.background().spawn_stop(service.stop_taken(live));
            }
            Ok(())
        });
        Ok(job)
    }

    /// Starts the instances a move brings to this node, under their identity, once
    /// the record of the move reaches it.
    pub(crate) fn arrive(&self, container: &Container, service: &Arc<ContainerTraffic>) {
        let here = self.server_id();
        for arriving in container.moves.iter().filter(|m| m.to == here) {
            let id = arriving.instance.id;
            // Here already (or still: a revert may come back before the last
            // copy is gone).
            let here_already = service.instances().iter().any(|i| {
                i.id == id
                    && matches!(
                        i.state,
                        InstanceState::Starting | InstanceState::Running | InstanceState::Stopping
                    )
            });
            if here_already {
                continue;
            }
            service.restore_stopped(&[arriving.instance]);
            if let Err(refusal) = service.start_stopped(id, arriving.pinned) {
                tracing::warn!(instance = %id, ?refusal, "an instance moving here did not start");
            }
        }
    }
}
