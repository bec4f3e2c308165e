//! The store's one writer: every change to the state runs on one thread, in the
//! order it was asked for, and is made durable together with the changes queued
//! beside it (group commit) before its caller hears back.
//!
//! Why one thread: sled 0.34 deadlocks when `flush_async` calls overlap with each
//! other and with transactions (sled's issues #1308, #1241 and #1412), and its
//! transactions take a process-wide lock that a reader may have to wait for. With
//! one writer, flushes never overlap, no transaction waits on a flush, and no tokio
//! worker ever waits on sled's I/O. Group commit keeps the cost of durability at
//! one flush per batch, however many writers are waiting.
//!
//! A batch the disk has no room for is refused before anything of it is applied,
//! so that an answered error leaves no trace; after a flush that fails anyway, the
//! target recovers (sled is reopened) so that later writes can succeed.

use super::StoreError;
use crate::error::RuntimeError;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Most changes applied before one flush. A batch this large is already far
/// cheaper per change than one flush each; a bound keeps the first caller's wait
/// bounded too.
const MAX_BATCH: usize = 4096;

/// Where the writer's changes go, and how they are made durable.
pub(super) trait Durable: Send + Sync + 'static {
    /// What changes are applied to during one batch.
    type View;

    /// The view for the next batch.
    fn view(&self) -> Self::View;

    /// Refuses a batch, before anything of it is applied, when there is no room to
    /// make it durable (a nearly full disk): the reason.
    fn room(&self) -> Result<(), String>;

    /// Makes every change applied so far survive a crash.
    fn make_durable(&self) -> Result<(), RuntimeError>;

    /// After a failed flush: makes the target able to take writes again, and
    /// forgets what it can of what was applied but never made durable.
    fn recover(&self) -> Result<(), RuntimeError>;
}

/// Answers a caller once its batch is durable (or was not).
type Reply = Box<dyn FnOnce(Result<(), &RuntimeError>) + Send>;

/// A change waiting in the queue, with its caller's answer.
trait Pending<V>: Send {
    /// Applies the change; `None` when its caller has been answered already (the
    /// change failed, so nothing waits on a flush).
    fn apply(self: Box<Self>, view: &V) -> Option<Reply>;

    /// Answers the caller with `error`, applying nothing.
    fn refuse(self: Box<Self>, error: RuntimeError);
}

type Change<D> = Box<dyn Pending<<D as Durable>::View>>;

struct Queued<F, T> {
    change: F,
    answer: oneshot::Sender<Result<T, RuntimeError>>,
}

impl<V, F, T> Pending<V> for Queued<F, T>
where
    F: FnOnce(&V) -> Result<T, RuntimeError> + Send,
    T: Send + 'static,
{
    fn apply(self: Box<Self>, view: &V) -> Option<Reply> {
        let Self { change, answer } = *self;
        // A change that panics fails alone; the writer goes on with the others.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| change(view)))
            .unwrap_or_else(|_| {
                Err(StoreError::broken(
                    "a change of the state panicked and was abandoned",
                ))
            });
        match outcome {
            Err(e) => {
                let _ = answer.send(Err(e));
                None
            }
            Ok(value) => Some(Box::new(move |durable: Result<(), &RuntimeError>| {
                let _ = answer.send(match durable {
                    Ok(()) => Ok(value),
                    Err(e) => Err(e.not_made_durable()),
                });
            })),
        }
    }

    fn refuse(self: Box<Self>, error: RuntimeError) {
        let _ = self.answer.send(Err(error));
    }
}

/// The handle that queues changes for the writer thread. Dropping it drains the
/// queue and waits for the thread to end, so that the store can be opened again at
/// once (sled locks its files while open).
pub(super) struct GroupCommit<D: Durable> {
    queue: Option<mpsc::Sender<Change<D>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Why the last batch did not become durable, until one does.
    fault: Arc<Mutex<Option<String>>>,
    counts: Arc<Counts>,
}

/// What the writer has done since it started.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Changes applied or refused.
    pub(super) changes: AtomicU64,
    /// Flushes, each making a batch of changes durable.
    pub(super) flushes: AtomicU64,
}

impl<D: Durable> Drop for GroupCommit<D> {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's writer panicked");
        }
    }
}

impl<D: Durable> GroupCommit<D> {
    /// Starts the writer thread over `target`.
    pub(super) fn start(target: D) -> std::io::Result<Self> {
        let (queue, changes) = mpsc::channel::<Change<D>>();
        let fault = Arc::default();
        let counts = Arc::<Counts>::default();
        let thread = {
            let (fault, counts) = (Arc::clone(&fault), Arc::clone(&counts));
            std::thread::Builder::new()
                .name("ember-store-writer".into())
                .spawn(move || run(&target, &changes, &fault, &counts))?
        };
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            fault,
            counts,
        })
    }

    /// What the writer has done so far.
    pub(super) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Why changes cannot be made durable now, if they cannot: the writer has
    /// stopped, or the last batch was refused or failed to flush.
    pub(super) fn fault(&self) -> Option<String> {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Some("the store's writer has stopped".into());
        }
        self.fault.lock().clone()
    }

    /// Applies `change` on the writer thread; its result once it is durable. A change
    /// that fails is answered at once and must have written nothing.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&D::View) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Box::new(Queued { change, answer }))
            .map_err(|_| writer_gone())?;
        answered.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> RuntimeError {
    StoreError::broken("the store's writer has stopped")
}

/// The writer thread: takes whatever is queued (up to [`MAX_BATCH`]), applies it in
/// order, makes it durable once, then answers every caller of the batch.
fn run<D: Durable>(
    target: &D,
    changes: &mpsc::Receiver<Change<D>>,
    fault: &Mutex<Option<String>>,
    counts: &Counts,
) {
    while let Ok(first) = changes.recv() {
        let batch: Vec<_> = std::iter::once(first)
            .chain(std::iter::from_fn(|| changes.try_recv().ok()))
            .take(MAX_BATCH)
            .collect();
        counts
            .changes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(why) = target.room() {
            // Nothing of the batch is applied: each caller hears why.
            *fault.lock() = Some(why.clone());
            for change in batch {
                change.refuse(RuntimeError::StorageFull(why.clone()));
            }
            continue;
        }
        let view = target.view();
        let waiting: Vec<_> = batch
            .into_iter()
            .filter_map(|change| change.apply(&view))
            .collect();
        drop(view);
        if waiting.is_empty() {
            *fault.lock() = None;
            continue;
        }
        let durable = target.make_durable();
        counts.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &durable {
            tracing::error!(error = %e, changes = waiting.len(), "making the state durable failed; reopening the store");
            if let Err(again) = target.recover() {
                tracing::error!(error = %again, "reopening the store failed");
            }
        }
        *fault.lock() = durable.as_ref().err().map(ToString::to_string);
        for reply in waiting {
            reply(durable.as_ref().map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::Duration;

    /// A fake target: a list of applied values and a count of flushes, each of which
    /// takes a while, as a disk's would.
    #[derive(Default)]
    struct Recorder {
        applied: Mutex<Vec<u32>>,
        durable: Mutex<usize>,
        flushes: AtomicUsize,
        fail_flushes: AtomicBool,
        full: AtomicBool,
    }

    impl Durable for Arc<Recorder> {
        type View = Arc<Recorder>;

        fn view(&self) -> Arc<Recorder> {
            self.clone()
        }

        fn room(&self) -> Result<(), String> {
            if self.full.load(Ordering::SeqCst) {
                return Err("no room".into());
            }
            Ok(())
        }

        fn make_durable(&self) -> Result<(), RuntimeError> {
            std::thread::sleep(Duration::from_millis(2));
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail_flushes.load(Ordering::SeqCst) {
                return Err(StoreError::broken("disk on fire"));
            }
            *self.durable.lock() = self.applied.lock().len();
            Ok(())
        }

        fn recover(&self) -> Result<(), RuntimeError> {
            let durable = *self.durable.lock();
            self.applied.lock().truncate(durable);
            Ok(())
        }
    }

    fn push(n: u32) -> impl FnOnce(&Arc<Recorder>) -> Result<usize, RuntimeError> + Send {
        move |r: &Arc<Recorder>| {
            let mut applied = r.applied.lock();
            applied.push(n);
            Ok(applied.len())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_flushes_and_hear_back_once_durable() {
        let recorder = Arc::new(Recorder::default());
        let writer = Arc::new(GroupCommit::start(recorder.clone()).unwrap());
        let tasks: Vec<_> = (0..1000u32)
            .map(|n| {
                let writer = writer.clone();
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let position = writer.write(push(n)).await.unwrap();
                    // Answered only once the change is durable.
                    assert!(*recorder.durable.lock() >= position);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut applied = recorder.applied.lock().clone();
        applied.sort_unstable();
        assert_eq!(applied, (0..1000).collect::<Vec<_>>());
        let flushes = recorder.flushes.load(Ordering::SeqCst);
        assert!(flushes < 500, "{flushes} flushes for 1000 writes");
        assert_eq!(writer.counts().changes.load(Ordering::Relaxed), 1000);
        assert_eq!(
            writer.counts().flushes.load(Ordering::Relaxed),
            flushes as u64
        );
    }

    #[tokio::test]
    async fn a_failed_change_is_answered_at_once_and_a_failed_flush_leaves_no_trace() {
        let recorder = Arc::new(Recorder::default());
        let writer = GroupCommit::start(recorder.clone()).unwrap();
        let refused = writer
            .write(|_: &Arc<Recorder>| Err::<(), _>(RuntimeError::NameTaken("x".into())))
            .await;
        assert!(matches!(refused, Err(RuntimeError::NameTaken(_))));
        assert_eq!(recorder.flushes.load(Ordering::SeqCst), 0);
        assert_eq!(writer.fault(), None);
        let panicked = writer
            .write(|_: &Arc<Recorder>| -> Result<(), RuntimeError> { panic!("a bug") })
            .await
            .unwrap_err();
        assert!(panicked.to_string().contains("panicked"), "{panicked}");
        writer.write(push(1)).await.unwrap();
        recorder.fail_flushes.store(true, Ordering::SeqCst);
        let lost = writer.write(push(2)).await.unwrap_err();
        assert!(lost.to_string().contains("disk on fire"), "{lost}");
        assert!(writer.fault().unwrap().contains("disk on fire"));
        assert_eq!(
            *recorder.applied.lock(),
            vec![1],
            "the failed change was forgotten"
        );
        recorder.fail_flushes.store(false, Ordering::SeqCst);
        writer.write(push(3)).await.unwrap();
        assert_eq!(writer.fault(), None);
    }

    #[tokio::test]
    async fn a_batch_without_room_is_refused_whole_and_nothing_of_it_applied() {
        let recorder = Arc::new(Recorder::default());
        let writer = GroupCommit::start(recorder.clone()).unwrap();
        recorder.full.store(true, Ordering::SeqCst);
        let refused = writer.write(push(1)).await.unwrap_err();
        assert!(
            matches!(refused, RuntimeError::StorageFull(_)),
            "{refused:?}"
        );
        assert!(recorder.applied.lock().is_empty());
        assert_eq!(writer.fault().as_deref(), Some("no room"));
        recorder.full.store(false, Ordering::SeqCst);
        writer.write(push(2)).await.unwrap();
        assert_eq!(*recorder.applied.lock(), vec![2]);
        assert_eq!(writer.fault(), None);
    }
}
