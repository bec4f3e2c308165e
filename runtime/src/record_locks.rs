//! One lock per container record. A change that reads a container's record,
//! changes it with its live state and writes it back holds the container's lock
//! until the write is durable, so two changes of one container never interleave;
//! changes of different containers go on together and share the store's flushes.

use crate::model::ContainerId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

/// The locks of the containers being changed now; a lock no one holds or waits for
/// is forgotten.
#[derive(Default)]
pub(crate) struct RecordLocks {
    held: Arc<Mutex<HashMap<ContainerId, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The right to change one container's record, until dropped.
pub(crate) struct RecordGuard {
    id: ContainerId,
    held: Arc<Mutex<HashMap<ContainerId, Arc<tokio::sync::Mutex<()>>>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl RecordLocks {
    /// Waits for container `id`'s lock.
    pub(crate) async fn lock(&self, id: ContainerId) -> RecordGuard {
        let lock = self.held.lock().entry(id).or_default().clone();
        RecordGuard {
            id,
            held: self.held.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().len()
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        let guard = self.guard.take();
        drop(guard);
        // The map's reference is the last one: no one holds or waits.
        if held
            .get(&self.id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            held.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_container_at_a_time_others_meanwhile_and_nothing_kept_after() {
        let locks = Arc::new(RecordLocks::default());
        let (a, b) = (ContainerId::generate(), ContainerId::generate());
        let first = locks.lock(a).await;
        // Another container's lock is free.
        drop(locks.lock(b).await);
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock(a).await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second change of a waits");
        drop(first);
        waiting.await.unwrap();
        assert_eq!(locks.len(), 0);
    }
}
