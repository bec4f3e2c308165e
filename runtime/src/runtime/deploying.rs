//! A revision's deployment: a slot, the pull with its progress shown, the prepare,
//! and the outcome recorded on the container and its traffic.

use super::*;

impl Runtime {
    /// Deploys revision `number` in the background, when a deployment slot is free.
    pub(crate) fn spawn_deploy(&self, id: ContainerId, number: u32) {
        let runtime = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = runtime.inner.deploy_slots.clone().acquire_owned().await else {
                return;
            };
            // A store out of reach for a while (a cluster's etcd electing a
            // leader, or without quorum) is waited out: the outcome must be
            // recorded, or the container would show `deploying` for ever.
            let mut pause = Duration::from_millis(500);
            loop {
                match runtime.deploy(id, number).await {
                    Err(RuntimeError::Storage(crate::store::StoreError::Unavailable(why))) => {
                        tracing::warn!(container = %id, revision = number, %why, "the store is out of reach; the deployment is tried again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        tracing::error!(container = %id, revision = number, error = %e, "recording a deployment failed");
                        return;
                    }
                    Ok(()) => return,
                }
            }
        });
    }

    /// Resolves and prepares revision `number`, then moves traffic to it and records
    /// the outcome. A revision superseded meanwhile, or a deleted container, is left alone.
    pub(crate) async fn deploy(&self, id: ContainerId, number: u32) -> Result<(), RuntimeError> {
        let Some(mut revision) = self.inner.store.revision(id, number).await? else {
            return Ok(());
        };
        let pulls = &self.inner.pulls;
        let progress = move |p: PullProgress| {
            let note = format!(
                "pulling the image: {}/{} blobs, {:.1} of {:.1} MB",
                p.blobs_done,
                p.blobs_total,
                p.bytes_done as f64 / 1e6,
                p.bytes_total as f64 / 1e6
            );
            pulls.lock().insert(id, note);
        };
        let outcome = async {
            let resolved = self.inner.deployer.resolve(&mut revision, &progress).await;
            self.inner.pulls.lock().remove(&id);
            if resolved? {
                self.inner.store.save_revision(revision.clone()).await?;
            }
            self.inner.deployer.prepare(&revision).await
        }
        .await;

        let recorded = self
            .edit_container(None, id, |container, service| {
                let is_serving = container.serving_revision == Some(number);
                if container.latest_revision != number && !is_serving {
                    // A later revision has taken over.
                    return Ok(());
                }
                match outcome {
                    Ok(prepared)
                        if container
                            .traffic_revision
                            .is_some_and(|pinned| pinned != number) =>
                    {
                        // Traffic is pinned to another revision (a rollback): this
                        // one is ready, and takes traffic when it is moved to it.
                        self.inner
                            .background
                            .spawn_stop(async move { prepared.retire().await });
                        if container.latest_revision == number {
                            container.status = ContainerStatus::Deployed;
                            container.status_reason = None;
                        }
                        tracing::info!(container = %id, revision = number, "revision ready; traffic stays on the pinned revision");
                    }
                    Ok(prepared) => {
                        let kind = revision.kind.unwrap_or(WorkloadKind::Wasm);
                        service.set_policy(self.policy(container, kind));
                        service.serve(ServingRevision::of(&revision, kind, prepared, container.traffic_changes));
                        // The node that deployed the revision starts its initial
                        // instances; the others scale it on demand.
                        service.begin_initial_scale(revision.spec.initial_scale.unwrap_or(0));
                        if container.latest_revision == number {
                            container.status = ContainerStatus::Deployed;
                            container.status_reason = None;
                            container.serving_revision = Some(number);
                        }
                        tracing::info!(container = %id, revision = number, "revision serving");
                    }
                    Err(e) => {
                        tracing::warn!(container = %id, revision = number, error = %e, "deployment failed");
                        container.status = ContainerStatus::Failed;
                        container.status_reason = Some(e.to_string());
                        if container.serving_revision.is_none() || is_serving {
                            service.make_unavailable(&e.to_string());
                        }
                    }
                }
                Ok(())
            })
            .await;
        match recorded {
            // Deleted while it deployed.
            Err(RuntimeError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}
