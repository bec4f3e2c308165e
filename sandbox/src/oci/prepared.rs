//! A revision ready to start, with sandboxes created ahead of need.
//!
//! A container keeps a few created-but-not-started sandboxes (its
//! `preparedSandboxes`): their namespaces, cgroups, root filesystem and network are
//! in place and their init waits, but no workload process runs. A cold start takes
//! one and only starts it; another is created in the background to replace it.

use super::created::{CreatedSandbox, Recipe};
use crate::cdi::CdiDeviceName;
use crate::{BoxFuture, Instance, PreparedWorkload, SandboxError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// How long after a start its replacement begins to be created. Creating one takes
/// both cores for tens of milliseconds; begun at once, it slows the very request
/// the start was for. The next cold start comes only after an idle timeout.
const REFILL_DELAY: Duration = Duration::from_millis(100);

pub(crate) struct PreparedContainer {
    recipe: Arc<Recipe>,
    spares: Arc<Spares>,
}

struct Spares {
    /// How many the container keeps ready.
    wanted: usize,
    state: Mutex<SpareState>,
    /// Told whenever a creation or a start has ended.
    settled: tokio::sync::Notify,
}

#[derive(Default)]
struct SpareState {
    ready: Vec<CreatedSandbox>,
    /// Creations under way.
    creating: usize,
    /// Starts under way (a spare's or a fresh sandbox's).
    starting: usize,
    /// No instance will start from this revision any more: keep nothing ready.
    retired: bool,
}

impl PreparedContainer {
    /// Call [`PreparedContainer::refill`] from the async runtime to create the first
    /// spares.
    pub(crate) fn new(recipe: Recipe, wanted: usize) -> Self {
        Self {
            recipe: Arc::new(recipe),
            spares: Arc::new(Spares {
                wanted,
                state: Mutex::default(),
                settled: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Creates, in the background after `delay`, as many spares as are missing.
    pub(crate) fn refill(&self, delay: Duration) {
        let mut state = self.spares.state.lock();
        if state.retired {
            return;
        }
        while state.ready.len() + state.creating < self.spares.wanted {
            state.creating += 1;
            let (recipe, spares) = (self.recipe.clone(), self.spares.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // Retired while it waited: nothing to make (a runtime stopping would
                // otherwise wait for a sandbox only to remove it).
                let retired = spares.state.lock().retired;
                let created = if retired {
                    None
                } else {
                    Some(recipe.create(&[]).await)
                };
                let unwanted = {
                    let mut state = spares.state.lock();
                    match created {
                        None => None,
                        Some(Ok(sandbox)) if state.retired => Some(sandbox),
                        Some(Ok(sandbox)) => {
                            state.ready.push(sandbox);
                            None
                        }
                        Some(Err(_)) if state.retired => None,
                        Some(Err(e)) => {
                            // Not retried until the next start: a cause that lasts
                            // (no address left, say) must not spin.
                            tracing::warn!(container = %recipe.name, error = %e, "preparing a sandbox failed");
                            None
                        }
                    }
                };
                if let Some(sandbox) = unwanted {
                    sandbox.release().await;
                }
                spares.state.lock().creating -= 1;
                spares.settled.notify_waiters();
            });
        }
    }

    /// A spare whose init still waits, if there is one; spares that ended are removed.
    fn take_spare(&self) -> Option<CreatedSandbox> {
        let mut state = self.spares.state.lock();
        while let Some(spare) = state.ready.pop() {
            if !spare.has_ended() {
                return Some(spare);
            }
            tokio::spawn(spare.release());
        }
        None
    }

    async fn start_instance(&self, name: &str) -> Result<Arc<dyn Instance>, SandboxError> {
        let _counted = StartUnderWay::begin(&self.spares);
        let started = match self.take_spare() {
            Some(spare) => match self.recipe.start(spare, name, &|| self.is_retired()).await {
                Ok(instance) => Ok(instance),
                Err(e) => {
                    tracing::warn!(container = %self.recipe.name, error = %e, "a prepared sandbox failed to start; creating another");
                    self.start_fresh(name, &[]).await
                }
            },
            None => self.start_fresh(name, &[]).await,
        };
        self.refill(REFILL_DELAY);
        started
    }

    /// Creates a sandbox for this start alone: spares are made before anyone knows
    /// which devices their instance will hold.
    async fn start_fresh(
        &self,
        name: &str,
        devices: &[CdiDeviceName],
    ) -> Result<Arc<dyn Instance>, SandboxError> {
        let sandbox = self.recipe.create(devices).await?;
        self.recipe
            .start(sandbox, name, &|| self.is_retired())
            .await
    }

    fn is_retired(&self) -> bool {
        self.spares.state.lock().retired
    }

    /// Waits until no creation and no start is under way: those that end after
    /// retirement release what they made, and a start still waiting for its
    /// workload to listen gives up and removes its sandbox.
    async fn work_ended(&self) {
        loop {
            let settled = self.spares.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let idle = {
                let state = self.spares.state.lock();
                state.creating == 0 && state.starting == 0
            };
            if idle {
                return;
            }
            settled.await;
        }
    }

    /// Marks the revision retired and hands back its ready spares.
    fn take_all_spares(&self) -> Vec<CreatedSandbox> {
        let mut state = self.spares.state.lock();
        state.retired = true;
        std::mem::take(&mut state.ready)
    }
}

impl PreparedWorkload for PreparedContainer {
    fn start<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        Box::pin(self.start_instance(instance))
    }

    fn start_with_devices<'a>(
        &'a self,
        instance: &'a str,
        devices: &'a [CdiDeviceName],
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        if devices.is_empty() {
            return self.start(instance);
        }
        Box::pin(async move {
            let _counted = StartUnderWay::begin(&self.spares);
            self.start_fresh(instance, devices).await
        })
    }

    fn retire(&self) -> BoxFuture<'_, ()> {
        let spares = self.take_all_spares();
        Box::pin(async move {
            futures::future::join_all(spares.into_iter().map(CreatedSandbox::release)).await;
            self.work_ended().await;
        })
    }

    fn ready_sandboxes(&self) -> usize {
        self.spares.state.lock().ready.len()
    }
}

/// Counts a start in [`SpareState::starting`] for as long as it runs, even when
/// its future is dropped half-way.
struct StartUnderWay<'a>(&'a Spares);

impl<'a> StartUnderWay<'a> {
    fn begin(spares: &'a Spares) -> Self {
        spares.state.lock().starting += 1;
        Self(spares)
    }
}

impl Drop for StartUnderWay<'_> {
    fn drop(&mut self) {
        self.0.state.lock().starting -= 1;
        self.0.settled.notify_waiters();
    }
}

impl Drop for PreparedContainer {
    /// A revision dropped without being retired still gives its spares back; what a
    /// runtime without an async executor left is removed at its next start.
    fn drop(&mut self) {
        let spares = self.take_all_spares();
        if spares.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                futures::future::join_all(spares.into_iter().map(CreatedSandbox::release)).await;
            });
        }
    }
}
