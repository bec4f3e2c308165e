//! What a container's spec and a blob must satisfy before they are accepted:
//! devices this node has, an image reference that parses, a size that fits.

use super::*;

/// Largest blob the content store takes through the API.
pub const MAX_BLOB_BYTES: usize = 256 << 20;

impl Runtime {
    /// Stores a wasm component in the content store and returns its digest (on a
    /// blocking thread: a component may be 256 MiB to hash and write).
    pub async fn put_blob(&self, bytes: bytes::Bytes) -> Result<Digest, RuntimeError> {
        if !is_wasm_component(&bytes) {
            return Err(RuntimeError::invalid(
                "body",
                "is not a WebAssembly component (expected the component binary header)",
            ));
        }
        let blobs = self.inner.deployer.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(RuntimeError::task("storing a blob"))??)
    }

    /// Stores one part of an image uploaded from disk (`ember deploy NAME
    /// ./image.tar`): a layer as it is, a config if it is JSON, a manifest if it
    /// describes an image Ember runs (its blobs are checked when it deploys).
    pub async fn put_image_blob(
        &self,
        bytes: bytes::Bytes,
        part: ImagePart,
    ) -> Result<Digest, RuntimeError> {
        match part {
            ImagePart::Layer => {}
            ImagePart::Config => {
                serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| {
                    RuntimeError::invalid("body", format!("is not an image config (JSON): {e}"))
                })?;
            }
            ImagePart::Manifest => {
                ember_sandbox::image::check_manifest(&bytes)
                    .map_err(|reason| RuntimeError::invalid("body", reason))?;
            }
        }
        let blobs = self.inner.deployer.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(RuntimeError::task("storing a blob"))??)
    }

    /// The bytes of blob `digest`, for an admin (the cluster's nodes fetch
    /// components uploaded to one another this way; a tenant reads no one's).
    pub async fn read_blob(&self, caller: &Caller, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        if caller.role != crate::model::Role::Admin {
            return Err(RuntimeError::Forbidden(
                "reading blobs needs an ADMIN token".into(),
            ));
        }
        let digest: Digest = digest
            .parse()
            .map_err(|e| RuntimeError::invalid("digest", format!("{e}")))?;
        if !self.inner.deployer.blobs.contains(&digest) {
            return Err(RuntimeError::NotFound {
                what: "blob",
                id: digest.to_string(),
            });
        }
        let blobs = self.inner.deployer.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.read(&digest))
            .await
            .map_err(RuntimeError::task("reading a blob"))??)
    }

    /// Brings a component uploaded to another node of the cluster here, so that
    /// the checks and the deployment find it; a blob no node holds is a 400.
    pub(crate) async fn fetch_missing_blob(&self, image: &str) -> Result<(), RuntimeError> {
        if let Ok(ImageRef::Local(digest)) = image.parse::<ImageRef>() {
            self.inner
                .deployer
                .ensure_local_blob(&digest)
                .await
                .map_err(|e| RuntimeError::invalid("image", e.to_string()))?;
        }
        Ok(())
    }

    /// What a create or update must pass before anything is stored: the image, the
    /// devices, the capabilities, and room for an instance on the node.
    pub(crate) fn check_spec(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.check_image(&spec.image)?;
        self.check_devices(spec)?;
        self.check_capabilities(spec)?;
        self.check_user_namespace(spec)?;
        self.check_fits(spec)
    }

    /// Refuses host ids (`userNamespace: false`) unless the operator allows them
    /// (`ember serve --allow-host-ids`): a container's root would be host root.
    pub(crate) fn check_user_namespace(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if spec.user_namespace || self.inner.config.allow_host_ids {
            return Ok(());
        }
        Err(RuntimeError::invalid(
            "userNamespace",
            "false is refused: this runtime keeps every OCI instance in a user namespace (the operator allows host ids with ember serve --allow-host-ids)",
        ))
    }

    /// Refuses a capability added beyond what the operator allows
    /// (`ember serve --allowed-capabilities`).
    pub(crate) fn check_capabilities(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let allowed = &self.inner.config.allowed_capabilities;
        let Some((index, refused)) = spec
            .capabilities
            .add
            .iter()
            .enumerate()
            .find(|(_, c)| !allowed.contains(c))
        else {
            return Ok(());
        };
        let allowed = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(RuntimeError::invalid(
            &format!("capabilities.add[{index}]"),
            format!(
                "{refused} is not one this runtime lets containers add (allowed: {allowed}; the operator sets them with ember serve --allowed-capabilities)"
            ),
        ))
    }

    /// Refuses GPU models neither the catalogue nor this node has, CDI devices no
    /// valid spec defines or that are one of the node's GPUs (those are scheduled, so
    /// that each is held by one instance), and any device for a wasm blob.
    pub(crate) fn check_devices(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if let Ok(ImageRef::Local(digest)) = spec.image.parse::<ImageRef>()
            && !ember_sandbox::image::may_be_manifest(&self.inner.deployer.blobs, &digest)
        {
            // A blob that is no image manifest is a wasm component.
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

    pub(crate) fn check_image(&self, image: &str) -> Result<(), RuntimeError> {
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
            // A registry at an address the operator does not allow pulls from.
            Ok(ImageRef::Registry(reference)) => self
                .inner
                .deployer
                .puller
                .rules()
                .check_registry(&reference.registry)
                .map_err(|refused| RuntimeError::invalid("image", refused.to_string())),
            Ok(ImageRef::Local(_)) => Ok(()),
        }
    }

    /// Refuses a spec whose instances could never fit this node, naming the field.
    pub(crate) fn check_fits(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let request = node::instance_request(spec);
        // In a cluster, a member that could run it is enough.
        let members = self.servers();
        if members.len() > 1
            && members
                .iter()
                .any(|server| server.node.could_ever_fit(&request).is_ok())
        {
            return Ok(());
        }
        let node = self.inner.node.snapshot();
        node.could_ever_fit(&request)
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
}

/// A component binary starts with the wasm magic and the component layer's version.
/// What part of an image an upload is, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePart {
    /// An image manifest (OCI or Docker).
    Manifest,
    /// An image config.
    Config,
    /// A layer (a tar, compressed or not).
    Layer,
}

impl ImagePart {
    /// The part an OCI or Docker media type names (`None` for any other type).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        let image_type = media_type.starts_with("application/vnd.oci.image.")
            || media_type.starts_with("application/vnd.docker.");
        if !image_type {
            None
        } else if media_type.contains("manifest") {
            Some(Self::Manifest)
        } else if media_type.contains("config") || media_type.contains("container.image") {
            Some(Self::Config)
        } else {
            Some(Self::Layer)
        }
    }
}

pub(crate) fn is_wasm_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
