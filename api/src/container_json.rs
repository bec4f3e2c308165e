//! A container and its revisions as the native container API shows them.

use crate::wire::rfc3339;
use ember_runtime::model::{AutoscalingMetric, ContainerSpec, Revision};
use ember_runtime::{ContainerView, Runtime};
use serde::Serialize;
use std::collections::BTreeMap;

/// One target of a container's traffic, as shown.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TrafficJson {
    revision_number: u32,
    latest_revision: bool,
    percent: u32,
}

/// Capability names added to and dropped from the default set (Podman's).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CapabilitiesJson {
    add: Vec<String>,
    drop: Vec<String>,
}

/// A container as the native container API shows it, plus Ember's scaling fields.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerJson {
    id: String,
    name: String,
    created_by: String,
    image: String,
    #[schema(value_type = f64)]
    cpu: serde_json::Number,
    ram: String,
    gpu: u32,
    ephemeral_storage: String,
    command: Option<Vec<String>>,
    arguments: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    port: String,
    date_created: String,
    date_updated: String,
    /// `deploying`, `deployed` or `failed`.
    #[schema(value_type = String)]
    status: ember_runtime::model::ContainerStatus,
    status_reason: Option<String>,
    urls: Option<Vec<String>>,
    #[serde(rename = "desiredGPUs")]
    desired_gpus: Option<Vec<String>>,
    /// CDI devices every instance gets, by qualified name.
    cdi_devices: Vec<String>,
    min_instances: u32,
    max_instances: u32,
    idle_timeout_seconds: u64,
    /// Seconds a request may run (the runtime's `--request-timeout` when the
    /// container sets none).
    timeout_seconds: u64,
    /// Seconds until a response starts; `null`: the whole request's limit.
    response_start_timeout_seconds: Option<u64>,
    /// Seconds a started response may send nothing; `null`: no limit.
    stream_idle_timeout_seconds: Option<u64>,
    /// `null`: the default for the workload's kind.
    concurrency: Option<u32>,
    /// Requests each instance is aimed to carry; `null`: `concurrency`.
    target_concurrency: Option<u32>,
    /// Percent of the target the count is planned for.
    target_utilization_percentage: u32,
    /// Seconds a lower count holds before a scale-down.
    scale_down_delay_seconds: u64,
    /// Instances a new revision starts with before any request.
    initial_scale: u32,
    /// Hosts a wasm guest may send HTTP requests to.
    allowed_outbound_hosts: Vec<String>,
    /// Whether OCI instances speak HTTP/2 with prior knowledge (h2c).
    http2: bool,
    /// Where requests go: the revision serving and its share (`latestRevision`:
    /// it follows each new revision; otherwise traffic is pinned to it).
    traffic: Vec<TrafficJson>,
    /// Probes of the instances' health (`startupProbe`, `readinessProbe`,
    /// `livenessProbe`), as set.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    probes: serde_json::Value,
    /// What the autoscaler counts: `concurrency` or `rps`.
    metric: &'static str,
    /// Requests a second each instance is aimed at (`metric` `rps`); `null`
    /// otherwise.
    target_requests_per_second: Option<u32>,
    queue_depth: u32,
    prepared_sandboxes: u32,
    /// Whether OCI instances run under Ember's init (PID 1 passes signals on to the
    /// workload and reaps orphans).
    init: bool,
    /// What OCI instances add to and drop from the default capabilities.
    capabilities: CapabilitiesJson,
    /// Whether OCI instances run in a user namespace (their root is not host root).
    user_namespace: bool,
    pinned_instances: u32,
    restarts: u32,
}

impl ContainerJson {
    pub(crate) fn from_view(runtime: &Runtime, view: ContainerView) -> Self {
        let c = view.container;
        let spec = c.spec;
        let target_utilization_percentage = spec.target_utilization_percent();
        Self {
            id: c.id.to_string(),
            name: spec.name.to_string(),
            created_by: c.created_by.to_string(),
            image: spec.image,
            cpu: number(spec.cpu),
            ram: spec.ram.to_string(),
            gpu: spec.gpu,
            ephemeral_storage: spec.ephemeral_storage.to_string(),
            command: spec.command,
            arguments: spec.arguments,
            env: spec.env,
            port: spec.port.to_string(),
            date_created: rfc3339(c.date_created),
            date_updated: rfc3339(c.date_updated),
            status: c.status,
            status_reason: c.status_reason,
            urls: view.urls,
            desired_gpus: spec.desired_gpus,
            cdi_devices: spec.cdi_devices.iter().map(ToString::to_string).collect(),
            min_instances: spec.min_instances,
            max_instances: spec.max_instances,
            idle_timeout_seconds: spec
                .idle_timeout_seconds
                .unwrap_or(runtime.config().default_idle_timeout.as_secs()),
            timeout_seconds: spec
                .timeout_seconds
                .unwrap_or(runtime.config().request_timeout.as_secs()),
            response_start_timeout_seconds: spec.response_start_timeout_seconds,
            stream_idle_timeout_seconds: spec.stream_idle_timeout_seconds,
            concurrency: spec.concurrency,
            target_concurrency: spec.target_concurrency,
            target_utilization_percentage,
            scale_down_delay_seconds: spec.scale_down_delay_seconds.unwrap_or(0),
            initial_scale: spec.initial_scale.unwrap_or(0),
            allowed_outbound_hosts: spec.allowed_outbound_hosts,
            http2: spec.http2,
            traffic: c
                .serving_revision
                .map(|number| TrafficJson {
                    revision_number: number,
                    latest_revision: c.traffic_revision.is_none(),
                    percent: 100,
                })
                .into_iter()
                .collect(),
            probes: serde_json::to_value(&spec.probes).unwrap_or_default(),
            metric: spec.metric.name(),
            target_requests_per_second: (spec.metric == AutoscalingMetric::Rps).then(|| {
                spec.target_requests_per_second
                    .unwrap_or(ContainerSpec::DEFAULT_TARGET_REQUESTS_PER_SECOND)
            }),
            queue_depth: spec.queue_depth,
            prepared_sandboxes: spec.prepared_sandboxes,
            init: spec.init,
            user_namespace: spec.user_namespace,
            capabilities: CapabilitiesJson {
                add: spec
                    .capabilities
                    .add
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                drop: spec
                    .capabilities
                    .drop
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            pinned_instances: c.pinned_instances,
            restarts: view.restarts,
        }
    }
}

/// Whole numbers print as integers (`1`, as the document shows), others as decimals.
fn number(value: f64) -> serde_json::Number {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        serde_json::Number::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).unwrap_or_else(|| serde_json::Number::from(0))
    }
}

/// One revision, as the native container API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevisionJson {
    #[serde(rename = "containerID")]
    container_id: String,
    revision_number: u32,
    image: String,
    date_created: String,
}

impl From<Revision> for RevisionJson {
    fn from(r: Revision) -> Self {
        Self {
            container_id: r.container_id.to_string(),
            revision_number: r.number,
            image: r.spec.image,
            date_created: rfc3339(r.date_created),
        }
    }
}
