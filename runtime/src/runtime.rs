//! The runtime handle: typed commands for the API and CLI.

use crate::activator::{ContainerTraffic, Listing, ServingRevision, TrafficPolicy, TrafficShared};
use crate::auth;
use crate::awake::AwakeSet;
use crate::background::Background;
use crate::clock::Clock;
use crate::config::RuntimeConfig;
use crate::containers::Containers;
use crate::deploy::{Deployer, PreparedLater};
use crate::error::RuntimeError;
use crate::journal::{InstanceJournal, StoreJournal};
use crate::logs::{LogEntry, LogStore};
use crate::metrics::{ContainerSeries, Metrics};
use crate::model::{
    Caller, Container, ContainerId, ContainerPatch, ContainerQuery, ContainerSpec, ContainerStatus,
    GpuModel, InstanceId, InstanceInfo, Page, PageRequest, Revision, RunningInstance, ServerId,
};
use crate::node::{self, NodeCapacity};
use crate::store::Store;
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
}

/// A container with the parts of its view the store does not hold.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// The stored container.
    pub container: Container,
    /// Where it is served, once a revision has deployed.
    pub urls: Option<Vec<String>>,
    /// Times its instances ended on their own (exited or crashed) and were replaced.
    pub restarts: u32,
}

/// Deployments that pull and prepare at once. Pulls of one image are shared and
/// compiled code is kept, so more at once would only queue on the registry and
/// the CPUs.
const CONCURRENT_DEPLOYS: usize = 32;

/// Containers the reconciler looks at before it lets other tasks run.
const RECONCILED_BETWEEN_YIELDS: usize = 256;

/// Restored revisions prepared at once in the background after a restart.
const CONCURRENT_WARM_UPS: usize = 4;

/// Largest blob the content store takes through the API.
pub const MAX_BLOB_BYTES: usize = 256 << 20;

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
        let state_dir = data_dir.join("state");
        let (store, stored, running) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&state_dir)?;
            let stored = load_containers(&store)?;
            let running = store.running_blocking()?;
            Ok::<_, RuntimeError>((store, stored, running))
        })
        .await
        .map_err(|e| RuntimeError::Storage(format!("opening the store: {e}")))??;
        let new_admin_token =
            auth::bootstrap_admin(&store, &data_dir, config.admin_token.as_deref()).await?;
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
            puller: RegistryPuller::new(blobs.clone(), Credentials::from_env()),
            blobs,
            wasm: Arc::new(wasm),
            oci,
            request_timeout: config.request_timeout,
            logs: logs.clone(),
            cdi: cdi.clone(),
        });
        let server_id = store.server_id();
        let journal = Arc::new(StoreJournal::start(store.clone()));
        let node = NodeCapacity::new(
            server_id,
            node::host_name(),
            node::detect_capacity(config.node_cpus, config.node_memory_bytes, &cdi),
        );
        let runtime = Self {
            inner: Arc::new(Inner {
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
            }),
        };
        runtime.set_reclaimer();
        runtime.finish_interrupted_jobs().await?;
        runtime.restore(stored);
        runtime.adopt_running(running).await;
        runtime.spawn_reconciler();
        runtime.spawn_usage_sampler();
        runtime.spawn_job_cleaner();
        Ok((runtime, new_admin_token))
    }

    /// Serves every stored container again: routes at once, each revision that was
    /// serving prepared later (see [`PreparedLater`]), and the deployments a stop
    /// interrupted (or that failed) carried on in the background.
    fn restore(&self, stored: Vec<(Container, Option<Revision>)>) {
        let mut warm_ups = Vec::new();
        for (container, serving) in stored {
            let service = self.register(&container);
            service.restore_stopped(&container.stopped_instances);
            let resolved = serving.filter(|r| r.artifact.is_some() && r.kind.is_some());
            let redeploy = match resolved {
                Some(revision) => {
                    let number = revision.number;
                    let kind = revision.kind.unwrap_or(WorkloadKind::Wasm);
                    let prepared = Arc::new(PreparedLater::new(
                        self.inner.deployer.clone(),
                        revision.clone(),
                    ));
                    service.set_policy(self.policy(&container, kind));
                    service.serve(Arc::new(ServingRevision {
                        number,
                        kind,
                        prepared: prepared.clone(),
                        request: node::instance_request(&revision.spec),
                    }));
                    warm_ups.push((container.id, number, prepared));
                    // An update was deploying when the runtime stopped: carry on
                    // with it while the old revision serves.
                    (container.latest_revision != number
                        && container.status == ContainerStatus::Deploying)
                        .then_some(container.latest_revision)
                }
                None => Some(
                    container
                        .serving_revision
                        .unwrap_or(container.latest_revision),
                ),
            };
            if let Some(number) = redeploy {
                self.spawn_deploy(container.id, number);
            }
        }
        self.spawn_warm_ups(warm_ups);
    }

    /// Takes over the OCI instances an earlier run left running (it was killed, say)
    /// whose container still serves the revision they run: they serve on, with the
    /// same process, address and id. Those that ended meanwhile, or that no
    /// container claims, are removed; the autoscaler starts what is needed.
    async fn adopt_running(&self, recorded: Vec<(String, RunningInstance)>) {
        let Ok(oci) = self.inner.deployer.oci.clone() else {
            return;
        };
        let adoptable: std::collections::HashSet<String> = oci.adoptable().into_iter().collect();
        for (sandbox, record) in recorded {
            let service = self.inner.containers.get(record.container);
            let adopted = match service {
                Some(service) if adoptable.contains(&sandbox) => {
                    let logs =
                        ember_sandbox::LogSinkRef(Arc::new(self.inner.logs.sink(record.container)));
                    let timeout = self.inner.config.request_timeout;
                    match oci
                        .adopt(&sandbox, &record.instance.to_string(), logs, timeout)
                        .await
                    {
                        Ok(instance) => service.adopt(&record, instance).await,
                        Err(e) => {
                            tracing::info!(%sandbox, error = %e, "an instance left running was not adopted");
                            false
                        }
                    }
                }
                _ => false,
            };
            if !adopted {
                self.inner.journal.stopped(&sandbox);
            }
        }
        oci.discard_unadopted().await;
    }

    /// Prepares restored revisions ahead of their first request, a few at a time;
    /// one that no longer prepares fails its container's status, as a deployment
    /// would.
    fn spawn_warm_ups(&self, warm_ups: Vec<(ContainerId, u32, Arc<PreparedLater>)>) {
        if warm_ups.is_empty() {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move {
            let count = warm_ups.len();
            let started = std::time::Instant::now();
            let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_WARM_UPS));
            let mut tasks = tokio::task::JoinSet::new();
            for (id, number, prepared) in warm_ups {
                let permit = slots.clone().acquire_owned().await;
                let runtime = runtime.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    // A revision replaced meanwhile needs no warm-up: not a failure.
                    if let Err(e) = prepared.prepared().await
                        && !prepared.is_retired()
                    {
                        runtime.record_failed_warm_up(id, number, &e).await;
                    }
                });
                // Keep the set small: finished tasks are reaped as we go.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            tracing::info!(revisions = count, took = ?started.elapsed(), "restored revisions prepared");
        });
    }

    /// A restored revision that no longer prepares: the container fails with the
    /// reason, as its deployment would have.
    async fn record_failed_warm_up(&self, id: ContainerId, number: u32, error: &RuntimeError) {
        tracing::warn!(container = %id, revision = number, %error, "a restored revision did not prepare");
        let recorded = self
            .edit_container(None, id, |container, traffic| {
                if container.serving_revision == Some(number) {
                    container.status = ContainerStatus::Failed;
                    container.status_reason = Some(error.to_string());
                    traffic.make_unavailable(&error.to_string());
                }
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(container = %id, error = %e, "recording a failed warm-up failed");
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
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

    /// Creates a container and starts deploying its first revision.
    pub async fn create_container(
        &self,
        caller: &Caller,
        patch: ContainerPatch,
    ) -> Result<ContainerView, RuntimeError> {
        let spec = patch.into_new_spec()?;
        self.check_spec(&spec)?;
        let now = SystemTime::now();
        let container = Container::new(spec.clone(), caller.user_id, now);
        let revision = Revision::new(container.id, 1, spec, now);
        self.inner
            .store
            .insert_container(container.clone(), revision)
            .await?;
        self.register(&container);
        self.spawn_deploy(container.id, 1);
        Ok(self.view(container))
    }

    /// Updates a container: a new revision, deployed while the current one keeps serving.
    pub async fn update_container(
        &self,
        caller: &Caller,
        id: ContainerId,
        patch: ContainerPatch,
    ) -> Result<ContainerView, RuntimeError> {
        let (container, old_name) = {
            let _record = self.inner.containers.lock_record(id).await;
            let mut container = self.accessible(caller, id).await?;
            let spec = patch.apply(&container.spec)?;
            self.check_spec(&spec)?;
            let old_name = container.spec.name.clone();
            let now = SystemTime::now();
            container.latest_revision += 1;
            container.spec = spec.clone();
            container.date_updated = now;
            container.status = ContainerStatus::Deploying;
            container.status_reason = None;
            let revision = Revision::new(id, container.latest_revision, spec, now);
            self.inner
                .store
                .update_container(container.clone(), old_name.clone(), revision)
                .await?;
            (container, old_name)
        };
        if old_name != container.spec.name {
            self.inner.containers.unroute(&self.host(old_name.as_str()));
        }
        self.register(&container);
        self.spawn_deploy(id, container.latest_revision);
        Ok(self.view(container))
    }

    /// Deletes a container: its routes, instances, revisions and record.
    pub async fn delete_container(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<(), RuntimeError> {
        let container = {
            let _record = self.inner.containers.lock_record(id).await;
            let container = self.accessible(caller, id).await?;
            self.inner.store.remove_container(container.clone()).await?;
            container
        };
        let host = self.host(container.spec.name.as_str());
        if let Some(service) = self.inner.containers.remove(id, &host) {
            service.shut_down();
        }
        self.inner.logs.remove(id);
        Ok(())
    }

    /// What the container's instances wrote between `since` and `until`, oldest first.
    pub async fn read_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        since: SystemTime,
        until: SystemTime,
    ) -> Result<Vec<LogEntry>, RuntimeError> {
        self.accessible(caller, id).await?;
        Ok(self.inner.logs.read(id, since, until))
    }

    /// What one of the container's instances wrote between `since` and `until`,
    /// oldest first.
    pub async fn read_instance_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: crate::model::InstanceId,
        since: SystemTime,
        until: SystemTime,
    ) -> Result<Vec<LogEntry>, RuntimeError> {
        let own = instance.to_string();
        let mut entries = self.read_logs(caller, id, since, until).await?;
        entries.retain(|e| e.instance == own);
        Ok(entries)
    }

    /// The container's lines since `since`, then a receiver of each new line, until
    /// the container is deleted.
    pub async fn follow_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        since: SystemTime,
    ) -> Result<(Vec<LogEntry>, tokio::sync::broadcast::Receiver<LogEntry>), RuntimeError> {
        self.accessible(caller, id).await?;
        Ok(self.inner.logs.follow(id, since))
    }

    /// Stops every instance of every container and waits for them to go, so that a
    /// runtime that exits leaves no container behind.
    pub async fn shut_down(&self) {
        let services = self.inner.containers.all();
        futures::future::join_all(services.iter().map(|s| s.stop_everything())).await;
        // Stops begun before (scale-downs, deleted containers) end too.
        self.inner.background.wait_for_stops().await;
    }

    /// One container.
    pub async fn get_container(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<ContainerView, RuntimeError> {
        self.accessible(caller, id).await.map(|c| self.view(c))
    }

    /// A page of the caller's containers (all of them for an admin) that `query`
    /// asks for: oldest first, or by name for a name prefix. Its owner is set
    /// from the caller.
    pub async fn list_containers(
        &self,
        caller: &Caller,
        mut query: ContainerQuery,
    ) -> Result<Page<ContainerView>, RuntimeError> {
        query.owner = caller.owner_scope();
        let page = self.inner.store.list_containers(query).await?;
        Ok(page.map(|c| self.view(c)))
    }

    /// The caller's container whose integer id (as the numbered faces show it) is
    /// `number`.
    pub async fn find_container_by_number(
        &self,
        caller: &Caller,
        number: u64,
    ) -> Result<ContainerView, RuntimeError> {
        self.inner
            .store
            .containers_numbered(number)
            .await?
            .into_iter()
            .find(|c| caller.can_access(c))
            .map(|c| self.view(c))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container service",
                id: number.to_string(),
            })
    }

    /// A container's revisions, newest first.
    pub async fn list_revisions(
        &self,
        caller: &Caller,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError> {
        self.accessible(caller, id).await?;
        self.inner.store.revisions(id, page).await
    }

    /// A container's instances, but for those terminating or terminated: those
    /// starting, running, and stopping or stopped by hand.
    pub async fn list_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Vec<InstanceInfo>, RuntimeError> {
        use crate::model::InstanceState::{Terminated, Terminating};
        let mut instances = self.list_all_instances(caller, id).await?;
        instances.retain(|i| !matches!(i.state, Terminating | Terminated));
        Ok(instances)
    }

    /// The servers instances run on (this one node today) and what they hold.
    pub fn servers(&self) -> Vec<crate::model::Node<ServerId>> {
        vec![self.inner.node.snapshot()]
    }

    /// Stops a container's idle instances now, as its idle timeout would; returns how
    /// many stopped. Busy instances are left to finish.
    pub async fn stop_idle_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<usize, RuntimeError> {
        self.accessible(caller, id).await?;
        let service = self.inner.containers.get(id);
        Ok(match service {
            Some(service) => service.stop_idle_instances().await,
            None => 0,
        })
    }

    /// Stores a wasm component in the content store and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, RuntimeError> {
        if !is_wasm_component(bytes) {
            return Err(RuntimeError::invalid(
                "body",
                "is not a WebAssembly component (expected the component binary header)",
            ));
        }
        Ok(self.inner.deployer.blobs.put(bytes)?)
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let services = self.inner.containers.all();
        let instances: usize = services.iter().map(|s| s.instance_count()).sum();
        let mut text = self.inner.metrics.render(&[
            (
                "ember_containers",
                "Containers deployed.",
                services.len() as u64,
            ),
            ("ember_instances", "Instances running.", instances as u64),
        ]);
        let per_container: Vec<_> = services
            .iter()
            .map(|s| ContainerSeries {
                id: s.id,
                traffic: s.traffic(),
                decisions: s.decisions().collect(),
            })
            .collect();
        crate::metrics::render_per_container(&mut text, &per_container);
        Metrics::render_store_writes(&mut text, self.inner.store.write_counts());
        text
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

    /// What a create or update must pass before anything is stored: the image, the
    /// devices, and room for an instance on the node.
    fn check_spec(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.check_image(&spec.image)?;
        self.check_devices(spec)?;
        self.check_fits(spec)
    }

    /// Refuses GPU models neither the catalogue nor this node has, CDI devices no
    /// valid spec defines or that are one of the node's GPUs (those are scheduled, so
    /// that each is held by one instance), and any device for a wasm blob.
    fn check_devices(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if matches!(spec.image.parse::<ImageRef>(), Ok(ImageRef::Local(_))) {
            // A blob is always a wasm component.
            crate::deploy::check_wasm_has_no_devices(spec)?;
        }
        let capacity = self.inner.node.snapshot().capacity;
        let node_models = capacity.gpu_counts();
        for desired in spec.desired_gpus.iter().flatten() {
            if GpuModel::find(desired).is_none() && !node_models.contains_key(desired) {
                return Err(RuntimeError::invalid(
                    "desiredGPUs",
                    format!("{desired:?} is not a GPU model: GET /v1/gpu-models lists them"),
                ));
            }
        }
        self.inner
            .deployer
            .cdi
            .check(&spec.cdi_devices)
            .map_err(|e| RuntimeError::invalid("cdiDevices", e.to_string()))?;
        if let Some(device) = spec
            .cdi_devices
            .iter()
            .find(|d| capacity.gpus.iter().any(|gpu| gpu.device == d.to_string()))
        {
            return Err(RuntimeError::invalid(
                "cdiDevices",
                format!(
                    "{device} is one of this node's GPUs; ask for GPUs with gpu and desiredGPUs, so that each is held by one instance at a time"
                ),
            ));
        }
        Ok(())
    }

    fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
        match image.parse::<ImageRef>() {
            Err(e) => Err(RuntimeError::invalid("image", e.to_string())),
            Ok(ImageRef::Local(digest)) if !self.inner.deployer.blobs.contains(&digest) => {
                Err(RuntimeError::invalid(
                    "image",
                    format!(
                        "no blob {digest} in the content store; upload it with POST /v1/blobs first"
                    ),
                ))
            }
            Ok(_) => Ok(()),
        }
    }

    /// Refuses a spec whose instances could never fit this node, naming the field.
    fn check_fits(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let node = self.inner.node.snapshot();
        node.could_ever_fit(&node::instance_request(spec))
            .map_err(|misfit| {
                let field = match misfit {
                    Misfit::Cpu { .. } => "cpu",
                    Misfit::Memory { .. } => "ram",
                    Misfit::Gpus { .. } => "gpu",
                };
                RuntimeError::invalid(
                    field,
                    format!(
                        "no server can ever run an instance of this container: it {misfit} on the largest server ({})",
                        node.name
                    ),
                )
            })
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

    /// The container, if it exists and the caller may see it; otherwise not found.
    pub(crate) async fn accessible(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Container, RuntimeError> {
        self.inner
            .store
            .container(id)
            .await?
            .filter(|c| caller.can_access(c))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container",
                id: id.to_string(),
            })
    }

    fn host(&self, name: &str) -> String {
        format!("{name}.{}", self.inner.config.domain)
    }

    pub(crate) fn view(&self, mut container: Container) -> ContainerView {
        if container.status == ContainerStatus::Deploying
            && let Some(note) = self.inner.pulls.lock().get(&container.id)
        {
            container.status_reason = Some(note.clone());
        }
        let service = self.inner.containers.get(container.id);
        let restarts = service.as_ref().map_or(0, |s| s.restarts());
        if container.status == ContainerStatus::Deployed
            && let Some(note) = service
                .as_ref()
                .and_then(|s| s.waiting_note().or_else(|| s.restart_note()))
        {
            container.status_reason = Some(note);
        }
        let urls = container.serving_revision.map(|_| {
            let host = self.host(container.spec.name.as_str());
            vec![match self.inner.config.ingress_port {
                80 => host,
                port => format!("{host}:{port}"),
            }]
        });
        ContainerView {
            container,
            urls,
            restarts,
        }
    }

    fn policy(&self, container: &Container, kind: WorkloadKind) -> TrafficPolicy {
        let spec = &container.spec;
        TrafficPolicy {
            scaling: ScalingPolicy {
                min_instances: spec.min_instances,
                max_instances: spec.max_instances,
                idle_timeout: spec
                    .idle_timeout_seconds
                    .map_or(self.inner.config.default_idle_timeout, Duration::from_secs),
                concurrency: spec.concurrency_for(kind),
            },
            queue_depth: spec.queue_depth,
        }
    }

    /// Makes (or refreshes) the container's service and routes its host to it.
    fn register(&self, container: &Container) -> Arc<ContainerTraffic> {
        let host = self.host(container.spec.name.as_str());
        let service = self.inner.containers.serve_at(container.id, host, || {
            ContainerTraffic::new(
                container.id,
                listing(container),
                self.policy(container, WorkloadKind::Wasm),
                &TrafficShared {
                    server_id: self.inner.server_id,
                    clock: self.inner.clock,
                    metrics: self.inner.metrics.clone(),
                    node: self.inner.node.clone(),
                    background: self.inner.background.clone(),
                    awake: self.inner.awake.clone(),
                    drain_limit: self.inner.config.request_timeout,
                    journal: self.inner.journal.clone(),
                },
            )
        });
        service.set_listing(listing(container));
        service.set_pinned(container.pinned_instances);
        service
    }

    /// Deploys revision `number` in the background, when a deployment slot is free.
    fn spawn_deploy(&self, id: ContainerId, number: u32) {
        let runtime = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = runtime.inner.deploy_slots.clone().acquire_owned().await else {
                return;
            };
            if let Err(e) = runtime.deploy(id, number).await {
                tracing::error!(container = %id, revision = number, error = %e, "recording a deployment failed");
            }
        });
    }

    /// Resolves and prepares revision `number`, then moves traffic to it and records
    /// the outcome. A revision superseded meanwhile, or a deleted container, is left alone.
    async fn deploy(&self, id: ContainerId, number: u32) -> Result<(), RuntimeError> {
        let Some(mut revision) = self.inner.store.revision(id, number).await? else {
            return Ok(());
        };
        let pulls = &self.inner.pulls;
        let progress = move |p: PullProgress| {
            let note = format!(
                "pulling the image: {}/{} blobs, {:.1} of {:.1} MB",
                p.blobs_done,
                p.blobs_total,
                p.bytes_done as f64 / 1e6,
                p.bytes_total as f64 / 1e6
            );
            pulls.lock().insert(id, note);
        };
        let outcome = async {
            let resolved = self.inner.deployer.resolve(&mut revision, &progress).await;
            self.inner.pulls.lock().remove(&id);
            if resolved? {
                self.inner.store.save_revision(revision.clone()).await?;
            }
            self.inner.deployer.prepare(&revision).await
        }
        .await;

        let recorded = self
            .edit_container(None, id, |container, service| {
                let is_serving = container.serving_revision == Some(number);
                if container.latest_revision != number && !is_serving {
                    // A later revision has taken over.
                    return Ok(());
                }
                match outcome {
                    Ok(prepared) => {
                        let kind = revision.kind.unwrap_or(WorkloadKind::Wasm);
                        service.set_policy(self.policy(container, kind));
                        service.serve(Arc::new(ServingRevision {
                            number,
                            kind,
                            prepared,
                            request: node::instance_request(&revision.spec),
                        }));
                        if container.latest_revision == number {
                            container.status = ContainerStatus::Deployed;
                            container.status_reason = None;
                            container.serving_revision = Some(number);
                        }
                        tracing::info!(container = %id, revision = number, "revision serving");
                    }
                    Err(e) => {
                        tracing::warn!(container = %id, revision = number, error = %e, "deployment failed");
                        container.status = ContainerStatus::Failed;
                        container.status_reason = Some(e.to_string());
                        if container.serving_revision.is_none() || is_serving {
                            service.make_unavailable(&e.to_string());
                        }
                    }
                }
                Ok(())
            })
            .await;
        match recorded {
            // Deleted while it deployed.
            Err(RuntimeError::NotFound { .. }) => Ok(()),
            other => other,
        }
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

/// What lists of instances keep of a container.
fn listing(container: &Container) -> Listing {
    Listing {
        owner: container.created_by,
        created: container.date_created,
        name: container.spec.name.clone(),
    }
}

/// Every stored container, with the revision it was serving (if any). Blocks.
fn load_containers(store: &Store) -> Result<Vec<(Container, Option<Revision>)>, RuntimeError> {
    store
        .containers_blocking()?
        .into_iter()
        .map(|container| {
            let serving = match container.serving_revision {
                Some(number) => store.revision_blocking(container.id, number)?,
                None => None,
            };
            Ok((container, serving))
        })
        .collect()
}

/// A component binary starts with the wasm magic and the component layer's version.
fn is_wasm_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
