//! A started instance and the requests it serves.

use super::*;

/// One started instance and the requests it is serving.
pub(crate) struct LiveInstance {
    pub(super) id: InstanceId,
    /// Its place among the container's instances, from 1.
    pub(super) ordinal: u32,
    /// When it first started (it keeps its id across a stop and start).
    pub(super) created: SystemTime,
    pub(super) revision: u32,
    pub(super) kind: WorkloadKind,
    pub(super) instance: Arc<dyn Instance>,
    pub(super) started: SystemTime,
    /// Clock time of the start, for the restart backoff.
    pub(super) started_at: Duration,
    pub(super) in_flight: AtomicU32,
    /// Woken each time the last request in flight ends, for a drain.
    pub(super) idle: tokio::sync::Notify,
    /// Started through the instances API: the autoscaler neither counts nor stops it.
    pub(super) pinned: bool,
    /// Its readiness probe has failed its threshold's times in a row since it
    /// last passed: it takes no new request until it passes again.
    pub(super) unready: std::sync::atomic::AtomicBool,
    /// Its room on the node, given back when the last reference goes.
    pub(super) _placement: Placement,
}

impl LiveInstance {
    /// `identity`, just started from `revision` at clock time `now`.
    pub(super) fn new(
        identity: Identity,
        revision: &ServingRevision,
        instance: Arc<dyn Instance>,
        pinned: bool,
        placement: Placement,
        now: Duration,
    ) -> Self {
        Self {
            id: identity.id,
            ordinal: identity.ordinal,
            created: identity.created,
            revision: revision.number,
            kind: revision.kind,
            instance,
            started: SystemTime::now(),
            started_at: now,
            in_flight: AtomicU32::new(0),
            idle: tokio::sync::Notify::new(),
            pinned,
            unready: std::sync::atomic::AtomicBool::new(false),
            _placement: placement,
        }
    }

    /// Whether it takes new requests (its readiness probe, if any, passes).
    pub(super) fn takes_requests(&self) -> bool {
        !self.unready.load(Ordering::Acquire)
    }

    /// One request it served has ended.
    pub(super) fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until it serves no request, for at most `limit`; whether it got there.
    /// It is out of the pool by then, so no new request reaches it.
    pub(super) async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so that a request ending in between
            // still wakes this wait.
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight.load(Ordering::Acquire) == 0;
            }
        }
    }

    /// Started through the API rather than by the autoscaler.
    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// What the instance has used.
    pub(crate) fn usage(&self) -> ResourceUsage {
        self.instance.usage()
    }

    /// The instance as stored once stopped by hand.
    pub(crate) fn as_stopped(&self) -> StoppedInstance {
        StoppedInstance {
            id: self.id,
            ordinal: self.ordinal,
            created: self.created,
            revision: self.revision,
        }
    }

    pub(super) fn identity(&self) -> Identity {
        Identity {
            id: self.id,
            ordinal: self.ordinal,
            created: self.created,
        }
    }
}

impl std::fmt::Debug for LiveInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveInstance")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn one() -> Arc<LiveInstance> {
        Arc::new(live_instance(
            Identity {
                id: InstanceId::generate(),
                ordinal: 1,
                created: SystemTime::now(),
            },
            false,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_when_the_last_request_does() {
        let live = one();
        live.in_flight.store(2, Ordering::Release);
        let drain = tokio::spawn({
            let live = live.clone();
            async move { live.drained(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        live.end_request();
        assert!(!drain.is_finished(), "one request is still in flight");
        live.end_request();
        assert!(drain.await.unwrap(), "drained before the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_gives_up_at_its_limit() {
        let live = one();
        live.in_flight.store(1, Ordering::Release);
        let began = tokio::time::Instant::now();
        assert!(!live.drained(Duration::from_secs(5)).await);
        assert_eq!(began.elapsed(), Duration::from_secs(5));
    }
}
