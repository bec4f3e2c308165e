//! Pulls images from OCI registries with oci-client, verifying every digest.

use super::reference::RegistryRef;
use crate::WorkloadKind;
use crate::blob_store::{BlobError, BlobStore};
use crate::digest::Digest;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// Config media type of the CNCF wasm OCI artifact layout.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of a wasm component in that layout.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

const OCI_LAYER_PREFIXES: [&str; 2] = [
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
];

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry refused or could not be reached.
    #[error("pulling {reference}: {message}")]
    Registry {
        /// The image.
        reference: String,
        /// The registry client's explanation.
        message: String,
    },
    /// The manifest describes something Ember does not run.
    #[error("image {reference} is not runnable: {reason}")]
    UnsupportedArtifact {
        /// The image.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest in the manifest is malformed.
    #[error("image {reference} has an invalid digest: {source}")]
    BadDigest {
        /// The image.
        reference: String,
        /// The parse error.
        source: crate::digest::InvalidDigest,
    },
    /// Storing (or verifying) a blob failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The kind of workload the image's media types declare.
    pub kind: WorkloadKind,
    /// Digest of the manifest the tag resolved to.
    pub manifest_digest: Option<Digest>,
    /// The runnable blob in the content store (for wasm, the component).
    pub artifact: Digest,
}

/// Pulls images from registries into a [`BlobStore`].
#[derive(Clone)]
pub struct RegistryPuller {
    blobs: BlobStore,
}

impl RegistryPuller {
    /// A puller that stores what it pulls in `blobs`.
    pub fn new(blobs: BlobStore) -> Self {
        Self { blobs }
    }

    /// Resolves `image` and brings its runnable content into the store.
    /// Blobs already present are not fetched again.
    pub async fn pull(&self, image: &RegistryRef) -> Result<PulledImage, PullError> {
        let display = image.to_string();
        let registry_error = |e: oci_client::errors::OciDistributionError| PullError::Registry {
            reference: display.clone(),
            message: e.to_string(),
        };
        let client = client_for(image);
        let reference = oci_reference(image);
        let auth = RegistryAuth::Anonymous;
        let (manifest, manifest_digest, _config) = client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(registry_error)?;
        let manifest_digest = manifest_digest.parse().ok();

        let kind = classify(&manifest.config.media_type, &manifest.layers).map_err(|reason| {
            PullError::UnsupportedArtifact {
                reference: display.clone(),
                reason,
            }
        })?;
        let layer = match kind {
            WorkloadKind::Wasm => &manifest.layers[0],
            WorkloadKind::Oci => {
                return Err(PullError::UnsupportedArtifact {
                    reference: display,
                    reason: "OCI container images are not supported by this runtime yet; deploy a wasm component (config media type application/vnd.wasm.config.v0+json)".into(),
                });
            }
        };
        let digest: Digest = layer
            .digest
            .parse()
            .map_err(|source| PullError::BadDigest {
                reference: display.clone(),
                source,
            })?;
        if !self.blobs.contains(&digest) {
            let mut bytes = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
            client
                .pull_blob(&reference, layer, &mut bytes)
                .await
                .map_err(registry_error)?;
            self.blobs.put_verified(&digest, &bytes)?;
        }
        Ok(PulledImage {
            kind,
            manifest_digest,
            artifact: digest,
        })
    }
}

fn client_for(image: &RegistryRef) -> Client {
    let protocol = if image.is_loopback_registry() {
        ClientProtocol::HttpsExcept(vec![image.registry.clone()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..Default::default()
    })
}

fn oci_reference(image: &RegistryRef) -> Reference {
    let (registry, repository) = (image.registry.clone(), image.repository.clone());
    match (&image.tag, &image.digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.clone(), digest.to_string())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_string()),
        (Some(tag), None) => Reference::with_tag(registry, repository, tag.clone()),
        (None, None) => unreachable!("ImageRef parsing refuses references without tag or digest"),
    }
}

/// Decides the workload kind from the manifest's media types.
fn classify(config_media_type: &str, layers: &[OciDescriptor]) -> Result<WorkloadKind, String> {
    let is_wasm_layer = |l: &OciDescriptor| l.media_type == WASM_LAYER_MEDIA_TYPE;
    if config_media_type == WASM_CONFIG_MEDIA_TYPE || layers.iter().any(is_wasm_layer) {
        return match layers {
            [layer] if is_wasm_layer(layer) => Ok(WorkloadKind::Wasm),
            _ => Err(format!(
                "a wasm artifact must have exactly one layer of media type {WASM_LAYER_MEDIA_TYPE}, found {}",
                layers.len()
            )),
        };
    }
    if !layers.is_empty()
        && layers.iter().all(|l| {
            OCI_LAYER_PREFIXES
                .iter()
                .any(|p| l.media_type.starts_with(p))
        })
    {
        return Ok(WorkloadKind::Oci);
    }
    Err(format!(
        "unrecognised media types (config {config_media_type}, layers {})",
        layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media_type: &str) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.into(),
            ..Default::default()
        }
    }

    #[test]
    fn media_types_decide_the_kind() {
        assert_eq!(
            classify(WASM_CONFIG_MEDIA_TYPE, &[layer(WASM_LAYER_MEDIA_TYPE)]),
            Ok(WorkloadKind::Wasm)
        );
        assert_eq!(
            classify(
                "application/vnd.oci.image.config.v1+json",
                &[layer("application/vnd.oci.image.layer.v1.tar+gzip")]
            ),
            Ok(WorkloadKind::Oci)
        );
        assert!(classify(WASM_CONFIG_MEDIA_TYPE, &[]).is_err());
        assert!(classify("text/plain", &[layer("text/plain")]).is_err());
    }
}
