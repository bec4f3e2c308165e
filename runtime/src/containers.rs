//! The containers this node serves: each one's traffic, found by id or by the host
//! its URL names, and the one unit of work that changes a container's stored record
//! together with its traffic.

use crate::activator::ContainerTraffic;
use crate::error::RuntimeError;
use crate::model::{Caller, Container, ContainerId};
use crate::record_locks::{RecordGuard, RecordLocks};
use crate::routing::RoutingTable;
use crate::runtime::Runtime;
use crate::store::Saved;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// Every container's traffic, by id and by host, and the locks of their records.
#[derive(Default)]
pub(crate) struct Containers {
    by_id: RwLock<HashMap<ContainerId, Arc<ContainerTraffic>>>,
    by_host: RoutingTable<Arc<ContainerTraffic>>,
    records: RecordLocks,
}

impl Containers {
    /// Container `id`'s traffic, if it is served here.
    pub(crate) fn get(&self, id: ContainerId) -> Option<Arc<ContainerTraffic>> {
        self.by_id.read().get(&id).cloned()
    }

    /// The traffic of the container whose URL names `host` (a `Host` header).
    pub(crate) fn route(&self, host: &str) -> Option<Arc<ContainerTraffic>> {
        self.by_host.lookup(host)
    }

    /// Every container's traffic.
    pub(crate) fn all(&self) -> Vec<Arc<ContainerTraffic>> {
        self.by_id.read().values().cloned().collect()
    }

    /// Those with an instance to show (running, starting, stopped or recently
    /// terminated).
    pub(crate) fn with_instances(&self) -> Vec<Arc<ContainerTraffic>> {
        self.by_id
            .read()
            .values()
            .filter(|t| t.has_instances())
            .cloned()
            .collect()
    }

    /// Container `id`'s traffic, made by `make` if it has none yet, served at `host`
    /// from now on.
    pub(crate) fn serve_at(
        &self,
        id: ContainerId,
        host: String,
        make: impl FnOnce() -> Arc<ContainerTraffic>,
    ) -> Arc<ContainerTraffic> {
        let traffic = self.by_id.write().entry(id).or_insert_with(make).clone();
        self.by_host.insert(host, traffic.clone());
        traffic
    }

    /// Stops serving `host` (a container renamed).
    pub(crate) fn unroute(&self, host: &str) {
        self.by_host.remove(host);
    }

    /// Forgets container `id`, served at `host`; its traffic, to shut down.
    pub(crate) fn remove(&self, id: ContainerId, host: &str) -> Option<Arc<ContainerTraffic>> {
        self.by_host.remove(host);
        self.by_id.write().remove(&id)
    }

    /// Waits for the right to change container `id`'s record.
    pub(crate) async fn lock_record(&self, id: ContainerId) -> RecordGuard {
        self.records.lock(id).await
    }
}

impl Runtime {
    /// Container `id`'s traffic; not found if it is not served here.
    pub(crate) fn container_traffic(
        &self,
        id: ContainerId,
    ) -> Result<Arc<ContainerTraffic>, RuntimeError> {
        self.containers()
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container",
                id: id.to_string(),
            })
    }

    /// One change of container `id`: holds its record's lock, reads the record (one
    /// `caller` may see, when the change is theirs), lets `edit` change it and its
    /// traffic, and stores the record if it changed, durably, before the lock goes
    /// (made again on the newer record when another node of a cluster changed it
    /// meanwhile: see [`Container::rebase`]). An error from `edit` stores nothing.
    pub(crate) async fn edit_container<T>(
        &self,
        caller: Option<&Caller>,
        id: ContainerId,
        edit: impl FnOnce(&mut Container, &Arc<ContainerTraffic>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let _record = self.containers().lock_record(id).await;
        let mut container = match caller {
            Some(caller) => self.accessible(caller, id).await?,
            None => self
                .store()
                .container(id)
                .await?
                .ok_or_else(|| RuntimeError::NotFound {
                    what: "container",
                    id: id.to_string(),
                })?,
        };
        let traffic = self.container_traffic(id)?;
        let before = container.clone();
        let outcome = edit(&mut container, &traffic)?;
        if container != before {
            self.save_edit(before, container).await?;
        }
        Ok(outcome)
    }

    /// Stores `after`, an edit of the record `before`: on the newer record when
    /// another writer changed it in between (nothing when it was deleted).
    async fn save_edit(
        &self,
        mut before: Container,
        mut after: Container,
    ) -> Result<(), RuntimeError> {
        for _ in 0..MAX_REBASES {
            match self
                .store()
                .save_status(before.clone(), after.clone())
                .await?
            {
                Saved::Written | Saved::Gone => return Ok(()),
                Saved::Changed(current) => {
                    after = Container::rebase(&before, &after, (*current).clone());
                    before = *current;
                }
            }
        }
        Err(changed_too_often(after.id))
    }
}

/// Most times one edit is made again on a record other nodes keep changing.
pub(crate) const MAX_REBASES: usize = 16;

/// The record of container `id` changed under every try of an edit.
pub(crate) fn changed_too_often(id: ContainerId) -> RuntimeError {
    RuntimeError::Conflict {
        code: "changed_meanwhile",
        message: format!(
            "container {id} was changed by other nodes under each of {MAX_REBASES} tries; try again"
        ),
    }
}
