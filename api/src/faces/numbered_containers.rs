//! The numbered containers face, `/api/containers/{id}`: one instance, by integer id, with its stats,
//! power actions, logs, processes and CPU and memory series.

use super::LogRow;
use super::{LogQuery, metrics_time, names_by_id, unique_name, wants_to_run};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::path_ids::{NumberPath, PowerActionPath};
use crate::wire::rfc3339;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use ember_runtime::model::{Caller, InstanceInfo, InstanceState, Scope};
use ember_runtime::{ContainerView, ProcessInfo, Runtime, UsageSample};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(power))
        .routes(routes!(logs))
        .routes(routes!(processes))
        .routes(routes!(metrics))
}

/// The instance with integer id `number` and its container, if the caller may see
/// them.
async fn find(
    runtime: &Runtime,
    caller: &Caller,
    number: u64,
) -> Result<(ContainerView, InstanceInfo), ApiError> {
    Ok(runtime.find_instance_by_number(caller, number).await?)
}

/// The numbered containers face's `current_state` of an instance.
fn current_state(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Starting => "starting",
        InstanceState::Running => "online",
        InstanceState::Stopping | InstanceState::Terminating => "stopping",
        InstanceState::Stopped | InstanceState::Terminated => "offline",
    }
}

/// The numbered containers face's view of one instance.
#[derive(Serialize, ToSchema)]
pub(crate) struct NumberedInstance {
    /// Its integer id.
    id: u64,
    /// `<container>-<n>`.
    name: String,
    /// `running` or `stopped`.
    req_state: &'static str,
    stats: Stats,
    /// `starting`, `online`, `stopping` or `offline`.
    current_state: &'static str,
    /// An OCI instance's bridge address; `null` for wasm.
    local_ip: Option<String>,
    /// Always `null`: Ember has no public addresses.
    public_ip: Option<String>,
    created_at: String,
    updated_at: String,
    ingress_rules: Vec<IngressRule>,
}

/// CPU (percent of one CPU) and memory (MiB).
#[derive(Serialize, ToSchema)]
struct Stats {
    cpu: f64,
    mem: f64,
}

/// The container's ingress, as one rule.
#[derive(Serialize, ToSchema)]
struct IngressRule {
    id: u64,
    port: u16,
    port_nat: u16,
    proto: &'static str,
    external_access: bool,
    backend_ssl: bool,
    tcp_proxy_opt: &'static str,
    redirect_ssl: bool,
    restrict_cf: bool,
    tcp_lb: bool,
    created_at: String,
    updated_at: String,
    container_service_id: u64,
    load_balancer_rule_id: Option<u64>,
    internal_load_balancer_id: Option<u64>,
    load_balanced_rules: Vec<u64>,
}

/// `{"containers": [...]}`, as the numbered containers face wraps instances.
#[derive(Serialize, ToSchema)]
pub(crate) struct Containers {
    containers: Vec<NumberedInstance>,
}

impl Containers {
    pub(crate) fn new(containers: Vec<NumberedInstance>) -> Self {
        Self { containers }
    }
}

/// One instance as the numbered containers face shows it.
pub(crate) fn instance_json(
    runtime: &Runtime,
    view: &ContainerView,
    instance: &InstanceInfo,
    usage: Option<UsageSample>,
) -> NumberedInstance {
    let container = &view.container;
    let service_id = container.id.number();
    NumberedInstance {
        id: instance.id.number(),
        name: unique_name(container.spec.name.as_str(), instance),
        req_state: if wants_to_run(instance.state) {
            "running"
        } else {
            "stopped"
        },
        stats: Stats {
            cpu: usage.map_or(0.0, |u| round2(u.cpu_percent)),
            mem: usage.map_or(0.0, |u| mebibytes(u.memory_bytes)),
        },
        current_state: current_state(instance.state),
        local_ip: instance.address.map(|a| a.ip().to_string()),
        public_ip: None,
        created_at: rfc3339(instance.created),
        updated_at: rfc3339(instance.state_changed),
        ingress_rules: vec![IngressRule {
            id: service_id,
            port: runtime.config().ingress_port,
            port_nat: container.spec.port,
            proto: "http",
            external_access: true,
            backend_ssl: false,
            tcp_proxy_opt: "none",
            redirect_ssl: false,
            restrict_cf: false,
            tcp_lb: false,
            created_at: rfc3339(container.date_created),
            updated_at: rfc3339(container.date_updated),
            container_service_id: service_id,
            load_balancer_rule_id: None,
            internal_load_balancer_id: None,
            load_balanced_rules: Vec::new(),
        }],
    }
}

fn mebibytes(bytes: u64) -> f64 {
    round2(bytes as f64 / (1 << 20) as f64)
}

/// One row of `ps -ef`, with pids as the instance sees them.
#[derive(Serialize, ToSchema)]
#[allow(non_snake_case)]
pub(crate) struct ProcessRow {
    /// The owner (`root` for 0, else the number).
    UID: String,
    PID: i64,
    /// 0 for the init.
    PPID: i64,
    /// Lifetime CPU use, percent.
    C: i64,
    /// `HH:MM` UTC today, else the date.
    STIME: String,
    /// `?` for none.
    TTY: String,
    /// CPU time, `[DD-]HH:MM:SS`.
    TIME: String,
    CMD: String,
}

impl From<ProcessInfo> for ProcessRow {
    fn from(p: ProcessInfo) -> Self {
        Self {
            UID: p.user,
            PID: p.pid,
            PPID: p.parent_pid,
            C: p.cpu_percent,
            STIME: p.start_time,
            TTY: p.tty,
            TIME: p.cpu_time,
            CMD: p.command,
        }
    }
}

/// A metric's series: `[time, value]` pairs, oldest first.
#[derive(Serialize, ToSchema)]
struct Series {
    /// `[time, value]` pairs; described as arrays of any value, since utoipa draws a
    /// tuple as an `items` list, which OpenAPI 3.1 does not allow.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    stats: Vec<(String, f64)>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[utoipa::path(
    get,
    path = "/api/containers/{id}",
    tag = "numbered containers",
    summary = "One instance, by integer id. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id")),
    responses((status = 200, description = "The instance", body = Containers))
)]
async fn show(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
) -> Result<Json<Containers>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let (view, instance) = find(&runtime, &caller, id?.0).await?;
    let usage = runtime
        .instance_usage_now(&caller, view.container.id, instance.id)
        .await?;
    Ok(Json(Containers::new(vec![instance_json(
        &runtime, &view, &instance, usage,
    )])))
}

#[utoipa::path(
    put,
    path = "/api/containers/{id}/power/{action}",
    tag = "numbered containers",
    summary = "A power action on the instance. Needs the projects_write scope.",
    params(("id" = u64, Path, description = "The integer id"), ("action" = String, Path, description = "start, stop, restart or rebuild")),
    responses((status = 202, description = "The instance, in the action's first state", body = Containers))
)]
async fn power(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    action: Result<PowerActionPath, ApiError>,
) -> Result<(StatusCode, Json<Containers>), ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let PowerActionPath(action) = action?;
    let NumberPath(id) = id?;
    let (view, instance) = find(&runtime, &caller, id).await?;
    runtime
        .power_instance(&caller, view.container.id, instance.id, action)
        .await?;
    let (view, instance) = find(&runtime, &caller, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Containers::new(vec![instance_json(
            &runtime, &view, &instance, None,
        )])),
    ))
}

#[utoipa::path(
    get,
    path = "/api/containers/{id}/logs",
    tag = "numbered containers",
    summary = "The instance's lines as [timestamp, name, line], newest first. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id"), LogQuery),
    responses((status = 200, description = "The rows", body = Vec<Vec<serde_json::Value>>))
)]
async fn logs(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<Vec<LogRow>>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let Query(query) = query?;
    let range = query.range()?;
    let (view, instance) = find(&runtime, &caller, id?.0).await?;
    // The instance runs here (it was found here): its lines are here.
    let entries = runtime
        .read_instance_logs(
            &caller,
            view.container.id,
            instance.id,
            range,
            ember_runtime::Reach::ThisNode,
        )
        .await?;
    let names = names_by_id(view.container.spec.name.as_str(), &[instance]);
    Ok(Json(query.rows(entries, &names)?))
}

#[utoipa::path(
    get,
    path = "/api/containers/{id}/container_processes",
    tag = "numbered containers",
    summary = "The processes in the instance, as ps -ef columns. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id")),
    responses((status = 200, description = "The processes", body = Vec<ProcessRow>))
)]
async fn processes(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
) -> Result<Json<Vec<ProcessRow>>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let (view, instance) = find(&runtime, &caller, id?.0).await?;
    let processes = runtime
        .instance_processes(&caller, view.container.id, instance.id)
        .await?;
    Ok(Json(processes.into_iter().map(ProcessRow::from).collect()))
}

#[utoipa::path(
    get,
    path = "/api/containers/{id}/metrics/{kind}",
    tag = "numbered containers",
    summary = "The instance's cpu (percent) or memory (MiB) series. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id"), ("kind" = String, Path, description = "cpu or memory")),
    responses((status = 200, description = "The series", body = Series))
)]
async fn metrics(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    Path((_, kind)): Path<(String, String)>,
) -> Result<Json<Series>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let value: fn(&UsageSample) -> f64 = match kind.as_str() {
        "cpu" => |s| round2(s.cpu_percent),
        "memory" => |s| mebibytes(s.memory_bytes),
        _ => {
            return Err(ApiError::not_found(format!(
                "no metric `{kind}`: there are `cpu` (percent of one CPU) and `memory` (MiB)"
            )));
        }
    };
    let (view, instance) = find(&runtime, &caller, id?.0).await?;
    let series = runtime
        .instance_usage(&caller, view.container.id, instance.id)
        .await?;
    let stats = series
        .iter()
        .map(|s| (metrics_time(s.at), value(s)))
        .collect();
    Ok(Json(Series { stats }))
}
