//! OCI containers on youki's libcontainer: image layers unpacked once per digest,
//! an overlay root per instance, a runtime spec from the image config, a network
//! namespace on the runtime's bridge, and HTTP proxied to the instance's address.

mod connector;
mod executor;
mod forked;
mod instance;
pub mod layer;
mod network;
pub mod process;
mod rootfs;
mod seccomp;
mod spec;

pub use network::{NetworkError, Subnet};

use crate::blob_store::BlobStore;
use crate::digest::Digest;
use crate::{
    BoxFuture, Instance, LogSinkRef, LogStream, PreparedWorkload, Sandbox, SandboxError,
    WorkloadKind, WorkloadSpec,
};
use executor::EmberExecutor;
use instance::{OciInstance, Resources};
use layer::LayerCompression;
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use network::Network;
use oci_client::manifest::OciImageManifest;
use oci_spec::image::ImageConfiguration;
use process::{ProcessOverrides, ProcessPlan};
use rootfs::InstanceDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the OCI sandbox runs containers.
#[derive(Debug, Clone)]
pub struct OciConfig {
    /// Where layers, instance directories and container state live.
    pub root: PathBuf,
    /// The bridge instances attach to (created if missing).
    pub bridge: String,
    /// Instance addresses; the first host is the bridge's.
    pub subnet: Subnet,
    /// Time between SIGTERM and SIGKILL when an instance stops.
    pub stop_grace: Duration,
    /// Longest an instance may take to accept connections on its port.
    pub startup_timeout: Duration,
    /// Most processes an instance may have.
    pub pids_limit: u32,
}

struct Shared {
    config: OciConfig,
    blobs: BlobStore,
    /// Set up with the first OCI deployment, so that a runtime serving only wasm
    /// never creates a bridge.
    network: tokio::sync::OnceCell<Arc<Network>>,
    executor: EmberExecutor,
}

impl Shared {
    async fn network(&self) -> Result<Arc<Network>, SandboxError> {
        self.network
            .get_or_try_init(|| async {
                Network::new(&self.config.bridge, self.config.subnet)
                    .await
                    .map(Arc::new)
                    .map_err(|e| SandboxError::Prepare(format!("setting up the network: {e}")))
            })
            .await
            .cloned()
    }

    fn layers_dir(&self) -> PathBuf {
        self.config.root.join("layers")
    }
    fn instances_dir(&self) -> PathBuf {
        self.config.root.join("instances")
    }
    fn state_dir(&self) -> PathBuf {
        self.config.root.join("state")
    }
}

/// Runs OCI container images. Needs root.
pub struct OciSandbox {
    shared: Arc<Shared>,
}

impl OciSandbox {
    /// Cleans up whatever an earlier run of the runtime left
    /// (containers, mounts, instance directories): nothing is leaked across a crash.
    pub async fn new(config: OciConfig, blobs: BlobStore) -> Result<Self, SandboxError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::Unsupported(
                "OCI containers need the runtime to run as root; this one does not, so it serves wasm components only".into(),
            ));
        }
        let seccomp = seccomp::default_profile()
            .map_err(|e| SandboxError::Unsupported(format!("compiling seccomp profile: {e}")))?;
        forked::become_subreaper().map_err(|e| {
            SandboxError::Unsupported(format!("becoming the subreaper of containers: {e}"))
        })?;
        let shared = Arc::new(Shared {
            config,
            blobs,
            network: tokio::sync::OnceCell::new(),
            executor: EmberExecutor {
                seccomp: Arc::new(seccomp),
            },
        });
        for dir in [
            shared.layers_dir(),
            shared.instances_dir(),
            shared.state_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| {
                SandboxError::Unsupported(format!("creating {}: {e}", dir.display()))
            })?;
        }
        let cleanup = shared.clone();
        tokio::task::spawn_blocking(move || clean_up_leftovers(&cleanup))
            .await
            .map_err(|e| SandboxError::Unsupported(format!("cleaning up: {e}")))?;
        Ok(Self { shared })
    }
}

/// Held while libcontainer starts a container. Its start signal is sent by changing
/// the process's working directory to the container's, connecting to a relative
/// socket path, and changing back: two starts at once would signal each other's
/// containers and leave the runtime in a directory that is later deleted.
static START_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills and deletes containers a previous run left, and unmounts their filesystems.
fn clean_up_leftovers(shared: &Shared) {
    let entries = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for state in entries(shared.state_dir()) {
        match Container::load(state.clone()) {
            Ok(mut container) => {
                let _ = container.kill(nix::sys::signal::Signal::SIGKILL, true);
                if let Err(e) = container.delete(true) {
                    tracing::warn!(container = %state.display(), error = %e, "deleting a leftover container failed");
                }
            }
            Err(e) => {
                tracing::warn!(container = %state.display(), error = %e, "a leftover container's state is unreadable")
            }
        }
        let _ = std::fs::remove_dir_all(&state);
    }
    for dir in entries(shared.instances_dir()) {
        rootfs::remove_instance_dir(&dir);
    }
}

impl Sandbox for OciSandbox {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Oci
    }

    fn prepare(
        &self,
        spec: WorkloadSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn PreparedWorkload>, SandboxError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let network = shared.network().await?;
            let prepared = tokio::task::spawn_blocking(move || prepare(shared, network, spec))
                .await
                .map_err(|e| SandboxError::Prepare(e.to_string()))??;
            Ok(Arc::new(prepared) as Arc<dyn PreparedWorkload>)
        })
    }
}

/// A revision ready to start: layers unpacked, process planned, user resolved.
struct PreparedContainer {
    shared: Arc<Shared>,
    network: Arc<Network>,
    name: String,
    layers: Vec<PathBuf>,
    plan: ProcessPlan,
    uid: u32,
    gid: u32,
    limits: spec::Limits,
    ephemeral_storage: u64,
    request_timeout: Duration,
    logs: LogSinkRef,
}

fn prepare(
    shared: Arc<Shared>,
    network: Arc<Network>,
    spec: WorkloadSpec,
) -> Result<PreparedContainer, SandboxError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        SandboxError::InvalidWorkload(format!("{what}: {e}"))
    };
    let manifest: OciImageManifest = serde_json::from_slice(&shared.blobs.read(&spec.artifact)?)
        .map_err(|e| invalid("the image manifest is unreadable", &e))?;
    let config_digest: Digest = manifest
        .config
        .digest
        .parse()
        .map_err(|e| invalid("the image config digest", &e))?;
    let image: ImageConfiguration = serde_json::from_slice(&shared.blobs.read(&config_digest)?)
        .map_err(|e| invalid("the image config is unreadable", &e))?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for descriptor in &manifest.layers {
        let digest: Digest = descriptor
            .digest
            .parse()
            .map_err(|e| invalid("a layer digest", &e))?;
        let compression = LayerCompression::from_media_type(&descriptor.media_type)
            .map_err(|e| invalid("a layer", &e))?;
        layers.push(unpacked_layer(&shared, &digest, compression)?);
    }
    let plan = process::plan(
        &image,
        &ProcessOverrides {
            command: spec.command.clone(),
            arguments: spec.arguments.clone(),
            env: spec.env.clone(),
            port: spec.port,
        },
    )
    .map_err(SandboxError::InvalidWorkload)?;
    let (uid, gid) = match &plan.user {
        None => (0, 0),
        Some(user) => {
            let read = |file: &str| topmost(&layers, file).unwrap_or_default();
            process::resolve_user(user, &read("etc/passwd"), &read("etc/group"))
                .map_err(SandboxError::InvalidWorkload)?
        }
    };
    Ok(PreparedContainer {
        limits: spec::Limits {
            memory_bytes: spec.memory_limit_bytes,
            cpus: spec.cpus,
            pids: shared.config.pids_limit,
        },
        shared,
        network,
        name: spec.name,
        layers,
        plan,
        uid,
        gid,
        ephemeral_storage: spec.ephemeral_storage_bytes,
        request_timeout: spec.request_timeout,
        logs: spec.logs,
    })
}

/// The content of `file` in the topmost layer that has it.
fn topmost(layers: &[PathBuf], file: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .find_map(|layer| std::fs::read_to_string(layer.join(file)).ok())
}

/// The directory a layer is unpacked in, unpacking it the first time. A layer shared by
/// images is unpacked once; a half-unpacked layer never becomes visible.
fn unpacked_layer(
    shared: &Shared,
    digest: &Digest,
    compression: LayerCompression,
) -> Result<PathBuf, SandboxError> {
    let dir = shared.layers_dir().join(digest.hex());
    if dir.is_dir() {
        return Ok(dir);
    }
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(shared.layers_dir())
        .map_err(|e| SandboxError::Prepare(format!("staging layer {digest}: {e}")))?;
    let unpack_into = staging.path().join("layer");
    std::fs::create_dir(&unpack_into)
        .map_err(|e| SandboxError::Prepare(format!("staging layer {digest}: {e}")))?;
    let blob = std::fs::File::open(shared.blobs.path(digest))
        .map_err(|e| SandboxError::Prepare(format!("reading layer {digest}: {e}")))?;
    layer::unpack_layer(std::io::BufReader::new(blob), compression, &unpack_into)
        .map_err(|e| SandboxError::InvalidWorkload(format!("layer {digest} is refused: {e}")))?;
    match std::fs::rename(&unpack_into, &dir) {
        Ok(()) => Ok(dir),
        // Another deployment unpacked the same layer meanwhile: theirs is as good.
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(SandboxError::Prepare(format!(
            "storing layer {digest}: {e}"
        ))),
    }
}

impl PreparedWorkload for PreparedContainer {
    fn start<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        Box::pin(self.start_instance(instance))
    }
}

impl PreparedContainer {
    async fn start_instance(&self, name: &str) -> Result<Arc<dyn Instance>, SandboxError> {
        let mut resources = Resources {
            container: None,
            attachment: None,
            dir: None,
            network: self.network.clone(),
        };
        match self.start_into(name, &mut resources).await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                if let Some(container) = resources.container.as_mut() {
                    let _ = container.kill(nix::sys::signal::Signal::SIGKILL, true);
                }
                resources.release().await;
                Err(e)
            }
        }
    }

    async fn start_into(
        &self,
        name: &str,
        resources: &mut Resources,
    ) -> Result<Arc<dyn Instance>, SandboxError> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| SandboxError::Start(format!("{what}: {e}"));
        let id = container_id(name);
        let (stdout, stdout_writer) = output_pipe().map_err(|e| fail("creating pipes", &e))?;
        let (stderr, stderr_writer) = output_pipe().map_err(|e| fail("creating pipes", &e))?;

        // Filesystems, spec and the container's processes: all blocking work.
        let (dir, created) = {
            let shared = self.shared.clone();
            let layers = self.layers.clone();
            let (plan, limits, size) = (self.plan.clone(), self.limits, self.ephemeral_storage);
            let (hostname, uid, gid) = (self.name.clone(), self.uid, self.gid);
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                let dir = match InstanceDir::mount(shared.instances_dir().join(&id), &layers, size)
                {
                    Ok(dir) => dir,
                    Err(e) => return (None, Err(fail("mounting the root filesystem", &e))),
                };
                let instance = spec::InstanceSpec {
                    rootfs: &dir.rootfs(),
                    hostname: &hostname,
                    cgroups_path: &format!("/ember/{id}"),
                    uid,
                    gid,
                };
                let bundle = dir.path().to_path_buf();
                let created = spec::build(&plan, limits, &instance)
                    .map_err(|e| fail("building the runtime spec", &e))
                    .and_then(|spec| {
                        spec.save(bundle.join("config.json"))
                            .map_err(|e| fail("writing config.json", &e))
                    })
                    .and_then(|()| {
                        // In a single-threaded copy: see `forked`.
                        forked::run_forked(|| {
                            ContainerBuilder::new(id.clone(), SyscallType::default())
                                .with_root_path(shared.state_dir())
                                .and_then(|b| {
                                    b.with_executor(shared.executor.clone())
                                        .with_stdout(stdout_writer)
                                        .with_stderr(stderr_writer)
                                        .as_init(&bundle)
                                        .with_systemd(false)
                                        .with_detach(true)
                                        .build()
                                })
                                .map(drop)
                                .map_err(|e| e.to_string())
                        })
                        .map_err(|e| SandboxError::Start(format!("creating the container: {e}")))
                    })
                    .and_then(|()| {
                        Container::load(shared.state_dir().join(&id))
                            .map_err(|e| fail("loading the created container", &e))
                    });
                (Some(dir), created)
            })
            .await
            .map_err(|e| fail("creating the container", &e))?
        };
        resources.dir = dir;
        let container = match created {
            Ok(container) => container,
            Err(e) => {
                // libcontainer may have left its state directory behind.
                if let Ok(container) = Container::load(self.shared.state_dir().join(&id)) {
                    resources.container = Some(container);
                }
                return Err(e);
            }
        };
        let pid = container.pid();
        // Recorded before anything can fail, so that a failure still deletes it.
        resources.container = Some(container);
        let pid =
            pid.ok_or_else(|| SandboxError::Start("the container has no init process".into()))?;
        let exit =
            instance::reap_on_exit(pid).map_err(|e| fail("watching the init process", &e))?;
        instance::forward_output(
            stdout,
            name.to_string(),
            LogStream::Stdout,
            self.logs.clone(),
        )
        .map_err(|e| fail("reading stdout", &e))?;
        instance::forward_output(
            stderr,
            name.to_string(),
            LogStream::Stderr,
            self.logs.clone(),
        )
        .map_err(|e| fail("reading stderr", &e))?;

        let attachment = self
            .network
            .attach(pid.as_raw(), &veth_name(&id))
            .await
            .map_err(|e| fail("connecting the network", &e))?;
        let address = SocketAddr::from((attachment.address, self.plan.port));
        resources.attachment = Some(attachment);

        let mut container = resources.container.take().expect("set above");
        let started = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let result = container.start();
            (container, result)
        })
        .await
        .map_err(|e| fail("starting the container", &e))?;
        resources.container = Some(started.0);
        started.1.map_err(|e| fail("starting the container", &e))?;

        wait_until_ready(address, &exit, self.shared.config.startup_timeout).await?;
        let instance = OciInstance {
            address,
            client: instance::client(),
            exit,
            resources: tokio::sync::Mutex::new(Some(std::mem::replace(
                resources,
                Resources {
                    container: None,
                    attachment: None,
                    dir: None,
                    network: self.network.clone(),
                },
            ))),
            pid,
            grace: self.shared.config.stop_grace,
            request_timeout: self.request_timeout,
        };
        Ok(Arc::new(instance))
    }
}

/// The libcontainer id of an instance.
fn container_id(instance: &str) -> String {
    let safe: String = instance
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("ember-{safe}")
}

/// Interface names are at most 15 bytes: `ve` and 13 hex digits of the id.
fn veth_name(container_id: &str) -> String {
    let hex: String = container_id
        .trim_start_matches("ember-")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(13)
        .collect();
    format!("ve{hex}")
}

/// A pipe whose write end goes to the container and whose read end stays here.
fn output_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((read, write))
}

/// Waits until the instance accepts TCP connections on its port, failing early when
/// its process exits first.
/// Longest one readiness probe waits for its connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(20);

async fn wait_until_ready(
    address: SocketAddr,
    exit: &tokio::sync::watch::Receiver<Option<String>>,
    timeout: Duration,
) -> Result<(), SandboxError> {
    let began = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(reason) = exit.borrow().clone() {
            return Err(SandboxError::Start(format!(
                "the container {reason} before it listened on port {}",
                address.port()
            )));
        }
        // Time-boxed: a lost SYN would otherwise wait a second for its retransmit.
        let connect = tokio::net::TcpStream::connect(address);
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            return Ok(());
        }
        if began.elapsed() >= timeout {
            return Err(SandboxError::Start(format!(
                "the container did not listen on port {} within {timeout:?}",
                address.port()
            )));
        }
        tokio::time::sleep(pause).await;
        // Capped low: a cold start waits on this loop.
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}
