//! Work that callers asking for the same key at about the same time share: one
//! run at a time per key, and each run's outcome handed to everyone who asked
//! before it began.
//!
//! A caller never gets an outcome older than its own request: when it asks while a
//! run is under way, it waits for that run to end and then shares the next one,
//! which began after it asked. So a burst of N callers costs at most two runs,
//! and none of them sees a result that a change made before it asked (a tag moved
//! in the registry, say) could have missed.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

/// Runs shared per key; what is remembered of a key goes with its last caller.
pub(crate) struct Shared<K, V> {
    keys: Mutex<HashMap<K, Arc<KeyRuns<V>>>>,
}

struct KeyRuns<V> {
    /// Held while a run goes on; the last run's start and outcome.
    last: tokio::sync::Mutex<Option<(Instant, V)>>,
}

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Self {
            keys: Mutex::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Shared<K, V> {
    /// The outcome of a run of `work` for `key` that began after this call: this
    /// caller's own, or one it shares with callers that asked at about the same
    /// time.
    pub(crate) async fn run<F: Future<Output = V>>(&self, key: &K, work: impl FnOnce() -> F) -> V {
        let asked = Instant::now();
        let runs = self
            .keys
            .lock()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(KeyRuns {
                    last: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        let outcome = {
            let mut last = runs.last.lock().await;
            match &*last {
                Some((started, outcome)) if *started >= asked => outcome.clone(),
                _ => {
                    let started = Instant::now();
                    let outcome = work().await;
                    *last = Some((started, outcome.clone()));
                    outcome
                }
            }
        };
        let mut keys = self.keys.lock();
        // The last caller of this key forgets it, so that a later one runs afresh.
        if Arc::strong_count(&runs) == 2 {
            keys.remove(key);
        }
        outcome
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.keys.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_callers_costs_at_most_two_runs_and_each_run_began_after_its_callers_asked()
    {
        let shared = Arc::new(Shared::<&str, (Instant, usize)>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let (shared, runs) = (shared.clone(), runs.clone());
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let (started, run) = shared
                        .run(&"image", || async {
                            let started = Instant::now();
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            (started, runs.fetch_add(1, Ordering::SeqCst))
                        })
                        .await;
                    assert!(started >= asked, "an outcome older than the request");
                    run
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let total = runs.load(Ordering::SeqCst);
        assert!((1..=2).contains(&total), "{total} runs for one burst");
        assert_eq!(
            shared.remembered(),
            0,
            "nothing kept once everyone has left"
        );
        // A later caller runs afresh.
        shared
            .run(&"image", || async {
                runs.fetch_add(1, Ordering::SeqCst);
                (Instant::now(), 0)
            })
            .await;
        assert_eq!(runs.load(Ordering::SeqCst), total + 1);
    }

    #[tokio::test]
    async fn keys_do_not_share() {
        let shared = Shared::<u8, u8>::default();
        assert_eq!(shared.run(&1, || async { 10 }).await, 10);
        assert_eq!(shared.run(&2, || async { 20 }).await, 20);
    }
}
