//! The scaling loop: the autoscaler's count, turned into starts and stops.

use super::*;

impl ContainerTraffic {
    /// Asks the autoscaler for the instance count and starts or stops instances to
    /// reach it; keeps the pinned instances the instances API asked for. Returns the
    /// instances to stop (outside the pool's lock). `sample` records the demand in the
    /// autoscaler's windows (done at the reconciler's fixed interval only).
    pub(super) fn scale(self: &Arc<Self>, pool: &mut Pool, sample: bool) -> Vec<Arc<LiveInstance>> {
        let Some(revision) = self.serving_revision() else {
            return Vec::new();
        };
        let now = self.clock.now();
        let number = revision.number;
        let scaled = |i: &LiveInstance| i.revision == number && !i.pinned;
        let observed = Observation {
            // One that fails its readiness probe is not ready: the count it
            // leaves short is started anew.
            ready: pool
                .lifecycle
                .ready()
                .filter(|i| scaled(i) && i.takes_requests())
                .count() as u32,
            starting: pool
                .lifecycle
                .starting()
                .filter(|s| s.revision == number && !s.pinned)
                .count() as u32,
            in_flight: pool
                .lifecycle
                .ready()
                .filter(|i| scaled(i))
                .map(|i| i.in_flight.load(Ordering::Relaxed))
                .sum(),
            waiting: pool.queue.iter().filter(|w| !w.is_closed()).count() as u32,
            last_activity: Some(self.last_activity()),
            arrivals: self.arrivals.load(Ordering::Relaxed),
        };
        let policy = pool.policy.scaling;
        if sample {
            pool.autoscaler.record_observation(&policy, now, &observed);
        }
        let decision = pool.autoscaler.decide(&policy, &observed, now);
        pool.desired = decision.desired;

        let current = observed.ready + observed.starting;
        let cold = observed.waiting > 0;
        for _ in current..decision.desired {
            self.start_instance(pool, revision.clone(), false, cold);
        }
        let mut stopped = Vec::new();
        if decision.desired < observed.ready {
            let excess = (observed.ready - decision.desired) as usize;
            stopped = pool
                .lifecycle
                .take_idle(|i| scaled(i), excess, Leaving::ToTerminated);
            for _ in &stopped {
                self.metrics.scaled_down();
            }
        }
        let started = decision.desired.saturating_sub(current);
        if started > 0 || !stopped.is_empty() {
            let index = ScaleReason::ALL
                .iter()
                .position(|r| *r == decision.reason)
                .expect("every reason is listed");
            self.decisions[index].fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                container = %self.id,
                reason = decision.reason.as_str(),
                from = current,
                to = current + started - stopped.len() as u32,
                desired = decision.desired,
                in_flight = observed.in_flight,
                waiting = observed.waiting,
                panicking = pool.autoscaler.is_panicking(),
                "scaling"
            );
        }

        let pinned = pool
            .lifecycle
            .count_present(|revision, pinned| pinned && revision == number);
        for _ in pinned as u32..pool.pinned_wanted {
            self.start_instance(pool, revision.clone(), true, false);
        }
        stopped
    }

    /// Brings the instance count to what the autoscaler decides now; called at a
    /// fixed interval, which is also when the demand is sampled.
    pub(crate) fn reconcile(self: &Arc<Self>) {
        let mut pool = self.pool.lock();
        if pool.is_at_rest() {
            // At zero with nothing asked for: a decision would be zero again, until
            // something wakes the container.
            pool.sleep();
            return;
        }
        let number = self.serving_number();
        // Instances of older revisions leave once their last request is done.
        let mut stopped = pool.lifecycle.take_idle(
            |i| Some(i.revision) != number,
            usize::MAX,
            Leaving::ToTerminated,
        );
        stopped.extend(self.scale(&mut pool, true));
        drop(pool);
        self.stop_all(stopped);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_container_at_rest_leaves_the_reconcilers_set_and_a_request_brings_it_back() {
        let (service, _) = container_traffic(Settings::default());
        let awake = || service.pool.membership_is_awake();
        // Never asked for anything: at rest, and the reconciler makes it sleep.
        service.reconcile();
        assert!(!awake());
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        assert!(awake(), "a request wakes it");
        service.reconcile();
        drop(lease);
        // An instance runs: it stays awake, so that its idle timeout is watched.
        service.reconcile();
        assert!(awake());
        // Scaled to zero by hand, which also forgets the demand on record: at rest.
        service.stop_idle_instances().await;
        service.reconcile();
        assert!(!awake());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_instances_go_busy_ones_stay() {
        let (service, starts) = container_traffic(Settings {
            idle: Duration::from_millis(100),
            ..Settings::default()
        });
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        service.reconcile();
        assert_eq!(service.instance_count(), 1, "a busy instance was stopped");
        drop(lease);
        service.reconcile();
        assert_eq!(
            service.instance_count(),
            1,
            "stopped before the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        service.reconcile();
        assert_eq!(service.instance_count(), 0);
        // The next request starts a new instance.
        drop(service.acquire(Duration::from_secs(5)).await.unwrap());
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }
}
