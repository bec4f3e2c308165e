//! The state store on etcd, for cluster mode: the same records, indexes and
//! promises as [`super::SledStore`], shared by every node of a cluster.
//!
//! Layout: every sled tree is a key prefix under the cluster's prefix
//! (`/ember/v1/` by default), its keys the sled keys unchanged:
//! `<prefix>containers/<id>`, `<prefix>index/<index key>`, and so on. Records are
//! the same JSON. What is one node's own is keyed by its name: the instances it
//! runs (`running/<node>/<sandbox>`) and its server id (`servers/<node>`).
//!
//! A change that sled makes in one transaction is one etcd transaction here,
//! optimistic: it reads what it needs, then commits only if none of those keys
//! changed since (compares on their `mod_revision`), and reads again otherwise.
//! Lists read the same index keys as sled; their totals are counted by etcd
//! (`count_only`) instead of kept in counters, so that concurrent writers do not
//! all contend for one counter key.
//!
//! The etcd client runs on a small runtime of its own, so that the store serves
//! callers on any runtime (or none: the `_blocking` calls of start-up) alike.

mod changes;
mod containers;
mod follow;
mod membership;
mod records;
#[cfg(test)]
mod tests;

use super::StoreError;
use crate::error::RuntimeError;
use crate::model::{ServerId, UserId};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, Txn, TxnOp,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a node finds its cluster's state, and who it is there.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// etcd's client URLs (`http://127.0.0.1:2379`, ...).
    pub endpoints: Vec<String>,
    /// The key prefix of this cluster's state (`/ember/v1/`).
    pub prefix: String,
    /// This node's name, unique in the cluster.
    pub node_name: String,
}

impl EtcdConfig {
    /// The prefix of a cluster that names none.
    pub const DEFAULT_PREFIX: &'static str = "/ember/v1/";
}

/// How long one call to etcd may take before the store reports it unavailable:
/// a write without quorum waits this long, then answers 503.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys read per request by a scan of a whole prefix (etcd answers are capped at
/// 4 MiB by default).
const SCAN_PAGE: i64 = 500;
/// Operations per transaction that a batch of reads uses (etcd's default cap is 128).
const READS_PER_TXN: usize = 100;
/// Longest a linearizable read waits for etcd's quorum before the member's own
/// copy answers instead.
const QUORUM_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the members' client ports are checked.
const ENDPOINT_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long reads keep to the member's copy after one found no quorum.
const DEGRADED_FOR: Duration = Duration::from_secs(2);

/// The state store on etcd: cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    io: Arc<IoRuntime>,
    inner: Arc<Inner>,
}

/// What the calls share, moved into each call's task on the client's runtime.
struct Inner {
    kv: KvClient,
    client: Client,
    keys: Keys,
    node_name: String,
    server_id: ServerId,
    admin_user_id: UserId,
    /// The last call's failure to reach etcd, cleared by the next success.
    fault: Mutex<Option<String>>,
    changes: AtomicU64,
    commits: AtomicU64,
    /// Job updates of this node, one at a time (a job is run by one node).
    job_updates: tokio::sync::Mutex<()>,
    /// Milliseconds since `opened` before which reads skip the quorum (see
    /// [`Inner::range`]).
    degraded_until: AtomicU64,
    opened: std::time::Instant,
}

/// The runtime the etcd client lives on, shut down when the store is dropped.
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn start() -> Result<Self, RuntimeError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ember-etcd")
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
            .map_err(RuntimeError::io("starting the etcd client's runtime"))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Without waiting: the store may be dropped on an async worker.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The keys of each record kind under the cluster's prefix.
#[derive(Clone)]
struct Keys {
    prefix: Vec<u8>,
}

/// The kinds of record, each a prefix of its own (sled's trees).
#[derive(Clone, Copy)]
enum Tree {
    Meta,
    Servers,
    Nodes,
    Containers,
    Names,
    Revisions,
    Tokens,
    Users,
    Quotas,
    Jobs,
    Index,
    Running,
    IdRanges,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta/",
            Self::Servers => "servers/",
            Self::Nodes => "nodes/",
            Self::Containers => "containers/",
            Self::Names => "names/",
            Self::Revisions => "revisions/",
            Self::Tokens => "tokens/",
            Self::Users => "users/",
            Self::Quotas => "quotas/",
            Self::Jobs => "jobs/",
            Self::Index => "index/",
            Self::Running => "running/",
            Self::IdRanges => "id_ranges/",
        }
    }
}

impl Keys {
    /// The key of `key` in `tree`.
    fn of(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        [&self.prefix, tree.name().as_bytes(), key].concat()
    }

    /// The prefix of every key of `tree`.
    fn tree(&self, tree: Tree) -> Vec<u8> {
        self.of(tree, &[])
    }

    /// `key` without the prefix of `tree`.
    fn strip<'k>(&self, tree: Tree, key: &'k [u8]) -> &'k [u8] {
        &key[self.tree(tree).len().min(key.len())..]
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd's "\0" end.
    vec![0]
}

/// The key just after `key` in etcd's order.
fn successor(key: &[u8]) -> Vec<u8> {
    [key, &[0]].concat()
}

impl From<etcd_client::Error> for RuntimeError {
    /// Out of reach (no answer, no quorum, timed out) is `Unavailable`, which the
    /// API answers 503; anything else etcd refused is a fault of the store.
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error;
        let unreachable = match &e {
            // gRPC's CANCELLED (1), DEADLINE_EXCEEDED (4) and UNAVAILABLE (14).
            Error::GRpcStatus(status) => matches!(status.code() as i32, 1 | 4 | 14),
            Error::TransportError(_) | Error::IoError(_) => true,
            _ => false,
        };
        if unreachable {
            Self::Storage(StoreError::Unavailable(format!(
                "the cluster's state store (etcd) did not answer: {e}"
            )))
        } else {
            StoreError::broken(format!("etcd refused a request: {e}"))
        }
    }
}

impl EtcdStore {
    /// Connects to the cluster's etcd and takes this node's place in it: its
    /// server id (made the first time its name joins), and the cluster's admin
    /// user and schema version (made by the first node).
    pub async fn open(config: EtcdConfig) -> Result<Self, RuntimeError> {
        if config.node_name.is_empty() || config.node_name.contains('/') {
            return Err(RuntimeError::invalid(
                "node-name",
                "must be a non-empty name without `/`",
            ));
        }
        let io = Arc::new(IoRuntime::start()?);
        let connect = {
            let endpoints = config.endpoints.clone();
            async move {
                let options = ConnectOptions::new()
                    .with_connect_timeout(CALL_TIMEOUT)
                    .with_timeout(CALL_TIMEOUT)
                    .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT);
                Client::connect(endpoints, Some(options)).await
            }
        };
        let client = io
            .handle()
            .spawn(connect)
            .await
            .map_err(RuntimeError::task("connecting to etcd"))??;
        if config.endpoints.len() > 1 {
            io.handle().spawn(keep_live_endpoints(
                client.clone(),
                config.endpoints.clone(),
            ));
        }
        let keys = Keys {
            prefix: config.prefix.clone().into_bytes(),
        };
        let setup = {
            let client = client.clone();
            let keys = keys.clone();
            let node = config.node_name.clone();
            async move {
                let mut kv = client.kv_client();
                check_schema(&mut kv, &keys).await?;
                let server_id = id_once(
                    &mut kv,
                    keys.of(Tree::Servers, node.as_bytes()),
                    ServerId::generate,
                )
                .await?;
                let admin = id_once(
                    &mut kv,
                    keys.of(Tree::Meta, super::schema::ADMIN_USER_KEY),
                    UserId::generate,
                )
                .await?;
                Ok::<_, RuntimeError>((server_id, admin))
            }
        };
        let (server_id, admin_user_id) = io
            .handle()
            .spawn(setup)
            .await
            .map_err(RuntimeError::task("joining the cluster"))??;
        Ok(Self {
            inner: Arc::new(Inner {
                kv: client.kv_client(),
                client,
                keys,
                node_name: config.node_name,
                server_id,
                admin_user_id,
                fault: Mutex::new(None),
                changes: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                job_updates: tokio::sync::Mutex::new(()),
                degraded_until: AtomicU64::new(0),
                opened: std::time::Instant::now(),
            }),
            io,
        })
    }

    /// The etcd client, for what the cluster does besides storing records
    /// (leases, watches).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// Runs `call` on the client's runtime; a failure to reach etcd is kept as the
    /// store's fault until a call succeeds.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, RuntimeError>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, RuntimeError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.io.handle().spawn(call(self.inner.clone()));
        let result = task.await.map_err(RuntimeError::task("a call to etcd"))?;
        self.note(&result);
        result
    }

    /// As [`Self::call`], blocking the thread (start-up's `_blocking` reads).
    fn call_blocking<T, F, Fut>(&self, call: F) -> Result<T, RuntimeError>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, RuntimeError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.io.handle().spawn(call(self.inner.clone()));
        let result =
            futures::executor::block_on(task).map_err(RuntimeError::task("a call to etcd"))?;
        self.note(&result);
        result
    }

    fn note<T>(&self, result: &Result<T, RuntimeError>) {
        let mut fault = self.inner.fault.lock();
        match result {
            Err(RuntimeError::Storage(StoreError::Unavailable(why))) => {
                *fault = Some(why.clone());
            }
            _ => *fault = None,
        }
    }
}

/// Whether etcd's answer says to try again: no connection to a member could be
/// made (a member that died is among the client's endpoints until the endpoint
/// check takes it out), or the cluster is between leaders (`leader changed`, `no
/// leader`). Every change this store makes is safe to send twice: a transaction
/// compares the revisions it read (one already applied fails its compare, and is
/// read again), and a plain put or delete leaves the same state.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        // gRPC's UNAVAILABLE.
        etcd_client::Error::GRpcStatus(status) => status.code() as i32 == 14,
        _ => false,
    }
}

/// Runs `call` again while it fails for a [`transient`] reason, for up to
/// [`CALL_TIMEOUT`] in all (a leader election takes a second or two; a cluster
/// without quorum is reported unavailable after that).
async fn again_if_transient<T, F, Fut>(mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    let mut pause = Duration::from_millis(20);
    loop {
        match call().await {
            Err(e) if transient(&e) && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

/// Keeps the client's endpoints to the members that accept connections (all of
/// them when none does), checked every [`ENDPOINT_CHECK_EVERY`].
async fn keep_live_endpoints(client: Client, endpoints: Vec<String>) {
    let mut out: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(ENDPOINT_CHECK_EVERY).await;
        let mut live = Vec::new();
        for endpoint in &endpoints {
            let address = endpoint
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            let connect = tokio::net::TcpStream::connect(address);
            let up = matches!(
                tokio::time::timeout(Duration::from_millis(300), connect).await,
                Ok(Ok(_))
            );
            live.push((endpoint.clone(), up));
        }
        if live.iter().all(|(_, up)| !up) {
            continue;
        }
        for (endpoint, up) in live {
            if up && out.remove(&endpoint) {
                let _ = client.add_endpoint(&endpoint).await;
            } else if !up && !out.contains(&endpoint) {
                client.remove_endpoint(&endpoint).await.ok();
                out.insert(endpoint);
            }
        }
    }
}

/// Refuses a cluster whose state a newer Ember wrote; records this one's version
/// in a new cluster.
async fn check_schema(kv: &mut KvClient, keys: &Keys) -> Result<(), RuntimeError> {
    let key = keys.of(Tree::Meta, super::schema::SCHEMA_KEY);
    let version = super::SCHEMA_VERSION.to_be_bytes().to_vec();
    let txn = Txn::new()
        .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), version, None)]);
    if kv.txn(txn).await?.succeeded() {
        return Ok(());
    }
    let found = kv
        .get(key, None)
        .await?
        .kvs()
        .first()
        .and_then(|kv| kv.value().try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::broken("the cluster's schema version record is corrupt"))?;
    if found > super::SCHEMA_VERSION {
        return Err(RuntimeError::SchemaTooNew {
            found,
            supported: super::SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The id stored at `key`, made with `generate` and stored by whoever asks first.
async fn id_once<T: serde::Serialize + DeserializeOwned>(
    kv: &mut KvClient,
    key: Vec<u8>,
    generate: impl Fn() -> T,
) -> Result<T, RuntimeError> {
    let txn = Txn::new()
        .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), super::encode(&generate())?, None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    kv.txn(txn).await?;
    let stored = kv.get(key, None).await?;
    let value = stored
        .kvs()
        .first()
        .ok_or_else(|| StoreError::broken("an id written once is gone"))?;
    super::decode(value.value())
}

impl Inner {
    fn kv(&self) -> KvClient {
        self.kv.clone()
    }

    /// The record at `key` of `tree`.
    async fn get<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, RuntimeError> {
        self.get_raw(self.keys.of(tree, key))
            .await?
            .map(|raw| super::decode(&raw))
            .transpose()
    }

    async fn get_raw(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, RuntimeError> {
        let response = self.range(key, None).await?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes one record (a change of its own).
    async fn put(&self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), RuntimeError> {
        let key = self.keys.of(tree, key);
        again_if_transient(|| {
            let mut kv = self.kv();
            let (key, value) = (key.clone(), value.clone());
            async move { kv.put(key, value, None).await }
        })
        .await?;
        self.count_commit(1);
        Ok(())
    }

    /// Removes one record (a change of its own).
    async fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), RuntimeError> {
        let key = self.keys.of(tree, key);
        again_if_transient(|| {
            let mut kv = self.kv();
            let key = key.clone();
            async move { kv.delete(key, None).await }
        })
        .await?;
        self.count_commit(1);
        Ok(())
    }

    fn count_commit(&self, changes: u64) {
        self.changes.fetch_add(changes, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Every key and value from `start` (inclusive) to `end` (exclusive), read a
    /// page at a time, at most `limit` of them (all when `None`).
    async fn scan_range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: Option<usize>,
        keys_only: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, RuntimeError> {
        let mut found = Vec::new();
        let mut from = start;
        loop {
            let want = limit.map_or(SCAN_PAGE, |limit| {
                i64::try_from(limit - found.len())
                    .unwrap_or(i64::MAX)
                    .min(SCAN_PAGE)
            });
            if want == 0 {
                return Ok(found);
            }
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(want);
            if keys_only {
                options = options.with_keys_only();
            }
            let mut response = self.range(from.clone(), Some(options)).await?;
            let more = response.more();
            let kvs = response.take_kvs();
            let Some(last) = kvs.last() else {
                return Ok(found);
            };
            from = successor(last.key());
            found.extend(kvs.into_iter().map(|kv| {
                let (key, value) = kv.into_key_value();
                (key, value)
            }));
            if !more {
                return Ok(found);
            }
        }
    }

    /// Every key and value of `tree` under `prefix`, the tree's prefix taken off the keys.
    async fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, RuntimeError> {
        let start = self.keys.of(tree, prefix);
        let end = prefix_end(&start);
        let found = self.scan_range(start, end, None, false).await?;
        Ok(found
            .into_iter()
            .map(|(key, value)| (self.keys.strip(tree, &key).to_vec(), value))
            .collect())
    }

    /// How many keys of `tree` start with `prefix`.
    async fn count(&self, tree: Tree, prefix: &[u8]) -> Result<usize, RuntimeError> {
        let start = self.keys.of(tree, prefix);
        let options = GetOptions::new()
            .with_range(prefix_end(&start))
            .with_count_only();
        let response = self.range(start, Some(options)).await?;
        Ok(usize::try_from(response.count()).unwrap_or(usize::MAX))
    }

    /// A read: linearizable (it sees every write acknowledged before it) while
    /// etcd has a quorum; without one, what this node's etcd member holds (a
    /// serializable read), so that a node keeps answering reads (and taking
    /// tokens) while writes are refused. After a read that found no quorum, reads
    /// go to the member's copy for [`DEGRADED_FOR`] before trying quorum again.
    async fn range(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, RuntimeError> {
        if !self.is_degraded() {
            let read = again_if_transient(|| {
                let mut kv = self.kv();
                let (key, options) = (key.clone(), options.clone());
                async move { kv.get(key, options).await }
            });
            match tokio::time::timeout(QUORUM_READ_TIMEOUT, read).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(e)) => {
                    let e = RuntimeError::from(e);
                    if !matches!(e, RuntimeError::Storage(StoreError::Unavailable(_))) {
                        return Err(e);
                    }
                }
                Err(_) => {}
            }
            self.degraded_until.store(
                self.clock_ms()
                    .saturating_add(DEGRADED_FOR.as_millis() as u64),
                Ordering::Relaxed,
            );
        }
        let options = options.unwrap_or_default().with_serializable();
        Ok(again_if_transient(|| {
            let mut kv = self.kv();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await?)
    }

    fn is_degraded(&self) -> bool {
        self.clock_ms() < self.degraded_until.load(Ordering::Relaxed)
    }

    fn clock_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// The records at `keys` of `tree`, in their order (`None` where one is gone),
    /// read in a few transactions rather than one request each (one read each
    /// while etcd has no quorum: a transaction needs one).
    async fn get_many<T: DeserializeOwned>(
        &self,
        tree: Tree,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<T>>, RuntimeError> {
        if self.is_degraded() {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(self.get(tree, key).await?);
            }
            return Ok(found);
        }
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(READS_PER_TXN) {
            let reads: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(self.keys.of(tree, key), None))
                .collect();
            let txn = Txn::new().and_then(reads);
            let response = again_if_transient(|| {
                let mut kv = self.kv();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
            for op in response.op_responses() {
                let etcd_client::TxnOpResponse::Get(get) = op else {
                    return Err(StoreError::broken(
                        "etcd answered a read with something else",
                    ));
                };
                found.push(
                    get.kvs()
                        .first()
                        .map(|kv| super::decode(kv.value()))
                        .transpose()?,
                );
            }
        }
        Ok(found)
    }

    /// A transaction of this store.
    fn tx(&self) -> Tx<'_> {
        Tx {
            inner: self,
            reads: Vec::new(),
            writes: std::collections::BTreeMap::new(),
            removed_prefixes: Vec::new(),
        }
    }
}

/// An optimistic transaction: the keys it read (and the revision each had) and the
/// changes it makes, committed only if none of those keys changed meanwhile.
struct Tx<'a> {
    inner: &'a Inner,
    reads: Vec<(Vec<u8>, i64)>,
    /// The last change to each key (etcd refuses a key twice in one transaction).
    writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Prefixes removed whole.
    removed_prefixes: Vec<Vec<u8>>,
}

impl Tx<'_> {
    /// The raw value at `key` of `tree`, remembered for the commit's check.
    async fn get_raw(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, RuntimeError> {
        let key = self.inner.keys.of(tree, key);
        let response = again_if_transient(|| {
            let mut kv = self.inner.kv();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        let found = response.kvs().first();
        self.reads
            .push((key, found.map_or(0, |kv| kv.mod_revision())));
        Ok(found.map(|kv| kv.value().to_vec()))
    }

    /// As [`Self::get_raw`], decoded.
    async fn get<T: DeserializeOwned>(
        &mut self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>, RuntimeError> {
        self.get_raw(tree, key)
            .await?
            .map(|raw| super::decode(&raw))
            .transpose()
    }

    fn put(&mut self, tree: Tree, key: &[u8], value: Vec<u8>) {
        self.writes
            .insert(self.inner.keys.of(tree, key), Some(value));
    }

    fn delete(&mut self, tree: Tree, key: &[u8]) {
        self.writes.insert(self.inner.keys.of(tree, key), None);
    }

    /// Removes every key of `tree` under `prefix` (none of which this
    /// transaction may write).
    fn delete_prefix(&mut self, tree: Tree, prefix: &[u8]) {
        self.removed_prefixes.push(self.inner.keys.of(tree, prefix));
    }

    /// Applies an index change; totals are counted by etcd, so its counters are not kept.
    fn apply_index_change(&mut self, change: &super::index::IndexChange) {
        for key in &change.remove {
            self.delete(Tree::Index, key);
        }
        for (key, value) in &change.insert {
            self.put(Tree::Index, key, value.clone());
        }
    }

    /// Commits: `false`, and nothing written, when a key read changed since.
    async fn commit(self) -> Result<bool, RuntimeError> {
        let mut ops: Vec<TxnOp> = self
            .writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        ops.extend(
            self.removed_prefixes
                .into_iter()
                .map(|prefix| TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()))),
        );
        if ops.is_empty() {
            return Ok(true);
        }
        let changes = ops.len() as u64;
        let compares: Vec<Compare> = self
            .reads
            .into_iter()
            .map(|(key, revision)| Compare::mod_revision(key, CompareOp::Equal, revision))
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let response = again_if_transient(|| {
            let mut kv = self.inner.kv();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        if response.succeeded() {
            self.inner.count_commit(changes);
        }
        Ok(response.succeeded())
    }
}

impl super::StateStore for EtcdStore {
    /// This node's server id, made the first time its name joined.
    fn server_id(&self) -> ServerId {
        self.inner.server_id
    }

    /// The cluster's admin user, made by the first node.
    fn admin_user_id(&self) -> UserId {
        self.inner.admin_user_id
    }

    /// The last call's failure to reach etcd, until a call succeeds.
    fn fault(&self) -> Option<String> {
        self.inner.fault.lock().clone()
    }

    /// Changes made and transactions committed since the store opened.
    fn write_counts(&self) -> (u64, u64) {
        (
            self.inner.changes.load(Ordering::Relaxed),
            self.inner.commits.load(Ordering::Relaxed),
        )
    }
}
