//! Images uploaded to the content store rather than pulled: a manifest stored as
//! a blob (by `ember deploy NAME ./image.tar`, from a `docker save` archive or an
//! OCI layout) beside its config and layers.

use super::pull::classify;
use crate::WorkloadKind;
use crate::blob_store::{BlobError, BlobStore};
use crate::digest::Digest;
use oci_client::manifest::OciImageManifest;

/// Largest blob read as a possible manifest; registries refuse larger ones too.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// What an uploaded manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedImage {
    /// The kind of workload its media types declare.
    pub kind: WorkloadKind,
    /// The runnable blob: the manifest itself for an OCI image, the component
    /// for a wasm artifact.
    pub artifact: Digest,
    /// Every blob it names (config and layers), each of which must be stored.
    pub blobs: Vec<Digest>,
}

/// Why an uploaded manifest cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum UploadedImageError {
    /// Reading the store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// It parses as a manifest but does not describe something Ember runs.
    #[error("the uploaded manifest {digest} {reason}")]
    Unusable {
        /// The manifest's digest.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads blob `digest` as an image manifest: `None` when it is not one (a
/// wasm component, say), which the caller then runs as it is.
pub fn uploaded_image(
    blobs: &BlobStore,
    digest: &Digest,
) -> Result<Option<UploadedImage>, UploadedImageError> {
    let path = blobs.path(digest);
    let size = std::fs::metadata(&path)
        .map_err(|source| BlobError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    if size > MAX_MANIFEST_BYTES {
        return Ok(None);
    }
    let bytes = blobs.read(digest)?;
    if bytes.first() != Some(&b'{') {
        return Ok(None);
    }
    let (kind, config, layers) =
        parse_manifest(&bytes).map_err(|reason| UploadedImageError::Unusable {
            digest: digest.clone(),
            reason,
        })?;
    Ok(Some(match kind {
        WorkloadKind::Oci => {
            let mut named = vec![config];
            named.extend(layers);
            UploadedImage {
                kind,
                artifact: digest.clone(),
                blobs: named,
            }
        }
        // `classify` allows a wasm artifact exactly one layer: the component.
        WorkloadKind::Wasm => UploadedImage {
            kind,
            artifact: layers[0].clone(),
            blobs: layers,
        },
    }))
}

/// Whether blob `digest` may be an image manifest (JSON) rather than a component:
/// reads its first byte only.
pub fn may_be_manifest(blobs: &BlobStore, digest: &Digest) -> bool {
    let mut first = [0u8; 1];
    std::fs::File::open(blobs.path(digest))
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut first))
        .is_ok_and(|()| first[0] == b'{')
}

/// Checks that `bytes` are an image manifest Ember can run, as an upload is
/// taken: the reason when they are not.
pub fn check_manifest(bytes: &[u8]) -> Result<(), String> {
    parse_manifest(bytes).map(drop)
}

/// The kind, config and layers of a manifest.
fn parse_manifest(bytes: &[u8]) -> Result<(WorkloadKind, Digest, Vec<Digest>), String> {
    let manifest: OciImageManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("is not an image manifest: {e}"))?;
    let kind = classify(&manifest.config.media_type, &manifest.layers)?;
    let parse = |d: &str| {
        d.parse::<Digest>()
            .map_err(|e| format!("names a bad digest {d:?}: {e}"))
    };
    let layers = manifest
        .layers
        .iter()
        .map(|l| parse(&l.digest))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((kind, parse(&manifest.config.digest)?, layers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        (dir, blobs)
    }

    #[test]
    fn a_manifest_names_its_config_and_layers_and_anything_else_is_no_manifest() {
        let (_dir, blobs) = store();
        let config = blobs.put(b"{}").unwrap();
        let layer = blobs.put(b"layer").unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                        "digest": layer.to_string(), "size": 5}],
        });
        let digest = blobs.put(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        let image = uploaded_image(&blobs, &digest).unwrap().unwrap();
        assert_eq!(image.kind, WorkloadKind::Oci);
        assert_eq!(image.artifact, digest);
        assert_eq!(image.blobs, vec![config, layer]);

        let component = blobs.put(b"\0asm\x0d\0\x01\0").unwrap();
        assert_eq!(uploaded_image(&blobs, &component).unwrap(), None);

        let odd = blobs.put(br#"{"layers": "no"}"#).unwrap();
        assert!(matches!(
            uploaded_image(&blobs, &odd),
            Err(UploadedImageError::Unusable { .. })
        ));
    }
}
