//! `/v1/containers`: the native container API.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::pagination::{ListEnvelope, page_request};
use crate::path_ids::ContainerIdPath;
use crate::wire::rfc3339;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ember_runtime::model::{
    AutoscalingMetric, CdiDeviceName, ContainerName, ContainerPatch, ContainerQuery, ContainerSpec,
    ContainerStatus, Probe, Revision,
};
use ember_runtime::model::{CapabilityChanges, CapabilityName};
use ember_runtime::{ContainerView, Runtime, TrafficTarget};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashMap};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(revisions))
        .routes(routes!(container_metrics))
}

/// One container's series in Prometheus text, for its owner (or an admin): what
/// `/metrics` shows of it to a scraper with the `metrics` scope.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/metrics",
    tag = "containers",
    summary = "A container's metrics (Prometheus text)",
    params(("id" = String, Path, description = "The container's id (a UUID)")),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String))
)]
async fn container_metrics(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ContainerIdPath(id): ContainerIdPath,
) -> Result<impl IntoResponse, ApiError> {
    let text = runtime.container_metrics_text(&caller, id).await?;
    Ok(crate::prometheus_text(text))
}

/// The list's filters, page and cursor.
fn container_query(query: &HashMap<String, String>) -> Result<ContainerQuery, ApiError> {
    let page = page_request(query)?;
    let after = query.get("continue").cloned();
    if after.is_some() && query.contains_key("page") {
        return Err(ApiError::invalid_field(
            "continue",
            "continues a list after a page: give it or `page`, not both",
        ));
    }
    let status = query
        .get("status")
        .map(|raw| match raw.as_str() {
            "deploying" => Ok(ContainerStatus::Deploying),
            "deployed" => Ok(ContainerStatus::Deployed),
            "failed" => Ok(ContainerStatus::Failed),
            _ => Err(ApiError::invalid_field(
                "status",
                format!("`{raw}` is not a status (deploying, deployed or failed)"),
            )),
        })
        .transpose()?;
    let name_prefix = query
        .get("namePrefix")
        .map(|raw| {
            let fits = !raw.is_empty()
                && raw.len() <= ContainerName::MAX_LEN
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if fits {
                Ok(raw.clone())
            } else {
                Err(ApiError::invalid_field(
                    "namePrefix",
                    format!(
                        "`{raw}` cannot begin a container name (1 to {} lower-case letters, digits and hyphens)",
                        ContainerName::MAX_LEN
                    ),
                ))
            }
        })
        .transpose()?;
    let name = query
        .get("name")
        .map(|raw| {
            raw.parse::<ContainerName>()
                .map_err(|e| ApiError::invalid_field("name", e.to_string()))
        })
        .transpose()?;
    Ok(ContainerQuery {
        owner: None,
        status,
        name_prefix,
        name,
        page,
        after,
    })
}

#[utoipa::path(
    get,
    path = "/v1/containers",
    tag = "containers",
    summary = "The caller's containers, oldest first (by name with namePrefix)",
    params(
        ("page" = Option<u32>, Query, description = "Page number, from 1"),
        ("rowsPerPage" = Option<u32>, Query, description = "Items per page"),
        ("continue" = Option<String>, Query, description = "Continue after the page that answered this cursor (its `continue`), instead of a page number"),
        ("status" = Option<String>, Query, description = "Only containers in this status: deploying, deployed or failed"),
        ("namePrefix" = Option<String>, Query, description = "Only containers whose name starts with this; the list is then in name order"),
        ("name" = Option<String>, Query, description = "Only the container with this name"),
    ),
    responses((status = 200, description = "A page of containers", body = ListEnvelope<ContainerJson>))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let page = runtime
        .list_containers(&caller, container_query(&query)?)
        .await?;
    Ok(Json(ListEnvelope::from_page(page, |c| {
        ContainerJson::from_view(&runtime, c)
    })))
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}",
    tag = "containers",
    summary = "One container",
    params(("id" = String, Path, description = "The container's id (a UUID)")),
    responses((status = 200, description = "The container", body = ContainerJson))
)]
async fn show(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ContainerIdPath(id): ContainerIdPath,
) -> Result<impl IntoResponse, ApiError> {
    let view = runtime.get_container(&caller, id).await?;
    Ok(Json(ContainerJson::from_view(&runtime, view)))
}

#[utoipa::path(
    post,
    path = "/v1/containers",
    tag = "containers",
    summary = "Creates a container and deploys its first revision",
    request_body = serde_json::Value,
    responses((status = 201, description = "The container, deploying", body = ContainerJson))
)]
async fn create(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    StrictJson(body): StrictJson<ContainerRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if body.traffic.is_some() {
        return Err(invalid(
            "traffic",
            "is moved on a container that has revisions: PUT /v1/containers/{id} with traffic alone",
        ));
    }
    let patch = body.into_patch()?;
    let view = runtime.create_container(&caller, patch).await?;
    Ok((
        StatusCode::CREATED,
        Json(ContainerJson::from_view(&runtime, view)),
    ))
}

#[utoipa::path(
    put,
    path = "/v1/containers/{id}",
    tag = "containers",
    summary = "Updates a container: a new revision; or, with `traffic` alone, moves its traffic (no new revision)",
    params(("id" = String, Path, description = "The container's id (a UUID)")),
    request_body = serde_json::Value,
    responses((status = 200, description = "The container, deploying the new revision (or serving the one traffic went to)", body = ContainerJson))
)]
async fn update(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ContainerIdPath(id): ContainerIdPath,
    StrictJson(mut body): StrictJson<ContainerRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(traffic) = body.traffic.take() {
        let target = traffic_target(&traffic)?;
        if body.into_patch()? != ContainerPatch::default() {
            return Err(invalid(
                "traffic",
                "is changed in a request of its own: a PUT with `traffic` and any other field is refused",
            ));
        }
        let view = runtime.set_traffic(&caller, id, target).await?;
        return Ok(Json(ContainerJson::from_view(&runtime, view)));
    }
    let patch = body.into_patch()?;
    let view = runtime.update_container(&caller, id, patch).await?;
    Ok(Json(ContainerJson::from_view(&runtime, view)))
}

#[utoipa::path(
    delete,
    path = "/v1/containers/{id}",
    tag = "containers",
    summary = "Deletes a container (ADMIN or its creator)",
    params(("id" = String, Path, description = "The container's id (a UUID)")),
    responses((status = 204, description = "Deleted"))
)]
async fn remove(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ContainerIdPath(id): ContainerIdPath,
) -> Result<impl IntoResponse, ApiError> {
    runtime.delete_container(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/revisions",
    tag = "containers",
    summary = "A container's revisions, newest first",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("page" = Option<u32>, Query, description = "Page number, from 1"), ("rowsPerPage" = Option<u32>, Query, description = "Items per page")),
    responses((status = 200, description = "A page of revisions", body = ListEnvelope<RevisionJson>))
)]
async fn revisions(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ContainerIdPath(id): ContainerIdPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let page = runtime
        .list_revisions(&caller, id, page_request(&query)?)
        .await?;
    Ok(Json(ListEnvelope::from_page(page, RevisionJson::from)))
}

/// The body of POST and PUT. Every field is optional here; POST needs `name` and
/// `image`, PUT changes only what it names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ContainerRequest {
    name: Option<String>,
    image: Option<String>,
    cpu: Option<f64>,
    ram: Option<String>,
    gpu: Option<u32>,
    ephemeral_storage: Option<String>,
    #[serde(default, deserialize_with = "present")]
    command: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    arguments: Option<Option<Vec<String>>>,
    env: Option<BTreeMap<String, String>>,
    port: Option<PortValue>,
    #[serde(rename = "desiredGPUs", default, deserialize_with = "present")]
    desired_gpus: Option<Option<Vec<String>>>,
    cdi_devices: Option<Vec<String>>,
    min_instances: Option<u32>,
    max_instances: Option<u32>,
    idle_timeout_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
    response_start_timeout_seconds: Option<u64>,
    stream_idle_timeout_seconds: Option<u64>,
    concurrency: Option<u32>,
    target_concurrency: Option<u32>,
    target_utilization_percentage: Option<u32>,
    scale_down_delay_seconds: Option<u64>,
    initial_scale: Option<u32>,
    allowed_outbound_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    startup_probe: Option<Option<Probe>>,
    #[serde(default, deserialize_with = "present")]
    readiness_probe: Option<Option<Probe>>,
    #[serde(default, deserialize_with = "present")]
    liveness_probe: Option<Option<Probe>>,
    http2: Option<bool>,
    metric: Option<String>,
    traffic: Option<Vec<TrafficEntry>>,
    target_requests_per_second: Option<u32>,
    queue_depth: Option<u32>,
    prepared_sandboxes: Option<u32>,
    init: Option<bool>,
    capabilities: Option<CapabilitiesRequest>,
    user_namespace: Option<bool>,
}

/// One target of `traffic`: a revision (by number, or the latest) and its share.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TrafficEntry {
    revision_number: Option<u32>,
    latest_revision: Option<bool>,
    percent: u32,
}

/// Where `traffic` sends requests. One target takes all of them: splitting
/// between revisions is refused, naming `traffic`, until it is built.
fn traffic_target(entries: &[TrafficEntry]) -> Result<TrafficTarget, ApiError> {
    let [entry] = entries else {
        return Err(invalid(
            "traffic",
            "lists one target taking 100 percent: splitting traffic between revisions is not supported yet",
        ));
    };
    if entry.percent != 100 {
        return Err(invalid(
            "traffic[0].percent",
            format!(
                "{} is not 100: one target takes all the traffic",
                entry.percent
            ),
        ));
    }
    match (entry.revision_number, entry.latest_revision) {
        (Some(number), None | Some(false)) if number > 0 => Ok(TrafficTarget::Revision(number)),
        (None, Some(true)) => Ok(TrafficTarget::Latest),
        _ => Err(invalid(
            "traffic[0]",
            "names either `revisionNumber` (from 1) or `latestRevision: true`",
        )),
    }
}

/// `capabilities`: names added to and dropped from the default set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesRequest {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    drop: Vec<String>,
}

impl CapabilitiesRequest {
    /// Each name parsed, a bad one refused under its place (`capabilities.add[1]`).
    fn parse(self) -> Result<CapabilityChanges, ApiError> {
        let names = |list: Vec<String>, field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, name)| {
                    name.parse::<CapabilityName>()
                        .map_err(|e| invalid(&format!("capabilities.{field}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(CapabilityChanges {
            add: names(self.add, "add")?,
            drop: names(self.drop, "drop")?,
        })
    }
}

/// The port may be written as the document does (`"80"`) or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Number(u64),
    Text(String),
}

/// Distinguishes a field set to `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn invalid(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_field(field, e.to_string())
}

impl ContainerRequest {
    /// Parses each field into the model's types and checks the patch with the
    /// model's rules ([`ContainerPatch::validate`]), before anything is looked up.
    pub(crate) fn into_patch(self) -> Result<ContainerPatch, ApiError> {
        let name = self
            .name
            .map(|n| n.parse().map_err(|e| invalid("name", e)))
            .transpose()?;
        let ram = self
            .ram
            .map(|r| r.parse().map_err(|e| invalid("ram", e)))
            .transpose()?;
        let ephemeral_storage = self
            .ephemeral_storage
            .map(|r| r.parse().map_err(|e| invalid("ephemeralStorage", e)))
            .transpose()?;
        let port = self
            .port
            .map(|p| match p {
                PortValue::Number(n) => ContainerPatch::parse_port(&n.to_string()),
                PortValue::Text(t) => ContainerPatch::parse_port(&t),
            })
            .transpose()?;
        let cdi_devices = self
            .cdi_devices
            .map(|names| {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        name.parse::<CdiDeviceName>()
                            .map_err(|e| invalid(&format!("cdiDevices[{i}]"), e))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let patch = ContainerPatch {
            name,
            image: self.image,
            cpu: self.cpu,
            ram,
            gpu: self.gpu,
            ephemeral_storage,
            command: self.command,
            arguments: self.arguments,
            env: self.env,
            port,
            desired_gpus: self.desired_gpus,
            cdi_devices,
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            idle_timeout_seconds: self.idle_timeout_seconds,
            timeout_seconds: self.timeout_seconds,
            response_start_timeout_seconds: self.response_start_timeout_seconds,
            stream_idle_timeout_seconds: self.stream_idle_timeout_seconds,
            concurrency: self.concurrency,
            target_concurrency: self.target_concurrency,
            target_utilization_percentage: self.target_utilization_percentage,
            scale_down_delay_seconds: self.scale_down_delay_seconds,
            initial_scale: self.initial_scale,
            allowed_outbound_hosts: self.allowed_outbound_hosts,
            startup_probe: self.startup_probe,
            readiness_probe: self.readiness_probe,
            liveness_probe: self.liveness_probe,
            http2: self.http2,
            metric: self
                .metric
                .map(|m| m.parse().map_err(|e: String| invalid("metric", e)))
                .transpose()?,
            target_requests_per_second: self.target_requests_per_second,
            queue_depth: self.queue_depth,
            prepared_sandboxes: self.prepared_sandboxes,
            init: self.init,
            user_namespace: self.user_namespace,
            capabilities: self
                .capabilities
                .map(CapabilitiesRequest::parse)
                .transpose()?,
        };
        patch.validate()?;
        Ok(patch)
    }
}

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
struct RevisionJson {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(body: serde_json::Value) -> Result<ContainerPatch, ApiError> {
        serde_json::from_value::<ContainerRequest>(body)
            .expect("the body deserialises")
            .into_patch()
    }

    fn refused_field(body: serde_json::Value) -> String {
        let error = patch(body.clone()).expect_err(&body.to_string());
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body}");
        error.field().unwrap_or_default().to_string()
    }

    #[test]
    fn an_empty_body_changes_nothing() {
        let p = patch(json!({})).unwrap();
        assert!(p.name.is_none() && p.image.is_none() && p.port.is_none());
        assert!(p.command.is_none() && p.env.is_none() && p.cdi_devices.is_none());
    }

    #[test]
    fn wire_values_become_the_models_types() {
        let p = patch(json!({
            "name": "hello", "image": "a/b:1", "cpu": 0.5, "ram": "256Mi",
            "ephemeralStorage": "2Gi", "port": "80", "env": { "A": "b" },
            "cdiDevices": ["vendor.com/class=name"], "minInstances": 1, "maxInstances": 3,
        }))
        .unwrap();
        assert_eq!(p.name.unwrap().as_str(), "hello");
        assert_eq!(p.image.as_deref(), Some("a/b:1"));
        assert_eq!(p.ram.unwrap().bytes(), 256 << 20);
        assert_eq!(p.ephemeral_storage.unwrap().bytes(), 2 << 30);
        assert_eq!(p.port, Some(80));
        assert_eq!(
            p.cdi_devices.unwrap()[0].to_string(),
            "vendor.com/class=name"
        );
        assert_eq!((p.min_instances, p.max_instances), (Some(1), Some(3)));
        // A port may be a number as well as text.
        assert_eq!(patch(json!({ "port": 8081 })).unwrap().port, Some(8081));
    }

    #[test]
    fn null_clears_a_list_and_absence_keeps_it() {
        let cleared = patch(json!({ "command": null, "desiredGPUs": null })).unwrap();
        assert_eq!(cleared.command, Some(None));
        assert_eq!(cleared.desired_gpus, Some(None));
        assert_eq!(cleared.arguments, None);
        let set = patch(json!({ "arguments": ["-v"] })).unwrap();
        assert_eq!(set.arguments, Some(Some(vec!["-v".to_string()])));
    }

    #[test]
    fn values_that_do_not_parse_name_their_field() {
        assert_eq!(refused_field(json!({ "name": "Not_DNS" })), "name");
        assert_eq!(refused_field(json!({ "ram": "lots" })), "ram");
        assert_eq!(
            refused_field(json!({ "ephemeralStorage": "1.5Gi" })),
            "ephemeralStorage"
        );
        assert_eq!(refused_field(json!({ "port": "http" })), "port");
        assert_eq!(refused_field(json!({ "port": 70000 })), "port");
        assert_eq!(
            refused_field(json!({ "cdiDevices": ["vendor.com/class=ok", "bad"] })),
            "cdiDevices[1]"
        );
    }

    #[test]
    fn the_models_rules_apply_before_anything_is_looked_up() {
        assert_eq!(refused_field(json!({ "cpu": 0 })), "cpu");
        assert_eq!(refused_field(json!({ "port": 0 })), "port");
        assert_eq!(refused_field(json!({ "maxInstances": 0 })), "maxInstances");
        assert_eq!(refused_field(json!({ "env": { "": "x" } })), "env.");
        assert_eq!(
            refused_field(json!({ "preparedSandboxes": 9 })),
            "preparedSandboxes"
        );
    }

    #[test]
    fn unknown_fields_do_not_deserialise() {
        let error = serde_json::from_value::<ContainerRequest>(json!({ "status": "deployed" }))
            .err()
            .expect("an unknown field is refused");
        assert!(error.to_string().contains("status"), "{error}");
    }
}
