//! The container services face, `/api/container_services`: containers by integer id, with their
//! package, scale, power actions on every instance, and logs.

use super::numbered_containers::{Containers, instance_json};
use super::packages::Package;
use super::{LogQuery, LogRow, names_by_id};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::path_ids::{NumberPath, PowerActionPath};
use crate::wire::rfc3339;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use ember_runtime::model::{
    Caller, ContainerName, ContainerPatch, ContainerQuery, ContainerStatus, InstanceState,
    PageRequest, Scope,
};
use ember_runtime::{ContainerView, Runtime};
use serde::Deserialize;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, update, remove))
        .routes(routes!(containers))
        .routes(routes!(resize))
        .routes(routes!(scale))
        .routes(routes!(power))
        .routes(routes!(logs))
}

async fn find(runtime: &Runtime, caller: &Caller, number: u64) -> Result<ContainerView, ApiError> {
    Ok(runtime.find_container_by_number(caller, number).await?)
}

/// The container services face's `current_state`, from the container's deployment and instances.
fn current_state(view: &ContainerView, running: usize) -> &'static str {
    match view.container.status {
        ContainerStatus::Deploying => "working",
        ContainerStatus::Failed => "alert",
        ContainerStatus::Deployed if running > 0 => "online",
        ContainerStatus::Deployed => "idle",
    }
}

/// One container as the container services face shows it.
#[derive(Serialize, ToSchema)]
struct ContainerService {
    id: u64,
    name: String,
    /// The host its requests go to.
    default_domain: String,
    /// Always `null`: Ember has no public addresses.
    public_ip: Option<String>,
    command: String,
    is_load_balancer: bool,
    has_domain_management: bool,
    /// Always `null`: images are not resources of their own.
    container_image_id: Option<u64>,
    /// `working`, `alert`, `online` or `idle`.
    current_state: &'static str,
    auto_scale: bool,
    auto_scale_horizontal: bool,
    /// `maxInstances` (documented as Boolean; the count is what carries meaning).
    auto_scale_max: u32,
    labels: BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
    /// Always `null`: Ember has no projects.
    project: Option<u64>,
    package: Package,
    has_sftp: bool,
    ingress_rules: Vec<u64>,
    product_id: u64,
    bastions: Vec<u64>,
    domains: Vec<u64>,
    /// Running instances.
    deployed_containers: usize,
    help: Help,
    links: Links,
}

#[derive(Serialize, ToSchema)]
struct Help {
    general: String,
    ssh: String,
    remote: String,
    domain: String,
}

/// URLs that answer.
#[derive(Serialize, ToSchema)]
struct Links {
    containers: String,
    logs: String,
    products: String,
}

/// `{"container_services": [...]}`.
#[derive(Serialize, ToSchema)]
struct ServiceList {
    container_services: Vec<ContainerService>,
}

/// `{"container_service": {...}}`.
#[derive(Serialize, ToSchema)]
struct OneService {
    container_service: ContainerService,
}

/// The answer to a power action on every instance.
#[derive(Serialize, ToSchema)]
struct PowerOutcome {
    action: &'static str,
    /// How many instances it applied to.
    containers: usize,
}

fn service_json(runtime: &Runtime, view: &ContainerView) -> ContainerService {
    let c = &view.container;
    let id = c.id.number();
    let instances = runtime.instances_of(view);
    // In a cluster, with those the other members publish that they run.
    let running = instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count()
        + runtime.instances_elsewhere(c.id) as usize;
    let package = Package::describe(&c.spec);
    let host = view
        .urls
        .as_ref()
        .and_then(|urls| urls.first().cloned())
        .unwrap_or_default();
    let base = format!("/api/container_services/{id}");
    ContainerService {
        id,
        name: c.spec.name.to_string(),
        default_domain: host.clone(),
        public_ip: None,
        command: c
            .spec
            .command
            .as_ref()
            .map(|c| c.join(" "))
            .unwrap_or_default(),
        is_load_balancer: false,
        has_domain_management: false,
        container_image_id: None,
        current_state: current_state(view, running),
        auto_scale: c.spec.max_instances > c.spec.min_instances,
        auto_scale_horizontal: c.spec.max_instances > c.spec.min_instances,
        auto_scale_max: c.spec.max_instances,
        labels: BTreeMap::new(),
        created_at: rfc3339(c.date_created),
        updated_at: rfc3339(c.date_updated),
        project: None,
        product_id: package.id,
        package,
        has_sftp: false,
        ingress_rules: vec![id],
        bastions: Vec::new(),
        domains: Vec::new(),
        deployed_containers: running,
        help: Help {
            general: format!("Requests to http://{host}/ go to this service's instances."),
            ssh: "Ember instances take no SSH connections.".into(),
            remote: format!(
                "Each instance listens on port {} inside its sandbox.",
                c.spec.port
            ),
            domain: format!("The service answers at {host}."),
        },
        links: Links {
            containers: format!("{base}/containers"),
            logs: format!("{base}/logs"),
            products: "/api/products".into(),
        },
    }
}

/// Paging of the service list, which the document does not page: without these,
/// every service (as the document's clients expect); with them, one page.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page number, from 1 (default 1 once `per_page` is given).
    #[param(value_type = Option<u32>)]
    page: Option<String>,
    /// Services per page, 1 to 100 (default 100 once `page` is given).
    #[param(value_type = Option<u32>)]
    per_page: Option<String>,
}

impl ListQuery {
    /// The page asked for, or `None` for every service.
    fn page(&self) -> Result<Option<PageRequest>, ApiError> {
        if self.page.is_none() && self.per_page.is_none() {
            return Ok(None);
        }
        let page = match &self.page {
            None => 1,
            Some(raw) => raw.parse().ok().filter(|&p| p >= 1).ok_or_else(|| {
                ApiError::invalid_field("page", format!("`{raw}` is not a page number (1 or more)"))
            })?,
        };
        let rows_per_page = match &self.per_page {
            None => PageRequest::MAX_ROWS,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|r| (1..=PageRequest::MAX_ROWS).contains(r))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "per_page",
                        format!("`{raw}` is not between 1 and {}", PageRequest::MAX_ROWS),
                    )
                })?,
        };
        Ok(Some(PageRequest {
            page,
            rows_per_page,
        }))
    }
}

#[utoipa::path(
    get,
    path = "/api/container_services",
    tag = "container services",
    summary = "The caller's container services, oldest first. Needs the projects_read scope.",
    params(ListQuery),
    responses((status = 200, description = "The services", body = ServiceList))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ServiceList>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let Query(query) = query?;
    let mut container_services = Vec::new();
    match query.page()? {
        Some(page) => {
            let listed = runtime
                .list_containers(
                    &caller,
                    ContainerQuery {
                        page,
                        ..Default::default()
                    },
                )
                .await?;
            container_services.extend(listed.items.iter().map(|view| service_json(&runtime, view)));
        }
        // Every service, a page at a time, each page read after the one before.
        None => {
            let mut after = None;
            loop {
                let listed = runtime
                    .list_containers(
                        &caller,
                        ContainerQuery {
                            page: PageRequest {
                                page: 1,
                                rows_per_page: PageRequest::MAX_ROWS,
                            },
                            after,
                            ..Default::default()
                        },
                    )
                    .await?;
                container_services
                    .extend(listed.items.iter().map(|view| service_json(&runtime, view)));
                match listed.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(Json(ServiceList { container_services }))
}

#[utoipa::path(
    get,
    path = "/api/container_services/{id}",
    tag = "container services",
    summary = "One container service. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id")),
    responses((status = 200, description = "The service", body = OneService))
)]
async fn show(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
) -> Result<Json<OneService>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let view = find(&runtime, &caller, id?.0).await?;
    Ok(Json(OneService {
        container_service: service_json(&runtime, &view),
    }))
}

/// A body wrapped as the document wraps it: `{"container_service": {...}}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Wrapped<T> {
    container_service: T,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ServiceUpdate {
    name: Option<String>,
    scale: Option<u32>,
    package_id: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Resize {
    product_id: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Scale {
    qty: u32,
}

/// Pins the instance count to `qty`: `minInstances` = `maxInstances` = `qty`.
fn pin_count(patch: &mut ContainerPatch, qty: u32) {
    patch.min_instances = Some(qty);
    patch.max_instances = Some(qty);
}

/// Checks a patch with the model's rules, naming the instance counts as `count`
/// (the body field they came from): this face sets both from one number.
fn checked(patch: ContainerPatch, count: &str) -> Result<ContainerPatch, ApiError> {
    patch.validate().map_err(|e| {
        e.renamed(|field| {
            matches!(field, "minInstances" | "maxInstances").then(|| count.to_string())
        })
    })?;
    Ok(patch)
}

/// Applies a patch (a new revision) and answers with the service.
async fn apply(
    runtime: &Runtime,
    caller: &Caller,
    view: ContainerView,
    patch: ContainerPatch,
) -> Result<Json<OneService>, ApiError> {
    let view = runtime
        .update_container(caller, view.container.id, patch)
        .await?;
    Ok(Json(OneService {
        container_service: service_json(runtime, &view),
    }))
}

#[utoipa::path(
    patch,
    path = "/api/container_services/{id}",
    tag = "container services",
    summary = "Changes name, scale or package. Needs the projects_write scope.",
    params(("id" = u64, Path, description = "The integer id")),
    request_body = Wrapped<ServiceUpdate>,
    responses((status = 200, description = "The service", body = OneService))
)]
async fn update(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    StrictJson(body): StrictJson<Wrapped<ServiceUpdate>>,
) -> Result<Json<OneService>, ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let body = body.container_service;
    let mut patch = ContainerPatch::default();
    if let Some(name) = &body.name {
        patch.name = Some(
            name.parse::<ContainerName>()
                .map_err(|e| ApiError::invalid_field("container_service.name", e.to_string()))?,
        );
    }
    if let Some(qty) = body.scale {
        pin_count(&mut patch, qty);
    }
    if let Some(package) = body.package_id {
        Package::find("container_service.package_id", package)?.apply(&mut patch);
    }
    let patch = checked(patch, "container_service.scale")?;
    let view = find(&runtime, &caller, id?.0).await?;
    apply(&runtime, &caller, view, patch).await
}

#[utoipa::path(
    post,
    path = "/api/container_services/{id}/resize",
    tag = "container services",
    summary = "Sizes the instances to a package. Needs the projects_write scope.",
    params(("id" = u64, Path, description = "The integer id")),
    request_body = Wrapped<Resize>,
    responses((status = 200, description = "The service", body = OneService))
)]
async fn resize(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    StrictJson(body): StrictJson<Wrapped<Resize>>,
) -> Result<Json<OneService>, ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let mut patch = ContainerPatch::default();
    Package::find(
        "container_service.product_id",
        body.container_service.product_id,
    )?
    .apply(&mut patch);
    // A package sets no instance count: the fields keep their native names.
    patch.validate()?;
    let view = find(&runtime, &caller, id?.0).await?;
    apply(&runtime, &caller, view, patch).await
}

#[utoipa::path(
    post,
    path = "/api/container_services/{id}/scale",
    tag = "container services",
    summary = "Pins the instance count. Needs the projects_write scope.",
    params(("id" = u64, Path, description = "The integer id")),
    request_body = Wrapped<Scale>,
    responses((status = 200, description = "The service", body = OneService))
)]
async fn scale(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    StrictJson(body): StrictJson<Wrapped<Scale>>,
) -> Result<Json<OneService>, ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let mut patch = ContainerPatch::default();
    pin_count(&mut patch, body.container_service.qty);
    let patch = checked(patch, "container_service.qty")?;
    let view = find(&runtime, &caller, id?.0).await?;
    apply(&runtime, &caller, view, patch).await
}

#[utoipa::path(
    delete,
    path = "/api/container_services/{id}",
    tag = "container services",
    summary = "Deletes the service. Needs the projects_write scope.",
    params(("id" = u64, Path, description = "The integer id")),
    responses((status = 204, description = "Deleted"))
)]
async fn remove(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
) -> Result<StatusCode, ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let view = find(&runtime, &caller, id?.0).await?;
    runtime.delete_container(&caller, view.container.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/container_services/{id}/power/{action}",
    tag = "container services",
    summary = "A power action on every instance it applies to. Needs the projects_write scope.",
    params(("id" = u64, Path, description = "The integer id"), ("action" = String, Path, description = "start, stop, restart or rebuild")),
    responses((status = 202, description = "How many instances it applied to", body = PowerOutcome))
)]
async fn power(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    action: Result<PowerActionPath, ApiError>,
    (method, uri, headers): (axum::http::Method, axum::http::Uri, axum::http::HeaderMap),
) -> Result<(StatusCode, Json<PowerOutcome>), ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let PowerActionPath(action) = action?;
    let view = find(&runtime, &caller, id?.0).await?;
    let mut applied = runtime
        .power_all_instances(&caller, view.container.id, action)
        .await?;
    // In a cluster, every member applies it to the instances it runs.
    if crate::reach(&headers) == ember_runtime::Reach::Cluster {
        let authorization = headers.get(axum::http::header::AUTHORIZATION).cloned();
        for (status, _, body) in runtime
            .forward_to_other_members(method, uri.path(), authorization, None)
            .await
        {
            let outcome: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if status == StatusCode::ACCEPTED {
                applied += outcome["containers"].as_u64().unwrap_or(0) as usize;
            }
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(PowerOutcome {
            action: action.name(),
            containers: applied,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/container_services/{id}/containers",
    tag = "container services",
    summary = "The service's instances, as the numbered containers face shows them. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id")),
    responses((status = 200, description = "The instances", body = Containers))
)]
async fn containers(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Containers>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let view = find(&runtime, &caller, id?.0).await?;
    let instances = runtime
        .cluster_instances(&caller, view.container.id, crate::reach(&headers))
        .await?;
    let listed = instances
        .iter()
        .map(|i| instance_json(&runtime, &view, i, None))
        .collect();
    Ok(Json(Containers::new(listed)))
}

#[utoipa::path(
    get,
    path = "/api/container_services/{id}/logs",
    tag = "container services",
    summary = "Every instance's lines as [timestamp, name, line], newest first. Needs the projects_read scope.",
    params(("id" = u64, Path, description = "The integer id"), LogQuery),
    responses((status = 200, description = "The rows", body = Vec<Vec<serde_json::Value>>))
)]
async fn logs(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<NumberPath, ApiError>,
    query: Result<Query<LogQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Vec<LogRow>>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let Query(query) = query?;
    let range = query.range()?;
    let view = find(&runtime, &caller, id?.0).await?;
    let id = view.container.id;
    let reach = crate::reach(&headers);
    let entries = runtime.read_logs(&caller, id, range, reach).await?;
    let mut instances = runtime.list_all_instances(&caller, id).await?;
    if reach == ember_runtime::Reach::Cluster {
        instances.extend(runtime.other_members_instances(&caller, id).await?);
    }
    let names = names_by_id(view.container.spec.name.as_str(), &instances);
    Ok(Json(query.rows(entries, &names)?))
}
