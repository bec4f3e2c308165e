//! A container's spec: what it runs and how it scales, everything a revision
//! freezes, with the defaults a create fills in.

use super::{ContainerName, Quantity};
use ember_sandbox::capabilities::CapabilityChanges;
use ember_sandbox::cdi::CdiDeviceName;
use std::collections::BTreeMap;

/// What a container runs and how it scales: everything a revision freezes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Also the first label of the container's ingress host.
    pub name: ContainerName,
    /// The image reference as given (validated when set).
    pub image: String,
    /// CPUs an instance may use.
    pub cpu: f64,
    /// Memory an instance may use.
    pub ram: Quantity,
    /// GPUs an instance needs.
    pub gpu: u32,
    /// Disk an instance may write.
    pub ephemeral_storage: Quantity,
    /// Replaces the image's entrypoint.
    pub command: Option<Vec<String>>,
    /// Replaces the image's arguments.
    pub arguments: Option<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Port the workload listens on (OCI images).
    pub port: u16,
    /// GPU models the container accepts.
    pub desired_gpus: Option<Vec<String>>,
    /// CDI devices every instance gets, named directly (not GPUs: those are
    /// scheduled by `gpu` and `desiredGPUs`).
    #[serde(default)]
    pub cdi_devices: Vec<CdiDeviceName>,
    /// Instances kept with no traffic.
    pub min_instances: u32,
    /// Instances never exceeded.
    pub max_instances: u32,
    /// Seconds without a request before scaling down; `None` takes the runtime's default.
    pub idle_timeout_seconds: Option<u64>,
    /// Seconds a request may run before it is cut with a 504; `None` takes the
    /// runtime's `--request-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Seconds a request may wait for its response to start (its status and
    /// headers) before it is cut with a 504; `None`: the request's whole limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<u64>,
    /// Seconds a response that has started may send nothing before it is cut;
    /// `None`: no limit but the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_seconds: Option<u64>,
    /// Most requests one instance serves at once; `None` takes the default for the
    /// workload's kind.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Requests each instance is aimed to carry, at most `concurrency` (Knative's
    /// `target`); `None`: `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<u32>,
    /// Percent of the target the instance count is planned for (Knative's
    /// `target-utilization-percentage`); `None`: 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization_percentage: Option<u32>,
    /// Seconds a lower instance count must hold before the container scales down
    /// to it (Knative's `scale-down-delay`); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<u64>,
    /// Instances a new revision starts with before any request (Knative's
    /// `initial-scale`); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_scale: Option<u32>,
    /// Hosts a wasm guest may send HTTP requests to (`host:port`,
    /// `http://host[:port]`, `https://host[:port]`; Spin's
    /// `allowed_outbound_hosts`); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// Whether OCI instances speak HTTP/2 with prior knowledge (h2c) rather than
    /// HTTP/1.1 (Cloud Run's end-to-end HTTP/2, Knative's `h2c` port): gRPC
    /// servers do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// Health probes of its instances.
    #[serde(default, flatten)]
    pub probes: super::Probes,
    /// What the autoscaler counts against each instance's target.
    #[serde(default, skip_serializing_if = "AutoscalingMetric::is_default")]
    pub metric: AutoscalingMetric,
    /// Requests a second each instance is aimed at, when `metric` is `rps`;
    /// `None`: 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_requests_per_second: Option<u32>,
    /// Most requests waiting for an instance; more are refused with 503.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: u32,
    /// OCI sandboxes kept created ahead of need, so that a cold start only starts one.
    #[serde(default = "default_prepared_sandboxes")]
    pub prepared_sandboxes: u32,
    /// Whether an OCI instance's PID 1 is Ember's init, which runs the workload as
    /// its child (as `docker run --init`), or the workload itself.
    #[serde(default = "default_init")]
    pub init: bool,
    /// What OCI instances change in the default capabilities (Podman's set).
    #[serde(default, skip_serializing_if = "CapabilityChanges::is_empty")]
    pub capabilities: CapabilityChanges,
    /// Whether OCI instances run in a user namespace, their root an unprivileged
    /// host user; `false` (host ids) only where the operator allows it.
    #[serde(default = "default_user_namespace")]
    pub user_namespace: bool,
}

/// What a container's autoscaler counts (Knative's `metric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingMetric {
    /// Requests in flight or waiting, against `targetConcurrency`.
    #[default]
    Concurrency,
    /// Requests arriving a second, against `targetRequestsPerSecond`.
    Rps,
}

impl AutoscalingMetric {
    fn is_default(&self) -> bool {
        *self == Self::Concurrency
    }

    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Rps => "rps",
        }
    }
}

impl std::str::FromStr for AutoscalingMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "concurrency" => Ok(Self::Concurrency),
            "rps" => Ok(Self::Rps),
            other => Err(format!("\"{other}\" is not \"concurrency\" or \"rps\"")),
        }
    }
}

fn default_init() -> bool {
    true
}

fn default_user_namespace() -> bool {
    true
}

fn default_queue_depth() -> u32 {
    ContainerSpec::DEFAULT_QUEUE_DEPTH
}

fn default_prepared_sandboxes() -> u32 {
    ContainerSpec::DEFAULT_PREPARED_SANDBOXES
}

/// Default values for fields a create request leaves out.
impl ContainerSpec {
    /// CPUs when none are asked for.
    pub const DEFAULT_CPU: f64 = 1.0;
    /// Memory when none is asked for (as Cloud Run).
    pub const DEFAULT_RAM: &str = "512Mi";
    /// Disk when none is asked for.
    pub const DEFAULT_EPHEMERAL_STORAGE: &str = "1Gi";
    /// Port when none is given (as Cloud Run).
    pub const DEFAULT_PORT: u16 = 8080;
    /// Requests a second each instance is aimed at on metric `rps`, when the
    /// container sets none (Knative's).
    pub const DEFAULT_TARGET_REQUESTS_PER_SECOND: u32 = ember_scheduler::DEFAULT_RPS_TARGET;
    /// Upper bound of instances when none is given.
    pub const DEFAULT_MAX_INSTANCES: u32 = 100;
    /// The most instances a container may ask for, as minimum or maximum.
    pub const MAX_INSTANCES: u32 = 1000;
    /// Requests an OCI instance serves at once when none is given.
    pub const DEFAULT_OCI_CONCURRENCY: u32 = 100;
    /// Requests a wasm instance serves at once when none is given.
    pub const DEFAULT_WASM_CONCURRENCY: u32 = 1000;
    /// Requests that may wait for an instance when none is given.
    pub const DEFAULT_QUEUE_DEPTH: u32 = 1000;
    /// Sandboxes an OCI container keeps prepared when no number is given: one makes
    /// a cold start from zero fast, at the cost of a created container (its mounts,
    /// cgroups and a waiting init process, but no workload process).
    pub const DEFAULT_PREPARED_SANDBOXES: u32 = 1;

    /// Percent of the target the instance count is planned for (70 unless set).
    pub fn target_utilization_percent(&self) -> u32 {
        self.target_utilization_percentage
            .unwrap_or(ember_scheduler::autoscaler::TARGET_UTILIZATION_PERCENT)
    }

    /// Requests one instance serves at once, for a workload of `kind`.
    pub fn concurrency_for(&self, kind: ember_sandbox::WorkloadKind) -> u32 {
        self.concurrency.unwrap_or(match kind {
            ember_sandbox::WorkloadKind::Wasm => Self::DEFAULT_WASM_CONCURRENCY,
            ember_sandbox::WorkloadKind::Oci => Self::DEFAULT_OCI_CONCURRENCY,
        })
    }
}
