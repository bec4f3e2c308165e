//! Images as people have them on disk, read for upload to the runtime's content
//! store: a `docker save` or `podman save` archive (`manifest.json` naming a
//! config and layer files), an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/`), or an `oci-archive` (that layout in a tar; newer
//! `docker save` archives are both). The result is a manifest and the blobs it
//! names, each checked against its digest.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// An image read from an archive or layout.
#[derive(Debug)]
pub struct ArchivedImage {
    /// The manifest, as stored in the layout or built for a `docker save` archive.
    pub manifest: Vec<u8>,
    /// The config, then each layer, in the manifest's order.
    pub blobs: Vec<Vec<u8>>,
    /// Where it came from, for messages: `docker save archive`, `OCI layout`, ...
    pub format: &'static str,
}

/// Why an archive or layout cannot be read as an image.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading it failed.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// It is not an image in any form this reader knows, or it is inconsistent.
    #[error("{path}: {reason}")]
    Invalid {
        /// What was read.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Whether `path` looks like an image archive or layout rather than a component:
/// a directory holding `oci-layout` or `index.json`, or a tar file.
pub fn looks_like_image(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("oci-layout").is_file() || path.join("index.json").is_file();
    }
    let mut head = [0u8; 262];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[257..262] == b"ustar")
}

/// Reads the image at `path` (an archive file or a layout directory).
pub fn read_image(path: &Path) -> Result<ArchivedImage, ArchiveError> {
    let files = if path.is_dir() {
        Files::Dir(path.to_path_buf())
    } else {
        Files::Tar(read_tar(path)?)
    };
    let invalid = |reason: String| ArchiveError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if files.has("index.json") {
        let format = if path.is_dir() {
            "OCI layout"
        } else {
            "OCI archive"
        };
        oci_layout(&files, format).map_err(invalid)
    } else if files.has("manifest.json") {
        docker_save(&files).map_err(invalid)
    } else {
        Err(invalid(
            "neither an OCI layout (index.json) nor a `docker save` archive (manifest.json)".into(),
        ))
    }
}

/// The files of an archive (read whole, by name) or of a directory.
enum Files {
    Tar(HashMap<String, Vec<u8>>),
    Dir(PathBuf),
}

impl Files {
    fn has(&self, name: &str) -> bool {
        match self {
            Files::Tar(files) => files.contains_key(name),
            Files::Dir(root) => root.join(name).is_file(),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        let name = name.trim_start_matches("./");
        if name.split('/').any(|part| part == "..") {
            return Err(format!("{name:?} leaves the archive"));
        }
        match self {
            Files::Tar(files) => files
                .get(name)
                .cloned()
                .ok_or_else(|| format!("{name} is missing")),
            Files::Dir(root) => {
                std::fs::read(root.join(name)).map_err(|e| format!("reading {name}: {e}"))
            }
        }
    }

    /// The blob with `digest` (`sha256:<hex>`) of an OCI layout, checked.
    fn blob(&self, digest: &str) -> Result<Vec<u8>, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?;
        let bytes = self.read(&format!("blobs/sha256/{hex}"))?;
        check_digest(&bytes, digest)?;
        Ok(bytes)
    }
}

fn read_tar(path: &Path) -> Result<HashMap<String, Vec<u8>>, ArchiveError> {
    let io = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut files = HashMap::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(io)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry.read_to_end(&mut bytes).map_err(io)?;
        files.insert(name, bytes);
    }
    Ok(files)
}

/// The `sha256:<hex>` digest the content store gives `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    sha256(bytes)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn check_digest(bytes: &[u8], digest: &str) -> Result<(), String> {
    let actual = sha256(bytes);
    if actual == digest {
        Ok(())
    } else {
        Err(format!("blob {digest} holds content of digest {actual}"))
    }
}

/// An OCI layout: `index.json` names a manifest (or an index of them, of which
/// the linux/amd64 one is taken), which names a config and layers.
fn oci_layout(files: &Files, format: &'static str) -> Result<ArchivedImage, String> {
    let index: serde_json::Value = serde_json::from_slice(&files.read("index.json")?)
        .map_err(|e| format!("index.json is not JSON: {e}"))?;
    let mut list = index;
    // An index may name an index; a few levels are plenty.
    for _ in 0..4 {
        let entries = list["manifests"]
            .as_array()
            .ok_or("an index has no `manifests` list")?;
        let chosen = choose_platform(entries)?;
        let digest = chosen["digest"]
            .as_str()
            .ok_or("a manifest entry has no digest")?;
        let bytes = files.blob(digest)?;
        let media_type = chosen["mediaType"].as_str().unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest {digest} is not JSON: {e}"))?;
        let is_index =
            media_type == OCI_INDEX || media_type == DOCKER_LIST || parsed["manifests"].is_array();
        if is_index {
            list = parsed;
            continue;
        }
        let mut blobs = vec![
            files.blob(
                parsed["config"]["digest"]
                    .as_str()
                    .ok_or("the manifest has no config digest")?,
            )?,
        ];
        for layer in parsed["layers"]
            .as_array()
            .ok_or("the manifest has no layers")?
        {
            blobs.push(files.blob(layer["digest"].as_str().ok_or("a layer has no digest")?)?);
        }
        return Ok(ArchivedImage {
            manifest: bytes,
            blobs,
            format,
        });
    }
    Err("indexes nest too deep".into())
}

/// The entry for linux/amd64 among an index's manifests; an entry with no
/// platform when there is just one.
fn choose_platform(entries: &[serde_json::Value]) -> Result<&serde_json::Value, String> {
    let platform_is = |e: &serde_json::Value, os: &str, arch: &str| {
        e["platform"]["os"] == os && e["platform"]["architecture"] == arch
    };
    entries
        .iter()
        .find(|e| platform_is(e, "linux", "amd64"))
        .or_else(|| match entries {
            [only] if only["platform"].is_null() => Some(only),
            _ => None,
        })
        .or_else(|| {
            // Tools write one manifest per tag without a platform: the first.
            entries.iter().find(|e| e["platform"].is_null())
        })
        .ok_or_else(|| "no linux/amd64 image in the index".to_string())
}

/// A `docker save` archive: `manifest.json` lists images, each a config file and
/// layer files (tars, compressed or not); the first image is taken, and a
/// Docker manifest is built for it.
fn docker_save(files: &Files) -> Result<ArchivedImage, String> {
    let listed: serde_json::Value = serde_json::from_slice(&files.read("manifest.json")?)
        .map_err(|e| format!("manifest.json is not JSON: {e}"))?;
    let image = listed
        .as_array()
        .and_then(|images| images.first())
        .ok_or("manifest.json lists no image")?;
    let config = files.read(image["Config"].as_str().ok_or("an image has no Config")?)?;
    let mut descriptors = Vec::new();
    let mut blobs = vec![config];
    for layer in image["Layers"].as_array().ok_or("an image has no Layers")? {
        let bytes = files.read(layer.as_str().ok_or("a layer is not a file name")?)?;
        descriptors.push(serde_json::json!({
            "mediaType": layer_media_type(&bytes),
            "digest": sha256(&bytes),
            "size": bytes.len(),
        }));
        blobs.push(bytes);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG,
            "digest": sha256(&blobs[0]),
            "size": blobs[0].len(),
        },
        "layers": descriptors,
    });
    Ok(ArchivedImage {
        manifest: serde_json::to_vec(&manifest).expect("JSON values serialize"),
        blobs,
        format: "docker save archive",
    })
}

/// A layer's media type from its first bytes: gzip, zstd or a plain tar.
fn layer_media_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x1f, 0x8b, ..] => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        _ => "application/vnd.docker.image.rootfs.diff.tar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_docker_save_archive_becomes_a_manifest_with_its_config_and_layers() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar_of(&[("hello", b"hi")]);
        let listed = serde_json::json!([{
            "Config": "abc.json", "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]
        }]);
        let archive = tar_of(&[
            ("manifest.json", &serde_json::to_vec(&listed).unwrap()),
            ("abc.json", b"{\"os\":\"linux\"}"),
            ("l1/layer.tar", &layer),
        ]);
        let path = dir.path().join("image.tar");
        std::fs::write(&path, archive).unwrap();
        assert!(looks_like_image(&path));
        let image = read_image(&path).unwrap();
        assert_eq!(image.format, "docker save archive");
        assert_eq!(
            image.blobs,
            vec![b"{\"os\":\"linux\"}".to_vec(), layer.clone()]
        );
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], sha256(&layer));
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar"
        );
    }

    #[test]
    fn a_layout_s_blobs_are_checked_and_names_may_not_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = b"{}".to_vec();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": sha256(&config)}, "layers": []
        }))
        .unwrap();
        let index = serde_json::json!({"manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(&manifest)}
        ]});
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("oci-layout"), "{}").unwrap();
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        let blob = |d: &str| dir.path().join("blobs/sha256").join(&d[7..]);
        std::fs::write(blob(&sha256(&manifest)), &manifest).unwrap();
        // The config's file holds other bytes than its digest says.
        std::fs::write(blob(&sha256(&config)), b"{ }").unwrap();
        assert!(looks_like_image(dir.path()));
        let error = read_image(dir.path()).unwrap_err().to_string();
        assert!(error.contains("holds content of digest"), "{error}");
        std::fs::write(blob(&sha256(&config)), &config).unwrap();
        let image = read_image(dir.path()).unwrap();
        assert_eq!((image.format, image.blobs), ("OCI layout", vec![config]));

        let files = Files::Dir(dir.path().to_path_buf());
        assert!(files.read("../etc/passwd").unwrap_err().contains("leaves"));
    }
}
