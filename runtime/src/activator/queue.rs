//! Requests waiting for an instance, and the leases that let each one through.

use super::*;

/// Why no instance could be had for a request.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ActivationError {
    #[error("the container is not available: {0}")]
    Unavailable(Arc<str>),
    #[error("no instance had room for the request within {0:?}{1}")]
    Timeout(Duration, PendingNote),
    #[error("starting an instance failed: {0}")]
    StartFailed(Arc<str>),
    #[error("the container's queue is full ({0} requests wait already)")]
    QueueFull(u32),
    #[error("no instance can start: {0}")]
    QuotaExceeded(Arc<str>),
    #[error("the node is overloaded and sheds load: {0}")]
    Overloaded(Arc<str>),
}

/// What kept a timed-out request's instance from serving, said after the timeout
/// (`: ...`), or nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingNote(Option<String>);

impl std::fmt::Display for PendingNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(note) => write!(f, ": {note}"),
            None => Ok(()),
        }
    }
}

/// A request waiting for a slot.
pub(super) type Waiter = oneshot::Sender<Result<Lease, ActivationError>>;

/// The right to send one request to one instance; released when dropped (after the
/// response body has been sent), and the slot handed to the next waiting request.
pub(crate) struct Lease {
    pub(super) service: Arc<ContainerTraffic>,
    pub(super) instance: Arc<LiveInstance>,
    pub(super) armed: bool,
}

impl Lease {
    pub(crate) fn instance(&self) -> &Arc<dyn Instance> {
        &self.instance.instance
    }

    /// Gives the slot back without handing it on: for a lease that never reached
    /// its request.
    pub(super) fn disarm(mut self) {
        self.instance.end_request();
        self.armed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.service.release(&self.instance);
        }
    }
}

impl ContainerTraffic {
    /// Finds an instance with a free slot for one request, waiting in the queue (while
    /// instances start) until `timeout` has passed.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<Lease, ActivationError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.touch();
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        let revision = self.wait_for_revision(deadline, timeout).await?;
        let waiting = {
            let mut pool = self.pool.lock();
            if pool.queue.is_empty()
                && let Some(lease) = self.lease_least_loaded(&pool, revision.number)
            {
                return Ok(lease);
            }
            if let Some(why) = &pool.held_by_quota
                && pool.lifecycle.ready().next().is_none()
            {
                return Err(ActivationError::QuotaExceeded(why.clone()));
            }
            // The last start failed and the next is not due yet, and nothing else
            // may serve: said at once (fail fast), not after the timeout.
            if pool.lifecycle.count_present(|r, _| r == revision.number) == 0
                && let Some(why) = self.restarts.lock().failing_start(self.clock.now())
            {
                return Err(ActivationError::StartFailed(Arc::from(why)));
            }
            pool.queue.retain(|w| !w.is_closed());
            let depth = pool.policy.queue_depth;
            if pool.queue.len() >= depth as usize {
                return Err(ActivationError::QueueFull(depth));
            }
            let (waiter, waiting) = oneshot::channel();
            pool.queue.push_back(waiter);
            let stopped = self.scale(&mut pool, false);
            // A slot may have come free between the look above and the queueing.
            self.dispatch(&mut pool);
            drop(pool);
            self.stop_all(stopped);
            waiting
        };
        match tokio::time::timeout_at(deadline, waiting).await {
            Err(_) => Err(ActivationError::Timeout(timeout, self.pending_note())),
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ActivationError::Unavailable(
                "the container was deleted".into(),
            )),
        }
    }

    /// Why a request waited in vain: an instance waiting for room, one still
    /// starting, or every instance busy.
    fn pending_note(&self) -> PendingNote {
        if let Some(note) = self.waiting_note() {
            return PendingNote(Some(format!("an instance is {note}")));
        }
        let pool = self.pool.lock();
        let starting = pool.lifecycle.starting().count();
        let ready = pool.lifecycle.ready().count();
        PendingNote(Some(match (starting, ready) {
            (0, 0) => "no instance is starting or ready".to_string(),
            (0, ready) => format!("all {ready} ready instances were busy"),
            (starting, ready) => {
                format!("{starting} instance(s) still starting, {ready} ready and busy")
            }
        }))
    }

    /// A lease on a free slot of the serving revision now, if one has one and no
    /// request waits: what a request gets while the node sheds load.
    pub(crate) fn lease_now(self: &Arc<Self>) -> Option<Lease> {
        let number = self.serving_number()?;
        let pool = self.pool.lock();
        if !pool.queue.is_empty() {
            return None;
        }
        self.touch();
        let lease = self.lease_least_loaded(&pool, number);
        if lease.is_some() {
            // Otherwise the request goes on to `acquire`, which counts it.
            self.arrivals.fetch_add(1, Ordering::Relaxed);
        }
        lease
    }

    /// Answers every waiting request `503` (overload): the node sheds load.
    pub(crate) fn shed_queued(&self, why: &Arc<str>) {
        let waiters: Vec<_> = self.pool.lock().queue.drain(..).collect();
        for waiter in waiters {
            let _ = waiter.send(Err(ActivationError::Overloaded(why.clone())));
        }
    }

    /// A lease on the instance of revision `number` with the fewest requests in
    /// flight, if one has a free slot.
    pub(super) fn lease_least_loaded(self: &Arc<Self>, pool: &Pool, number: u32) -> Option<Lease> {
        let concurrency = pool.policy.scaling.concurrency.max(1);
        let instance = pool
            .lifecycle
            .ready()
            .filter(|i| i.revision == number && i.takes_requests())
            .map(|i| (i.in_flight.load(Ordering::Acquire), i))
            .filter(|(in_flight, _)| *in_flight < concurrency)
            .min_by_key(|(in_flight, _)| *in_flight)?
            .1;
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            service: self.clone(),
            instance: instance.clone(),
            armed: true,
        })
    }

    /// Hands free slots to waiting requests, oldest first.
    pub(super) fn dispatch(self: &Arc<Self>, pool: &mut Pool) {
        let Some(number) = self.serving_number() else {
            return;
        };
        while let Some(waiter) = pool.queue.pop_front() {
            if waiter.is_closed() {
                continue;
            }
            let Some(lease) = self.lease_least_loaded(pool, number) else {
                pool.queue.push_front(waiter);
                return;
            };
            if let Err(Ok(lease)) = waiter.send(Ok(lease)) {
                // The request gave up just now: its slot stays free.
                lease.disarm();
            }
        }
    }

    /// A request ended: its slot goes to the next waiting request.
    pub(super) fn release(self: &Arc<Self>, instance: &LiveInstance) {
        instance.end_request();
        self.touch();
        let mut pool = self.pool.lock();
        if !pool.queue.is_empty() {
            self.dispatch(&mut pool);
        }
    }

    pub(super) async fn wait_for_revision(
        &self,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Arc<ServingRevision>, ActivationError> {
        // The common case, on every request: a revision is serving. No subscription
        // and no timer then.
        if let Serving::Ready(revision) = &*self.serving.borrow() {
            return Ok(revision.clone());
        }
        let mut serving = self.serving.subscribe();
        let ready = tokio::time::timeout_at(
            deadline,
            serving.wait_for(|s| !matches!(s, Serving::Deploying)),
        )
        .await
        .map_err(|_| {
            ActivationError::Timeout(
                timeout,
                PendingNote(Some("the revision is still deploying".into())),
            )
        })?
        .map_err(|_| ActivationError::Unavailable("the container was deleted".into()))?
        .clone();
        match ready {
            Serving::Ready(revision) => Ok(revision),
            Serving::Unavailable(reason) => Err(ActivationError::Unavailable(reason)),
            Serving::Deploying => unreachable!("waited until not deploying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_during_a_cold_start_share_it() {
        let (service, starts) = container_traffic(Settings::default());
        let leases = leases(acquire_many(&service, 50)).await;
        assert_eq!(leases.len(), 50);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(live(&service).len(), 1);
        assert_eq!(live(&service)[0].in_flight, 50);
        drop(leases);
        assert_eq!(live(&service)[0].in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_at_zero_starts_its_instances_at_once_and_spreads_over_them() {
        let (service, starts, most_at_once) = service_counting(Settings {
            concurrency: 10,
            ..Settings::default()
        });
        let leases = leases(acquire_many(&service, 100)).await;
        // 100 requests at 7 per instance: 15 instances, all started together.
        assert_eq!(starts.load(Ordering::SeqCst), 15);
        assert_eq!(most_at_once.load(Ordering::SeqCst), 15);
        let instances = live(&service);
        assert_eq!(instances.len(), 15);
        assert!(instances.iter().all(|i| i.in_flight <= 10), "{instances:?}");
        assert_eq!(instances.iter().map(|i| i.in_flight).sum::<u32>(), 100);
        drop(leases);
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_load_answers_the_waiting_requests_and_leases_only_free_slots() {
        let (service, _) = container_traffic(Settings {
            max: 1,
            concurrency: 1,
            ..Settings::default()
        });
        let held = service.acquire(Duration::from_secs(5)).await.unwrap();
        let waiting = acquire_many(&service, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        service.shed_queued(&Arc::from("memory"));
        for task in waiting {
            let outcome = task.await.unwrap();
            assert!(
                matches!(&outcome, Err(ActivationError::Overloaded(why)) if &**why == "memory"),
                "{:?}",
                outcome.err()
            );
        }
        // The one slot is taken: nothing now; once it is free, it is leased.
        assert!(service.lease_now().is_none());
        drop(held);
        assert!(service.lease_now().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_is_refused_and_the_queued_are_served_in_order() {
        let (service, _) = container_traffic(Settings {
            max: 1,
            concurrency: 1,
            queue_depth: 2,
            ..Settings::default()
        });
        let first = service.acquire(Duration::from_secs(5)).await.unwrap();
        let second = acquire_many(&service, 1).pop().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = acquire_many(&service, 1).pop().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = service.acquire(Duration::from_secs(5)).await.err().unwrap();
        assert!(
            matches!(refused, ActivationError::QueueFull(2)),
            "{refused}"
        );
        assert_eq!(service.traffic().queued, 2);

        drop(first);
        let second = second.await.unwrap().unwrap();
        assert!(!third.is_finished(), "served out of order");
        drop(second);
        drop(third.await.unwrap().unwrap());
        assert_eq!(service.traffic().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_ends_with_a_timeout() {
        let (service, _) = container_traffic(Settings {
            max: 1,
            concurrency: 1,
            ..Settings::default()
        });
        let _busy = service.acquire(Duration::from_secs(5)).await.unwrap();
        let err = service
            .acquire(Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ActivationError::Timeout(..)), "{err}");
        // The request that gave up left the queue.
        assert_eq!(service.traffic().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_container_fails_fast() {
        let (service, _) = container_traffic(Settings::default());
        service.make_unavailable("the image could not be pulled");
        let err = service.acquire(Duration::from_secs(5)).await.err().unwrap();
        assert!(err.to_string().contains("could not be pulled"), "{err}");
    }
}
