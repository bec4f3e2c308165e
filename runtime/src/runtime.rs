//! The runtime handle: typed commands for the API and CLI.

use crate::activator::{Service, ServingRevision, TrafficPolicy};
use crate::auth;
use crate::background::Background;
use crate::clock::Clock;
use crate::config::RuntimeConfig;
use crate::deploy::Deployer;
use crate::error::RuntimeError;
use crate::logs::{LogEntry, LogStore};
use crate::metrics::{ContainerTraffic, Metrics};
use crate::model::{
    Caller, Container, ContainerId, ContainerPatch, ContainerSpec, ContainerStatus, GpuModel,
    InstanceId, InstanceInfo, Page, PageRequest, Revision, ServerId,
};
use crate::node::{self, NodeCapacity};
use crate::routing::RoutingTable;
use crate::store::Store;
use crate::usage::UsageSeries;
use ember_sandbox::image::{Credentials, ImageRef, PullProgress, RegistryPuller};
use ember_sandbox::oci::{OciConfig, OciSandbox};
use ember_sandbox::wasm::{WasmConfig, WasmSandbox};
use ember_sandbox::{BlobStore, Digest, Sandbox, WorkloadKind};
use ember_scheduler::{Misfit, ScalingPolicy};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The runtime: cheap to clone, shared by the API, the ingress and background tasks.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: RuntimeConfig,
    pub(crate) store: Store,
    deployer: Deployer,
    pub(crate) services: RwLock<HashMap<ContainerId, Arc<Service>>>,
    pub(crate) routes: RoutingTable<Arc<Service>>,
    pub(crate) metrics: Arc<Metrics>,
    clock: Clock,
    pub(crate) server_id: ServerId,
    pub(crate) node: Arc<NodeCapacity>,
    /// The executor of starts and stops, and the stops under way.
    pub(crate) background: Background,
    /// Samples of each instance's CPU and memory.
    pub(crate) usage: UsageSeries,
    /// Serialises read-modify-write of container records.
    pub(crate) records: Mutex<()>,
    /// How far each deploying container's pull has come, shown as its status reason.
    pulls: Mutex<HashMap<ContainerId, String>>,
    pub(crate) logs: Arc<LogStore>,
    /// Stream tokens and SSH credentials in force.
    pub(crate) grants: crate::grants::Grants,
    /// Instances moved by a migration job, and the server each came from, for a
    /// revert.
    pub(crate) migrations: Mutex<HashMap<InstanceId, ServerId>>,
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

/// Largest blob the content store takes through the API.
pub const MAX_BLOB_BYTES: usize = 256 << 20;

impl Runtime {
    /// Opens the data dir, loads every container and starts serving them (routes,
    /// deployments, the autoscaler). Returns the runtime and, on the first start, the
    /// generated admin token to print once.
    pub async fn start(config: RuntimeConfig) -> Result<(Self, Option<String>), RuntimeError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(RuntimeError::io(format!("creating {}", data_dir.display())))?;
        let store = Store::open(&data_dir.join("state"))?;
        let new_admin_token =
            auth::bootstrap_admin(&store, data_dir, config.admin_token.as_deref())?;
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
        let deployer = Deployer {
            puller: RegistryPuller::new(blobs.clone(), Credentials::from_env()),
            blobs,
            wasm: Arc::new(wasm),
            oci,
            request_timeout: config.request_timeout,
            logs: logs.clone(),
            cdi: cdi.clone(),
        };
        let server_id = store.server_id()?;
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
                services: RwLock::default(),
                routes: RoutingTable::default(),
                metrics: Arc::default(),
                clock: Clock::start(),
                records: Mutex::new(()),
                pulls: Mutex::default(),
                logs,
                usage: UsageSeries::default(),
                grants: crate::grants::Grants::default(),
                migrations: Mutex::default(),
            }),
        };
        runtime.set_reclaimer();
        runtime.finish_interrupted_jobs()?;
        runtime.remove_old_jobs(SystemTime::now())?;
        for container in runtime.inner.store.containers()? {
            runtime
                .register(&container)
                .restore_stopped(&container.stopped_instances);
            let number = container
                .serving_revision
                .unwrap_or(container.latest_revision);
            if container
                .serving_revision
                .is_some_and(|n| n != container.latest_revision)
                && container.status == ContainerStatus::Deploying
            {
                // An update was deploying when the runtime stopped: serve the old
                // revision and carry on with the new one.
                runtime.spawn_deploy(container.id, container.latest_revision);
            }
            runtime.spawn_deploy(container.id, number);
        }
        runtime.spawn_reconciler();
        runtime.spawn_usage_sampler();
        Ok((runtime, new_admin_token))
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Who holds `secret`, if anyone.
    pub fn authenticate(&self, secret: &str) -> Result<Option<Caller>, RuntimeError> {
        auth::authenticate(&self.inner.store, secret)
    }

    /// Who holds `secret`, if it is a token of `user`.
    pub fn authenticate_as(
        &self,
        user: &str,
        secret: &str,
    ) -> Result<Option<Caller>, RuntimeError> {
        auth::authenticate_as(&self.inner.store, Some(user), secret)
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
        {
            let _records = self.inner.records.lock();
            self.inner.store.insert_container(&container, &revision)?;
        }
        self.inner.store.flush().await?;
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
            let _records = self.inner.records.lock();
            let mut container = self.accessible(caller, id)?;
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
                .update_container(&container, &old_name, &revision)?;
            (container, old_name)
        };
        self.inner.store.flush().await?;
        if old_name != container.spec.name {
            self.inner.routes.remove(&self.host(old_name.as_str()));
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
            let _records = self.inner.records.lock();
            let container = self.accessible(caller, id)?;
            self.inner.store.remove_container(&container)?;
            container
        };
        self.inner.store.flush().await?;
        self.inner
            .routes
            .remove(&self.host(container.spec.name.as_str()));
        if let Some(service) = self.inner.services.write().remove(&id) {
            service.shut_down();
        }
        self.inner.logs.remove(id);
        Ok(())
    }

    /// What the container's instances wrote between `since` and `until`, oldest first.
    pub fn read_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        since: SystemTime,
        until: SystemTime,
    ) -> Result<Vec<LogEntry>, RuntimeError> {
        self.accessible(caller, id)?;
        Ok(self.inner.logs.read(id, since, until))
    }

    /// What one of the container's instances wrote between `since` and `until`,
    /// oldest first.
    pub fn read_instance_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: crate::model::InstanceId,
        since: SystemTime,
        until: SystemTime,
    ) -> Result<Vec<LogEntry>, RuntimeError> {
        let own = instance.to_string();
        let mut entries = self.read_logs(caller, id, since, until)?;
        entries.retain(|e| e.instance == own);
        Ok(entries)
    }

    /// The container's lines since `since`, then a receiver of each new line, until
    /// the container is deleted.
    pub fn follow_logs(
        &self,
        caller: &Caller,
        id: ContainerId,
        since: SystemTime,
    ) -> Result<(Vec<LogEntry>, tokio::sync::broadcast::Receiver<LogEntry>), RuntimeError> {
        self.accessible(caller, id)?;
        Ok(self.inner.logs.follow(id, since))
    }

    /// Stops every instance of every container and waits for them to go, so that a
    /// runtime that exits leaves no container behind.
    pub async fn shut_down(&self) {
        let services: Vec<_> = self.inner.services.read().values().cloned().collect();
        futures::future::join_all(services.iter().map(|s| s.stop_everything())).await;
        // Stops begun before (scale-downs, deleted containers) end too.
        self.inner.background.wait_for_stops().await;
        if let Err(e) = self.inner.store.flush().await {
            tracing::warn!(error = %e, "flushing the state store at shutdown failed");
        }
    }

    /// One container.
    pub fn get_container(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<ContainerView, RuntimeError> {
        self.accessible(caller, id).map(|c| self.view(c))
    }

    /// The caller's containers (all of them for an admin), oldest first.
    pub fn list_containers(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<ContainerView>, RuntimeError> {
        let page = page.slice(self.accessible_containers(caller)?);
        Ok(Page {
            items: page.items.into_iter().map(|c| self.view(c)).collect(),
            total: page.total,
            page: page.page,
            rows_per_page: page.rows_per_page,
        })
    }

    /// Every container of the caller's (all of them for an admin), oldest first.
    pub fn all_containers(&self, caller: &Caller) -> Result<Vec<ContainerView>, RuntimeError> {
        Ok(self
            .accessible_containers(caller)?
            .into_iter()
            .map(|c| self.view(c))
            .collect())
    }

    /// The caller's container whose integer id (as the numbered faces show it) is
    /// `number`.
    pub fn find_container_by_number(
        &self,
        caller: &Caller,
        number: u64,
    ) -> Result<ContainerView, RuntimeError> {
        self.accessible_containers(caller)?
            .into_iter()
            .find(|c| c.id.number() == number)
            .map(|c| self.view(c))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container service",
                id: number.to_string(),
            })
    }

    fn accessible_containers(&self, caller: &Caller) -> Result<Vec<Container>, RuntimeError> {
        let mut mine: Vec<_> = self
            .inner
            .store
            .containers()?
            .into_iter()
            .filter(|c| caller.can_access(c))
            .collect();
        mine.sort_by_key(|c| (c.date_created, c.id));
        Ok(mine)
    }

    /// A container's revisions, newest first.
    pub fn list_revisions(
        &self,
        caller: &Caller,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError> {
        self.accessible(caller, id)?;
        let mut revisions = self.inner.store.revisions(id)?;
        revisions.reverse();
        Ok(page.slice(revisions))
    }

    /// A container's instances, but for those terminating or terminated: those
    /// starting, running, and stopping or stopped by hand.
    pub fn list_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Vec<InstanceInfo>, RuntimeError> {
        use crate::model::InstanceState::{Terminated, Terminating};
        let mut instances = self.list_all_instances(caller, id)?;
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
        self.accessible(caller, id)?;
        let service = self.inner.services.read().get(&id).cloned();
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
        let services: Vec<_> = self.inner.services.read().values().cloned().collect();
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
            .map(|s| ContainerTraffic {
                id: s.id,
                traffic: s.traffic(),
                decisions: s.decisions().collect(),
            })
            .collect();
        crate::metrics::render_per_container(&mut text, &per_container);
        text
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
            let mut others: Vec<_> = inner
                .services
                .read()
                .values()
                .filter(|s| s.id != requester)
                .cloned()
                .collect();
            others.sort_by_key(|s| s.idle_since());
            others.iter().any(|s| s.evict_one_idle())
        }));
    }

    /// The container, if it exists and the caller may see it; otherwise not found.
    pub(crate) fn accessible(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Container, RuntimeError> {
        self.inner
            .store
            .container(id)?
            .filter(|c| caller.can_access(c))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "container",
                id: id.to_string(),
            })
    }

    fn host(&self, name: &str) -> String {
        format!("{name}.{}", self.inner.config.domain)
    }

    fn view(&self, mut container: Container) -> ContainerView {
        if container.status == ContainerStatus::Deploying
            && let Some(note) = self.inner.pulls.lock().get(&container.id)
        {
            container.status_reason = Some(note.clone());
        }
        let service = self.inner.services.read().get(&container.id).cloned();
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
    fn register(&self, container: &Container) -> Arc<Service> {
        let service = self
            .inner
            .services
            .write()
            .entry(container.id)
            .or_insert_with(|| {
                Service::new(
                    container.id,
                    self.inner.server_id,
                    self.policy(container, WorkloadKind::Wasm),
                    self.inner.clock,
                    self.inner.metrics.clone(),
                    self.inner.node.clone(),
                    self.inner.background.clone(),
                )
            })
            .clone();
        service.set_pinned(container.pinned_instances);
        self.inner
            .routes
            .insert(self.host(container.spec.name.as_str()), service.clone());
        service
    }

    fn spawn_deploy(&self, id: ContainerId, number: u32) {
        let runtime = self.clone();
        tokio::spawn(async move {
            if let Err(e) = runtime.deploy(id, number).await {
                tracing::error!(container = %id, revision = number, error = %e, "recording a deployment failed");
            }
        });
    }

    /// Resolves and prepares revision `number`, then moves traffic to it and records
    /// the outcome. A revision superseded meanwhile, or a deleted container, is left alone.
    async fn deploy(&self, id: ContainerId, number: u32) -> Result<(), RuntimeError> {
        let Some(mut revision) = self.inner.store.revision(id, number)? else {
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
                self.inner.store.save_revision(&revision)?;
            }
            self.inner.deployer.prepare(&revision).await
        }
        .await;

        let service = self.inner.services.read().get(&id).cloned();
        let _records = self.inner.records.lock();
        let (Some(mut container), Some(service)) = (self.inner.store.container(id)?, service)
        else {
            return Ok(());
        };
        let is_serving = container.serving_revision == Some(number);
        if container.latest_revision != number && !is_serving {
            return Ok(());
        }
        match outcome {
            Ok(prepared) => {
                let kind = revision.kind.unwrap_or(WorkloadKind::Wasm);
                service.set_policy(self.policy(&container, kind));
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
        self.inner.store.save_status(&container)?;
        drop(_records);
        self.inner.store.flush().await
    }

    fn spawn_reconciler(&self) {
        self.spawn_periodic(self.inner.config.reconcile_interval, |inner| async move {
            let services: Vec<_> = inner.services.read().values().cloned().collect();
            for service in services {
                service.reconcile();
            }
        });
    }

    /// Runs `tick` every `interval` (a late tick is not made up for) until the
    /// runtime is gone.
    pub(crate) fn spawn_periodic<F, Fut>(&self, interval: Duration, tick: F)
    where
        F: Fn(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                tick(inner).await;
            }
        });
    }
}

/// A component binary starts with the wasm magic and the component layer's version.
fn is_wasm_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
