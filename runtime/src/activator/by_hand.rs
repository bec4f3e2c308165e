//! Instances started, stopped and removed by hand (the instances API and power
//! actions): pinned instances, and stopped ones that can start again.

use super::*;

impl ContainerTraffic {
    /// Brings back the instances that were stopped by hand before a restart; new
    /// instances count on from the highest ordinal among them.
    pub(crate) fn restore_stopped(&self, stopped: &[StoppedInstance]) {
        let mut pool = self.pool.lock();
        for s in stopped {
            let identity = Identity {
                id: s.id,
                ordinal: s.ordinal,
                created: s.created,
            };
            pool.lifecycle.restore_stopped(identity, s.revision);
        }
        if let Some(highest) = stopped.iter().map(|s| s.ordinal).max() {
            self.next_ordinal.fetch_max(highest + 1, Ordering::Relaxed);
        }
    }

    /// Sets how many pinned instances the container keeps (after a restart).
    pub(crate) fn set_pinned(&self, pinned: u32) {
        self.pool.lock().pinned_wanted = pinned;
    }

    /// Keeps the container's pinned instances as stored (`pinned_on` each server,
    /// `total` in all) and pins this node's share of them for the `live` servers.
    pub(crate) fn set_pinned_plan(
        &self,
        pinned_on: std::collections::BTreeMap<ServerId, u32>,
        total: u32,
        live: &[ServerId],
    ) {
        let share = crate::model::pinned_share(self.id, &pinned_on, total, self.server_id, live);
        *self.pinned_plan.lock() = (pinned_on, total);
        self.set_pinned(share);
    }

    /// Pins this node's share again, for a new set of `live` servers.
    pub(crate) fn repin(&self, live: &[ServerId]) {
        let share = {
            let plan = self.pinned_plan.lock();
            crate::model::pinned_share(self.id, &plan.0, plan.1, self.server_id, live)
        };
        self.set_pinned(share);
    }

    /// Pins `target` instances of the serving revision here (or more, if the
    /// record already asked for more), starting those missing; returns what to
    /// watch for each start. Up to a target rather than `count` more, so that the
    /// record of the same change arriving from the cluster's store first does not
    /// start them twice. Fails when no revision is serving yet.
    pub(crate) fn add_pinned_up_to(self: &Arc<Self>, target: u32) -> Option<Vec<StartOutcome>> {
        let revision = self.serving_revision()?;
        let mut pool = self.pool.lock();
        let number = revision.number;
        let present = pool
            .lifecycle
            .count_present(|r, pinned| pinned && r == number) as u32;
        pool.pinned_wanted = pool.pinned_wanted.max(target);
        let wanted = pool.pinned_wanted;
        Some(
            (present..wanted)
                .map(|_| self.start_instance(&mut pool, revision.clone(), true, false))
                .collect(),
        )
    }

    /// Stops every instance and forgets the pinned and stopped ones; the autoscaler
    /// starts what the traffic and `minInstances` need again. Returns when all have
    /// stopped.
    pub(crate) async fn remove_all_instances(&self, stopped: impl Fn() + Sync) -> usize {
        let all = {
            let mut pool = self.pool.lock();
            pool.pinned_wanted = 0;
            pool.autoscaler = Autoscaler::new();
            // Those still starting go too, once they are up: a start cannot be cut
            // short, and one that joined after this call would outlive the removal.
            pool.lifecycle.remove_starts();
            pool.lifecycle.terminate_all_stopped();
            pool.lifecycle.take_all_ready(Leaving::ToTerminated)
        };
        futures::future::join_all(all.iter().map(|live| {
            let stop = self.stop_taken(live.clone());
            let stopped = &stopped;
            async move {
                stop.await;
                stopped();
            }
        }))
        .await;
        all.len()
    }

    /// Stops one running instance for good (a pinned one is not replaced); `None`
    /// when there is none with that id. Returns when it has stopped.
    pub(crate) async fn remove_instance(&self, id: InstanceId) -> Option<()> {
        let live = self.take_running(id, Leaving::ToTerminated).ok()?;
        self.stop_taken(live).await;
        Some(())
    }

    /// Takes a running instance out of service, for a stop, restart or terminate by
    /// hand, to end as `leaving` says once stopped; a pinned one is no longer counted
    /// as wanted (the caller stores the new count).
    pub(crate) fn take_running(
        &self,
        id: InstanceId,
        leaving: Leaving,
    ) -> Result<Arc<LiveInstance>, Refusal> {
        let mut pool = self.pool.lock();
        let live = pool.lifecycle.take_ready(id, leaving)?;
        if live.pinned {
            pool.pinned_wanted = pool.pinned_wanted.saturating_sub(1);
        }
        Ok(live)
    }

    /// Why an action that wanted the instance in another state cannot have it: the
    /// state it is in, or that there is no such instance.
    pub(crate) fn refusal_for(&self, id: InstanceId) -> Refusal {
        self.pool.lock().lifecycle.refusal(id)
    }

    /// Starts a stopped instance again under its id; returns what to watch for the
    /// start.
    pub(crate) fn start_stopped(
        self: &Arc<Self>,
        id: InstanceId,
        pinned: bool,
    ) -> Result<StartOutcome, Refusal> {
        let revision = self.serving_revision().ok_or(Refusal::NotServing)?;
        let mut pool = self.pool.lock();
        let identity = pool.lifecycle.start_again(id, revision.number, pinned)?;
        if pinned {
            pool.pinned_wanted += 1;
        }
        drop(pool);
        Ok(self.spawn_start(identity, revision, pinned, false))
    }

    /// Forgets a stopped instance for good: it shows as Terminated.
    pub(crate) fn terminate_stopped(&self, id: InstanceId) -> Result<(), Refusal> {
        self.pool.lock().lifecycle.terminate_stopped(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn instances_removed_while_they_start_stop_once_up() {
        let (service, starts) = container_traffic(Settings::default());
        let waiting = acquire_many(&service, 1);
        while live(&service).is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(live(&service)[0].state, InstanceState::Starting);
        service.remove_all_instances(|| {}).await;
        // The start (50 ms) ends, and its instance goes instead of joining.
        for _ in 0..400 {
            if live(&service).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(live(&service).is_empty(), "{:?}", live(&service));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(service.instance_count(), 0);
        for request in waiting {
            request.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pinned_instances_stay_through_idleness_and_are_counted_apart() {
        let (service, _) = container_traffic(Settings {
            idle: Duration::from_millis(50),
            ..Settings::default()
        });
        let mut outcomes = service.add_pinned_up_to(2).unwrap();
        for outcome in &mut outcomes {
            outcome.wait_for(Option::is_some).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        service.reconcile();
        let instances = live(&service);
        assert_eq!(instances.len(), 2);
        assert!(instances.iter().all(|i| i.pinned));
        // Stopping one by hand does not bring it back.
        service.remove_instance(instances[0].id).await.unwrap();
        service.reconcile();
        assert_eq!(live(&service).len(), 1);
        assert_eq!(service.remove_all_instances(|| {}).await, 1);
        service.reconcile();
        assert!(live(&service).is_empty());
    }
}
