//! A restart: every stored container served again, the OCI instances an earlier
//! run left running adopted, and the revisions that served warmed up in the
//! background.

use super::*;

/// Restored revisions prepared at once in the background after a restart.
const CONCURRENT_WARM_UPS: usize = 4;

impl Runtime {
    /// Serves every stored container again: routes at once, each revision that was
    /// serving prepared later (see [`PreparedLater`]), and the deployments a stop
    /// interrupted (or that failed) carried on in the background.
    pub(crate) fn restore(&self, stored: Vec<(Container, Option<Revision>)>) {
        let mut warm_ups = Vec::new();
        for (container, serving) in stored {
            let service = self.register(&container);
            service.restore_stopped(&container.stopped_instances);
            let resolved = serving.filter(|r| r.artifact.is_some() && r.kind.is_some());
            let redeploy = match resolved {
                Some(revision) => {
                    let number = revision.number;
                    let kind = revision.kind.unwrap_or(WorkloadKind::Wasm);
                    // In a cluster the revision may have been resolved by another
                    // node, its artifact never brought here.
                    let prepared = Arc::new(if self.inner.membership.is_some() {
                        PreparedLater::resolving(self.inner.deployer.clone(), revision.clone())
                    } else {
                        PreparedLater::new(self.inner.deployer.clone(), revision.clone())
                    });
                    service.set_policy(self.policy(&container, kind));
                    service.serve(ServingRevision::of(
                        &revision,
                        kind,
                        prepared.clone(),
                        container.traffic_changes,
                    ));
                    warm_ups.push((container.id, number, prepared));
                    // An update was deploying when the runtime stopped: carry on
                    // with it while the old revision serves.
                    (container.latest_revision != number
                        && container.status == ContainerStatus::Deploying)
                        .then_some(container.latest_revision)
                }
                None => Some(
                    container
                        .serving_revision
                        .unwrap_or(container.latest_revision),
                ),
            };
            if let Some(number) = redeploy {
                self.spawn_deploy(container.id, number);
            }
        }
        self.spawn_warm_ups(warm_ups);
    }

    /// Takes over the OCI instances an earlier run left running (it was killed, say)
    /// whose container still serves the revision they run: they serve on, with the
    /// same process, address and id. Those that ended meanwhile, or that no
    /// container claims, are removed; the autoscaler starts what is needed.
    pub(crate) async fn adopt_running(&self, recorded: Vec<(String, RunningInstance)>) {
        let Ok(oci) = self.inner.deployer.oci.clone() else {
            return;
        };
        let adoptable: std::collections::HashSet<String> = oci.adoptable().into_iter().collect();
        for (sandbox, record) in recorded {
            let service = self.inner.containers.get(record.container);
            let adopted = match service {
                Some(service) if adoptable.contains(&sandbox) => {
                    let logs =
                        ember_sandbox::LogSinkRef(Arc::new(self.inner.logs.sink(record.container)));
                    // The container's own limit and protocol, as its instances
                    // started fresh get.
                    let proxying = match self.inner.store.container(record.container).await {
                        Ok(Some(container)) => ember_sandbox::Proxying {
                            request_timeout: container
                                .spec
                                .timeout_seconds
                                .map_or(self.inner.config.request_timeout, Duration::from_secs),
                            http2: container.spec.http2,
                        },
                        _ => ember_sandbox::Proxying {
                            request_timeout: self.inner.config.request_timeout,
                            http2: false,
                        },
                    };
                    match oci
                        .adopt(&sandbox, &record.instance.to_string(), logs, proxying)
                        .await
                    {
                        Ok(instance) => service.adopt(&record, instance).await,
                        Err(e) => {
                            tracing::info!(%sandbox, error = %e, "an instance left running was not adopted");
                            false
                        }
                    }
                }
                _ => false,
            };
            if !adopted {
                self.inner.journal.stopped(&sandbox);
            }
        }
        oci.discard_unadopted().await;
    }

    /// Prepares restored revisions ahead of their first request, a few at a time;
    /// one that no longer prepares fails its container's status, as a deployment
    /// would.
    pub(crate) fn spawn_warm_ups(&self, warm_ups: Vec<(ContainerId, u32, Arc<PreparedLater>)>) {
        if warm_ups.is_empty() {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move {
            let count = warm_ups.len();
            let started = std::time::Instant::now();
            let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_WARM_UPS));
            let mut tasks = tokio::task::JoinSet::new();
            for (id, number, prepared) in warm_ups {
                let permit = slots.clone().acquire_owned().await;
                let runtime = runtime.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    // A revision replaced meanwhile needs no warm-up: not a failure.
                    if let Err(e) = prepared.prepared().await
                        && !prepared.is_retired()
                    {
                        runtime.record_failed_warm_up(id, number, &e).await;
                    }
                });
                // Keep the set small: finished tasks are reaped as we go.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            tracing::info!(revisions = count, took = ?started.elapsed(), "restored revisions prepared");
        });
    }

    /// A restored revision that no longer prepares: the container fails with the
    /// reason, as its deployment would have.
    pub(crate) async fn record_failed_warm_up(
        &self,
        id: ContainerId,
        number: u32,
        error: &RuntimeError,
    ) {
        tracing::warn!(container = %id, revision = number, %error, "a restored revision did not prepare");
        let recorded = self
            .edit_container(None, id, |container, traffic| {
                if container.serving_revision == Some(number) {
                    container.status = ContainerStatus::Failed;
                    container.status_reason = Some(error.to_string());
                    traffic.make_unavailable(&error.to_string());
                }
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(container = %id, error = %e, "recording a failed warm-up failed");
        }
    }
}

/// Every stored container, with the revision it was serving (if any). Blocks.
pub(crate) fn load_containers(
    store: &Store,
) -> Result<Vec<(Container, Option<Revision>)>, RuntimeError> {
    store
        .containers_blocking()?
        .into_iter()
        .map(|container| {
            let serving = match container.serving_revision {
                Some(number) => store.revision_blocking(container.id, number)?,
                None => None,
            };
            Ok((container, serving))
        })
        .collect()
}
