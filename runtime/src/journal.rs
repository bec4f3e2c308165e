//! The journal of running OCI instances: the activator tells it when one starts
//! and when one stops, and it keeps the store's record of them (see
//! `store::running`) in that order, off the request path.

use crate::model::RunningInstance;
use crate::store::Store;
use tokio::sync::mpsc;

/// Where the activator reports instances that start and stop.
pub(crate) trait InstanceJournal: Send + Sync {
    /// The instance in `sandbox` started (or was adopted).
    fn started(&self, sandbox: &str, instance: RunningInstance);
    /// The instance in `sandbox` stopped or ended.
    fn stopped(&self, sandbox: &str);
}

enum Entry {
    Started(String, RunningInstance),
    Stopped(String),
}

/// Writes the journal to the store, one entry after another.
pub(crate) struct StoreJournal {
    entries: mpsc::UnboundedSender<Entry>,
}

impl StoreJournal {
    /// A journal kept in `store` by a task on the current runtime.
    pub(crate) fn start(store: Store) -> Self {
        let (entries, mut pending) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(entry) = pending.recv().await {
                let written = match entry {
                    Entry::Started(sandbox, instance) => {
                        store.record_running(sandbox, instance).await
                    }
                    Entry::Stopped(sandbox) => store.forget_running(sandbox).await,
                };
                if let Err(e) = written {
                    tracing::warn!(error = %e, "recording a running instance failed");
                }
            }
        });
        Self { entries }
    }
}

impl InstanceJournal for StoreJournal {
    fn started(&self, sandbox: &str, instance: RunningInstance) {
        let _ = self
            .entries
            .send(Entry::Started(sandbox.to_string(), instance));
    }

    fn stopped(&self, sandbox: &str) {
        let _ = self.entries.send(Entry::Stopped(sandbox.to_string()));
    }
}

/// A journal that keeps nothing: for the activator's tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct NoJournal;

#[cfg(test)]
impl InstanceJournal for NoJournal {
    fn started(&self, _: &str, _: RunningInstance) {}
    fn stopped(&self, _: &str) {}
}
