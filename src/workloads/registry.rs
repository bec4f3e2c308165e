//! A real OCI registry on loopback: Debian's `docker-registry`, with a temporary
//! storage dir, and its HTTP API: blob and manifest uploads, and pushes of wasm
//! artifacts.

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The media type of an OCI image manifest (the wasm artifacts' too).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Where Debian's docker-registry package puts the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    storage: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Command::spawn)
    }

    /// Starts a registry on a free loopback port, its process spawned by `spawn`
    /// (`ember bench` ties it to its own life).
    pub fn start_with(
        spawn: impl FnOnce(&mut Command) -> std::io::Result<Child>,
    ) -> anyhow::Result<Self> {
        ensure!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install Debian's docker-registry package (scripts/test does)"
        );
        let storage = tempfile::tempdir().context("creating the registry's storage dir")?;
        let addr = free_loopback_port()?;
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.path().join("data").display()
            ),
        )
        .context("writing the registry's config")?;
        let child = spawn(
            Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .context("starting docker-registry")?;
        let registry = Self {
            child,
            addr,
            storage,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {addr} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(registry)
    }

    /// Where the registry keeps the blob `digest` (`sha256:...`) on disk, so a test
    /// can corrupt what it serves.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `wasm` as a CNCF wasm OCI artifact at `repository:tag`; returns the
    /// manifest digest.
    pub async fn push_wasm(
        &self,
        repository: &str,
        tag: &str,
        wasm: &[u8],
    ) -> anyhow::Result<String> {
        let config = br#"{"architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
        let config_digest = self.push_blob(repository, config).await?;
        let layer_digest = self.push_blob(repository, wasm).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.wasm.config.v0+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/wasm",
                "digest": layer_digest,
                "size": wasm.len(),
            }],
        })
        .to_string();
        put_manifest(
            self.addr,
            repository,
            tag,
            OCI_MANIFEST,
            manifest.as_bytes(),
        )
        .await
    }

    /// Monolithic blob upload: POST to start, PUT with the digest to finish.
    pub async fn push_blob(&self, repository: &str, bytes: &[u8]) -> anyhow::Result<String> {
        push_blob(self.addr, repository, bytes).await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Monolithic blob upload (POST, then PUT with `?digest=`); returns the digest.
pub async fn push_blob(
    registry_addr: SocketAddr,
    repository: &str,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let started = client
        .post(format!(
            "http://{registry_addr}/v2/{repository}/blobs/uploads/"
        ))
        .send()
        .await
        .context("starting a blob upload")?;
    ensure!(
        started.status() == reqwest::StatusCode::ACCEPTED,
        "starting a blob upload: the registry answered {}",
        started.status()
    );
    let location = started
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .context("the registry gave no upload location")?;
    let location = if location.starts_with("http") {
        location.to_string()
    } else {
        format!("http://{registry_addr}{location}")
    };
    let digest = digest(bytes);
    let separator = if location.contains('?') { '&' } else { '?' };
    let finished = client
        .put(format!("{location}{separator}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .context("uploading a blob")?;
    ensure!(
        finished.status() == reqwest::StatusCode::CREATED,
        "uploading a blob: the registry answered {}",
        finished.status()
    );
    Ok(digest)
}

/// PUTs a manifest or index under `tag`, or under its own digest when `tag`
/// is empty; returns the digest, checked against the registry's.
pub async fn put_manifest(
    registry_addr: SocketAddr,
    repository: &str,
    tag: &str,
    media_type: &str,
    manifest: &[u8],
) -> anyhow::Result<String> {
    let digest = digest(manifest);
    let reference = if tag.is_empty() { digest.as_str() } else { tag };
    let response = reqwest::Client::new()
        .put(format!(
            "http://{registry_addr}/v2/{repository}/manifests/{reference}"
        ))
        .header("content-type", media_type)
        .body(manifest.to_vec())
        .send()
        .await
        .context("pushing a manifest")?;
    let status = response.status();
    let stored = response
        .headers()
        .get("docker-content-digest")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("pushing a manifest: the registry answered {status} {body}");
    }
    ensure!(
        stored.as_deref() == Some(digest.as_str()),
        "the registry stored the manifest as {stored:?}, not {digest}"
    );
    Ok(digest)
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A loopback address with a port nobody listens on right now.
pub fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}
