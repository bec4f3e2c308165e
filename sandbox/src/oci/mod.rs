//! OCI containers on youki's libcontainer: image layers unpacked once per digest,
//! an overlay root per instance, a runtime spec from the image config, a network
//! namespace on the runtime's bridge, and HTTP proxied to the instance's address.

mod adopt;
mod claim;
mod connector;
mod created;
mod creator;
mod deadline_body;
mod enter;
mod executor;
mod init;
mod instance;
mod joiner;
pub mod layer;
mod network;
mod nft_elements;
mod orphans;
mod port_guard;
mod prepared;
pub mod process;
mod record;
mod rootfs;
mod seccomp;
mod spec;
mod stdio;
mod tunnel;
mod usage;
mod user_namespace;

pub use creator::run_if_creator;
pub use joiner::run_if_joiner;
pub use network::{NetworkError, Subnet};
pub use rootfs::{IdMapping, InstanceDir};
pub use tunnel::TunnelOpen;

use crate::blob_store::BlobStore;
use crate::cdi::CdiRegistry;
use crate::digest::Digest;
use crate::{
    BoxFuture, IdRange, Instance, LogSinkRef, PreparedWorkload, Sandbox, SandboxError,
    WorkloadKind, WorkloadSpec,
};
use claim::NetworkClaim;
use created::Recipe;
use layer::LayerCompression;
use libcontainer::container::Container;
use network::Network;
use oci_client::manifest::OciImageManifest;
use oci_spec::image::ImageConfiguration;
use prepared::PreparedContainer;
use process::ProcessOverrides;
use record::InstanceRecord;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The runtime's own executable, for the helper processes it starts (creator,
/// joiner): the file this process runs, even after an upgrade replaced the file
/// at its path, so that a helper always matches the runtime that starts it.
const RUNNING_EXECUTABLE: &str = "/proc/self/exe";

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
    /// What instances reach by path, as their unprivileged root: their directories
    /// and the init (see [`reachable_dir`]).
    reachable: PathBuf,
    /// Ember's init, installed for instances to mount.
    init: PathBuf,
    /// Started instances an earlier run left running, by sandbox id, until they
    /// are adopted or discarded.
    adoptable: parking_lot::Mutex<HashMap<String, InstanceRecord>>,
    blobs: BlobStore,
    /// The CDI devices containers may be given.
    cdi: Arc<CdiRegistry>,
    /// Set up with the first OCI deployment, so that a runtime serving only wasm
    /// never creates a bridge, together with the claim on its bridge and subnet.
    network: tokio::sync::OnceCell<(Arc<Network>, NetworkClaim)>,
    /// The user namespaces idmapped mounts take, one per id range.
    user_namespaces: user_namespace::UserNamespaces,
}

impl Shared {
    async fn network(&self) -> Result<Arc<Network>, SandboxError> {
        self.network
            .get_or_try_init(|| async {
                let (bridge, subnet) = (self.config.bridge.clone(), self.config.subnet);
                let claim =
                    tokio::task::spawn_blocking(move || NetworkClaim::take(&bridge, subnet))
                        .await
                        .map_err(|e| SandboxError::prepare_failed("claiming the network", e))?
                        .map_err(SandboxError::prepare)?;
                let network = Network::new(&self.config.bridge, self.config.subnet)
                    .await
                    .map_err(|e| SandboxError::prepare_failed("setting up the network", e))?;
                Ok((Arc::new(network), claim))
            })
            .await
            .map(|(network, _)| network.clone())
    }

    fn layers_dir(&self) -> PathBuf {
        self.config.root.join("layers")
    }
    fn instances_dir(&self) -> PathBuf {
        self.reachable.join("instances")
    }
    fn state_dir(&self) -> PathBuf {
        self.config.root.join("state")
    }
}

/// Where the instances of the runtime whose OCI directory is `root` keep what
/// they reach by path: `/run/ember/<digest of root>`. An instance's init resolves
/// its root filesystem's path, and its mounts' sources, as the instance's root, an
/// unprivileged host user in a user namespace: a data directory under `/root`
/// (mode 0700, where the default one is) would be out of its reach. One runtime's
/// directory is apart from another's on the same host, and `/run` empties at
/// boot, as the instances do.
fn reachable_dir(root: &std::path::Path) -> PathBuf {
    use sha2::Digest as _;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    PathBuf::from("/run/ember").join(&hex::encode(digest)[..16])
}

/// Creates `dir` and its parents traversable by every user but listable by root
/// alone (0711): instances find their own directory, never another's.
fn make_reachable(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    for ancestor in dir.ancestors().take_while(|a| a.starts_with("/run/ember")) {
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(())
}

/// Runs OCI container images. Needs root.
pub struct OciSandbox {
    shared: Arc<Shared>,
}

impl OciSandbox {
    /// Cleans up whatever an earlier run of the runtime left
    /// (containers, mounts, instance directories): nothing is leaked across a crash.
    pub async fn new(
        config: OciConfig,
        blobs: BlobStore,
        cdi: Arc<CdiRegistry>,
    ) -> Result<Self, SandboxError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::Unsupported(
                "OCI containers need the runtime to run as root; this one does not, so it serves wasm components only".into(),
            ));
        }
        // Compiled here only to fail early: each creator compiles its own.
        seccomp::default_profile()
            .map_err(|e| SandboxError::Unsupported(format!("compiling seccomp profile: {e}")))?;
        creator::become_subreaper().map_err(|e| {
            SandboxError::Unsupported(format!("becoming the subreaper of containers: {e}"))
        })?;
        std::fs::create_dir_all(&config.root).map_err(|e| {
            SandboxError::Unsupported(format!("creating {}: {e}", config.root.display()))
        })?;
        let reachable = reachable_dir(&config.root);
        make_reachable(&reachable.join("instances")).map_err(|e| {
            SandboxError::Unsupported(format!("creating {}: {e}", reachable.display()))
        })?;
        let init = init::install(&reachable)
            .map_err(|e| SandboxError::Unsupported(format!("installing Ember's init: {e}")))?;
        let shared = Arc::new(Shared {
            reachable,
            init,
            adoptable: Default::default(),
            user_namespaces: Default::default(),
            config,
            blobs,
            cdi,
            network: tokio::sync::OnceCell::new(),
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
        let running = tokio::task::spawn_blocking(move || clean_up_leftovers(&cleanup))
            .await
            .map_err(|e| SandboxError::Unsupported(format!("cleaning up: {e}")))?;
        if !running.is_empty() {
            tracing::info!(
                instances = running.len(),
                "instances an earlier run left running can be adopted"
            );
        }
        *shared.adoptable.lock() = running;
        Ok(Self { shared })
    }
}

/// Held while libcontainer starts a container. Its start signal is sent by changing
/// the process's working directory to the container's, connecting to a relative
/// socket path, and changing back: two starts at once would signal each other's
/// containers and leave the runtime in a directory that is later deleted.
static START_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills and deletes containers a previous run left, and unmounts their
/// filesystems, but for the started instances that still run: those are kept for
/// the runtime to adopt, and returned.
fn clean_up_leftovers(shared: &Shared) -> HashMap<String, InstanceRecord> {
    let entries = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut running = HashMap::new();
    for state in entries(shared.state_dir()) {
        let Some(id) = state.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if let Some(record) = InstanceRecord::read(&shared.instances_dir().join(&id))
            && record.is_running_in(&spec::cgroups_path(&id))
        {
            running.insert(id, record);
            continue;
        }
        match Container::load(state.clone()) {
            Ok(mut container) => {
                let _ = container.kill(nix::sys::signal::Signal::SIGKILL, true);
                if let Err(e) = container.delete(true) {
                    tracing::warn!(container = %state.display(), error = %e, "deleting a leftover container failed");
                }
                // A container caught half made (its state says less than its
                // cgroup holds) keeps processes libcontainer does not know of.
                orphans::kill_cgroup(&spec::cgroups_path(&id));
            }
            Err(e) => {
                // Killed while its state was written: its cgroup still knows it.
                tracing::warn!(container = %state.display(), error = %e, "a leftover container's state is unreadable; killing what its cgroup holds");
                orphans::kill_cgroup(&spec::cgroups_path(&id));
            }
        }
        let _ = std::fs::remove_dir_all(&state);
    }
    // Where instance directories were before they moved to the reachable directory
    // (a link to it now): a runtime upgraded from then removes its old instances.
    let before = shared.config.root.join("instances");
    if std::fs::symlink_metadata(&before).is_ok_and(|m| m.is_dir()) {
        for dir in entries(before.clone()) {
            rootfs::remove_instance_dir(&dir);
        }
        let _ = std::fs::remove_dir(&before);
    }
    if std::fs::read_link(&before).ok() != Some(shared.instances_dir()) {
        let _ = std::fs::remove_file(&before);
        if let Err(e) = std::os::unix::fs::symlink(shared.instances_dir(), &before) {
            tracing::warn!(link = %before.display(), error = %e, "linking the instances directory failed");
        }
    }
    for dir in entries(shared.instances_dir()) {
        let Some(id) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !running.contains_key(&id) {
            // A runtime killed while it stopped the instance may have removed its
            // state but not yet its processes: its cgroup still holds them.
            orphans::kill_cgroup(&spec::cgroups_path(&id));
            rootfs::remove_instance_dir(&dir);
        }
    }
    running
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
                .map_err(|e| SandboxError::prepare_failed("", e))??;
            prepared.refill(Duration::ZERO);
            Ok(Arc::new(prepared) as Arc<dyn PreparedWorkload>)
        })
    }

    fn adoptable(&self) -> Vec<String> {
        self.shared.adoptable.lock().keys().cloned().collect()
    }

    fn adopt<'a>(
        &'a self,
        sandbox_id: &'a str,
        instance: &'a str,
        logs: LogSinkRef,
        proxying: crate::Proxying,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        Box::pin(adopt::adopt(
            self.shared.clone(),
            sandbox_id,
            instance,
            logs,
            proxying,
        ))
    }

    fn discard_unadopted(&self) -> BoxFuture<'_, ()> {
        Box::pin(adopt::discard_unadopted(self.shared.clone()))
    }
}

fn prepare(
    shared: Arc<Shared>,
    network: Arc<Network>,
    spec: WorkloadSpec,
) -> Result<PreparedContainer, SandboxError> {
    let spares = spec.prepared_sandboxes as usize;
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
            capabilities: spec.capabilities.clone(),
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
    if let Some(range) = spec.id_range
        && (range.host_id(uid).is_none() || range.host_id(gid).is_none())
    {
        return Err(SandboxError::InvalidWorkload(format!(
            "the image runs as uid {uid} and gid {gid}, outside the {} ids a user namespace maps (0 to {})",
            IdRange::SIZE,
            IdRange::SIZE - 1
        )));
    }
    let recipe = Recipe {
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
        startup_timeout: spec.startup_timeout,
        http2: spec.http2,
        logs: spec.logs,
        devices: spec.devices,
        init: spec.init,
        id_range: spec.id_range,
    };
    Ok(PreparedContainer::new(recipe, spares))
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
        .map_err(|e| SandboxError::prepare_failed(format!("staging layer {digest}"), e))?;
    let unpack_into = staging.path().join("layer");
    std::fs::create_dir(&unpack_into)
        .map_err(|e| SandboxError::prepare_failed(format!("staging layer {digest}"), e))?;
    let blob = std::fs::File::open(shared.blobs.path(digest))
        .map_err(|e| SandboxError::prepare_failed(format!("reading layer {digest}"), e))?;
    layer::unpack_layer(std::io::BufReader::new(blob), compression, &unpack_into)
        .map_err(|e| SandboxError::InvalidWorkload(format!("layer {digest} is refused: {e}")))?;
    match std::fs::rename(&unpack_into, &dir) {
        Ok(()) => Ok(dir),
        // Another deployment unpacked the same layer meanwhile: theirs is as good.
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(SandboxError::prepare_failed(
            format!("storing layer {digest}"),
            e,
        )),
    }
}
