//! The containers API's commands: create, update, delete, read and list
//! containers, their revisions and their logs, and each container's view.

use super::*;
use crate::model::AutoscalingMetric;
use crate::store::Saved;

/// A container with the parts of its view the store does not hold.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// The stored container.
    pub container: Container,
    /// Where it is served, once a revision has deployed.
    pub urls: Option<Vec<String>>,
    /// Times its instances ended on their own (exited or crashed) and were replaced.
    pub restarts: u32,
}

impl Runtime {
    /// Creates a container and starts deploying its first revision.
    pub async fn create_container(
        &self,
        caller: &Caller,
        patch: ContainerPatch,
    ) -> Result<ContainerView, RuntimeError> {
        let spec = patch.into_new_spec()?;
        self.fetch_missing_blob(&spec.image).await?;
        self.check_spec(&spec)?;
        self.check_containers_quota(caller).await?;
        let now = SystemTime::now();
        let container = Container::new(spec.clone(), caller.user_id, now);
        let revision = Revision::new(container.id, 1, spec, now);
        self.inner
            .store
            .insert_container(container.clone(), revision)
            .await?;
        self.register(&container);
        self.spawn_deploy(container.id, 1);
        Ok(self.view(container))
    }

    /// Updates a container: a new revision, deployed while the current one keeps serving.
    pub async fn update_container(
        &self,
        caller: &Caller,
        id: ContainerId,
        patch: ContainerPatch,
    ) -> Result<ContainerView, RuntimeError> {
        let (container, old_name) = {
            let _record = self.inner.containers.lock_record(id).await;
            let mut stored = self.accessible(caller, id).await?;
            let mut tries = 0;
            loop {
                let spec = patch.clone().apply(&stored.spec)?;
                self.fetch_missing_blob(&spec.image).await?;
                self.check_spec(&spec)?;
                let now = SystemTime::now();
                let mut container = stored.clone();
                container.latest_revision += 1;
                container.spec = spec.clone();
                container.date_updated = now;
                container.status = ContainerStatus::Deploying;
                container.status_reason = None;
                let revision = Revision::new(id, container.latest_revision, spec, now);
                let old_name = stored.spec.name.clone();
                // Another node may have changed the record since it was read
                // (a status, or an update of its own): the patch goes on the
                // newer record.
                match self
                    .inner
                    .store
                    .update_container(stored, container.clone(), revision)
                    .await?
                {
                    Saved::Written => break (container, old_name),
                    Saved::Gone => {
                        return Err(RuntimeError::NotFound {
                            what: "container",
                            id: id.to_string(),
                        });
                    }
                    Saved::Changed(current) => stored = *current,
                }
                tries += 1;
                if tries == crate::containers::MAX_REBASES {
                    return Err(crate::containers::changed_too_often(id));
                }
            }
        };
        if old_name != container.spec.name {
            self.inner.containers.unroute(&self.host(old_name.as_str()));
        }
        self.register(&container);
        self.spawn_deploy(id, container.latest_revision);
        Ok(self.view(container))
    }

    /// Deletes a container: its routes, instances, revisions and record.
    pub async fn delete_container(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<(), RuntimeError> {
        let container = {
            let _record = self.inner.containers.lock_record(id).await;
            let container = self.accessible(caller, id).await?;
            self.inner.store.remove_container(container.clone()).await?;
            container
        };
        let host = self.host(container.spec.name.as_str());
        if let Some(service) = self.inner.containers.remove(id, &host) {
            service.shut_down();
        }
        self.inner.logs.remove(id);
        Ok(())
    }

    /// One container.
    pub async fn get_container(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<ContainerView, RuntimeError> {
        self.accessible(caller, id).await.map(|c| self.view(c))
    }

    /// A page of the caller's containers (all of them for an admin) that `query`
    /// asks for: oldest first, or by name for a name prefix. Its owner is set
    /// from the caller.
    pub async fn list_containers(
        &self,
        caller: &Caller,
        mut query: ContainerQuery,
    ) -> Result<Page<ContainerView>, RuntimeError> {
        query.owner = caller.owner_scope();
        let page = self.inner.store.list_containers(query).await?;
        Ok(page.map(|c| self.view(c)))
    }

    /// The caller's container whose integer id (as the numbered faces show it) is
    /// `number`.
    pub async fn find_container_by_number(
        &self,
        caller: &Caller,
        number: u64,
    ) -> Result<ContainerView, RuntimeError> {
        self.inner
            .store
            .containers_numbered(number)
            .await?
            .into_iter()
            .find(|c| caller.can_access(c))
            .map(|c| self.view(c))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container service",
                id: number.to_string(),
            })
    }

    /// A container's revisions, newest first.
    pub async fn list_revisions(
        &self,
        caller: &Caller,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError> {
        self.accessible(caller, id).await?;
        self.inner.store.revisions(id, page).await
    }

    /// Stops a container's idle instances now, as its idle timeout would; returns how
    /// many stopped. Busy instances are left to finish.
    pub async fn stop_idle_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<usize, RuntimeError> {
        self.accessible(caller, id).await?;
        let service = self.inner.containers.get(id);
        Ok(match service {
            Some(service) => service.stop_idle_instances().await,
            None => 0,
        })
    }

    /// What the container's instances wrote between `since` and `until`, oldest first.
    pub async fn read_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        (since, until): (SystemTime, SystemTime),
        reach: Reach,
    ) -> Result<Vec<LogEntry>, RuntimeError> {
        self.accessible(caller, id).await?;
        let mut lines = self.inner.logs.read(id, since, until);
        if let (Reach::Cluster, Some(peers)) = (reach, &self.inner.peers) {
            lines.extend(peers.logs_of(id, since, until).await);
            lines.sort_by_key(|e| e.time);
        }
        Ok(lines)
    }

    /// What one of the container's instances wrote between `since` and `until`,
    /// oldest first.
    pub async fn read_instance_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: crate::model::InstanceId,
        range: (SystemTime, SystemTime),
        reach: Reach,
    ) -> Result<Vec<LogEntry>, RuntimeError> {
        let own = instance.to_string();
        let mut entries = self.read_logs(caller, id, range, reach).await?;
        entries.retain(|e| e.instance == own);
        Ok(entries)
    }

    /// The container's lines since `since`, then a receiver of each new line, until
    /// the container is deleted. In a cluster, the other members' lines come
    /// through the receiver too: those since `since` first, as each member sends
    /// them, then each new one.
    pub async fn follow_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        since: SystemTime,
        reach: Reach,
    ) -> Result<(Vec<LogEntry>, tokio::sync::broadcast::Receiver<LogEntry>), RuntimeError> {
        self.accessible(caller, id).await?;
        let (recent, mut own) = self.inner.logs.follow(id, since);
        let (Reach::Cluster, Some(peers)) = (reach, &self.inner.peers) else {
            return Ok((recent, own));
        };
        let (sink, merged) = crate::logs::LogStore::follower_channel();
        peers.follow_logs_of(id, since, sink.clone());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                // Woken now and then to see whether the client has gone.
                match tokio::time::timeout(std::time::Duration::from_secs(15), own.recv()).await {
                    Ok(Ok(entry)) => {
                        if sink.send(entry).is_err() {
                            return;
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) => {}
                    // The container was deleted.
                    Ok(Err(RecvError::Closed)) => return,
                    Err(_) if sink.receiver_count() == 0 => return,
                    Err(_) => {}
                }
            }
        });
        Ok((recent, merged))
    }

    /// The container, if it exists and the caller may see it; otherwise not found.
    pub(crate) async fn accessible(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Container, RuntimeError> {
        self.inner
            .store
            .container(id)
            .await?
            .filter(|c| caller.can_access(c))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container",
                id: id.to_string(),
            })
    }

    pub(crate) fn host(&self, name: &str) -> String {
        format!("{name}.{}", self.inner.config.domain)
    }

    pub(crate) fn view(&self, mut container: Container) -> ContainerView {
        if container.status == ContainerStatus::Deploying
            && let Some(note) = self.inner.pulls.lock().get(&container.id)
        {
            container.status_reason = Some(note.clone());
        }
        let service = self.inner.containers.get(container.id);
        let restarts = service.as_ref().map_or(0, |s| s.restarts());
        if container.status == ContainerStatus::Deployed
            && let Some(note) = service
                .as_ref()
                .and_then(|s| s.waiting_note().or_else(|| s.restart_note()))
        {
            container.status_reason = Some(note);
        }
        let urls = container.serving_revision.map(|_| {
            let host = self.host(container.spec.name.as_str());
            vec![match self.inner.config.ingress_port {
                80 => host,
                port => format!("{host}:{port}"),
            }]
        });
        ContainerView {
            container,
            urls,
            restarts,
        }
    }

    pub(crate) fn policy(&self, container: &Container, kind: WorkloadKind) -> TrafficPolicy {
        let spec = &container.spec;
        TrafficPolicy {
            kept_instances: spec.min_instances,
            scaling: ScalingPolicy {
                min_instances: self.kept_instances_share(
                    container.id,
                    spec.min_instances,
                    &node::instance_request(spec),
                ),
                max_instances: spec.max_instances,
                idle_timeout: spec
                    .idle_timeout_seconds
                    .map_or(self.inner.config.default_idle_timeout, Duration::from_secs),
                concurrency: spec.concurrency_for(kind),
                target: match spec.metric {
                    AutoscalingMetric::Concurrency => spec.target_concurrency,
                    AutoscalingMetric::Rps => spec.target_requests_per_second,
                },
                metric: match spec.metric {
                    AutoscalingMetric::Concurrency => ember_scheduler::ScalingMetric::Concurrency,
                    AutoscalingMetric::Rps => ember_scheduler::ScalingMetric::Rps,
                },
                target_utilization_percent: spec.target_utilization_percent(),
                scale_down_delay: Duration::from_secs(spec.scale_down_delay_seconds.unwrap_or(0)),
            },
            queue_depth: spec.queue_depth,
            response_timeouts: crate::activator::ResponseTimeouts {
                start: spec.response_start_timeout_seconds.map(Duration::from_secs),
                stream_idle: spec.stream_idle_timeout_seconds.map(Duration::from_secs),
            },
            request_limit: spec
                .timeout_seconds
                .map_or(self.inner.config.request_timeout, Duration::from_secs),
        }
    }

    /// Makes (or refreshes) the container's service and routes its host to it.
    pub(crate) fn register(&self, container: &Container) -> Arc<ContainerTraffic> {
        let host = self.host(container.spec.name.as_str());
        let service = self.inner.containers.serve_at(container.id, host, || {
            ContainerTraffic::new(
                container.id,
                listing(container),
                self.policy(container, WorkloadKind::Wasm),
                &TrafficShared {
                    server_id: self.inner.server_id,
                    clock: self.inner.clock,
                    metrics: self.inner.metrics.clone(),
                    node: self.inner.node.clone(),
                    background: self.inner.background.clone(),
                    awake: self.inner.awake.clone(),
                    journal: self.inner.journal.clone(),
                },
            )
        });
        service.set_listing(listing(container));
        service.set_pinned_plan(
            container.pinned_on.clone(),
            container.pinned_instances,
            &self.live_servers(),
        );
        service
    }
}

/// What lists of instances keep of a container.
pub(crate) fn listing(container: &Container) -> Listing {
    Listing {
        owner: container.created_by,
        created: container.date_created,
        name: container.spec.name.clone(),
    }
}
