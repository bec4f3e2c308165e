//! OCI / Docker container images built in memory (tar layers, image config,
//! manifests) and pushed to a registry over its HTTP API, so the tests and `ember
//! bench` need no docker, no network and no prebuilt fixtures.

// The registry's HTTP API (blob and manifest uploads) is registry.rs's; they are
// re-exported here so that the image builders' callers find them with the images.
use super::registry::digest;
pub use super::registry::{OCI_MANIFEST, push_blob, put_manifest};
use anyhow::Context;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every entry gets the same mtime so that a layer's digest depends on its
/// content only.
const MTIME: u64 = 1_700_000_000;

/// How a layer's tar is stored in the registry; each picks its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`
    Plain,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    Zstd,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`
    DockerGzip,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Plain => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Self::DockerGzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match self {
            Self::Plain => tar.to_vec(),
            Self::Gzip | Self::DockerGzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar).expect("writing to memory");
                encoder.finish().expect("writing to memory")
            }
            Self::Zstd => zstd::encode_all(tar, 3).expect("writing to memory"),
        }
    }
}

/// One layer: the uncompressed tar (its sha256 is the config's diff_id) and
/// the blob pushed to the registry. Fields are public so that a test can
/// tamper with them (a blob that does not match the tar, an unknown media type).
#[derive(Clone, Debug)]
pub struct ImageLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
}

impl ImageLayer {
    /// Compresses `tar` as `compression` says.
    pub fn new(tar: Vec<u8>, compression: Compression) -> Self {
        Self {
            blob: compression.compress(&tar),
            media_type: compression.media_type().to_string(),
            tar,
        }
    }

    /// The same tar, stored another way.
    pub fn with_compression(self, compression: Compression) -> Self {
        Self::new(self.tar, compression)
    }

    /// The digest of the blob, as the manifest names it.
    pub fn digest(&self) -> String {
        digest(&self.blob)
    }

    /// The digest of the uncompressed tar, as the config's rootfs names it.
    pub fn diff_id(&self) -> String {
        digest(&self.tar)
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": self.blob.len(),
        })
    }
}

/// Builds a layer tar entry by entry, in call order. Paths may start with `/`:
/// it is dropped, as archives hold relative names. The raw_* methods write
/// names unchecked, for the malicious entries (`../x`, `/abs`) that
/// `tar::Builder` refuses.
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut header = header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, relative(path), std::io::empty())
            .expect("writing to memory");
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, relative(path), data)
            .expect("writing to memory");
        self
    }

    /// A symlink; `target` is stored verbatim (absolute, relative or `..`).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, relative(path), target)
            .expect("writing to memory");
        self
    }

    /// A hard link to an earlier entry; `target` is an archive path, so a
    /// leading `/` is dropped like in entry names.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut header = header(tar::EntryType::Link, 0o644, 0);
        self.builder
            .append_link(&mut header, relative(path), relative(target))
            .expect("writing to memory");
        self
    }

    /// An overlay whiteout: `path` is deleted from the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let path = relative(path);
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let whiteout = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&whiteout, 0o644, b"")
    }

    /// An opaque whiteout: `dir` hides everything below it from lower layers.
    pub fn opaque_whiteout(self, dir: &str) -> Self {
        let dir = relative(dir).trim_end_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// Appends `header` and `data` exactly as given (the checksum too).
    pub fn raw_entry(mut self, header: tar::Header, data: &[u8]) -> Self {
        self.builder
            .append(&header, data)
            .expect("writing to memory");
        self
    }

    /// Finishes the tar and compresses it.
    pub fn build(self, compression: Compression) -> ImageLayer {
        ImageLayer::new(
            self.builder.into_inner().expect("writing to memory"),
            compression,
        )
    }
}

/// A ustar header with `name` and `link_target` copied byte for byte (at most
/// 100 bytes each) and a valid checksum, for [`LayerBuilder::raw_entry`].
pub fn raw_header(
    entry_type: tar::EntryType,
    name: &[u8],
    link_target: &[u8],
    mode: u32,
    size: u64,
) -> tar::Header {
    let mut header = header(entry_type, mode, size);
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link_target.len()].copy_from_slice(link_target);
    header.set_cksum();
    header
}

/// Root-owned, fixed mtime: what an image build would normally record.
fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The runtime part of an image config. Empty fields are left out of the JSON,
/// the way an image without that instruction has them.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// e.g. `"8080/tcp"`
    pub exposed_ports: Vec<String>,
    /// Merged into `config` last, for fields not modelled here (StopSignal, Labels).
    pub extra: Map<String, Value>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            architecture: "amd64".into(),
            os: "linux".into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: String::new(),
            user: String::new(),
            exposed_ports: Vec::new(),
            extra: Map::new(),
        }
    }
}

impl ImageConfig {
    /// The config blob for an image made of `layers`, bottom first.
    pub fn to_json(&self, layers: &[ImageLayer]) -> Vec<u8> {
        let mut config = Map::new();
        let mut set = |key: &str, value: Value| {
            config.insert(key.to_string(), value);
        };
        if !self.entrypoint.is_empty() {
            set("Entrypoint", json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            set("Cmd", json!(self.cmd));
        }
        if !self.env.is_empty() {
            set("Env", json!(self.env));
        }
        if !self.working_dir.is_empty() {
            set("WorkingDir", json!(self.working_dir));
        }
        if !self.user.is_empty() {
            set("User", json!(self.user));
        }
        if !self.exposed_ports.is_empty() {
            let ports: Map<String, Value> = self
                .exposed_ports
                .iter()
                .map(|port| (port.clone(), json!({})))
                .collect();
            set("ExposedPorts", Value::Object(ports));
        }
        config.extend(self.extra.clone());
        let diff_ids: Vec<String> = layers.iter().map(ImageLayer::diff_id).collect();
        serde_json::to_vec(&json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("JSON of strings")
    }
}

/// Which manifest schema to push (and which list type names it in an index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest / OCI image index.
    Oci,
    /// Docker image manifest v2 schema 2 / Docker manifest list.
    DockerV2,
}

impl ManifestFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Self::Oci => OCI_MANIFEST,
            Self::DockerV2 => DOCKER_MANIFEST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Self::Oci => OCI_CONFIG,
            Self::DockerV2 => DOCKER_CONFIG,
        }
    }

    pub fn index_media_type(self) -> &'static str {
        match self {
            Self::Oci => OCI_INDEX,
            Self::DockerV2 => DOCKER_MANIFEST_LIST,
        }
    }
}

/// Pushes config and layer blobs and the manifest as `repository:tag`; returns
/// the manifest digest. Layer media types are used as they are: pick
/// [`Compression::DockerGzip`] for a faithful Docker image.
pub async fn push_image(
    registry_addr: SocketAddr,
    repository: &str,
    tag: &str,
    config: &ImageConfig,
    layers: &[ImageLayer],
    format: ManifestFormat,
) -> anyhow::Result<String> {
    let manifest = push_image_blobs(registry_addr, repository, config, layers, format).await?;
    put_manifest(
        registry_addr,
        repository,
        tag,
        format.manifest_media_type(),
        &manifest,
    )
    .await
}

/// Pushes the config and layer blobs; returns the manifest naming them.
pub async fn push_image_blobs(
    registry_addr: SocketAddr,
    repository: &str,
    config: &ImageConfig,
    layers: &[ImageLayer],
    format: ManifestFormat,
) -> anyhow::Result<Vec<u8>> {
    let config = config.to_json(layers);
    let config_digest = push_blob(registry_addr, repository, &config).await?;
    for layer in layers {
        push_blob(registry_addr, repository, &layer.blob).await?;
    }
    Ok(manifest(format, &config, &config_digest, layers))
}

/// Stores the config, layer blobs and manifest in `blobs`, as a pull would; returns
/// the manifest's digest (what a revision's artifact names).
pub fn store_image(
    blobs: &ember_sandbox::BlobStore,
    config: &ImageConfig,
    layers: &[ImageLayer],
    format: ManifestFormat,
) -> anyhow::Result<ember_sandbox::Digest> {
    let config = config.to_json(layers);
    let config_digest = blobs.put(&config)?;
    for layer in layers {
        blobs.put(&layer.blob)?;
    }
    let manifest = manifest(format, &config, &config_digest.to_string(), layers);
    Ok(blobs.put(&manifest)?)
}

/// The manifest naming `config` and `layers`.
fn manifest(
    format: ManifestFormat,
    config: &[u8],
    config_digest: &str,
    layers: &[ImageLayer],
) -> Vec<u8> {
    let layers: Vec<Value> = layers.iter().map(ImageLayer::descriptor).collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_media_type(),
        "config": {
            "mediaType": format.config_media_type(),
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    }))
    .expect("JSON of strings")
}

/// The host's static busybox, which the busybox images are made of.
pub const BUSYBOX: &str = "/usr/bin/busybox";

/// Applets linked into /bin: those the images' commands and the CGI scripts use.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "httpd", "echo", "cat", "sleep", "env", "ls", "head", "tail", "seq", "kill", "true",
    "false", "id", "mkdir", "dd", "tr", "rm", "wc", "ps", "grep", "uname", "hostname", "awk",
];

/// A root filesystem from the host's static busybox: /bin/busybox with applet
/// symlinks, the usual directories, root and nobody (65534) users. Gzip.
pub fn busybox_layer() -> anyhow::Result<ImageLayer> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (Debian's busybox-static)"))?;
    let mut layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/busybox", 0o755, &busybox);
    for applet in BUSYBOX_APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "/bin/busybox");
    }
    Ok(layer
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        .dir("tmp", 0o1777)
        .dir("www", 0o755)
        .dir("www/cgi-bin", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("dev", 0o755)
        .dir("root", 0o700)
        .build(Compression::Gzip))
}

/// CGI header and blank line; CRLF because the script's output goes to the
/// client as is after httpd's status line.
const CGI_HEADER: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n";

/// `$n`: the query string when it is a number (`/cgi-bin/hog?64`), else the default.
fn numeric_query(default: u32) -> String {
    format!(
        "case \"$QUERY_STRING\" in\n'' | *[!0-9]*) n={default} ;;\n*) n=$QUERY_STRING ;;\nesac\n"
    )
}

/// The app layer of the busybox httpd image (Zstd): /www/index.html and CGI
/// scripts in /www/cgi-bin, each answering text/plain:
/// - `env`: the CGI process's environment (`env` output);
/// - `args`: /proc/1/cmdline with NULs as spaces, then a newline;
/// - `hog`: buffers 1000 MB (or `?N` MB) of /dev/zero in `tail`, then `survived`;
/// - `forkbomb`: starts up to 1000 background `sleep 30`, then `started <n>`;
/// - `write`: dd of 200 MB (or `?N` MB) to /tmp/big, dd's report, then `rc=<status>`;
/// - `log`: writes `logged <query string>` to the container's stdout (pid 1's), then
///   `ok`;
/// - `orphan`: leaves a `sleep 0.2` behind, whose parent has exited (so that it is
///   reparented to PID 1), then `left`;
/// - `zombies`: how many processes in the container are zombies, then a newline;
/// - `slow`: sleeps `?N` seconds (default 1), then `slept`;
/// - `run`: runs the URL-decoded query string with `sh -c` (what a hostile tenant
///   would run inside), then `rc=<status>`.
pub fn http_app_layer() -> ImageLayer {
    let script = |body: &str| format!("{CGI_HEADER}{body}");
    let env = script("env\n");
    let args = script("tr '\\0' ' ' < /proc/1/cmdline\necho\n");
    // /dev/zero has no newline, so tail's last-lines buffer grows until the
    // pipe ends or the memory limit kills it.
    let hog = script(&format!(
        "{}head -c \"$((n * 1048576))\" /dev/zero | tail >/dev/null\necho survived\n",
        numeric_query(1000)
    ));
    // A failed fork aborts an ash script, so the loop runs in a subshell whose
    // EXIT trap still reports the count; the sleeps get no stdout, or httpd
    // would wait 30 s for the pipe to close.
    let forkbomb = script(concat!(
        "(\n",
        "\tn=0\n",
        "\ttrap 'echo \"started $n\"' EXIT\n",
        "\twhile [ \"$n\" -lt 1000 ]; do\n",
        "\t\tsleep 30 </dev/null >/dev/null 2>&1 &\n",
        "\t\tn=$((n + 1))\n",
        "\tdone\n",
        ")\n",
    ));
    let write = script(&format!(
        "{}dd if=/dev/zero of=/tmp/big bs=1M count=\"$n\" 2>&1\necho rc=$?\n",
        numeric_query(200)
    ));
    let log = script("echo \"logged $QUERY_STRING\" > /proc/1/fd/1\necho ok\n");
    let orphan = script("sh -c 'sleep 0.2 </dev/null >/dev/null 2>&1 &'\necho left\n");
    let slow = script(&format!("{}sleep \"$n\"\necho slept\n", numeric_query(1)));
    let run = script("sh -c \"$(httpd -d \"$QUERY_STRING\")\" 2>&1 </dev/null\necho \"rc=$?\"\n");
    let zombies = script("cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l\n");
    LayerBuilder::new()
        .dir("www", 0o755)
        .file("www/index.html", 0o644, b"hello from busybox httpd\n")
        .dir("www/cgi-bin", 0o755)
        .file("www/cgi-bin/env", 0o755, env.as_bytes())
        .file("www/cgi-bin/args", 0o755, args.as_bytes())
        .file("www/cgi-bin/hog", 0o755, hog.as_bytes())
        .file("www/cgi-bin/forkbomb", 0o755, forkbomb.as_bytes())
        .file("www/cgi-bin/write", 0o755, write.as_bytes())
        .file("www/cgi-bin/log", 0o755, log.as_bytes())
        .file("www/cgi-bin/orphan", 0o755, orphan.as_bytes())
        .file("www/cgi-bin/zombies", 0o755, zombies.as_bytes())
        .file("www/cgi-bin/slow", 0o755, slow.as_bytes())
        .file("www/cgi-bin/run", 0o755, run.as_bytes())
        .build(Compression::Zstd)
}

/// The config of the busybox httpd image: httpd in the foreground on 8080.
pub fn busybox_http_config() -> ImageConfig {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    ImageConfig {
        entrypoint: strings(&["/bin/httpd"]),
        cmd: strings(&["-f", "-p", "8080", "-h", "/www"]),
        env: strings(&["PATH=/bin", "GREETING=from-image"]),
        working_dir: "/www".into(),
        exposed_ports: strings(&["8080/tcp"]),
        ..ImageConfig::default()
    }
}

/// Pushes the busybox httpd image (busybox gzip + app zstd, OCI manifest) as
/// `repository:tag`; returns the manifest digest.
pub async fn push_busybox_http_image(
    registry_addr: SocketAddr,
    repository: &str,
    tag: &str,
) -> anyhow::Result<String> {
    push_image(
        registry_addr,
        repository,
        tag,
        &busybox_http_config(),
        &[busybox_layer()?, http_app_layer()],
        ManifestFormat::Oci,
    )
    .await
}
