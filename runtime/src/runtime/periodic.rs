//! The runtime's periodic work: reconciling, old jobs removed, load shed under
//! pressure, and the reclaimer a full node uses to make room.

use super::*;

/// Containers the reconciler looks at before it lets other tasks run.
const RECONCILED_BETWEEN_YIELDS: usize = 256;

impl Runtime {
    /// Lets a full node make room by stopping idle instances of other containers,
    /// those idle longest first.
    pub(super) fn set_reclaimer(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.node.set_reclaimer(Box::new(move |requester, _| {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let mut others = inner.containers.all();
            others.retain(|s| s.id != requester);
            others.sort_by_key(|s| s.idle_since());
            others.iter().any(|s| s.evict_one_idle())
        }));
    }

    pub(super) fn spawn_reconciler(&self) {
        self.spawn_periodic(self.inner.config.reconcile_interval, |runtime| async move {
            let services = runtime.inner.awake.members();
            for (n, service) in services.iter().enumerate() {
                service.reconcile();
                // With many containers a pass takes milliseconds: let the API and
                // the probes in between.
                if n % RECONCILED_BETWEEN_YIELDS == RECONCILED_BETWEEN_YIELDS - 1 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }

    /// Removes finished jobs past their retention, now and every hour.
    pub(super) fn spawn_job_cleaner(&self) {
        self.spawn_periodic(Duration::from_secs(3600), |runtime| async move {
            let now = SystemTime::now();
            if let Some(cutoff) = now.checked_sub(crate::jobs::FINISHED_JOB_RETENTION)
                && let Err(e) = runtime.store().remove_jobs_finished_before(cutoff).await
            {
                tracing::warn!(error = %e, "removing old jobs failed");
            }
        });
    }

    /// Reads the process's pressure periodically, and sheds load on the ingress
    /// while it is past the thresholds (see `overload`).
    pub(super) fn spawn_overload_monitor(&self) {
        let interval = self.config().overload.interval;
        let memory_return = Arc::new(crate::overload::MemoryReturn::default());
        self.spawn_periodic(interval, move |runtime| {
            let memory_return = memory_return.clone();
            async move {
                let open = runtime.ingress_gate().open() + runtime.api_gate().open();
                if memory_return.observe(open) {
                    let _ = tokio::task::spawn_blocking(crate::overload::return_free_memory).await;
                }
                let Ok(Ok(pressure)) =
                    tokio::task::spawn_blocking(crate::overload::read_pressure).await
                else {
                    return;
                };
                let gate = runtime.ingress_gate();
                let shedding = gate.is_shedding();
                match (
                    runtime.config().overload.overloaded(&pressure, shedding),
                    shedding,
                ) {
                    (Some(why), false) => {
                        tracing::warn!(reason = %why, "overloaded: the ingress sheds load");
                        gate.set_shedding(true);
                        let why: Arc<str> = why.into();
                        for service in runtime.inner.containers.all() {
                            service.shed_queued(&why);
                        }
                    }
                    (None, true) => {
                        tracing::info!(?pressure, "no longer overloaded: the ingress serves again");
                        gate.set_shedding(false);
                    }
                    _ => {}
                }
            }
        });
    }

    /// Runs `tick` every `interval` (a late tick is not made up for) until the
    /// runtime is gone.
    pub(crate) fn spawn_periodic<F, Fut>(&self, interval: Duration, tick: F)
    where
        F: Fn(Runtime) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                tick(Runtime { inner }).await;
            }
        });
    }
}
