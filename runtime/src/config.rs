//! Runtime settings.

use crate::connections::ConnectionPolicy;
use crate::model::Quota;
use ember_sandbox::capabilities::CapabilityName;
use ember_sandbox::cdi::DEFAULT_SPEC_DIRS;
use ember_sandbox::image::AllowedRegistries;
use ember_sandbox::oci::Subnet;
use std::path::PathBuf;
use std::time::Duration;

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where state, blobs and compiled code live.
    pub data_dir: PathBuf,
    /// Containers are served at `<name>.<domain>`.
    pub domain: String,
    /// Port the ingress is reached on, for the URLs containers report (omitted when 80).
    pub ingress_port: u16,
    /// Where this node reaches its own ingress: wasm guests' outbound requests to
    /// `<name>.<domain>` go there.
    pub ingress_addr: std::net::SocketAddr,
    /// Idle time before scaling to zero, for containers that set none.
    pub default_idle_timeout: Duration,
    /// Longest a request may run, for containers that set no `timeoutSeconds`
    /// (Knative's and Cloud Run's 300 s by default).
    pub request_timeout: Duration,
    /// Longest a request waits for an instance (in the activator's queue) before
    /// it is answered 503; never longer than its container's request limit.
    pub queue_timeout: Duration,
    /// How often the autoscaler looks at every container.
    pub reconcile_interval: Duration,
    /// Wasm instances (one per request in flight) that may exist at once.
    pub max_wasm_instances: u32,
    /// The admin token, when given by the environment.
    pub admin_token: Option<String>,
    /// The bridge OCI instances attach to.
    pub bridge: String,
    /// The subnet OCI instances take addresses from.
    pub subnet: Subnet,
    /// Time between SIGTERM and SIGKILL when an OCI instance stops.
    pub stop_grace: Duration,
    /// Longest an OCI instance may take to listen on its port.
    pub startup_timeout: Duration,
    /// Most processes an OCI instance may have.
    pub pids_limit: u32,
    /// Output kept per container, in bytes.
    pub log_retention_bytes: usize,
    /// CPUs this node offers instances; `None` for the machine's.
    pub node_cpus: Option<f64>,
    /// Memory this node offers instances; `None` for the machine's.
    pub node_memory_bytes: Option<u64>,
    /// Threads the ingress serves connections on; one per CPU by default.
    pub ingress_threads: usize,
    /// Time between samples of each instance's CPU and memory.
    pub usage_sample_interval: Duration,
    /// Where CDI specs are read from, later directories overriding earlier ones.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Where the SSH server listens, once bound; `None` when it does not run.
    pub ssh_addr: Option<std::net::SocketAddr>,
    /// How long generated SSH credentials stay valid.
    pub ssh_credential_lifetime: Duration,
    /// Capabilities a container may add to the default set; none by default.
    pub allowed_capabilities: Vec<CapabilityName>,
    /// Whether a container may run its OCI instances with the host's ids
    /// (`userNamespace: false`); not by default.
    pub allow_host_ids: bool,
    /// The quota of a user an admin set none on (not the bootstrap admin's); no
    /// limit by default.
    pub default_quota: Quota,
    /// Where image pulls may connect (`--allowed-registries`).
    pub allowed_registries: AllowedRegistries,
    /// When the ingress sheds load.
    pub overload: crate::overload::OverloadPolicy,
    /// Limits and timeouts of the ingress's client connections.
    pub ingress_connections: ConnectionPolicy,
    /// Limits and timeouts of the management API's client connections: its own,
    /// so that the ingress never starves it.
    pub api_connections: ConnectionPolicy,
    /// The cluster this node joins, with its state on the cluster's etcd; `None`
    /// (the default) is one machine with its state in sled.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl RuntimeConfig {
    /// Defaults for a data dir: `ember.localhost`, port 8000, 60 s idle, 300 s requests
    /// of which at most 30 s in the queue;
    /// OCI instances on bridge `ember0` in 10.88.0.0/16, 10 s stop grace, 1 MiB of logs;
    /// an ingress thread per CPU; CDI specs from /etc/cdi and /var/run/cdi; no SSH
    /// server, and SSH credentials valid for 30 minutes; no capability beyond the
    /// default set.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            domain: "ember.localhost".into(),
            ingress_port: 8000,
            ingress_addr: ([127, 0, 0, 1], 8000).into(),
            default_idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            queue_timeout: Duration::from_secs(30),
            reconcile_interval: Duration::from_millis(250),
            max_wasm_instances: 1000,
            admin_token: None,
            bridge: "ember0".into(),
            subnet: "10.88.0.0/16".parse().expect("valid default subnet"),
            stop_grace: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            pids_limit: 1024,
            log_retention_bytes: 1 << 20,
            node_cpus: None,
            node_memory_bytes: None,
            ingress_threads: std::thread::available_parallelism().map_or(1, usize::from),
            usage_sample_interval: Duration::from_secs(10),
            cdi_spec_dirs: DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
            ssh_addr: None,
            ssh_credential_lifetime: Duration::from_secs(30 * 60),
            allowed_capabilities: Vec::new(),
            allow_host_ids: false,
            default_quota: Quota::default(),
            allowed_registries: AllowedRegistries::default_for(true),
            overload: crate::overload::OverloadPolicy::default(),
            ingress_connections: ConnectionPolicy::with_total(10_000),
            api_connections: ConnectionPolicy::with_total(1024),
            cluster: None,
        }
    }
}
