//! `/v1/containers/{id}/instances`: live instances, in the instances API's shape, and
//! instances started or stopped by hand (each a job: see [`crate::jobs`]).

use crate::auth::Authenticated;
use crate::container_json::ContainerJson;
use crate::error::ApiError;
use crate::instance_query::{Include, InstanceQuery};
use crate::jobs::JobJson;
use crate::json::StrictJsonList;
use crate::path_ids::{ContainerIdPath, InstanceIdPath};
use crate::servers::ServerJson;
use crate::wire::{DataEnvelope, rfc3339};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use ember_runtime::Runtime;
use ember_runtime::model::{Capability, InstanceInfo, InstanceState, ServerId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(list, create, delete_all))
        .routes(routes!(get_one, delete_one))
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances",
    tag = "instances",
    summary = "A container's instances (needs containers-view)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("filter[state]" = Option<String>, Query, description = "starting, running, stopping or stopped"), ("filter[server_id]" = Option<String>, Query, description = "A server's id"), ("filter[revision]" = Option<u32>, Query, description = "A revision number"), ("filter[pinned]" = Option<bool>, Query, description = "true or false"), ("sort" = Option<String>, Query, description = "id, state, revision, changed; - for descending"), ("page[size]" = Option<u32>, Query, description = "1 to 100"), ("page[number]" = Option<u32>, Query, description = "From 1"), ("include" = Option<String>, Query, description = "creators, servers, containers, locations, integrations, environments")),
    responses((status = 200, description = "The instances and what include asked for", body = InstanceList))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<ContainerIdPath, ApiError>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Json<InstanceList>, ApiError> {
    caller.require_capability(Capability::ContainersView)?;
    let ContainerIdPath(id) = id?;
    let Query(query) = query?;
    let query = InstanceQuery::parse(&query)?;
    // In a cluster, the other members' too, unless a member is asking for this
    // node's own.
    let instances = runtime
        .cluster_instances(&caller, id, crate::reach(&headers))
        .await?;
    let instances = query.apply(instances);
    // The container, once, for the includes that describe it.
    let container = if query
        .includes
        .iter()
        .any(|i| matches!(i, Include::Containers | Include::Creators))
    {
        Some(runtime.get_container(&caller, id).await?)
    } else {
        None
    };
    let mut includes = BTreeMap::new();
    for include in &query.includes {
        let mut included = BTreeMap::new();
        match (include, &container) {
            (Include::Servers, _) => {
                for server in runtime.servers() {
                    if instances.iter().any(|i| i.server_id == server.node.id) {
                        included
                            .insert(server.node.id.to_string(), json!(ServerJson::from(&server)));
                    }
                }
            }
            (Include::Containers, Some(view)) => {
                included.insert(
                    id.to_string(),
                    json!(ContainerJson::from_view(&runtime, view.clone())),
                );
            }
            (Include::Creators, Some(view)) => {
                let creator = view.container.created_by.to_string();
                included.insert(creator.clone(), json!({ "id": creator }));
            }
            // Fetched above whenever one of these two is asked for.
            (Include::Containers | Include::Creators, None) => {}
            (Include::Locations | Include::Integrations | Include::Environments, _) => {}
        }
        includes.insert(include.name(), included);
    }
    Ok(Json(InstanceList {
        data: instances.into_iter().map(InstanceJson::from).collect(),
        includes,
    }))
}

/// The instances API's list: the instances, and the related resources asked for with
/// `include`, each kind keyed by id.
#[derive(Serialize, utoipa::ToSchema)]
struct InstanceList {
    data: Vec<InstanceJson>,
    #[schema(value_type = BTreeMap<String, BTreeMap<String, serde_json::Value>>)]
    includes: BTreeMap<&'static str, BTreeMap<String, serde_json::Value>>,
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances/{instance}",
    tag = "instances",
    summary = "One instance (needs containers-view)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 200, description = "The instance", body = DataEnvelope<InstanceJson>))
)]
async fn get_one(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    headers: axum::http::HeaderMap,
) -> Result<Json<DataEnvelope<InstanceJson>>, ApiError> {
    caller.require_capability(Capability::ContainersView)?;
    let InstanceIdPath(id, instance) = ids?;
    let info = match runtime.get_instance(&caller, id, instance).await {
        // In a cluster, another member may run it.
        Err(e @ ember_runtime::RuntimeError::NotFound { .. })
            if !headers.contains_key(ember_runtime::RELAYED_BY) =>
        {
            runtime
                .other_members_instances(&caller, id)
                .await?
                .into_iter()
                .find(|i| i.id == instance)
                .ok_or(e)?
        }
        other => other?,
    };
    Ok(Json(DataEnvelope {
        data: InstanceJson::from(info),
    }))
}

/// When `instance` runs on another member of the cluster: the client's request
/// sent on to that member with the client's own credentials, answered as the
/// member answered. `None` when no other member runs it (or a member asks).
pub(crate) async fn on_its_member(
    runtime: &Runtime,
    caller: &ember_runtime::model::Caller,
    (id, instance): (
        ember_runtime::model::ContainerId,
        ember_runtime::model::InstanceId,
    ),
    request: (
        &axum::http::Method,
        &axum::http::Uri,
        &axum::http::HeaderMap,
    ),
    json: Option<Vec<u8>>,
) -> Result<Option<axum::response::Response>, ApiError> {
    use axum::response::IntoResponse;
    let (method, uri, headers) = request;
    if headers.contains_key(ember_runtime::RELAYED_BY) {
        return Ok(None);
    }
    let Some(api) = runtime.member_running(caller, id, instance).await? else {
        return Ok(None);
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let authorization = headers.get(axum::http::header::AUTHORIZATION).cloned();
    let (status, content_type, body) = runtime
        .forward_to_member(api, method.clone(), path, authorization, json)
        .await?;
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, content_type);
    }
    Ok(Some(response))
}

/// One entry of POST's body, as the instances API names its fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInstances {
    server_id: String,
    new_instances: u32,
}

/// Most instances one request may ask for on one server.
const MAX_NEW_INSTANCES: u32 = 1000;

#[utoipa::path(
    post,
    path = "/v1/containers/{id}/instances",
    tag = "instances",
    summary = "Starts pinned instances (needs containers-update)",
    params(("id" = String, Path, description = "The container's id (a UUID)")),
    request_body = serde_json::Value,
    responses((status = 202, description = "The job that starts them", body = DataEnvelope<JobJson>))
)]
async fn create(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<ContainerIdPath, ApiError>,
    StrictJsonList(body): StrictJsonList<NewInstances>,
) -> Result<(StatusCode, Json<DataEnvelope<JobJson>>), ApiError> {
    caller.require_capability(Capability::ContainersUpdate)?;
    let ContainerIdPath(id) = id?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must list at least one {\"server_id\", \"new_instances\"} entry",
        ));
    }
    let mut requests = Vec::with_capacity(body.len());
    for (i, entry) in body.iter().enumerate() {
        let server: ServerId =
            entry
                .server_id
                .parse()
                .map_err(|e: ember_runtime::model::InvalidId| {
                    ApiError::invalid_field(format!("[{i}].server_id"), e.to_string())
                })?;
        if !(1..=MAX_NEW_INSTANCES).contains(&entry.new_instances) {
            return Err(ApiError::invalid_field(
                format!("[{i}].new_instances"),
                format!("must be between 1 and {MAX_NEW_INSTANCES}"),
            ));
        }
        requests.push((server, entry.new_instances));
    }
    let job = runtime.create_instances(&caller, id, &requests).await?;
    Ok(accepted(job))
}

#[utoipa::path(
    delete,
    path = "/v1/containers/{id}/instances",
    tag = "instances",
    summary = "Stops every instance (needs containers-update)",
    params(("id" = String, Path, description = "The container's id (a UUID)")),
    responses((status = 202, description = "The job that stops them", body = DataEnvelope<JobJson>))
)]
async fn delete_all(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<ContainerIdPath, ApiError>,
    headers: axum::http::HeaderMap,
) -> Result<(StatusCode, Json<DataEnvelope<JobJson>>), ApiError> {
    caller.require_capability(Capability::ContainersUpdate)?;
    let ContainerIdPath(id) = id?;
    let job = runtime.delete_instances(&caller, id).await?;
    // In a cluster, every member stops its own too (the job follows this node's).
    if !headers.contains_key(ember_runtime::RELAYED_BY) {
        runtime.stop_other_members_instances(&caller, id).await?;
    }
    Ok(accepted(job))
}

#[utoipa::path(
    delete,
    path = "/v1/containers/{id}/instances/{instance}",
    tag = "instances",
    summary = "Stops one instance (needs containers-update)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 202, description = "The job that stops it", body = DataEnvelope<JobJson>))
)]
async fn delete_one(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require_capability(Capability::ContainersUpdate)?;
    let InstanceIdPath(id, instance) = ids?;
    match runtime.delete_instance(&caller, id, instance).await {
        Ok(job) => Ok(accepted(job).into_response()),
        // In a cluster, another member may run it.
        Err(e @ ember_runtime::RuntimeError::NotFound { .. }) => on_its_member(
            &runtime,
            &caller,
            (id, instance),
            (&method, &uri, &headers),
            None,
        )
        .await?
        .ok_or_else(|| e.into()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn accepted(
    job: ember_runtime::model::Job,
) -> (StatusCode, Json<DataEnvelope<JobJson>>) {
    (
        StatusCode::ACCEPTED,
        Json(DataEnvelope {
            data: JobJson::from(job),
        }),
    )
}

#[derive(Serialize, utoipa::ToSchema)]
struct InstanceJson {
    id: String,
    container_id: String,
    server_id: String,
    revision: u32,
    state: StateJson,
    in_flight: u32,
    pinned: bool,
    /// The host-level id of its sandbox (OCI: names its cgroups), once it runs.
    sandbox_id: Option<String>,
    /// Where it listens on the node's network (`ip:port`, OCI only), once it runs.
    address: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StateJson {
    /// `starting`, `running`, `stopping` or `stopped`.
    #[schema(value_type = String)]
    current: InstanceState,
    changed: String,
    /// Why a starting instance has not started yet, while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<InstanceInfo> for InstanceJson {
    fn from(i: InstanceInfo) -> Self {
        Self {
            id: i.id.to_string(),
            container_id: i.container_id.to_string(),
            server_id: i.server_id.to_string(),
            revision: i.revision,
            state: StateJson {
                current: i.state,
                changed: rfc3339(i.state_changed),
                reason: i.waiting_reason,
            },
            in_flight: i.in_flight,
            pinned: i.pinned,
            sandbox_id: i.sandbox_id,
            address: i.address.map(|a| a.to_string()),
        }
    }
}
