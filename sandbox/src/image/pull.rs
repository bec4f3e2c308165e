//! Pulls images from OCI registries with oci-client, verifying every digest.

use super::credentials::Credentials;
use super::destinations::AllowedRegistries;
use super::egress::{Egress, EgressFailure};
use super::reference::RegistryRef;
use super::shared::Shared;
use crate::WorkloadKind;
use crate::blob_store::{BlobError, BlobStore};
use crate::digest::Digest;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use std::sync::Arc;

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
        /// What failed (not found, unauthorized, unreachable...), in Ember's
        /// words: never the registry's own text, which a tenant could aim at any
        /// service the node reaches.
        message: String,
    },
    /// `--allowed-registries` refused a connection the pull needed.
    #[error("pulling {reference}: refused: {refused}")]
    Refused {
        /// The image.
        reference: String,
        /// The rule that refused, and the destination.
        refused: super::destinations::Refused,
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
    /// The failure of a pull that this one shared (see [`RegistryPuller::pull`]).
    #[error(transparent)]
    Shared(Arc<PullError>),
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The kind of workload the image's media types declare.
    pub kind: WorkloadKind,
    /// Digest of the manifest the tag resolved to.
    pub manifest_digest: Option<Digest>,
    /// The runnable blob in the content store: for wasm the component, for OCI images
    /// the manifest (whose config and layers are stored beside it).
    pub artifact: Digest,
}

/// How far a pull has come, reported as blobs arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    /// Blobs (config and layers) in the content store.
    pub blobs_done: usize,
    /// Blobs the image has.
    pub blobs_total: usize,
    /// Bytes of those blobs in the store.
    pub bytes_done: u64,
    /// Bytes of all the image's blobs.
    pub bytes_total: u64,
}

/// Pulls images from registries into a [`BlobStore`].
#[derive(Clone)]
pub struct RegistryPuller {
    blobs: BlobStore,
    credentials: Credentials,
    /// Pulls shared by the callers asking for one image at about the same time.
    shared: Arc<Shared<String, Result<PulledImage, Arc<PullError>>>>,
    /// One registry client per registry, kept: a client loads the system's root
    /// certificates when made, and keeps its connections and tokens. Each has a
    /// name of its own, which it gives the egress proxy.
    clients: Arc<parking_lot::Mutex<std::collections::HashMap<String, (String, Client)>>>,
    /// Where pulls may connect.
    rules: AllowedRegistries,
    /// The proxy every connection of a pull goes through.
    egress: Arc<Egress>,
}

impl RegistryPuller {
    /// A puller that stores what it pulls in `blobs`, authenticating with
    /// `credentials`, connecting only where `rules` allow.
    pub fn new(blobs: BlobStore, credentials: Credentials, rules: AllowedRegistries) -> Self {
        Self {
            blobs,
            credentials,
            shared: Arc::default(),
            clients: Arc::default(),
            egress: Egress::new(rules.clone()),
            rules,
        }
    }

    /// Where pulls may connect.
    pub fn rules(&self) -> &AllowedRegistries {
        &self.rules
    }

    /// Resolves `image` and brings its runnable content into the store.
    /// Blobs already present are not fetched again.
    ///
    /// Pulls of one image are shared: a caller gets the outcome of a pull that
    /// started after it asked (so a tag moved before it asked is seen), and while
    /// one pull runs, everyone who asks meanwhile waits and then shares the next.
    /// A burst of deployments of one image costs at most two manifest resolutions.
    pub async fn pull(&self, image: &RegistryRef) -> Result<PulledImage, PullError> {
        self.pull_with_progress(image, &|_| {}).await
    }

    /// As [`RegistryPuller::pull`], reporting progress as blobs arrive.
    pub async fn pull_with_progress(
        &self,
        image: &RegistryRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, PullError> {
        self.shared
            .run(&image.to_string(), || async {
                self.pull_now(image, progress).await.map_err(Arc::new)
            })
            .await
            .map_err(PullError::Shared)
    }

    async fn pull_now(
        &self,
        image: &RegistryRef,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<PulledImage, PullError> {
        let display = image.to_string();
        if let Err(refused) = self.rules.check_registry(&image.registry) {
            return Err(PullError::Refused {
                reference: display,
                refused,
            });
        }
        let egress = &self.egress;
        let (client_name, client) = {
            let mut clients = self.clients.lock();
            let next = clients.len();
            match clients.entry(image.registry.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let name = format!("c{next}");
                    let proxy = egress.open(&name).map_err(|e| PullError::Registry {
                        reference: display.clone(),
                        message: format!("opening the pull's egress proxy failed: {e}"),
                    })?;
                    e.insert((name, client_for(image, &proxy))).clone()
                }
            }
        };
        // A refusal or failure the proxy saw explains the client's error best.
        let registry_error =
            |e: oci_client::errors::OciDistributionError| match egress.take_failure(&client_name) {
                Some(EgressFailure::Refused(refused)) => PullError::Refused {
                    reference: display.clone(),
                    refused,
                },
                Some(EgressFailure::Unreachable(why)) => PullError::Registry {
                    reference: display.clone(),
                    message: format!("unreachable: {why}"),
                },
                None => PullError::Registry {
                    reference: display.clone(),
                    message: describe(&e),
                },
            };
        egress.take_failure(&client_name);
        let reference = oci_reference(image);
        let auth = self.credentials.for_registry(&image.registry);
        // An image index resolves to its linux/amd64 manifest here.
        let (manifest, manifest_digest, config) = client
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
        let parse = |d: &OciDescriptor| {
            d.digest
                .parse::<Digest>()
                .map_err(|source| PullError::BadDigest {
                    reference: display.clone(),
                    source,
                })
        };
        let mut wanted = Vec::new();
        if kind == WorkloadKind::Oci {
            // The config came with the manifest: store it once it checks out.
            let digest = parse(&manifest.config)?;
            self.blobs.put_verified(&digest, config.as_bytes())?;
        }
        for layer in &manifest.layers {
            wanted.push((parse(layer)?, layer));
        }
        let mut done = PullProgress {
            blobs_done: 1,
            blobs_total: 1 + wanted.len(),
            bytes_done: u64::try_from(config.len()).unwrap_or(0),
            bytes_total: u64::try_from(config.len()).unwrap_or(0)
                + wanted
                    .iter()
                    .map(|(_, l)| u64::try_from(l.size).unwrap_or(0))
                    .sum::<u64>(),
        };
        progress(done);
        for (digest, layer) in &wanted {
            if !self.blobs.contains(digest) {
                let mut bytes = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
                client
                    .pull_blob(&reference, *layer, &mut bytes)
                    .await
                    .map_err(registry_error)?;
                self.blobs.put_verified(digest, &bytes)?;
            }
            done.blobs_done += 1;
            done.bytes_done += u64::try_from(layer.size).unwrap_or(0);
            progress(done);
        }
        let artifact = match kind {
            WorkloadKind::Wasm => wanted.swap_remove(0).0,
            // Ember keeps the manifest it resolved, so that a restart needs no registry.
            WorkloadKind::Oci => {
                let bytes =
                    serde_json::to_vec(&manifest).map_err(|e| PullError::UnsupportedArtifact {
                        reference: display.clone(),
                        reason: format!("its manifest cannot be stored: {e}"),
                    })?;
                self.blobs.put(&bytes)?
            }
        };
        Ok(PulledImage {
            kind,
            manifest_digest,
            artifact,
        })
    }
}

fn client_for(image: &RegistryRef, proxy: &str) -> Client {
    let protocol = if image.is_loopback_registry() {
        ClientProtocol::HttpsExcept(vec![image.registry.clone()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        http_proxy: Some(proxy.to_string()),
        https_proxy: Some(proxy.to_string()),
        ..Default::default()
    })
}

/// What a registry client's error means, in words that carry nothing the remote
/// end wrote: a tenant may aim a pull at any service, and its answer must not
/// come back to them in a status reason.
fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as Code};
    let by_status = |code: u16| match code {
        401 | 403 => "unauthorized: the registry refused access to the image".to_string(),
        404 => "not found: the registry has no such image".to_string(),
        429 => "rate limited by the registry".to_string(),
        code => format!("the registry answered HTTP {code}"),
    };
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => by_status(401),
        E::ImageManifestNotFoundError(_) => by_status(404),
        E::ServerError { code, .. } => by_status(*code),
        E::RegistryError { envelope, .. } => match envelope.errors.first().map(|e| &e.code) {
            Some(
                Code::ManifestUnknown | Code::NameUnknown | Code::NotFound | Code::BlobUnknown,
            ) => by_status(404),
            Some(Code::Unauthorized | Code::Denied) => by_status(401),
            Some(Code::Toomanyrequests) => by_status(429),
            _ => "the registry answered with an error".to_string(),
        },
        E::RequestError(e) if e.is_timeout() => "unreachable: the registry timed out".into(),
        E::RequestError(_) | E::IoError(_) => {
            "unreachable: the connection to the registry failed".into()
        }
        E::DigestError(_) => "a blob did not match its digest".into(),
        _ => "the registry sent something that is not a valid image".into(),
    }
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
pub(super) fn classify(
    config_media_type: &str,
    layers: &[OciDescriptor],
) -> Result<WorkloadKind, String> {
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
