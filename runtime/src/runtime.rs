//! The runtime handle: typed commands for the API and CLI.

use crate::activator::{ContainerTraffic, Listing, ServingRevision, TrafficPolicy, TrafficShared};
use crate::auth;
use crate::awake::AwakeSet;
use crate::background::Background;
use crate::clock::Clock;
use crate::cluster::{BlobPeers, ClusterLink, Membership, NodeRecord, NodeSnapshot, Peers, Server};
use crate::config::RuntimeConfig;
use crate::connections::ConnectionGate;
use crate::containers::Containers;
use crate::deploy::{Deployer, PreparedLater};
use crate::error::RuntimeError;
use crate::journal::{InstanceJournal, StoreJournal};
use crate::logs::{LogEntry, LogStore};
use crate::metrics::{ContainerSeries, Metrics};
use crate::model::{
    Caller, Container, ContainerId, ContainerPatch, ContainerQuery, ContainerSpec, ContainerStatus,
    GpuModel, InstanceId, Page, PageRequest, Revision, RunningInstance, Scope, ServerId,
};
use crate::node::{self, NodeCapacity};
use crate::store::{SledStore, Store};
use crate::tenants::Tenants;
use crate::usage::UsageSeries;
use ember_sandbox::image::{Credentials, ImageRef, PullProgress, RegistryPuller};
use ember_sandbox::oci::{OciConfig, OciSandbox};
use ember_sandbox::wasm::{WasmConfig, WasmSandbox};
use ember_sandbox::{BlobStore, Digest, Sandbox, WorkloadKind};
use ember_scheduler::{Misfit, ScalingPolicy};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod admission;
mod container_commands;
mod deploying;
mod following;
mod moving;
mod restore;

pub use admission::MAX_BLOB_BYTES;
pub use container_commands::ContainerView;
use restore::load_containers;

/// The runtime: cheap to clone, shared by the API, the ingress and background tasks.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    store: Store,
    deployer: Arc<Deployer>,
    /// Every container's traffic, by id and by host, and their record locks.
    containers: Containers,
    /// The containers the reconciler visits: those not at rest.
    awake: Arc<AwakeSet<ContainerTraffic>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    server_id: ServerId,
    node: Arc<NodeCapacity>,
    /// The executor of starts and stops, and the stops under way.
    background: Background,
    /// Samples of each instance's CPU and memory.
    usage: UsageSeries,
    /// Deployments that may pull and prepare at once; the rest wait their turn.
    deploy_slots: Arc<tokio::sync::Semaphore>,
    /// How far each deploying container's pull has come, shown as its status reason.
    pulls: Mutex<HashMap<ContainerId, String>>,
    logs: Arc<LogStore>,
    /// Stream tokens and SSH credentials in force.
    grants: crate::grants::Grants,
    /// Instances moved by a migration job, and the server each came from, for a
    /// revert.
    migrations: Mutex<HashMap<InstanceId, ServerId>>,
    /// Set once the ingress serves: every stored container is routed by then.
    ingress_routing: std::sync::atomic::AtomicBool,
    /// The record of the OCI instances running, for a later runtime to adopt.
    journal: Arc<dyn InstanceJournal>,
    /// The client connections of the ingress and of the API.
    ingress_gate: Arc<ConnectionGate>,
    api_gate: Arc<ConnectionGate>,
    /// This node's cluster, when it is a member of one.
    membership: Option<Arc<dyn Membership>>,
    /// The other members' APIs, in a cluster.
    peers: Option<Arc<Peers>>,
}

/// Deployments that pull and prepare at once. Pulls of one image are shared and
/// compiled code is kept, so more at once would only queue on the registry and
/// the CPUs.
const CONCURRENT_DEPLOYS: usize = 32;

/// Containers the reconciler looks at before it lets other tasks run.
const RECONCILED_BETWEEN_YIELDS: usize = 256;

impl Runtime {
    /// Opens the data dir, loads every container and starts serving them (routes,
    /// deployments, the autoscaler). Returns the runtime and, on the first start, the
    /// generated admin token to print once.
    ///
    /// What a restart must redo per container does not hold this up: a revision
    /// that was serving before serves again at once, prepared anew at its first
    /// cold start or by a background warm-up with bounded concurrency, whichever
    /// comes first.
    pub async fn start(config: RuntimeConfig) -> Result<(Self, Option<String>), RuntimeError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(RuntimeError::io(format!("creating {}", data_dir.display())))?;
        let (store, cluster) = open_store(&config).await?;
        let (membership, changes) = match cluster {
            Some(link) => (Some(link.membership), Some(link.changes)),
            None => (None, None),
        };
        let (store, stored, running, quotas) = tokio::task::spawn_blocking(move || {
            let stored = load_containers(&store)?;
            let running = store.running_blocking()?;
            let quotas = store.quotas_blocking()?;
            Ok::<_, RuntimeError>((store, stored, running, quotas))
        })
        .await
        .map_err(RuntimeError::task("opening the store"))??;
        let admin = auth::bootstrap_admin(&store, &data_dir, config.admin_token.as_deref()).await?;
        let peers = membership
            .as_ref()
            .zip(config.cluster.as_ref())
            .map(|(m, c)| {
                Arc::new(Peers::new(
                    m.clone(),
                    c.node_name.clone(),
                    admin.secret.clone(),
                ))
            });
        let blobs = BlobStore::open(data_dir.join("blobs"))?;
        let cdi = Arc::new(node::load_cdi_specs(&config.cdi_spec_dirs));
        let wasm = WasmSandbox::new(
            &WasmConfig {
                cache_dir: data_dir.join("compiled"),
                max_concurrent_instances: config.max_wasm_instances,
                max_memory_bytes: 4 << 30,
            },
            blobs.clone(),
        )?;
        let oci = OciSandbox::new(
            OciConfig {
                root: data_dir.join("oci"),
                bridge: config.bridge.clone(),
                subnet: config.subnet,
                stop_grace: config.stop_grace,
                startup_timeout: config.startup_timeout,
                pids_limit: config.pids_limit,
            },
            blobs.clone(),
            cdi.clone(),
        )
        .await
        .map(|sandbox| Arc::new(sandbox) as Arc<dyn Sandbox>)
        .map_err(|e| {
            tracing::warn!(reason = %e, "OCI containers are disabled");
            e.to_string()
        });
        let logs = LogStore::new(config.log_retention_bytes);
        let deployer = Arc::new(Deployer {
            puller: RegistryPuller::new(
                blobs.clone(),
                Credentials::from_env(),
                config.allowed_registries.clone(),
            ),
            blobs,
            wasm: Arc::new(wasm),
            oci,
            request_timeout: config.request_timeout,
            logs: logs.clone(),
            cdi: cdi.clone(),
            id_ranges: store.clone(),
            peers: peers.clone().map(|p| p as Arc<dyn BlobPeers>),
        });
        let server_id = store.server_id();
        let journal = Arc::new(StoreJournal::start(store.clone()));
        let tenants = Tenants::new(config.default_quota.clone(), store.admin_user_id(), quotas);
        let node = NodeCapacity::new(
            server_id,
            node::host_name(),
            node::detect_capacity(config.node_cpus, config.node_memory_bytes, &cdi),
            Arc::new(tenants),
        );
        let ingress_gate = ConnectionGate::new("ingress", config.ingress_connections.clone());
        let api_gate = ConnectionGate::new("api", config.api_connections.clone());
        let runtime = Self {
            inner: Arc::new(Inner {
                ingress_gate,
                api_gate,
                server_id,
                node,
                background: Background::current(),
                config,
                store,
                deployer,
                containers: Containers::default(),
                awake: Arc::default(),
                metrics: Arc::default(),
                clock: Clock::start(),
                deploy_slots: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DEPLOYS)),
                pulls: Mutex::default(),
                logs,
                usage: UsageSeries::default(),
                grants: crate::grants::Grants::default(),
                migrations: Mutex::default(),
                ingress_routing: false.into(),
                journal,
                membership,
                peers,
            }),
        };
        runtime.set_reclaimer();
        runtime.finish_interrupted_jobs().await?;
        runtime.restore(stored);
        runtime.adopt_running(running).await;
        if let Some(changes) = changes {
            runtime.spawn_following(changes);
            runtime.spawn_share_keeper();
            runtime.spawn_quota_reader();
        }
        runtime.spawn_reconciler();
        runtime.spawn_usage_sampler();
        runtime.spawn_overload_monitor();
        runtime.spawn_job_cleaner();
        Ok((runtime, admin.new.then_some(admin.secret)))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// This machine as a node: its capacity and its tenants' use.
    pub(crate) fn node(&self) -> &NodeCapacity {
        &self.inner.node
    }

    pub(crate) fn containers(&self) -> &Containers {
        &self.inner.containers
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// This node's server id.
    pub(crate) fn server_id(&self) -> ServerId {
        self.inner.server_id
    }

    /// Where starts and stops run, and the stops under way.
    pub(crate) fn background(&self) -> &Background {
        &self.inner.background
    }

    pub(crate) fn usage(&self) -> &UsageSeries {
        &self.inner.usage
    }

    /// Stream tokens and SSH credentials in force.
    pub(crate) fn grants(&self) -> &crate::grants::Grants {
        &self.inner.grants
    }

    /// Instances moved by a migration job, and the server each came from.
    pub(crate) fn migrations(&self) -> &Mutex<HashMap<InstanceId, ServerId>> {
        &self.inner.migrations
    }

    pub(crate) fn logs(&self) -> &LogStore {
        &self.inner.logs
    }

    /// Whether every stored container is routed, as it is once the ingress serves.
    pub(crate) fn ingress_routing(&self) -> &std::sync::atomic::AtomicBool {
        &self.inner.ingress_routing
    }

    /// Who holds `secret`, if anyone.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>, RuntimeError> {
        auth::authenticate(&self.inner.store, secret).await
    }

    /// Who holds `secret`, if it is a token of `user`.
    pub async fn authenticate_as(
        &self,
        user: &str,
        secret: &str,
    ) -> Result<Option<Caller>, RuntimeError> {
        auth::authenticate_as(&self.inner.store, Some(user), secret).await
    }

    /// Stops every instance of every container and waits for them to go, so that a
    /// runtime that exits leaves no container behind.
    pub async fn shut_down(&self) {
        let services = self.inner.containers.all();
        futures::future::join_all(services.iter().map(|s| s.stop_everything())).await;
        // Stops begun before (scale-downs, deleted containers) end too.
        self.inner.background.wait_for_stops().await;
        if let Some(membership) = &self.inner.membership {
            membership.leave().await;
        }
    }

    /// The instances of container `id` that the cluster's other members run, as
    /// their APIs list them (none on one machine). The caller's right to see the
    /// container is checked here first; the members are asked with this node's
    /// own admin token.
    pub async fn other_members_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Vec<serde_json::Value>, RuntimeError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(Vec::new());
        };
        self.accessible(caller, id).await?;
        Ok(peers.instances_of(id).await)
    }

    /// The API of the member that runs `instance` of container `id`, when another
    /// member of the cluster does (the caller's right to see it checked first).
    pub async fn member_running(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<Option<std::net::SocketAddr>, RuntimeError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(None);
        };
        let wanted = instance.to_string();
        let server = self
            .other_members_instances(caller, id)
            .await?
            .iter()
            .find(|i| i["id"].as_str() == Some(wanted.as_str()))
            .and_then(|i| i["server_id"].as_str()?.parse::<ServerId>().ok());
        Ok(server.and_then(|server| peers.api_of(server)))
    }

    /// Sends a client's API request on to the member at `api` (found with
    /// [`Self::member_running`]), with the client's own credentials; the member's
    /// status, content type and body.
    pub async fn forward_to_member(
        &self,
        api: std::net::SocketAddr,
        method: http::Method,
        path: &str,
        authorization: Option<http::HeaderValue>,
        json: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, Option<http::HeaderValue>, Vec<u8>), RuntimeError> {
        let peers = self
            .inner
            .peers
            .as_ref()
            .ok_or_else(|| RuntimeError::Unprocessable("this node is in no cluster".into()))?;
        peers
            .forward(api, method, path, authorization, json)
            .await
            .map_err(|why| {
                RuntimeError::Unprocessable(format!("the member running the instance: {why}"))
            })
    }

    /// Has the cluster's other members stop their instances of container `id`
    /// (nothing on one machine); the caller's right to change it is checked
    /// first.
    pub async fn stop_other_members_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<(), RuntimeError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(());
        };
        self.accessible(caller, id).await?;
        peers.stop_instances_of(id).await;
        Ok(())
    }

    /// This node's cluster membership, when it is in a cluster.
    pub(crate) fn membership(&self) -> Option<&Arc<dyn Membership>> {
        self.inner.membership.as_ref()
    }

    /// The servers instances run on and what they hold: this node alone, or the
    /// members of its cluster.
    pub fn servers(&self) -> Vec<Server> {
        match &self.inner.membership {
            Some(membership) => membership.members().iter().map(Server::from).collect(),
            None => vec![Server {
                node: self.inner.node.snapshot(),
                addresses: None,
            }],
        }
    }

    /// Publishes this node to its cluster (if it is in one), with the addresses its
    /// API and ingress listen on, kept published until it stops.
    pub async fn join_cluster(
        &self,
        api: std::net::SocketAddr,
        ingress: std::net::SocketAddr,
    ) -> Result<(), RuntimeError> {
        let (Some(membership), Some(cluster)) =
            (&self.inner.membership, &self.inner.config.cluster)
        else {
            return Ok(());
        };
        let advertised = |addr: std::net::SocketAddr| {
            std::net::SocketAddr::new(cluster.advertise_addr, addr.port())
        };
        let (api, ingress) = (advertised(api), advertised(ingress));
        let node = self.inner.node.clone();
        let (name, joined) = (cluster.node_name.clone(), SystemTime::now());
        let runtime = Arc::downgrade(&self.inner);
        let snapshot: NodeSnapshot = Arc::new(move || {
            let now = node.snapshot();
            let warm = runtime
                .upgrade()
                .map(|inner| {
                    inner
                        .containers
                        .all()
                        .iter()
                        .filter_map(|s| {
                            let count = u32::try_from(s.instance_count()).ok()?;
                            (count > 0).then_some((s.id, count))
                        })
                        .collect()
                })
                .unwrap_or_default();
            NodeRecord {
                name: name.clone(),
                server_id: now.id,
                api,
                ingress,
                capacity: (&now.capacity).into(),
                allocated: (&now.allocated).into(),
                joined,
                warm,
            }
        });
        membership.join(snapshot).await
    }

    /// Prometheus text for `/metrics`.
    ///
    /// `reader` decides whose series it holds: every container's for an admin or a
    /// token with the `metrics` scope, none (node-wide series only) otherwise, so
    /// that one tenant never reads another's container ids and traffic.
    pub fn metrics_text(&self, reader: Option<&Caller>) -> String {
        let every_container = reader.is_some_and(|caller| {
            caller.role == crate::model::Role::Admin || caller.scopes.contains(Scope::Metrics)
        });
        let services = self.inner.containers.all();
        let instances: usize = services.iter().map(|s| s.instance_count()).sum();
        let mut text = self.inner.metrics.render(&[
            (
                "ember_containers",
                "Containers deployed.",
                services.len() as u64,
            ),
            ("ember_instances", "Instances running.", instances as u64),
            (
                "ember_overloaded",
                "1 while the ingress sheds load (descriptors or memory past their threshold).",
                u64::from(self.inner.ingress_gate.is_shedding()),
            ),
        ]);
        if every_container {
            let per_container: Vec<_> = services.iter().map(|s| series_of(s)).collect();
            crate::metrics::render_per_container(&mut text, &per_container);
        }
        Metrics::render_store_writes(&mut text, self.inner.store.write_counts());
        crate::connections::render_metrics(
            &mut text,
            &[&self.inner.ingress_gate, &self.inner.api_gate],
        );
        text
    }

    /// Prometheus text of one container's series, for a caller who may see it.
    pub async fn container_metrics_text(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<String, RuntimeError> {
        self.accessible(caller, id).await?;
        let mut text = String::new();
        if let Some(traffic) = self.inner.containers.get(id) {
            crate::metrics::render_per_container(&mut text, &[series_of(&traffic)]);
        }
        Ok(text)
    }

    /// Whether the runtime takes work, as a readiness probe asks: its store can
    /// make changes durable and its ingress is routing. Reads only memory.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(fault) = self.inner.store.fault() {
            return Err(format!("the state store cannot write: {fault}"));
        }
        if !self
            .inner
            .ingress_routing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err("the ingress is not serving yet".into());
        }
        Ok(())
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The gate of the ingress's client connections.
    pub fn ingress_gate(&self) -> &Arc<ConnectionGate> {
        &self.inner.ingress_gate
    }

    /// The gate of the management API's client connections.
    pub fn api_gate(&self) -> &Arc<ConnectionGate> {
        &self.inner.api_gate
    }

    /// Lets a full node make room by stopping idle instances of other containers,
    /// those idle longest first.
    fn set_reclaimer(&self) {
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

    fn spawn_reconciler(&self) {
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
    fn spawn_job_cleaner(&self) {
        self.spawn_periodic(Duration::from_secs(3600), |runtime| async move {
            let now = SystemTime::now();
            if let Some(cutoff) = now.checked_sub(crate::jobs::FINISHED_JOB_RETENTION)
                && let Err(e) = runtime.store().remove_jobs_finished_before(cutoff).await
            {
                tracing::warn!(error = %e, "removing old jobs failed");
            }
        });
    }

    /// Runs `tick` every `interval` (a late tick is not made up for) until the
    /// runtime is gone.
    /// Reads the process's pressure periodically, and sheds load on the ingress
    /// while it is past the thresholds (see `overload`).
    fn spawn_overload_monitor(&self) {
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

/// One container's series, as `/metrics` shows them.
fn series_of(traffic: &ContainerTraffic) -> ContainerSeries {
    ContainerSeries {
        id: traffic.id,
        traffic: traffic.traffic(),
        decisions: traffic.decisions().collect(),
    }
}

/// The store `config` names, and the cluster membership that comes with it: sled
/// in the data dir, or the cluster's etcd.
async fn open_store(config: &RuntimeConfig) -> Result<(Store, Option<ClusterLink>), RuntimeError> {
    match &config.cluster {
        None => {
            let state_dir = config.data_dir.join("state");
            let store = tokio::task::spawn_blocking(move || SledStore::open(&state_dir))
                .await
                .map_err(RuntimeError::task("opening the store"))??;
            Ok((Arc::new(store), None))
        }
        Some(cluster) => open_cluster_store(cluster).await,
    }
}

#[cfg(feature = "cluster")]
async fn open_cluster_store(
    cluster: &crate::cluster::ClusterConfig,
) -> Result<(Store, Option<ClusterLink>), RuntimeError> {
    let store = crate::store::EtcdStore::open(crate::store::EtcdConfig {
        endpoints: cluster.endpoints.clone(),
        prefix: crate::store::EtcdConfig::DEFAULT_PREFIX.into(),
        node_name: cluster.node_name.clone(),
    })
    .await?;
    let link = ClusterLink {
        membership: store.membership(),
        changes: store.container_changes(),
    };
    Ok((Arc::new(store), Some(link)))
}

#[cfg(not(feature = "cluster"))]
async fn open_cluster_store(
    _: &crate::cluster::ClusterConfig,
) -> Result<(Store, Option<ClusterLink>), RuntimeError> {
    Err(RuntimeError::Unprocessable(
        "this ember was built without cluster mode: build it with `cargo build --release --features cluster` (which needs protoc, Debian's protobuf-compiler)".into(),
    ))
}
