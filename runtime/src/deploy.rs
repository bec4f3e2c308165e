//! Deploying a revision: resolve its image to an artifact, then prepare it in its sandbox.

use crate::error::RuntimeError;
use crate::logs::LogStore;
use crate::model::{ContainerSpec, Revision};
use crate::store::Store;
use ember_sandbox::cdi::{CdiDeviceName, CdiRegistry};
use ember_sandbox::image::{ImageRef, PullProgress, RegistryPuller};
use ember_sandbox::{
    BlobStore, BoxFuture, Digest, Instance, LogSinkRef, PreparedWorkload, Sandbox, SandboxError,
    WorkloadKind, WorkloadSpec,
};
use std::sync::Arc;
use std::time::Duration;

/// Everything deployment needs: where blobs live, how to pull, and the sandboxes.
pub(crate) struct Deployer {
    pub(crate) blobs: BlobStore,
    pub(crate) puller: RegistryPuller,
    pub(crate) wasm: Arc<dyn Sandbox>,
    /// The OCI sandbox, or why this runtime cannot run containers (not root).
    pub(crate) oci: Result<Arc<dyn Sandbox>, String>,
    pub(crate) request_timeout: Duration,
    /// The node's ingress, which wasm guests reach for `<name>.<domain>`.
    pub(crate) local_ingress: ember_sandbox::wasm::LocalIngress,
    pub(crate) logs: Arc<LogStore>,
    /// The CDI devices of this node.
    pub(crate) cdi: Arc<CdiRegistry>,
    /// Where each container's user-namespace id range is allocated and kept.
    pub(crate) id_ranges: Store,
    /// The cluster's other nodes, for a component uploaded to one of them.
    pub(crate) peers: Option<Arc<dyn crate::cluster::BlobPeers>>,
}

/// Refuses GPUs and devices for a wasm component, naming the field: there is nothing
/// a component could do with them.
pub(crate) fn check_wasm_has_no_devices(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    if spec.gpu > 0 {
        return Err(RuntimeError::invalid(
            "gpu",
            "wasm components cannot use GPUs; GPUs are for OCI container images",
        ));
    }
    if !spec.cdi_devices.is_empty() {
        return Err(RuntimeError::invalid(
            "cdiDevices",
            "wasm components cannot be given CDI devices; devices are for OCI container images",
        ));
    }
    Ok(())
}

impl Deployer {
    /// Makes sure the revision's artifact is in the content store, recording what it
    /// resolved to in `revision` (so a restart never pulls again).
    pub(crate) async fn resolve(
        &self,
        revision: &mut Revision,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<bool, RuntimeError> {
        if let (Some(artifact), Some(_)) = (&revision.artifact, revision.kind)
            && self.blobs.contains(artifact)
        {
            return Ok(false);
        }
        let image: ImageRef =
            revision
                .spec
                .image
                .parse()
                .map_err(|e: ember_sandbox::image::InvalidImageRef| {
                    RuntimeError::invalid("image", e.to_string())
                })?;
        let (kind, artifact) = match image {
            ImageRef::Local(digest) => {
                if !self.ensure_local_blob(&digest).await? {
                    return Err(RuntimeError::Unprocessable(format!(
                        "blob {digest} is not in the content store; upload it with POST /v1/blobs first"
                    )));
                }
                self.uploaded(digest).await?
            }
            ImageRef::Registry(mut reference) => {
                // Resolved once (by the node that deployed it): the same manifest
                // everywhere, even after the tag moved on.
                if reference.digest.is_none() {
                    reference.digest = revision.manifest_digest.clone();
                }
                let pulled = self
                    .puller
                    .pull_with_progress(&reference, progress)
                    .await
                    .map_err(|e| RuntimeError::Unprocessable(e.to_string()))?;
                if revision.manifest_digest.is_none() {
                    revision.manifest_digest = pulled.manifest_digest;
                }
                (pulled.kind, pulled.artifact)
            }
        };
        revision.artifact = Some(artifact);
        revision.kind = Some(kind);
        Ok(true)
    }

    /// What an uploaded blob runs as: an image manifest (uploaded by `ember deploy
    /// NAME ./image.tar` after its config and layers) names its kind and every blob
    /// it needs, each of which must be stored; any other blob is a component.
    async fn uploaded(&self, digest: Digest) -> Result<(WorkloadKind, Digest), RuntimeError> {
        let blobs = self.blobs.clone();
        let read = digest.clone();
        let image = tokio::task::spawn_blocking(move || {
            ember_sandbox::image::uploaded_image(&blobs, &read)
        })
        .await
        .map_err(RuntimeError::task("reading an uploaded manifest"))?
        .map_err(|e| RuntimeError::Unprocessable(e.to_string()))?;
        let Some(image) = image else {
            return Ok((WorkloadKind::Wasm, digest));
        };
        for blob in &image.blobs {
            if !self.ensure_local_blob(blob).await? {
                return Err(RuntimeError::Unprocessable(format!(
                    "blob {blob}, which the manifest {digest} names, is not in the content store; upload it with POST /v1/blobs first"
                )));
            }
        }
        Ok((image.kind, image.artifact))
    }

    /// Whether blob `digest` is in the content store, fetching it first from
    /// another node of the cluster when it was uploaded there (kept only if its
    /// digest matches).
    pub(crate) async fn ensure_local_blob(&self, digest: &Digest) -> Result<bool, RuntimeError> {
        if self.blobs.contains(digest) {
            return Ok(true);
        }
        let Some(peers) = &self.peers else {
            return Ok(false);
        };
        let bytes = peers.fetch(digest).await?;
        let (blobs, expected) = (self.blobs.clone(), digest.clone());
        tokio::task::spawn_blocking(move || blobs.put_verified(&expected, &bytes))
            .await
            .map_err(RuntimeError::task("storing a fetched blob"))?
            .map_err(|e| {
                RuntimeError::Unprocessable(format!(
                    "blob {digest} fetched from a peer was refused: {e}"
                ))
            })?;
        Ok(true)
    }

    /// Prepares a resolved revision in the sandbox of its kind.
    pub(crate) async fn prepare(
        &self,
        revision: &Revision,
    ) -> Result<Arc<dyn PreparedWorkload>, RuntimeError> {
        let (Some(artifact), Some(kind)) = (&revision.artifact, revision.kind) else {
            return Err(RuntimeError::Unprocessable(
                "the revision was not resolved".into(),
            ));
        };
        let sandbox = match kind {
            WorkloadKind::Wasm => &self.wasm,
            WorkloadKind::Oci => self
                .oci
                .as_ref()
                .map_err(|why| RuntimeError::Unprocessable(why.clone()))?,
        };
        let spec = &revision.spec;
        if kind == WorkloadKind::Wasm {
            check_wasm_has_no_devices(spec)?;
        }
        // A device may have gone from the specs since the container was created.
        self.cdi
            .check(&spec.cdi_devices)
            .map_err(|e| RuntimeError::invalid("cdiDevices", e.to_string()))?;
        let id_range = if kind == WorkloadKind::Oci && spec.user_namespace {
            Some(self.id_ranges.id_range(revision.container_id).await?)
        } else {
            None
        };
        let workload = WorkloadSpec {
            name: spec.name.to_string(),
            artifact: artifact.clone(),
            memory_limit_bytes: spec.ram.bytes(),
            cpus: spec.cpu,
            ephemeral_storage_bytes: spec.ephemeral_storage.bytes(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            command: spec.command.clone(),
            arguments: spec.arguments.clone(),
            port: Some(spec.port),
            request_timeout: spec
                .timeout_seconds
                .map_or(self.request_timeout, Duration::from_secs),
            logs: LogSinkRef(Arc::new(self.logs.sink(revision.container_id))),
            // A sandbox made ahead of need cannot know which GPUs its instance will
            // be placed on: instances with GPUs are created when they start.
            prepared_sandboxes: if spec.gpu > 0 {
                0
            } else {
                spec.prepared_sandboxes
            },
            devices: spec.cdi_devices.clone(),
            init: spec.init,
            capabilities: spec.capabilities.clone(),
            id_range,
            // Slow starters get their startup probe's allowance to listen.
            startup_timeout: spec
                .probes
                .startup_probe
                .as_ref()
                .map(|p| p.period() * p.failure_threshold()),
            http2: spec.http2,
            outbound: ember_sandbox::wasm::OutboundPolicy {
                allowed: spec
                    .allowed_outbound_hosts
                    .iter()
                    .filter_map(|host| host.parse().ok())
                    .collect(),
                ingress: Some(self.local_ingress.clone()),
            },
        };
        Ok(sandbox.prepare(workload).await?)
    }
}

/// A revision that was serving before a restart, prepared again when first needed:
/// at its first cold start, or by the runtime's background warm-up, whichever
/// comes first. Until then it holds nothing, so a restart costs no work per
/// container before the runtime answers.
pub(crate) struct PreparedLater {
    deployer: Arc<Deployer>,
    revision: Revision,
    /// Whether its artifact may be missing here (another node resolved it), to be
    /// pulled or fetched before it is prepared.
    resolve_first: bool,
    prepared: tokio::sync::OnceCell<Arc<dyn PreparedWorkload>>,
    /// Set once the revision no longer serves: what is prepared after is given
    /// back at once.
    retired: std::sync::atomic::AtomicBool,
    /// Set by whoever gives the prepared workload back, so that it goes once.
    given_back: std::sync::atomic::AtomicBool,
}

impl PreparedLater {
    pub(crate) fn new(deployer: Arc<Deployer>, revision: Revision) -> Self {
        Self {
            deployer,
            revision,
            resolve_first: false,
            prepared: tokio::sync::OnceCell::new(),
            retired: false.into(),
            given_back: false.into(),
        }
    }

    /// As [`Self::new`], for a revision another node of the cluster resolved: its
    /// image is pulled here (or its component fetched from a peer) first.
    pub(crate) fn resolving(deployer: Arc<Deployer>, revision: Revision) -> Self {
        Self {
            resolve_first: true,
            ..Self::new(deployer, revision)
        }
    }

    async fn prepare(&self) -> Result<Arc<dyn PreparedWorkload>, RuntimeError> {
        if !self.resolve_first {
            return self.deployer.prepare(&self.revision).await;
        }
        let mut revision = self.revision.clone();
        self.deployer.resolve(&mut revision, &|_| {}).await?;
        self.deployer.prepare(&revision).await
    }

    /// The prepared revision, preparing it now if no one has yet.
    pub(crate) async fn prepared(&self) -> Result<&Arc<dyn PreparedWorkload>, RuntimeError> {
        use std::sync::atomic::Ordering::SeqCst;
        let prepared = self.prepared.get_or_try_init(|| self.prepare()).await?;
        if self.retired.load(SeqCst) {
            // Retired while it was being prepared.
            self.give_back().await;
            return Err(RuntimeError::Unprocessable(
                "the revision no longer serves".into(),
            ));
        }
        Ok(prepared)
    }

    /// Whether the revision stopped serving (replaced, or its container deleted).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn give_back(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(prepared) = self.prepared.get()
            && !self.given_back.swap(true, SeqCst)
        {
            prepared.retire().await;
        }
    }
}

impl PreparedWorkload for PreparedLater {
    fn start<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        self.start_with_devices(instance, &[])
    }

    fn start_with_devices<'a>(
        &'a self,
        instance: &'a str,
        devices: &'a [CdiDeviceName],
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        Box::pin(async move {
            let prepared = self.prepared().await.map_err(|e| match e {
                RuntimeError::Sandbox(e) => e,
                other => SandboxError::prepare_failed("", other),
            })?;
            prepared.start_with_devices(instance, devices).await
        })
    }

    fn retire(&self) -> BoxFuture<'_, ()> {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(self.give_back())
    }

    fn ready_sandboxes(&self) -> usize {
        self.prepared.get().map_or(0, |p| p.ready_sandboxes())
    }
}
