//! What the API and metrics see of a container's instances and traffic.

use super::*;

impl ContainerTraffic {
    /// Whether the container has an instance to show: running, starting, stopped
    /// or recently terminated. Cheap, so that walks over every container can skip
    /// those at zero.
    pub(crate) fn has_instances(&self) -> bool {
        !self.pool.lock().lifecycle.is_empty()
    }

    /// Instance `id` as [`Self::instances`] lists it, if it does.
    pub(crate) fn instance(&self, id: InstanceId) -> Option<InstanceInfo> {
        let pool = self.pool.lock();
        pool.lifecycle
            .in_list_order()
            .find(|member| member.identity.id == id)
            .map(|member| self.info(member))
    }

    /// Every instance the container has or recently had, for the API: running ones,
    /// then starting ones, then those that left.
    pub(crate) fn instances(&self) -> Vec<InstanceInfo> {
        let pool = self.pool.lock();
        pool.lifecycle
            .in_list_order()
            .map(|member| self.info(member))
            .collect()
    }

    fn info(&self, member: &Member) -> InstanceInfo {
        let live = member.live();
        InstanceInfo {
            id: member.identity.id,
            ordinal: member.identity.ordinal,
            created: member.identity.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: member.revision,
            state: member.state(),
            // A running one's state began when its sandbox (the latest, after a
            // move) started.
            state_changed: live.map_or(member.since, |l| l.started),
            in_flight: live.map_or(0, |l| l.in_flight.load(Ordering::Relaxed)),
            pinned: member.pinned,
            waiting_reason: match &member.phase {
                Phase::Starting { waiting_reason, .. } => waiting_reason.clone(),
                _ => None,
            },
            sandbox_id: live.and_then(|l| l.instance.sandbox_id().map(str::to_string)),
            address: live.and_then(|l| l.instance.address()),
        }
    }

    /// What each running instance has used, by id.
    pub(crate) fn usages(&self) -> Vec<(InstanceId, ResourceUsage)> {
        let running: Vec<_> = self.pool.lock().lifecycle.ready().cloned().collect();
        running.iter().map(|i| (i.id, i.usage())).collect()
    }

    /// The running instance `id`, if it runs.
    pub(crate) fn running(&self, id: InstanceId) -> Option<Arc<dyn Instance>> {
        let pool = self.pool.lock();
        pool.lifecycle.ready_one(id).map(|i| i.instance.clone())
    }

    /// The kind of workload the running instance `id` is, if it runs.
    pub(crate) fn running_kind(&self, id: InstanceId) -> Option<WorkloadKind> {
        let pool = self.pool.lock();
        pool.lifecycle.ready_one(id).map(|i| i.kind)
    }

    /// Number of started instances.
    pub(crate) fn instance_count(&self) -> usize {
        self.pool.lock().lifecycle.ready().count()
    }

    /// Requests, queue and instances now, for metrics.
    pub(crate) fn traffic(&self) -> TrafficStats {
        let pool = self.pool.lock();
        TrafficStats {
            in_flight: pool
                .lifecycle
                .ready()
                .map(|i| i.in_flight.load(Ordering::Relaxed))
                .sum(),
            queued: pool.queue.iter().filter(|w| !w.is_closed()).count() as u32,
            desired: pool.desired,
            running: pool.lifecycle.ready().count() as u32,
            starting: pool.lifecycle.starting().count() as u32,
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lists_show_running_before_starting_and_metrics_count_each_state() {
        // Room for one one-CPU instance: the second start waits.
        let (traffic, _) = container_traffic(Settings {
            concurrency: 1,
            node_millicpus: 1000,
            ..Settings::default()
        });
        let leases = acquire_many(&traffic, 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let states: Vec<_> = traffic.instances().iter().map(|i| i.state).collect();
        assert_eq!(states, [InstanceState::Running, InstanceState::Starting]);
        let listed = traffic.instances();
        assert_eq!(listed[0].in_flight, 1);
        assert!(listed[1].waiting_reason.is_some(), "{listed:?}");
        let stats = traffic.traffic();
        assert_eq!((stats.running, stats.starting, stats.in_flight), (1, 1, 1));
        assert_eq!(traffic.instance_count(), 1);
        assert!(traffic.has_instances());
        drop(leases);
    }
}
