//! Where the runtime's own work runs.
//!
//! Requests arrive on the ingress threads, each with a runtime of its own, and may
//! set off work that outlives them: instance starts, stops, readiness watches. That
//! work belongs on the runtime's executor, not on whichever ingress thread happened
//! to see the request, so it is spawned through this handle.

use std::future::Future;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

/// The executor the runtime was started on, and the stops under way on it.
#[derive(Clone)]
pub(crate) struct Background {
    executor: Handle,
    /// Instance stops under way, which the runtime waits for when it shuts down.
    stops: TaskTracker,
}

impl Background {
    /// The executor of the calling task.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub(crate) fn current() -> Self {
        Self {
            executor: Handle::current(),
            stops: TaskTracker::new(),
        }
    }

    /// Runs `work` on the runtime's executor, untracked.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.executor.spawn(work);
    }

    /// Runs a stop on the runtime's executor; [`Background::wait_for_stops`] waits
    /// for it.
    pub(crate) fn spawn_stop(&self, stop: impl Future<Output = ()> + Send + 'static) {
        self.stops.spawn_on(stop, &self.executor);
    }

    /// Waits for every stop spawned so far; none may be spawned after.
    pub(crate) async fn wait_for_stops(&self) {
        self.stops.close();
        self.stops.wait().await;
    }
}
