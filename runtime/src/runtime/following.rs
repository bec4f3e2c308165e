//! A cluster's containers on this node: what another node created, updated or
//! deleted is served here too, from the store's stream of changes.
//!
//! The node that took the API call deploys the revision and records the outcome;
//! the others follow what it recorded: they route the container's host, and
//! serve the revision it made serving, prepared here at its first cold start
//! (pulling the image, or fetching an uploaded component from a peer). They
//! never write the container's status, so that one node's view is never
//! overwritten by another's.

use super::*;
use crate::cluster::ContainerChange;

/// How often a member looks for a change of members, to deal kept instances again.
const SHARE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often a member reads the users' quotas again.
const QUOTA_READ_EVERY: Duration = Duration::from_secs(2);

impl Runtime {
    /// Applies `changes` as they come, until the stream ends.
    pub(crate) fn spawn_following(
        &self,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<ContainerChange>,
    ) {
        let runtime = self.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let applied = match change {
                    ContainerChange::Stored(container) => runtime.follow_stored(*container).await,
                    ContainerChange::Removed(id) => {
                        runtime.follow_removed(id).await;
                        Ok(())
                    }
                };
                if let Err(e) = applied {
                    tracing::warn!(error = %e, "applying a container change made on another node failed");
                }
            }
        });
    }

    /// Serves `container` as stored: its host routed to it, and the revision
    /// recorded as serving served here once it is newer than what serves here.
    async fn follow_stored(&self, container: Container) -> Result<(), RuntimeError> {
        let id = container.id;
        let _record = self.inner.containers.lock_record(id).await;
        if let Some(service) = self.inner.containers.get(id) {
            let before = service.listing().name;
            if before != container.spec.name {
                self.inner.containers.unroute(&self.host(before.as_str()));
            }
        }
        let service = self.register(&container);
        self.follow_serving(&container, &service).await?;
        // Instances moving here start once the revision serves here.
        self.arrive(&container, &service);
        Ok(())
    }

    /// Serves the revision `container` records as serving, once it is newer than
    /// what `service` serves here.
    async fn follow_serving(
        &self,
        container: &Container,
        service: &Arc<ContainerTraffic>,
    ) -> Result<(), RuntimeError> {
        let id = container.id;
        let Some(number) = container.serving_revision else {
            if container.status == ContainerStatus::Failed
                && let Some(reason) = &container.status_reason
            {
                service.make_unavailable(reason);
            }
            return Ok(());
        };
        // Only forward: an older record may arrive after this node moved on. A
        // move of traffic by hand (a rollback) outranks any revision before it.
        if service
            .serving_rank()
            .is_some_and(|serving| serving >= (container.traffic_changes, number))
        {
            return Ok(());
        }
        let Some(revision) = self.inner.store.revision(id, number).await? else {
            return Ok(());
        };
        let Some(kind) = revision.kind.filter(|_| revision.artifact.is_some()) else {
            return Ok(());
        };
        service.set_policy(self.policy(container, kind));
        service.serve(ServingRevision::of(
            &revision,
            kind,
            Arc::new(PreparedLater::resolving(
                self.inner.deployer.clone(),
                revision.clone(),
            )),
            container.traffic_changes,
        ));
        tracing::info!(container = %id, revision = number, "serving a revision deployed by another node");
        Ok(())
    }

    /// The servers up now: the cluster's members, or this one alone.
    pub(crate) fn live_servers(&self) -> Vec<ServerId> {
        match &self.inner.membership {
            Some(membership) => membership
                .member_ids()
                .into_iter()
                .map(|(_, server)| server)
                .collect(),
            None => vec![self.inner.server_id],
        }
    }

    /// This node's share of the `kept` instances (`minInstances`) container `id`
    /// keeps running, each asking `wanted`: all of them on one machine; in a
    /// cluster, the share rendezvous hashing deals this node among the members
    /// whose capacity could ever hold such an instance (see
    /// [`members_that_could_hold`] and `ember_scheduler::ownership::share`), so
    /// that the members' shares add up to `kept`, spread over `kept` nodes at
    /// most.
    pub(crate) fn kept_instances_share(
        &self,
        id: ContainerId,
        kept: u32,
        wanted: &ember_scheduler::Request,
    ) -> u32 {
        let (Some(membership), Some(cluster)) =
            (&self.inner.membership, &self.inner.config.cluster)
        else {
            return kept;
        };
        let names = members_that_could_hold(&membership.member_capacities(), Some(wanted));
        ember_scheduler::ownership::share(id.as_bytes(), &names, cluster.node_name.as_bytes(), kept)
    }

    /// Deals the kept instances again whenever the members change: a node that
    /// left (its lease lapsed) leaves its shares to the others, which start them.
    pub(crate) fn spawn_share_keeper(&self) {
        let (Some(membership), Some(cluster)) = (
            self.inner.membership.clone(),
            self.inner.config.cluster.clone(),
        ) else {
            return;
        };
        let runtime = self.clone();
        tokio::spawn(async move {
            let mut dealt_for = Vec::new();
            loop {
                tokio::time::sleep(SHARE_CHECK_EVERY).await;
                let members = membership.member_ids();
                if members == dealt_for {
                    continue;
                }
                let capacities = membership.member_capacities();
                let live: Vec<ServerId> = members.iter().map(|(_, server)| *server).collect();
                for service in runtime.inner.containers.all() {
                    service.repin(&live);
                    let id = service.id;
                    let names =
                        members_that_could_hold(&capacities, service.serving_request().as_ref());
                    service.reshare_kept_instances(|kept| {
                        ember_scheduler::ownership::share(
                            id.as_bytes(),
                            &names,
                            cluster.node_name.as_bytes(),
                            kept,
                        )
                    });
                }
                dealt_for = members;
            }
        });
    }

    /// Reads the users' quotas again every [`QUOTA_READ_EVERY`]: an admin may set
    /// one through another node, which keeps it in the store; this node's
    /// tenants take it from there.
    pub(crate) fn spawn_quota_reader(&self) {
        let runtime = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(QUOTA_READ_EVERY).await;
                let store = runtime.inner.store.clone();
                let Ok(Ok(quotas)) =
                    tokio::task::spawn_blocking(move || store.quotas_blocking()).await
                else {
                    continue;
                };
                let node = &runtime.inner.node;
                for (user, quota) in quotas {
                    if node.tenants().quota_of(user) != quota {
                        node.set_quota(user, quota);
                    }
                }
            }
        });
    }

    /// Stops serving a container another node deleted.
    async fn follow_removed(&self, id: ContainerId) {
        let _record = self.inner.containers.lock_record(id).await;
        let Some(service) = self.inner.containers.get(id) else {
            return;
        };
        let host = self.host(service.listing().name.as_str());
        if let Some(service) = self.inner.containers.remove(id, &host) {
            service.shut_down();
        }
        self.inner.logs.remove(id);
    }
}

/// The names of the `members` whose capacity could ever hold an instance asking
/// `wanted` (GPUs of its model, enough CPU and memory), over which its kept
/// instances are dealt: a node that could never start one is dealt none. All of
/// them when none could (or the request is not known yet), so that the
/// instances still have a node that says why they wait.
fn members_that_could_hold(
    members: &[(String, ember_scheduler::placement::Resources)],
    wanted: Option<&ember_scheduler::Request>,
) -> Vec<String> {
    let all = || members.iter().map(|(name, _)| name.clone()).collect();
    let Some(wanted) = wanted else {
        return all();
    };
    let able: Vec<String> = members
        .iter()
        .filter(|(name, capacity)| {
            ember_scheduler::placement::Node::new((), name.clone(), capacity.clone())
                .could_ever_fit(wanted)
                .is_ok()
        })
        .map(|(name, _)| name.clone())
        .collect();
    if able.is_empty() { all() } else { able }
}
