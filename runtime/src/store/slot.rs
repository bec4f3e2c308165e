//! The open database, in a slot that can be emptied and filled again: once an I/O
//! error has happened, sled fails every later write with it, so after a failed
//! flush the store reopens the database.
//!
//! What keeps an answered error traceless is the check before each batch that the
//! disk has room (see [`RESERVED_BYTES`]): a full disk refuses the batch before
//! anything of it is applied. A flush that fails for another reason leaves sled
//! holding the batch in memory, and sled flushes again when the old database is
//! dropped; if that flush goes through, the batch is kept although its callers
//! heard of an error.

use super::StoreError;
use super::Trees;
use super::writer::Durable;
use crate::error::RuntimeError;
use parking_lot::RwLock;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long opening waits for another process to let go of the database.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Free space the store keeps on its disk: a batch is refused when less is left.
/// Enough for sled to flush a full batch and roll its log segments.
pub(super) const RESERVED_BYTES: u64 = 32 << 20;

/// The database and where it lives.
pub(super) struct TreeSlot {
    dir: PathBuf,
    trees: RwLock<Option<Arc<Trees>>>,
}

impl TreeSlot {
    /// Opens the database in `dir` (creating it), bringing its schema up to date.
    /// While another process holds it (a runtime killed a moment ago, whose exit
    /// the kernel is still finishing), waits up to [`LOCK_WAIT`] for it.
    pub(super) fn open(dir: PathBuf) -> Result<Self, RuntimeError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let trees = loop {
            match Trees::open(&dir) {
                Err(RuntimeError::Storage(e))
                    if e.to_string().contains("could not acquire lock") =>
                {
                    if Instant::now() >= deadline {
                        return Err(StoreError::broken(format!(
                            "another process holds the state store in {} (another Ember runtime on this data dir?): {e}",
                            dir.display()
                        )));
                    }
                    tracing::info!(dir = %dir.display(), "the state store is held by another process; waiting");
                    std::thread::sleep(Duration::from_millis(50));
                }
                opened => break opened?,
            }
        };
        Ok(Self {
            dir,
            trees: RwLock::new(Some(Arc::new(trees))),
        })
    }

    /// The open trees; waits while the database is being reopened.
    pub(super) fn trees(&self) -> Arc<Trees> {
        self.trees
            .read()
            .clone()
            .expect("the database is reopened while the lock is held")
    }

    fn free_bytes(&self) -> std::io::Result<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.dir)?;
        Ok(stats.blocks_available() as u64 * stats.fragment_size() as u64)
    }
}

impl Durable for Arc<TreeSlot> {
    type View = Arc<Trees>;

    fn view(&self) -> Arc<Trees> {
        self.trees()
    }

    fn room(&self) -> Result<(), String> {
        match self.free_bytes() {
            Ok(free) if free < RESERVED_BYTES => Err(format!(
                "the data dir's disk has {} MiB free; the state store keeps {} MiB free for what it writes",
                free >> 20,
                RESERVED_BYTES >> 20
            )),
            // A disk that cannot say how full it is: sled will tell.
            _ => Ok(()),
        }
    }

    fn make_durable(&self) -> Result<(), RuntimeError> {
        self.trees().db.flush()?;
        Ok(())
    }

    fn recover(&self) -> Result<(), RuntimeError> {
        let mut slot = self.trees.write();
        let Some(old) = slot.take() else {
            return Ok(());
        };
        // Readers that took the trees before the lock finish quickly; sled holds
        // its lock file until the last handle goes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(old);
        let mut last = None;
        while Instant::now() < deadline {
            match Trees::open(&self.dir) {
                Ok(trees) => {
                    *slot = Some(Arc::new(trees));
                    tracing::info!("the state store was reopened after a failed flush");
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let error = last.unwrap_or_else(|| StoreError::broken("reopening timed out"));
        // Never leave the slot empty: the process cannot go on without a store.
        panic!("the state store could not be reopened after a failed flush: {error}");
    }
}
