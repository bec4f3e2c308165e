//! Instances that end on their own: counted, backed off, replaced.

use super::*;

/// Instances that ended on their own, and when the next start may happen.
#[derive(Default)]
pub(super) struct Restarts {
    /// All of them, for the API.
    pub(super) total: u32,
    /// In a row, each soon after its start: the backoff doubles with each.
    pub(super) in_a_row: u32,
    /// Clock time before which no instance starts.
    pub(super) not_before: Duration,
    /// What happened last, for the container's status.
    pub(super) note: Option<String>,
}

/// First wait before restarting an instance that ended; doubles per restart in a row.
pub(super) const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
pub(super) const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that ran this long before ending starts the backoff afresh.
pub(super) const STABLE_UPTIME: Duration = Duration::from_secs(60);

impl ContainerTraffic {
    /// Times instances ended on their own or failed to start.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.lock().total
    }

    /// What happened to the last instance that ended on its own, while the container
    /// has not served since.
    pub(crate) fn restart_note(&self) -> Option<String> {
        self.restarts.lock().note.clone()
    }

    /// Counts an instance end (or failed start) and sets the backoff; returns it.
    pub(super) fn record_restart(&self, what: &str, ran_long: bool) -> Duration {
        let mut restarts = self.restarts.lock();
        if ran_long {
            restarts.in_a_row = 0;
        }
        restarts.total += 1;
        restarts.in_a_row += 1;
        let backoff = RESTART_BACKOFF
            .saturating_mul(1 << (restarts.in_a_row - 1).min(16))
            .min(MAX_RESTART_BACKOFF);
        restarts.not_before = self.clock.now() + backoff;
        restarts.note = Some(format!(
            "{what}; next start in {}s (restart {})",
            backoff.as_secs_f64(),
            restarts.total
        ));
        backoff
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
