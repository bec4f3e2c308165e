//! What the API and metrics see of a container's instances and traffic.

use super::*;

impl ContainerTraffic {
    /// Whether the container has an instance to show: running, starting, stopped
    /// or recently terminated. Cheap, so that walks over every container can skip
    /// those at zero.
    pub(crate) fn has_instances(&self) -> bool {
        {
            let pool = self.pool.lock();
            if !pool.instances.is_empty() || !pool.starting.is_empty() {
                return true;
            }
        }
        !self.roster.is_empty()
    }

    /// The live and starting instances, for the API.
    pub(crate) fn instances(&self) -> Vec<InstanceInfo> {
        let pool = self.pool.lock();
        let running = pool.instances.iter().map(|i| InstanceInfo {
            id: i.id,
            ordinal: i.ordinal,
            created: i.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: i.revision,
            state: InstanceState::Running,
            state_changed: i.started,
            in_flight: i.in_flight.load(Ordering::Relaxed),
            pinned: i.pinned,
            waiting_reason: None,
            sandbox_id: i.instance.sandbox_id().map(str::to_string),
            address: i.instance.address(),
        });
        let starting = pool.starting.iter().map(|s| InstanceInfo {
            id: s.identity.id,
            ordinal: s.identity.ordinal,
            created: s.identity.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: s.revision,
            state: InstanceState::Starting,
            state_changed: s.since,
            in_flight: 0,
            pinned: s.pinned,
            waiting_reason: s.waiting_reason.clone(),
            sandbox_id: None,
            address: None,
        });
        let roster = self.roster.entries();
        let resting = roster.iter().map(|e| InstanceInfo {
            id: e.identity.id,
            ordinal: e.identity.ordinal,
            created: e.identity.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: e.revision,
            state: e.state,
            state_changed: e.since,
            in_flight: 0,
            pinned: e.pinned,
            waiting_reason: None,
            sandbox_id: None,
            address: None,
        });
        running.chain(starting).chain(resting).collect()
    }

    /// What each running instance has used, by id.
    pub(crate) fn usages(&self) -> Vec<(InstanceId, ResourceUsage)> {
        let running: Vec<_> = self.pool.lock().instances.clone();
        running.iter().map(|i| (i.id, i.usage())).collect()
    }

    /// The running instance `id`, if it runs.
    pub(crate) fn running(&self, id: InstanceId) -> Option<Arc<dyn Instance>> {
        let pool = self.pool.lock();
        pool.instances
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.instance.clone())
    }

    /// The kind of workload the running instance `id` is, if it runs.
    pub(crate) fn running_kind(&self, id: InstanceId) -> Option<WorkloadKind> {
        let pool = self.pool.lock();
        pool.instances.iter().find(|i| i.id == id).map(|i| i.kind)
    }

    /// Number of started instances.
    pub(crate) fn instance_count(&self) -> usize {
        self.pool.lock().instances.len()
    }

    /// Requests, queue and instances now, for metrics.
    pub(crate) fn traffic(&self) -> TrafficStats {
        let pool = self.pool.lock();
        TrafficStats {
            in_flight: pool
                .instances
                .iter()
                .map(|i| i.in_flight.load(Ordering::Relaxed))
                .sum(),
            queued: pool.queue.iter().filter(|w| !w.is_closed()).count() as u32,
            desired: pool.desired,
            running: pool.instances.len() as u32,
            starting: pool.starting.len() as u32,
            prepared: self
                .serving_revision()
                .map_or(0, |r| r.prepared.ready_sandboxes() as u32),
        }
    }

    /// Scaling decisions that changed the instance count, by reason.
    pub(crate) fn decisions(&self) -> impl Iterator<Item = (ScaleReason, u64)> + '_ {
        ScaleReason::ALL
            .iter()
            .zip(&self.decisions)
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
    }
}
