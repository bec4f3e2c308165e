//! Persistent state. The runtime sees it through the traits of `interface.rs`
//! (containers and revisions, tokens and users, jobs, running instances), as a
//! [`Store`]; every implementation passes the suite in `conformance.rs`.
//!
//! [`SledStore`], the embedded default, keeps it in sled: typed trees under a
//! versioned schema, indexes that keep every list one page's work, and one writer
//! that makes changes durable in groups.
//!
//! Trees: `meta` (schema version, server id, admin user), `containers`
//! (id -> container), `names` (name -> id), `revisions` (id ++ number -> revision),
//! `tokens` (sha256 of the secret -> token), `users` (name -> user id), `quotas`
//! (user id -> quota), `jobs`
//! (id -> job), and `index` (see `index.rs`). Values are JSON.
//!
//! Every change runs on the store's writer thread (see `writer.rs`) and is durable
//! before the `async` call that asked for it returns. Reads run on tokio's blocking
//! threads, never on an async worker, since a sled read may wait for a
//! transaction's lock.

mod error;
#[cfg(feature = "cluster")]
mod etcd;
mod index;
mod interface;
mod jobs;
mod list;
mod running;
mod schema;
mod slot;
mod tokens;
mod writer;

use crate::error::RuntimeError;
use crate::model::{
    Container, ContainerId, ContainerQuery, Page, PageRequest, Revision, ServerId, UserId,
};
use ember_sandbox::IdRange;
use index::IndexChange;
use serde::{Serialize, de::DeserializeOwned};
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use slot::TreeSlot;
use std::path::Path;
use std::sync::Arc;
use writer::GroupCommit;

pub use error::StoreError;
#[cfg(feature = "cluster")]
pub use etcd::{EtcdConfig, EtcdStore};
pub use interface::{
    ContainerStore, InstanceRecords, JobChange, JobStore, Saved, StateStore, Store, TokenStore,
};
pub use schema::SCHEMA_VERSION;

/// Memory sled may keep of the database (its default is 1 GiB, which a long run
/// of writes fills: resident memory then only grows).
const CACHE_BYTES: u64 = 64 << 20;

/// The sled trees of the store.
struct Trees {
    db: sled::Db,
    meta: sled::Tree,
    containers: sled::Tree,
    names: sled::Tree,
    revisions: sled::Tree,
    tokens: sled::Tree,
    users: sled::Tree,
    /// User id -> the quota an admin set on the user.
    quotas: sled::Tree,
    jobs: sled::Tree,
    index: sled::Tree,
    /// Sandbox id -> the OCI instance running in it (see [`running`]).
    running: sled::Tree,
    /// Container id -> the id range its user namespaces map onto.
    id_ranges: sled::Tree,
}

impl Trees {
    /// Opens the database in `dir`, bringing its schema up to date. sled flushes
    /// only when the writer asks it to: a batch becomes durable as a whole.
    fn open(dir: &Path) -> Result<Self, RuntimeError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let trees = Self {
            meta: db.open_tree("meta")?,
            containers: db.open_tree("containers")?,
            names: db.open_tree("names")?,
            revisions: db.open_tree("revisions")?,
            tokens: db.open_tree("tokens")?,
            users: db.open_tree("users")?,
            quotas: db.open_tree("quotas")?,
            jobs: db.open_tree("jobs")?,
            index: db.open_tree("index")?,
            running: db.open_tree("running")?,
            id_ranges: db.open_tree("id_ranges")?,
            db,
        };
        schema::bring_up_to_date(&trees)?;
        Ok(trees)
    }
}

/// The state store on sled, in one directory: cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    slot: Arc<TreeSlot>,
    writer: Arc<GroupCommit<Arc<TreeSlot>>>,
    server_id: ServerId,
    admin_user_id: UserId,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`: checks the schema version, brings an
    /// older schema up to date, and starts the writer. Blocks: call it from a
    /// blocking thread.
    pub fn open(dir: &Path) -> Result<Self, RuntimeError> {
        let slot = Arc::new(TreeSlot::open(dir.to_path_buf())?);
        let (server_id, admin_user_id) = {
            let trees = slot.trees();
            let server_id = schema::id_in_meta(&trees, schema::SERVER_ID_KEY, ServerId::generate)?;
            let admin_user_id =
                schema::id_in_meta(&trees, schema::ADMIN_USER_KEY, UserId::generate)?;
            trees.db.flush()?;
            (server_id, admin_user_id)
        };
        let writer = GroupCommit::start(slot.clone())
            .map(Arc::new)
            .map_err(|e| RuntimeError::Storage(StoreError::Writer(e)))?;
        Ok(Self {
            slot,
            writer,
            server_id,
            admin_user_id,
        })
    }

    /// Runs `read` on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Trees) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let slot = self.slot.clone();
        tokio::task::spawn_blocking(move || read(&slot.trees()))
            .await
            .map_err(RuntimeError::task("a read of the store"))?
    }
}

/// Writes a container, its revision and its name in one transaction, with the
/// index entries that point to it.
fn write_container(
    t: &Trees,
    container: &Container,
    before: Option<&Container>,
    revision: &Revision,
) -> Result<Saved, RuntimeError> {
    let value = encode(container)?;
    let revision_value = encode(revision)?;
    let id = container.id;
    let name = container.spec.name.as_str().as_bytes();
    let result = (&t.containers, &t.names, &t.revisions, &t.index).transaction(
        |(containers, names, revisions, index)| {
            let old = containers
                .get(id.as_bytes())?
                .map(|raw| decode_in::<Container>(&raw))
                .transpose()?;
            match (before, &old) {
                (Some(_), None) => return Ok(Saved::Gone),
                (Some(before), Some(old)) if old != before => {
                    return Ok(Saved::Changed(Box::new(old.clone())));
                }
                _ => {}
            }
            if names
                .get(name)?
                .is_some_and(|owner| owner.as_ref() != id.as_bytes())
            {
                return Err(ConflictableTransactionError::Abort(TxAbort::NameTaken));
            }
            if let Some(old) = before
                .map(|b| &b.spec.name)
                .filter(|old| *old != &container.spec.name)
            {
                names.remove(old.as_str().as_bytes())?;
            }
            names.insert(name, id.as_bytes())?;
            containers.insert(id.as_bytes(), value.as_slice())?;
            revisions.insert(
                &revision_key(id, revision.number)[..],
                revision_value.as_slice(),
            )?;
            apply_index_change(
                index,
                &IndexChange::containers(old.as_ref(), Some(container)),
            )?;
            Ok(Saved::Written)
        },
    );
    match result {
        Ok(saved) => Ok(saved),
        Err(TransactionError::Abort(TxAbort::NameTaken)) => {
            Err(RuntimeError::NameTaken(container.spec.name.to_string()))
        }
        Err(TransactionError::Abort(TxAbort::Corrupt(e))) => Err(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

/// Why a transaction gave up.
#[derive(Debug)]
enum TxAbort {
    NameTaken,
    Corrupt(RuntimeError),
}

type TxResult<T> = Result<T, ConflictableTransactionError<TxAbort>>;

/// Runs a transaction whose only abort is a record that does not decode.
fn transact<Tx: Transactional<TxAbort>, T>(
    trees: Tx,
    body: impl Fn(&Tx::View) -> TxResult<T>,
) -> Result<T, RuntimeError> {
    trees.transaction(|view| body(view)).map_err(|e| match e {
        TransactionError::Abort(TxAbort::Corrupt(e)) => e,
        TransactionError::Abort(TxAbort::NameTaken) => {
            StoreError::broken("a transaction aborted unexpectedly")
        }
        TransactionError::Storage(e) => e.into(),
    })
}

fn apply_index_change(index: &TransactionalTree, change: &IndexChange) -> TxResult<()> {
    for key in &change.remove {
        index.remove(key.as_slice())?;
    }
    for (key, value) in &change.insert {
        index.insert(key.as_slice(), value.as_slice())?;
    }
    for (counter, delta) in &change.counts {
        add_to_counter(index, counter, *delta)?;
    }
    Ok(())
}

fn add_to_counter(
    index: &TransactionalTree,
    counter: &[u8],
    delta: i64,
) -> Result<(), UnabortableTransactionError> {
    let count = index::decode_count(index.get(counter)?.as_deref());
    index.insert(counter, &index::moved(count, delta))?;
    Ok(())
}

/// Revisions sort by container, then number (big-endian keeps numeric order).
fn revision_key(id: ContainerId, number: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&number.to_be_bytes());
    key
}

fn corrupt_index() -> RuntimeError {
    StoreError::broken("an index entry points to no record")
}

/// Once every range was given out in turn: the lowest no container holds.
fn lowest_free_id_range(held: &sled::Tree) -> Result<IdRange, RuntimeError> {
    let held: std::collections::HashSet<IdRange> = held
        .iter()
        .values()
        .map(|value| decode(&value?))
        .collect::<Result<_, _>>()?;
    lowest_free_id_range_of(&held)
}

/// The lowest id range not in `held`.
fn lowest_free_id_range_of(
    held: &std::collections::HashSet<IdRange>,
) -> Result<IdRange, RuntimeError> {
    (0..IdRange::COUNT)
        .filter_map(IdRange::new)
        .find(|range| !held.contains(range))
        .ok_or_else(|| {
            RuntimeError::Unprocessable(format!(
                "every one of the {} user-namespace id ranges is held by a container; delete containers to free some",
                IdRange::COUNT
            ))
        })
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, RuntimeError> {
    tree.get(key)?.map(|v| decode(&v)).transpose()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e).into())
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, RuntimeError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Decode(e).into())
}

/// As [`decode`], inside a transaction.
fn decode_in<T: DeserializeOwned>(raw: &[u8]) -> TxResult<T> {
    decode(raw).map_err(|e| ConflictableTransactionError::Abort(TxAbort::Corrupt(e)))
}

#[async_trait::async_trait]
impl ContainerStore for SledStore {
    /// One container.
    async fn container(&self, id: ContainerId) -> Result<Option<Container>, RuntimeError> {
        self.read(move |t| get(&t.containers, id.as_bytes())).await
    }

    /// The containers whose integer id (as the numbered faces show it) is `number`:
    /// one, but for a clash of 48-bit numbers.
    async fn containers_numbered(&self, number: u64) -> Result<Vec<Container>, RuntimeError> {
        self.read(move |t| {
            t.index
                .scan_prefix(index::by_number_prefix(number))
                .map(|entry| {
                    let (key, value) = entry?;
                    let id = index::container_id_of(&key, &value).ok_or_else(corrupt_index)?;
                    get(&t.containers, id.as_bytes())?.ok_or_else(corrupt_index)
                })
                .collect()
        })
        .await
    }

    /// One page of the containers `query` asks for, read from an index: it costs
    /// the rows it returns (and, for a page by number, a walk over the keys before
    /// them), whatever the number of containers.
    async fn list_containers(
        &self,
        query: ContainerQuery,
    ) -> Result<Page<Container>, RuntimeError> {
        self.read(move |t| list::list_containers(t, &query)).await
    }

    /// Stores a new container and its first revision; refuses a name in use.
    async fn insert_container(
        &self,
        container: Container,
        revision: Revision,
    ) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| write_container(t, &container, None, &revision))
            .await
            .map(|_| ())
    }

    /// Stores an updated container with its new revision if its record is still
    /// `before`; `before`'s name is freed when it changed.
    async fn update_container(
        &self,
        before: Container,
        container: Container,
        revision: Revision,
    ) -> Result<Saved, RuntimeError> {
        self.writer
            .write(move |t| write_container(t, &container, Some(&before), &revision))
            .await
    }

    /// Replaces a container record (status changes) if it is still `before`.
    async fn save_status(
        &self,
        before: Container,
        after: Container,
    ) -> Result<Saved, RuntimeError> {
        self.writer
            .write(move |t| {
                let value = encode(&after)?;
                transact((&t.containers, &t.index), |(containers, index)| {
                    let key = after.id.as_bytes();
                    let Some(old) = containers.get(key)? else {
                        return Ok(Saved::Gone);
                    };
                    let old: Container = decode_in(&old)?;
                    if old != before {
                        return Ok(Saved::Changed(Box::new(old)));
                    }
                    containers.insert(key, value.as_slice())?;
                    apply_index_change(index, &IndexChange::containers(Some(&old), Some(&after)))?;
                    Ok(Saved::Written)
                })
            })
            .await
    }

    /// Removes a container, its name and its revisions.
    async fn remove_container(&self, container: Container) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                let keys: Vec<_> = t
                    .revisions
                    .scan_prefix(container.id.as_bytes())
                    .keys()
                    .collect::<Result<_, _>>()?;
                let name = container.spec.name.as_str().as_bytes();
                let id = container.id;
                transact(
                    (&t.containers, &t.names, &t.revisions, &t.index),
                    |(containers, names, revisions, index)| {
                        let Some(old) = containers.remove(id.as_bytes())? else {
                            return Ok(());
                        };
                        let old: Container = decode_in(&old)?;
                        if names
                            .get(name)?
                            .is_some_and(|owner| owner.as_ref() == id.as_bytes())
                        {
                            names.remove(name)?;
                        }
                        for key in &keys {
                            revisions.remove(key.as_ref())?;
                        }
                        apply_index_change(index, &IndexChange::containers(Some(&old), None))
                    },
                )?;
                t.id_ranges.remove(id.as_bytes())?;
                Ok(())
            })
            .await
    }

    async fn id_range(&self, id: ContainerId) -> Result<IdRange, RuntimeError> {
        if let Some(range) = self.read(move |t| get(&t.id_ranges, id.as_bytes())).await? {
            return Ok(range);
        }
        // Allocated by the one writer, so two first asks cannot take one range.
        self.writer
            .write(move |t| {
                if let Some(range) = get(&t.id_ranges, id.as_bytes())? {
                    return Ok(range);
                }
                let next = match t.meta.get(schema::NEXT_ID_RANGE_KEY)? {
                    Some(raw) => {
                        u32::from_be_bytes(raw.as_ref().try_into().map_err(|_| corrupt_index())?)
                    }
                    None => 0,
                };
                let range = match IdRange::new(next) {
                    Some(range) => {
                        t.meta
                            .insert(schema::NEXT_ID_RANGE_KEY, &(next + 1).to_be_bytes())?;
                        range
                    }
                    None => lowest_free_id_range(&t.id_ranges)?,
                };
                t.id_ranges.insert(id.as_bytes(), encode(&range)?)?;
                Ok(range)
            })
            .await
    }

    /// Records the artifact a revision's image resolved to.
    async fn save_revision(&self, revision: Revision) -> Result<(), RuntimeError> {
        self.writer
            .write(move |t| {
                t.revisions.insert(
                    &revision_key(revision.container_id, revision.number)[..],
                    encode(&revision)?,
                )?;
                Ok(())
            })
            .await
    }

    /// One revision.
    async fn revision(
        &self,
        id: ContainerId,
        number: u32,
    ) -> Result<Option<Revision>, RuntimeError> {
        self.read(move |t| get(&t.revisions, &revision_key(id, number)))
            .await
    }

    /// A page of a container's revisions, newest first.
    async fn revisions(
        &self,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError> {
        self.read(move |t| {
            let total = t.revisions.scan_prefix(id.as_bytes()).count();
            let items = t
                .revisions
                .scan_prefix(id.as_bytes())
                .values()
                .rev()
                .skip(page.skip())
                .take(page.rows_per_page as usize)
                .map(|v| decode(&v?))
                .collect::<Result<_, _>>()?;
            Ok(page.page_of(items, total, None))
        })
        .await
    }

    /// Every container, for loading them at start. Blocks.
    fn containers_blocking(&self) -> Result<Vec<Container>, RuntimeError> {
        self.slot
            .trees()
            .containers
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// One revision, for start-up work on a blocking thread. Blocks.
    fn revision_blocking(
        &self,
        id: ContainerId,
        number: u32,
    ) -> Result<Option<Revision>, RuntimeError> {
        get(&self.slot.trees().revisions, &revision_key(id, number))
    }
}

impl StateStore for SledStore {
    /// This server's id, made on first start.
    fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// The admin user's id, made on first start.
    fn admin_user_id(&self) -> UserId {
        self.admin_user_id
    }

    /// Why the store cannot make changes durable now, if it cannot (its writer
    /// stopped, or its last flush failed).
    fn fault(&self) -> Option<String> {
        self.writer.fault()
    }

    /// Changes applied and flushes made since the store opened: their ratio is how
    /// many changes each flush made durable.
    fn write_counts(&self) -> (u64, u64) {
        let counts = self.writer.counts();
        (
            counts.changes.load(std::sync::atomic::Ordering::Relaxed),
            counts.flushes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;
