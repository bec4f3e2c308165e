//! Test-only parts of the OCI images the tests build: layers with malicious entries,
//! indexes with a decoy platform, reading manifests back. The rest is the library's
//! [`ember::workloads::oci_image`], re-exported here.

#[allow(unused_imports)]
pub use ember::workloads::oci_image::*;
use serde_json::json;
use std::net::SocketAddr;

/// Entries whose names are written unchecked (`../x`, `/abs`), which
/// `tar::Builder` refuses.
pub trait RawEntries: Sized {
    /// A regular file whose name bytes are written unchecked (e.g. `../../x`,
    /// `/etc/x`); at most 100 bytes.
    fn raw_file(self, name: &[u8], mode: u32, data: &[u8]) -> Self;
    /// A symlink or hard link (per `entry_type`) with unchecked name and target.
    fn raw_link(self, entry_type: tar::EntryType, name: &[u8], target: &[u8]) -> Self;
}

impl RawEntries for LayerBuilder {
    fn raw_file(self, name: &[u8], mode: u32, data: &[u8]) -> Self {
        let header = raw_header(tar::EntryType::Regular, name, b"", mode, data.len() as u64);
        self.raw_entry(header, data)
    }

    fn raw_link(self, entry_type: tar::EntryType, name: &[u8], target: &[u8]) -> Self {
        let header = raw_header(entry_type, name, target, 0o777, 0);
        self.raw_entry(header, b"")
    }
}

/// The digests [`push_index`] pushed.
#[derive(Clone, Debug)]
pub struct PushedIndex {
    /// The tagged index (or manifest list).
    pub index: String,
    /// The linux/amd64 image: the one the runtime must run.
    pub amd64: String,
    /// The linux/arm64 decoy, listed first.
    pub arm64: String,
}

/// Pushes the image of `config` and `layers` as linux/amd64 plus an arm64
/// decoy (an image with no executable), both by digest, then an index listing
/// the decoy first, tagged `repository:tag`. A runtime that takes the first
/// entry instead of matching linux/amd64 fails to start the decoy.
pub async fn push_index(
    registry_addr: SocketAddr,
    repository: &str,
    tag: &str,
    config: &ImageConfig,
    layers: &[ImageLayer],
    format: ManifestFormat,
) -> PushedIndex {
    let amd64 = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..config.clone()
    };
    let arm64 = ImageConfig {
        architecture: "arm64".into(),
        ..config.clone()
    };
    let arm64_layers = [decoy_layer(format)];
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (config, layers, variant) in [
        (&arm64, &arm64_layers[..], Some("v8")),
        (&amd64, layers, None),
    ] {
        let manifest = push_image_blobs(registry_addr, repository, config, layers, format)
            .await
            .unwrap();
        let media_type = format.manifest_media_type();
        let digest = put_manifest(registry_addr, repository, "", media_type, &manifest)
            .await
            .unwrap();
        let mut platform = json!({ "architecture": config.architecture, "os": "linux" });
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        entries.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": manifest.len(),
            "platform": platform,
        }));
        digests.push(digest);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": format.index_media_type(),
        "manifests": entries,
    }))
    .unwrap();
    let index = put_manifest(
        registry_addr,
        repository,
        tag,
        format.index_media_type(),
        &index,
    )
    .await
    .unwrap();
    PushedIndex {
        index,
        arm64: digests.remove(0),
        amd64: digests.remove(0),
    }
}

/// The arm64 entry of [`push_index`]: one text file, nothing runnable.
fn decoy_layer(format: ManifestFormat) -> ImageLayer {
    let compression = match format {
        ManifestFormat::Oci => Compression::Gzip,
        ManifestFormat::DockerV2 => Compression::DockerGzip,
    };
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/arch", 0o644, b"arm64\n")
        .build(compression)
}

/// GETs a manifest with `accept`; returns status, content type and body.
pub async fn get_manifest(
    registry_addr: SocketAddr,
    repository: &str,
    reference: &str,
    accept: &str,
) -> (reqwest::StatusCode, String, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{registry_addr}/v2/{repository}/manifests/{reference}"
        ))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}
