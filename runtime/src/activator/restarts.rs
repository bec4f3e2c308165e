//! Instances that end on their own: counted, backed off, replaced.

use super::*;

/// Instances that ended on their own, and when the next start may happen: pure,
/// told the clock time of each event.
#[derive(Debug, Default)]
pub(super) struct RestartBackoff {
    /// All of them, for the API.
    total: u32,
    /// In a row, each soon after its start: the backoff doubles with each.
    in_a_row: u32,
    /// Clock time before which no instance starts.
    not_before: Duration,
    /// What happened last, for the container's status.
    note: Option<String>,
    /// Whether what happened last was a start that failed (rather than an
    /// instance that ended after it had started).
    start_failed: bool,
}

/// First wait before restarting an instance that ended; doubles per restart in a row.
pub(super) const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
pub(super) const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that ran this long before ending starts the backoff afresh.
pub(super) const STABLE_UPTIME: Duration = Duration::from_secs(60);

impl RestartBackoff {
    /// Counts an instance end (or failed start) at clock time `now`, `what` saying
    /// what happened; one that `ran_long` starts the doubling afresh. Returns the
    /// wait before the next start.
    pub(super) fn record(&mut self, what: &str, ran_long: bool, now: Duration) -> Duration {
        self.start_failed = false;
        if ran_long {
            self.in_a_row = 0;
        }
        self.total += 1;
        self.in_a_row += 1;
        let backoff = RESTART_BACKOFF
            .saturating_mul(1 << (self.in_a_row - 1).min(16))
            .min(MAX_RESTART_BACKOFF);
        self.not_before = now + backoff;
        self.note = Some(format!(
            "{what}; next start in {}s (restart {})",
            backoff.as_secs_f64(),
            self.total
        ));
        backoff
    }

    /// Counts a start that failed at clock time `now` (as [`Self::record`]).
    pub(super) fn record_failed_start(&mut self, what: &str, now: Duration) -> Duration {
        let backoff = self.record(what, false, now);
        self.start_failed = true;
        backoff
    }

    /// Why a request at clock time `now` should not wait for a start: the last
    /// one failed and the next is not due yet.
    pub(super) fn failing_start(&self, now: Duration) -> Option<&str> {
        self.wait_at(now)
            .filter(|_| self.start_failed)
            .and(self.note.as_deref())
    }

    /// How long a start at clock time `now` must wait, if at all.
    pub(super) fn wait_at(&self, now: Duration) -> Option<Duration> {
        self.not_before.checked_sub(now).filter(|w| !w.is_zero())
    }

    pub(super) fn total(&self) -> u32 {
        self.total
    }

    pub(super) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

impl ContainerTraffic {
    /// Times instances ended on their own or failed to start.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.lock().total()
    }

    /// What happened to the last instance that ended on its own, while the container
    /// has not served since.
    pub(crate) fn restart_note(&self) -> Option<String> {
        self.restarts.lock().note().map(str::to_string)
    }

    /// Counts an instance end and sets the backoff; returns it.
    pub(super) fn record_restart(&self, what: &str, ran_long: bool) -> Duration {
        self.restarts
            .lock()
            .record(what, ran_long, self.clock.now())
    }

    /// Counts a start that failed and sets the backoff; returns it.
    pub(super) fn record_failed_start(&self, what: &str) -> Duration {
        self.restarts
            .lock()
            .record_failed_start(what, self.clock.now())
    }

    /// An instance ended without being stopped: it leaves the pool, its remains are
    /// cleaned up, and a replacement starts after the backoff when one is wanted.
    pub(super) fn instance_exited(self: &Arc<Self>, ended: &Weak<LiveInstance>, reason: &str) {
        let mut pool = self.pool.lock();
        // By identity, not id: a replaced instance's successor has its id.
        let Some(live) = pool.lifecycle.take_ended(ended) else {
            // Stopped on purpose: it was taken out of the pool first.
            return;
        };
        let id = live.id;
        let ran_long = self.clock.now().saturating_sub(live.started_at) >= STABLE_UPTIME;
        let backoff = self.record_restart(&format!("instance {id} {reason}"), ran_long);
        tracing::warn!(container = %self.id, instance = %id, reason, backoff_s = backoff.as_secs_f64(), "instance ended on its own");
        let policy = pool.policy.scaling;
        let idle_for = self.clock.now().saturating_sub(self.last_activity());
        let autoscaled = |pinned: bool| pinned == live.pinned;
        let left = pool.lifecycle.count_present(|_, pinned| autoscaled(pinned));
        // A recently used container gets its instance back, as one in use would
        // (pinned instances come back through `scale`).
        let wanted = !live.pinned
            && left < policy.min_instances.max(1) as usize
            && (policy.min_instances > 0 || idle_for < policy.idle_timeout);
        let mut stopped = Vec::new();
        if let Some(revision) = self.serving_revision() {
            if wanted {
                self.start_instance(&mut pool, revision, false, false);
            }
            stopped = self.scale(&mut pool, false);
        }
        drop(pool);
        stopped.push(live);
        self.stop_all(stopped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_wait_doubles_with_each_quick_end_up_to_a_minute() {
        let mut backoff = RestartBackoff::default();
        assert_eq!(backoff.wait_at(Duration::ZERO), None, "no wait at first");
        let waits: Vec<_> = (0..9)
            .map(|n| backoff.record("it crashed", false, n * 100 * S))
            .collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32, 60, 60, 60].map(|s| s * S),
            "doubling, capped"
        );
        assert_eq!(backoff.total(), 9);
        assert_eq!(
            backoff.note(),
            Some("it crashed; next start in 60s (restart 9)")
        );
    }

    #[test]
    fn a_start_waits_until_the_backoff_ends() {
        let mut backoff = RestartBackoff::default();
        let at = 10 * S;
        backoff.record("x", false, at);
        backoff.record("x", false, at);
        assert_eq!(backoff.wait_at(at), Some(2 * S));
        assert_eq!(backoff.wait_at(at + S / 2), Some(S + S / 2));
        assert_eq!(backoff.wait_at(at + 2 * S), None);
        assert_eq!(backoff.wait_at(at + 5 * S), None);
    }

    #[test]
    fn only_a_failed_start_in_its_backoff_turns_requests_away() {
        let mut backoff = RestartBackoff::default();
        backoff.record_failed_start("it never listened", S);
        assert_eq!(
            backoff.failing_start(S + S / 2),
            Some("it never listened; next start in 1s (restart 1)")
        );
        assert_eq!(backoff.failing_start(2 * S), None, "the next start is due");
        backoff.record("it crashed", false, 3 * S);
        assert_eq!(backoff.failing_start(3 * S), None, "a crash after starting");
    }

    #[tokio::test]
    async fn requests_after_a_failed_start_are_answered_at_once_until_the_next_is_due() {
        let (service, starts) = super::super::test_support::failing_traffic();
        let first = service.acquire(Duration::from_secs(5)).await;
        assert!(matches!(first, Err(ActivationError::StartFailed(_))));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        // Within the backoff: the same reason, at once, and no start.
        let asked = std::time::Instant::now();
        let again = service.acquire(Duration::from_secs(5)).await;
        match again {
            Err(ActivationError::StartFailed(why)) => {
                assert!(why.contains("no such image"), "{why}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(asked.elapsed() < Duration::from_millis(500));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_instance_that_ran_long_starts_the_doubling_afresh_but_still_counts() {
        let mut backoff = RestartBackoff::default();
        for _ in 0..4 {
            backoff.record("x", false, Duration::ZERO);
        }
        assert_eq!(backoff.record("x", true, Duration::ZERO), S);
        assert_eq!(backoff.total(), 5);
    }
}
