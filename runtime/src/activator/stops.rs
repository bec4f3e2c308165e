//! Instance stops: drained first, then stopped, tracked until gone.

use super::*;

impl ContainerTraffic {
    /// Stops every instance; used when the container is deleted.
    pub(crate) fn shut_down(&self) {
        self.make_unavailable("the container was deleted");
        let all = self
            .pool
            .lock()
            .lifecycle
            .take_all_ready(Leaving::ToTerminated);
        self.stop_all(all);
    }

    /// Stops every instance, busy or not, and waits until they are gone: the runtime
    /// is shutting down, and no container may outlive it.
    pub(crate) async fn stop_everything(&self) {
        self.make_unavailable("the runtime is shutting down");
        let all = self
            .pool
            .lock()
            .lifecycle
            .take_all_ready(Leaving::ToTerminated);
        let stops = all.into_iter().map(|live| self.stop_taken(live));
        futures::future::join_all(stops).await;
        // The revision's prepared sandboxes go in a task `make_unavailable` began,
        // which the runtime waits for with the other stops.
    }

    /// Stops every instance that serves no request now, as scaling to zero would;
    /// returns how many stopped.
    pub(crate) async fn stop_idle_instances(&self) -> usize {
        let idle = {
            let mut pool = self.pool.lock();
            // Scaled to zero by hand: whatever burst the autoscaler held for is over.
            pool.autoscaler = Autoscaler::new();
            pool.lifecycle
                .take_idle(|i| !i.pinned, usize::MAX, Leaving::ToTerminated)
        };
        let count = idle.len();
        let stops = idle.into_iter().map(|live| self.stop_taken(live));
        futures::future::join_all(stops).await;
        count
    }

    /// Stops an instance already taken out of service (Draining in the lifecycle
    /// table): the returned future drains and stops its sandbox, then moves it on to
    /// Stopped or Terminated, as it was leaving for.
    pub(crate) fn stop_taken(
        &self,
        live: Arc<LiveInstance>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let me = self.me.clone();
        // Callers let go of the pool's lock before they stop what they took.
        let drain_limit = self.request_limit();
        let journal = self.journal.clone();
        async move {
            // What it serves finishes first (it is out of the pool: nothing new
            // reaches it), up to the request timeout.
            if !live.drained(drain_limit).await {
                tracing::warn!(instance = %live.id, "requests still in flight at the end of the drain; stopping anyway");
            }
            live.instance.stop().await;
            if let Some(sandbox) = live.instance.sandbox_id() {
                journal.stopped(sandbox);
            }
            if let Some(traffic) = me.upgrade() {
                traffic.pool.lock().lifecycle.finish_stop(live.id);
            }
            tracing::debug!(instance = %live.id, "instance stopped");
        }
    }

    /// Stops `instances` all at once (a stop may wait out a grace period), tracked so
    /// that the runtime waits for them when it shuts down.
    pub(super) fn stop_all(&self, instances: Vec<Arc<LiveInstance>>) {
        if instances.is_empty() {
            return;
        }
        let stops: Vec<_> = instances
            .into_iter()
            .map(|live| self.stop_taken(live))
            .collect();
        self.background.spawn_stop(async move {
            futures::future::join_all(stops).await;
        });
    }

    /// Stops a sandbox that never served, leaving the lifecycle table as it is.
    pub(super) fn discard(&self, live: Arc<LiveInstance>) {
        self.background
            .spawn_stop(async move { live.instance.stop().await });
    }

    /// Stops one idle, autoscaled instance beyond `minInstances`, the least recently
    /// started, to make room for another container; returns whether it did.
    pub(crate) fn evict_one_idle(&self) -> bool {
        let mut pool = self.pool.lock();
        let min = pool.policy.scaling.min_instances as usize;
        let autoscaled = pool.lifecycle.ready().filter(|i| !i.pinned).count();
        if autoscaled <= min {
            return false;
        }
        let evicted = pool
            .lifecycle
            .take_idle(|i| !i.pinned, 1, Leaving::ToTerminated);
        drop(pool);
        let any = !evicted.is_empty();
        for live in &evicted {
            tracing::info!(container = %self.id, instance = %live.id, "stopping an idle instance to make room");
        }
        self.stop_all(evicted);
        any
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stop_by_hand_waits_for_the_requests_in_flight_and_takes_no_new_ones() {
        let (service, _) = container_traffic(Settings::default());
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        let id = live(&service)[0].id;
        let taken = service.take_running(id, Leaving::ToStopped).unwrap();
        let stop = tokio::spawn(service.stop_taken(taken));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!stop.is_finished(), "stopped with a request in flight");
        assert_eq!(live(&service)[0].state, InstanceState::Stopping);
        // A new request goes elsewhere (a new instance), not to the draining one.
        let other = service.acquire(Duration::from_secs(5)).await.unwrap();
        assert!(
            live(&service)
                .iter()
                .any(|i| i.id != id && i.state == InstanceState::Running)
        );
        drop(lease);
        tokio::time::timeout(Duration::from_secs(2), stop)
            .await
            .expect("the stop follows the last request")
            .unwrap();
        let stopped = live(&service).into_iter().find(|i| i.id == id).unwrap();
        assert_eq!(stopped.state, InstanceState::Stopped);
        drop(other);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_at_its_limit_even_with_a_request_in_flight() {
        let (service, _) = container_traffic(Settings::default());
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        let id = live(&service)[0].id;
        let taken = service.take_running(id, Leaving::ToTerminated).unwrap();
        // The test services drain for at most 5 s.
        let began = tokio::time::Instant::now();
        service.stop_taken(taken).await;
        assert!(began.elapsed() >= Duration::from_secs(5));
        drop(lease);
    }
}
