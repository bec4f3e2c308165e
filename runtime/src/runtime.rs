//! The runtime handle: typed commands for the API and CLI.

use crate::activator::{ContainerTraffic, Listing, ServingRevision, TrafficPolicy, TrafficShared};
use crate::auth;
use crate::awake::AwakeSet;
use crate::background::Background;
use crate::clock::Clock;
use crate::cluster::{
    BlobPeers, ClusterLink, Membership, NodeRecord, NodeSnapshot, Peers, Reach, Server,
};
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
mod cluster_member;
mod container_commands;
mod deploying;
mod following;
mod metrics_text;
mod moving;
mod periodic;
mod restore;
mod traffic;

pub use admission::{ImagePart, MAX_BLOB_BYTES};
pub use container_commands::ContainerView;
use restore::load_containers;
pub use traffic::TrafficTarget;

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
    /// Kept-alive connections to the other members' ingress, for relayed requests.
    relay_connections: Arc<crate::relay::MemberConnections>,
}

/// Deployments that pull and prepare at once. Pulls of one image are shared and
/// compiled code is kept, so more at once would only queue on the registry and
/// the CPUs.
const CONCURRENT_DEPLOYS: usize = 32;

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
        let (store, cluster) = cluster_member::open_store(&config).await?;
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
            local_ingress: ember_sandbox::wasm::LocalIngress {
                domain: config.domain.clone(),
                addr: config.ingress_addr,
            },
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
                relay_connections: Arc::default(),
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

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
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
}
