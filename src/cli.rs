//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Ember: a serverless runtime for wasm components and OCI containers.
#[derive(Parser)]
#[command(name = "ember", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Runs the runtime: the management API and the ingress.
    Serve(Box<ServeArgs>),
    /// Deploys a container (or updates it when the name exists) from an image
    /// reference, a local .wasm or .wat file, or an image archive or layout.
    Deploy(Box<DeployArgs>),
    /// Lists containers.
    Ls(ClientArgs),
    /// Deletes a container.
    Rm(TargetArgs),
    /// Lists a container's revisions.
    Revisions(TargetArgs),
    /// Prints a container's output: its recent lines, then (with --follow) each
    /// new one as it is written.
    Logs(LogsArgs),
    /// Lists a container's instances (every member's, in a cluster).
    Instances(TargetArgs),
    /// Shows a container in one screen: its spec and status, revisions and
    /// instances.
    Describe(TargetArgs),
    /// Sets how many instances a container keeps at least and may run at most
    /// (a new revision, as an update).
    Scale(ScaleArgs),
    /// Sends a container's traffic to a revision (`3=100`) or to the latest
    /// (`latest=100`), without a new revision.
    Traffic(TrafficArgs),
    /// Sends all of a container's traffic back to an earlier revision (by default
    /// the one before the revision serving), without a new revision.
    Rollback(RollbackArgs),
    /// Runs a command inside one of a container's instances (OCI), with its
    /// output here and its exit status as this command's.
    Exec(ExecArgs),
    /// Opens a shell inside one of a container's instances (OCI), on a terminal
    /// when this one is.
    Ssh(SshArgs),
    /// Lists the servers: this node, or every member of its cluster.
    Nodes(ClientArgs),
    /// Mints, lists and revokes API tokens (needs an ADMIN token).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Measures cold starts, warm latency and throughput of wasm and OCI containers,
    /// beside crun, runc, wasmtime serve and nginx where installed.
    Bench(BenchArgs),
    /// GPUs: writes the CDI spec of this host's NVIDIA GPUs.
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// Prints the shell completion script for bash, zsh or fish
    /// (`source <(ember completion bash)`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Where `ember gpu cdi-generate` writes by default: in the directory of specs
/// generated at boot, which overrides /etc/cdi (as `ember serve
/// --generate-nvidia-cdi` does).
pub const DEFAULT_NVIDIA_SPEC: &str = "/var/run/cdi/ember-nvidia.json";

#[derive(Subcommand)]
pub enum GpuCommand {
    /// Finds the NVIDIA GPUs and driver files of this host and writes a CDI spec
    /// with a device per GPU (nvidia.com/gpu=<index>, =<uuid>) and nvidia.com/gpu=all.
    CdiGenerate {
        /// Where to write the spec; `-` prints it.
        #[arg(long, default_value = DEFAULT_NVIDIA_SPEC)]
        output: PathBuf,
    },
    /// The createContainer hook of generated specs: reads the container's OCI
    /// state on stdin and adds the folders to its linker cache.
    #[command(hide = true)]
    UpdateLdcache {
        /// A folder inside the container holding driver libraries.
        #[arg(long = "folder")]
        folders: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Where state, blobs and compiled code are kept.
    #[arg(long, env = "EMBER_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address of the management API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
    /// Address of the ingress that serves containers.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub ingress_addr: SocketAddr,
    /// Address of the SSH server that logs in to instances with credentials from
    /// GET .../instances/{id}/ssh.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub ssh_addr: SocketAddr,
    /// How long generated SSH credentials stay valid (e.g. 30m, 90s).
    #[arg(long, default_value = "30m", value_parser = parse_lifetime)]
    pub ssh_credential_lifetime: std::time::Duration,
    /// Containers are served at <name>.<domain>.
    #[arg(long, default_value = "ember.localhost")]
    pub domain: String,
    /// Seconds without requests before a container scales to zero (unless it sets its own).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Seconds a request may run before it is cut with a 504, for containers that
    /// set no `timeoutSeconds` (at most 3600).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
    /// Seconds a request may wait for an instance (a cold start, or a free slot)
    /// before it is answered 503; never longer than its container's request limit.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_timeout: u64,
    /// Seconds a client may send nothing of a request body it has begun before
    /// its connection is closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_stall_timeout: u64,
    /// Seconds a client of the ingress or the API has to send a whole request head
    /// (from connecting, or from the first byte of a next request) before its
    /// connection is closed: slowloris clients hold nothing longer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_connection_timeout: u64,
    /// Connections one client address may hold open, on the ingress and on the API
    /// each; past it a new one is closed at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_source: u32,
    /// Connections the ingress holds open in all [default: half the open files
    /// limit, which `ember serve` raises to its hard limit at start].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Connections the management API holds open in all, apart from the ingress's
    /// [default: 1024, or a tenth of the open files limit if less].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub api_max_connections: Option<u32>,
    /// Where image pulls may connect, every connection checked on the address it
    /// resolves to (redirects and token endpoints included): a comma-separated
    /// list of `public` (any public address), `loopback`, host names (`*.domain`
    /// for a domain's), addresses and CIDR networks, each name or address with an
    /// optional `:port` [default: `public`, plus `loopback` when the API listens on
    /// loopback only].
    #[arg(long)]
    pub allowed_registries: Option<ember_sandbox::image::AllowedRegistries>,
    /// Percent of the open files limit in use past which the ingress sheds load:
    /// it takes no new connection and answers requests that would wait 503 with
    /// Retry-After, until use falls to 80% of the threshold.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub shed_descriptors_percent: u8,
    /// Resident memory of the runtime past which the ingress sheds load, e.g. 4Gi
    /// [default: half the machine's memory].
    #[arg(long)]
    pub shed_memory: Option<ember_runtime::model::Quantity>,
    /// Bridge OCI instances attach to (created if missing).
    #[arg(long, default_value = "ember0")]
    pub bridge: String,
    /// Subnet OCI instances take addresses from; the bridge takes the first.
    #[arg(long, default_value = "10.88.0.0/16")]
    pub subnet: ember_sandbox::oci::Subnet,
    /// Seconds between SIGTERM and SIGKILL when an OCI instance stops.
    #[arg(long, default_value_t = 10)]
    pub stop_grace: u64,
    /// Seconds an OCI instance may take to listen on its port.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub startup_timeout: u64,
    /// Most processes an OCI instance may have.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(8..))]
    pub pids_limit: u32,
    /// Capabilities a container may add to the default set (Podman's), comma
    /// separated, e.g. NET_ADMIN,SYS_PTRACE (default: none).
    #[arg(long, value_delimiter = ',')]
    pub allowed_capabilities: Vec<ember_runtime::model::CapabilityName>,
    /// Lets a container run its OCI instances with the host's user ids
    /// (`userNamespace: false`), so that its root is host root. Off by default.
    #[arg(long)]
    pub allow_host_ids: bool,
    /// Containers a user may have, unless an admin sets its quota (default: no limit;
    /// the bootstrap admin is never held to these defaults).
    #[arg(long)]
    pub quota_containers: Option<u32>,
    /// Instances a user may have starting or running at once (default: no limit).
    #[arg(long)]
    pub quota_instances: Option<u32>,
    /// CPUs a user's instances may ask for in all (default: no limit).
    #[arg(long)]
    pub quota_cpu: Option<f64>,
    /// Memory a user's instances may ask for in all, e.g. 8Gi (default: no limit).
    #[arg(long)]
    pub quota_ram: Option<ember_runtime::model::Quantity>,
    /// Ephemeral storage a user's OCI instances may write in all, e.g. 20Gi
    /// (default: no limit).
    #[arg(long)]
    pub quota_ephemeral_storage: Option<ember_runtime::model::Quantity>,
    /// Management API requests a user may make a minute (default: no limit).
    #[arg(long)]
    pub quota_requests_per_minute: Option<u32>,
    /// Output kept per container, in KiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_retention_kib: u64,
    /// Milliseconds between samples of each instance's CPU and memory (the metrics
    /// series of `/api/containers/{id}/metrics/*`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub usage_sample_ms: u64,
    /// CPUs instances may ask for in all (default: the machine's).
    #[arg(long)]
    pub node_cpus: Option<f64>,
    /// Memory instances may ask for in all, e.g. 16Gi (default: the machine's).
    #[arg(long)]
    pub node_memory: Option<ember_runtime::model::Quantity>,
    /// A directory of CDI specs; repeat for several, later ones overriding earlier
    /// ones (default: /etc/cdi and /var/run/cdi).
    #[arg(long = "cdi-spec-dir")]
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Writes the CDI spec of this host's NVIDIA GPUs (as `ember gpu cdi-generate`)
    /// into the last spec directory before starting.
    #[arg(long)]
    pub generate_nvidia_cdi: bool,
    /// Joins a cluster whose state is on these etcd client URLs (comma separated,
    /// e.g. http://127.0.0.1:2379) instead of keeping state in sled. Needs a build
    /// with `--features cluster`.
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in its cluster, unique there [default: the host name].
    #[arg(long, requires = "cluster")]
    pub node_name: Option<String>,
    /// The address other nodes and clients reach this node on; its API and
    /// ingress are published with it [default: the API's address, unless that is
    /// a wildcard].
    #[arg(long, requires = "cluster")]
    pub advertise_addr: Option<std::net::IpAddr>,
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// URL of the management API.
    #[arg(long, env = "EMBER_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Data dir of a local runtime, to read its admin token from (when EMBER_TOKEN is unset).
    #[arg(long, env = "EMBER_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mints a token for a user and prints its secret (shown this once).
    Create(TokenCreateArgs),
    /// Lists tokens (never their secrets).
    Ls(ClientArgs),
    /// Revokes a token by id.
    Rm(TokenTargetArgs),
}

#[derive(Args)]
pub struct TokenCreateArgs {
    /// The user the token authenticates (made on first use of the name).
    #[arg(long)]
    pub user: String,
    /// ADMIN or USER.
    #[arg(long, default_value = "USER")]
    pub role: String,
    /// A scope to grant (repeatable; all of them when none is given).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// A capability to grant (repeatable; all of them when none is given).
    #[arg(long = "capability")]
    pub capabilities: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TokenTargetArgs {
    /// Token id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TargetArgs {
    /// Container name or id.
    pub container: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Container name or id.
    pub container: String,
    /// Keep printing each new line as it is written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How far back to start, e.g. 10m, 2h, 1d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    /// Only this instance's lines (its id, or the start of it).
    #[arg(long)]
    pub instance: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Container name or id.
    pub container: String,
    /// The instance (its id, or the start of it); by default the first running one.
    #[arg(long, short = 'i')]
    pub instance: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct SshArgs {
    /// Container name or id.
    pub container: String,
    /// The instance (its id, or the start of it); by default the first running one.
    #[arg(long, short = 'i')]
    pub instance: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// Container name or id.
    pub container: String,
    /// Instances kept running even without traffic.
    #[arg(long)]
    pub min: Option<u32>,
    /// Most instances traffic may start.
    #[arg(long)]
    pub max: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TrafficArgs {
    /// Container name or id.
    pub container: String,
    /// Targets as REVISION=PERCENT (`3=100`, `latest=100`); one target takes 100
    /// percent: splitting between revisions is not supported yet.
    #[arg(required = true)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// Container name or id.
    pub container: String,
    /// The revision to go back to; by default the one before the revision serving.
    pub revision: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct DeployArgs {
    /// Container name (also its host: <name>.<domain>).
    pub name: String,
    /// Image reference with a tag or digest, `sha256:<hex>` of an uploaded blob, a
    /// path to a local .wasm component, a .wat core module (built into a
    /// wasi:http component here), or an image on disk: a `docker save` / `podman
    /// save` archive, an OCI image layout directory or an `oci-archive` (uploaded
    /// to the runtime's content store, no registry needed).
    pub image: String,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Memory per instance, e.g. 128Mi.
    #[arg(long)]
    pub ram: Option<String>,
    /// CPUs per instance.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// GPUs each instance holds.
    #[arg(long)]
    pub gpu: Option<u32>,
    /// A GPU model the instances accept, as GET /v1/gpu-models names it
    /// (repeatable; none: any model).
    #[arg(long = "gpu-model")]
    pub gpu_models: Vec<String>,
    /// A CDI device every instance gets, vendor.com/class=name (repeatable).
    #[arg(long = "cdi-device")]
    pub cdi_devices: Vec<String>,
    /// Instances kept warm with no traffic.
    #[arg(long)]
    pub min_instances: Option<u32>,
    /// Most instances.
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// Seconds idle before scaling to zero.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Most requests one instance serves at once (default: 1000 wasm, 100 OCI).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Most requests waiting for an instance before 503s.
    #[arg(long)]
    pub queue_depth: Option<u32>,
    /// OCI sandboxes kept created ahead of need for fast cold starts (default 1; 0 turns
    /// preparation off).
    #[arg(long)]
    pub prepared_sandboxes: Option<u32>,
    /// Run an OCI image's entrypoint as PID 1 itself, without Ember's init (which
    /// passes signals on and reaps orphans).
    #[arg(long)]
    pub no_init: bool,
    /// Run OCI instances with the host's user ids, outside a user namespace (only
    /// where the runtime was started with --allow-host-ids).
    #[arg(long)]
    pub host_ids: bool,
    /// A capability to add to the default set, e.g. NET_RAW (repeatable; the
    /// runtime must allow it with --allowed-capabilities).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// A capability to drop from the default set, e.g. CHOWN (repeatable).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Seconds a request may run (`timeoutSeconds`, 1-3600).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Instances a new revision starts with before any request (`initialScale`).
    #[arg(long)]
    pub initial_scale: Option<u32>,
    /// Scale on requests per second (`metric: rps`) with this many a second per
    /// instance (`targetRequestsPerSecond`).
    #[arg(long)]
    pub target_rps: Option<u32>,
    /// A host a wasm guest may send HTTP requests to (`allowedOutboundHosts`:
    /// `host:port`, `http://host[:port]`, `https://host[:port]`); repeatable.
    #[arg(long = "allow-outbound")]
    pub allow_outbound: Vec<String>,
    /// OCI: the instance speaks HTTP/2 with prior knowledge (h2c), as gRPC servers do.
    #[arg(long)]
    pub http2: bool,
    /// A readiness probe: GET this path, answered 200-399, before an instance
    /// takes requests (and every 10 s while it runs).
    #[arg(long)]
    pub ready_path: Option<String>,
    /// Return at once instead of waiting for the deployment to finish.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Measure the runtime at this API URL instead of starting one (token from
    /// EMBER_TOKEN or --data-dir's admin token).
    #[arg(long)]
    pub api: Option<String>,
    /// Data dir of the runtime given with --api, to read its admin token from.
    #[arg(long, env = "EMBER_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// A short run (under a minute): fewer samples, 2 s of load per case.
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw each case's latency distribution as SVG to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The wasmtime CLI to compare with (default: `wasmtime` on PATH).
    #[arg(long, value_name = "PATH")]
    pub wasmtime: Option<PathBuf>,
    /// Measure what many containers cost instead: for each count (--scale-counts),
    /// a fresh runtime gets that many wasm containers; create latency, time until
    /// all are deployed, a page of the list, memory, idle CPU and restart time.
    #[arg(long)]
    pub scale: bool,
    /// The container counts --scale measures (default 100,1000,10000,100000;
    /// 100,1000 with --quick).
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        requires = "scale"
    )]
    pub scale_counts: Vec<usize>,
    /// Run mixed load (warm and cold requests on wasm and OCI, deploy and delete
    /// churn) for this long instead, and report the runtime's memory, descriptors,
    /// threads and errors over time (e.g. `10m`, `60s`).
    #[arg(long, value_name = "DURATION", value_parser = parse_soak, conflicts_with = "scale")]
    pub soak: Option<std::time::Duration>,
    /// Measure cluster mode instead (an etcd and two nodes on loopback): warm
    /// latency through the node holding the instance and through the other (one
    /// relay hop), a cold start through a node, and the scheduler's decisions per
    /// second for 100 nodes and 10,000 containers.
    #[arg(long, conflicts_with_all = ["scale", "soak"])]
    pub cluster: bool,
}

/// A soak's length: at least 10 seconds.
fn parse_soak(raw: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if duration < std::time::Duration::from_secs(10) {
        return Err("must be at least 10s".into());
    }
    Ok(duration)
}

/// `$EMBER_DATA_DIR`, else `~/.local/share/ember`, else `./.ember`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/share/ember"))
        .unwrap_or_else(|| PathBuf::from(".ember"))
}

/// A duration of at least a second, as humantime writes them (`30m`, `90s`).
fn parse_lifetime(raw: &str) -> Result<std::time::Duration, String> {
    let lifetime = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if lifetime < std::time::Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(lifetime)
}
