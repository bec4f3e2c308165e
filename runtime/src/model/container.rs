//! Containers (deployed services), their immutable revisions, and instances.

use super::access::{Capabilities, Capability, Grant, GrantSet, Scope, Scopes};
use super::{ContainerId, ContainerName, ContainerSpec, InstanceId, ServerId, UserId};
use crate::error::RuntimeError;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Where a container is in its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// The latest revision is being pulled and prepared.
    Deploying,
    /// The latest revision serves traffic.
    Deployed,
    /// The latest revision could not be deployed (see the reason); an older one may
    /// still be serving.
    Failed,
}

/// A container as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Its id.
    pub id: ContainerId,
    /// The latest revision's spec.
    pub spec: ContainerSpec,
    /// Who created it.
    pub created_by: UserId,
    /// When it was created.
    pub date_created: SystemTime,
    /// When its spec last changed.
    pub date_updated: SystemTime,
    /// Deployment status of the latest revision.
    pub status: ContainerStatus,
    /// Why the latest deployment failed, when it did.
    pub status_reason: Option<String>,
    /// Number of the latest revision.
    pub latest_revision: u32,
    /// The revision traffic goes to, once one has deployed.
    pub serving_revision: Option<u32>,
    /// The revision all traffic is pinned to (a rollback); `None`: the latest
    /// revision, once it has deployed (Knative's `latestRevision: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_revision: Option<u32>,
    /// How many times traffic was moved by hand: orders the moves, so that a
    /// node following the record serves an older revision only when a newer move
    /// says so.
    #[serde(default)]
    pub traffic_changes: u64,
    /// Instances started through the instances API, kept beyond the autoscaler's count.
    #[serde(default)]
    pub pinned_instances: u32,
    /// Of `pinned_instances`, how many each server keeps (the instances API's
    /// `server_id`); those pinned before servers were recorded, or on a server no
    /// longer a member, are dealt over the live servers (see [`pinned_share`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned_on: BTreeMap<ServerId, u32>,
    /// Instances on their way from one server of a cluster to another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<InstanceMove>,
    /// Where each instance moved between servers came from, for a revert.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moved_from: BTreeMap<InstanceId, ServerId>,
    /// Instances stopped by hand, which keep their ids to start again (also after a
    /// restart of the runtime).
    #[serde(default)]
    pub stopped_instances: Vec<StoppedInstance>,
}

/// An instance moving between two servers of a cluster: the target starts it
/// under the same identity, then the source stops its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMove {
    /// Its identity (id, place, age) and the revision it ran.
    pub instance: StoppedInstance,
    /// Whether it is pinned.
    pub pinned: bool,
    /// The server it runs on.
    pub from: ServerId,
    /// The server it moves to.
    pub to: ServerId,
}

/// An instance stopped by hand, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoppedInstance {
    /// Its id.
    pub id: InstanceId,
    /// Its place among the container's instances.
    pub ordinal: u32,
    /// When it first started.
    pub created: SystemTime,
    /// The revision it ran.
    pub revision: u32,
}

impl Container {
    /// A new container whose first revision is about to deploy.
    pub fn new(spec: ContainerSpec, created_by: UserId, now: SystemTime) -> Self {
        Self {
            id: ContainerId::generate(),
            spec,
            created_by,
            date_created: now,
            date_updated: now,
            status: ContainerStatus::Deploying,
            status_reason: None,
            latest_revision: 1,
            serving_revision: None,
            traffic_revision: None,
            traffic_changes: 0,
            pinned_instances: 0,
            pinned_on: BTreeMap::new(),
            moves: Vec::new(),
            moved_from: BTreeMap::new(),
            stopped_instances: Vec::new(),
        }
    }

    /// Pins `count` more instances on `server`.
    pub fn pin(&mut self, server: ServerId, count: u32) {
        self.pinned_instances = self.pinned_instances.saturating_add(count);
        let on = self.pinned_on.entry(server).or_default();
        *on = on.saturating_add(count);
    }

    /// One pinned instance of `server` fewer.
    pub fn unpin_one(&mut self, server: ServerId) {
        self.pinned_instances = self.pinned_instances.saturating_sub(1);
        if let Some(on) = self.pinned_on.get_mut(&server) {
            *on = on.saturating_sub(1);
            if *on == 0 {
                self.pinned_on.remove(&server);
            }
        }
    }

    /// No pinned instance anywhere.
    pub fn unpin_all(&mut self) {
        self.pinned_instances = 0;
        self.pinned_on.clear();
    }
}

/// The pinned instances `server` keeps of a container's `total`, `pinned_on`
/// each server, when `live` are the servers up: its own, and its share (dealt
/// by rendezvous hashing over `live`, as kept instances are) of those pinned on
/// no live server. On one machine `live` is that machine alone, which keeps all.
pub fn pinned_share(
    id: ContainerId,
    pinned_on: &BTreeMap<ServerId, u32>,
    total: u32,
    server: ServerId,
    live: &[ServerId],
) -> u32 {
    let own = pinned_on.get(&server).copied().unwrap_or(0);
    let placed: u32 = live.iter().filter_map(|s| pinned_on.get(s)).sum();
    let orphaned = total.saturating_sub(placed);
    let names: Vec<[u8; 16]> = live.iter().map(|s| *s.as_bytes()).collect();
    own + ember_scheduler::ownership::share(id.as_bytes(), &names, server.as_bytes(), orphaned)
}

/// An OCI instance as recorded while it runs, so that a runtime started after
/// this one was killed can find whose it is and take it over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningInstance {
    /// Its container.
    pub container: ContainerId,
    /// The revision it runs.
    pub revision: u32,
    /// Its id.
    pub instance: InstanceId,
    /// Its place among the container's instances.
    pub ordinal: u32,
    /// When it first started.
    pub created: SystemTime,
    /// Started through the instances API.
    pub pinned: bool,
}

/// An immutable snapshot of a container's spec.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The container.
    pub container_id: ContainerId,
    /// 1, 2, 3, ...
    pub number: u32,
    /// The spec it froze.
    pub spec: ContainerSpec,
    /// When it was made.
    pub date_created: SystemTime,
    /// The runnable blob its image resolved to, once pulled.
    pub artifact: Option<ember_sandbox::Digest>,
    /// The kind of workload that blob is, once known.
    pub kind: Option<ember_sandbox::WorkloadKind>,
    /// The registry manifest its image's tag resolved to when first pulled: the
    /// other nodes of a cluster pull that manifest, not what the tag names by
    /// the time they pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<ember_sandbox::Digest>,
}

impl Revision {
    /// A new revision, not yet resolved to an artifact.
    pub fn new(
        container_id: ContainerId,
        number: u32,
        spec: ContainerSpec,
        now: SystemTime,
    ) -> Self {
        Self {
            container_id,
            number,
            spec,
            date_created: now,
            artifact: None,
            kind: None,
            manifest_digest: None,
        }
    }
}

/// States of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Being started (a cold start in progress).
    Starting,
    /// Serving requests.
    Running,
    /// Being stopped by hand; it keeps its id and can start again.
    Stopping,
    /// Stopped by hand: holds nothing on its server, and can start again.
    Stopped,
    /// Being stopped for good.
    Terminating,
    /// Gone for good; remembered for a while so that lists show what became of it.
    Terminated,
}

impl InstanceState {
    /// The state's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
        }
    }
}

/// A live instance, as the API reports it.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Its id.
    pub id: InstanceId,
    /// Its place among the container's instances, from 1.
    pub ordinal: u32,
    /// When it first started (an instance keeps its id across a stop and start).
    pub created: SystemTime,
    /// The container it belongs to.
    pub container_id: ContainerId,
    /// The server it runs on.
    pub server_id: ServerId,
    /// The revision it runs.
    pub revision: u32,
    /// Its state.
    pub state: InstanceState,
    /// When it entered that state.
    pub state_changed: SystemTime,
    /// Requests it is serving now.
    pub in_flight: u32,
    /// Started through the instances API rather than by the autoscaler.
    pub pinned: bool,
    /// Why it has not started yet, while it waits (for room on its server, say).
    pub waiting_reason: Option<String>,
    /// The host-level id of its sandbox (OCI: the libcontainer id, which names its
    /// cgroups under `ember/`), once it runs.
    pub sandbox_id: Option<String>,
    /// Where it listens on the node's network (OCI: bridge address and port), once
    /// it runs.
    pub address: Option<std::net::SocketAddr>,
}

/// Roles a user can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    /// May see and change everything.
    Admin,
    /// May see and change what they created.
    User,
}

/// Who is making a request, once authenticated, and what their token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: UserId,
    /// Their role.
    pub role: Role,
    /// The token's scopes (the numbered containers and container services faces).
    pub scopes: Scopes,
    /// The token's capabilities (the instances API).
    pub capabilities: Capabilities,
}

impl Caller {
    /// Whose containers the caller sees: `None` for every one (an admin).
    pub fn owner_scope(&self) -> Option<UserId> {
        (self.role != Role::Admin).then_some(self.user_id)
    }

    /// Whether the caller may see and change `container`.
    pub fn can_access(&self, container: &Container) -> bool {
        self.role == Role::Admin || container.created_by == self.user_id
    }

    /// Refuses a caller whose token lacks `capability`.
    pub fn require_capability(&self, capability: Capability) -> Result<(), RuntimeError> {
        require_grant(&self.capabilities, capability, "capability")
    }

    /// Refuses a caller whose token lacks `scope`.
    pub fn require_scope(&self, scope: Scope) -> Result<(), RuntimeError> {
        require_grant(&self.scopes, scope, "scope")
    }

    /// Refuses a caller without the ADMIN role.
    pub fn require_admin(&self, what: &str) -> Result<(), RuntimeError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(RuntimeError::Forbidden(format!(
                "{what} needs the ADMIN role"
            )))
        }
    }
}

fn require_grant<G: Grant>(held: &GrantSet<G>, grant: G, kind: &str) -> Result<(), RuntimeError> {
    if held.contains(grant) {
        Ok(())
    } else {
        Err(RuntimeError::Forbidden(format!(
            "this token lacks the `{}` {kind}",
            grant.name()
        )))
    }
}

/// Which page of a list to return (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Page number, from 1.
    pub page: u32,
    /// Items per page.
    pub rows_per_page: u32,
}

impl PageRequest {
    /// Items per page when not asked for.
    pub const DEFAULT_ROWS: u32 = 10;
    /// Most items per page allowed.
    pub const MAX_ROWS: u32 = 100;

    /// Cuts one page out of `items`.
    pub fn slice<T>(&self, items: Vec<T>) -> Page<T> {
        let total = items.len();
        let items = items
            .into_iter()
            .skip(self.skip())
            .take(self.rows_per_page as usize)
            .collect();
        self.page_of(items, total, None)
    }

    /// How many items come before this page.
    pub fn skip(&self) -> usize {
        (self.page.saturating_sub(1) as usize).saturating_mul(self.rows_per_page as usize)
    }

    /// This page, holding `items`, of a list of `total`; `next` continues after it.
    pub fn page_of<T>(&self, items: Vec<T>, total: usize, next: Option<String>) -> Page<T> {
        Page {
            items,
            total,
            page: self.page,
            rows_per_page: self.rows_per_page,
            next,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            rows_per_page: Self::DEFAULT_ROWS,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// Items in the whole list.
    pub total: usize,
    /// The page number.
    pub page: u32,
    /// The page size.
    pub rows_per_page: u32,
    /// A cursor that continues the list after this page, when more follows (for
    /// lists read from an index).
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The same page with each item mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            page: self.page,
            rows_per_page: self.rows_per_page,
            next: self.next,
        }
    }
}

/// Which containers a list returns, and which page of them.
#[derive(Debug, Clone, Default)]
pub struct ContainerQuery {
    /// Whose containers: `None` for every one (an admin's view).
    pub owner: Option<UserId>,
    /// Only those in this status.
    pub status: Option<ContainerStatus>,
    /// Only those whose name starts with this (then the list is in name order).
    pub name_prefix: Option<String>,
    /// Only the one with this name.
    pub name: Option<ContainerName>,
    /// The page by number.
    pub page: PageRequest,
    /// Continue after the page that gave this cursor (`page` is then 1).
    pub after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_cut_from_one() {
        let page = PageRequest {
            page: 2,
            rows_per_page: 3,
        }
        .slice((1..=7).collect::<Vec<_>>());
        assert_eq!(page.items, vec![4, 5, 6]);
        assert_eq!(page.total, 7);
    }
}
