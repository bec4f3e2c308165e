//! `/v1/containers`: the native container API.

use crate::auth::Authenticated;
use crate::container_json::{ContainerJson, RevisionJson};
use crate::container_request::{ContainerRequest, invalid, traffic_target};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::pagination::{ListEnvelope, page_request};
use crate::path_ids::ContainerIdPath;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ember_runtime::Runtime;
use ember_runtime::model::{ContainerName, ContainerPatch, ContainerQuery, ContainerStatus};
use std::collections::HashMap;
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
