//! The Tutum face, `/api/v1/container/`: instances by UUID, in Tutum's states
//! (Init, Starting, Running, Stopping, Stopped, Terminating, Terminated) and its
//! `meta`/`objects` list envelope. Ember's instances start the moment they are
//! made, so none is ever in Init.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::path_ids::TutumUuidPath;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use ember_runtime::model::{Caller, InstanceId, InstanceInfo, InstanceState, Scope};
use ember_runtime::{ContainerView, PowerAction, Runtime};
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, terminate))
        .routes(routes!(logs))
        .routes(routes!(start))
        .routes(routes!(stop))
}

/// Tutum's name of a state.
fn state_name(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Starting => "Starting",
        InstanceState::Running => "Running",
        InstanceState::Stopping => "Stopping",
        InstanceState::Stopped => "Stopped",
        InstanceState::Terminating => "Terminating",
        InstanceState::Terminated => "Terminated",
    }
}

const STATE_NAMES: [&str; 7] = [
    "Init",
    "Starting",
    "Running",
    "Stopping",
    "Stopped",
    "Terminating",
    "Terminated",
];

/// A Tutum container (an Ember instance).
#[derive(Serialize, ToSchema, Clone)]
struct TutumContainer {
    uuid: String,
    /// `/api/v1/container/<uuid>/`, which answers.
    resource_uri: String,
    /// The image reference.
    image_name: String,
    /// Its tag or digest (`latest` when it has none).
    image_tag: String,
    image_repository: String,
    name: String,
    /// `<name>-<n>`.
    unique_name: String,
    /// `Starting`, `Running`, `Stopping`, `Stopped`, `Terminating` or `Terminated`.
    state: &'static str,
}

/// Tutum's list envelope.
#[derive(Serialize, ToSchema)]
struct TutumList {
    meta: Meta,
    /// This node's instances, then (in a cluster) the other members'.
    #[schema(value_type = Vec<TutumContainer>)]
    objects: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
struct Meta {
    limit: usize,
    offset: usize,
    total_count: usize,
    next: Option<String>,
    previous: Option<String>,
}

/// A container's output.
#[derive(Serialize, ToSchema)]
struct TutumLogs {
    /// Its lines, each ending in a newline.
    logs: String,
}

fn object(view: &ContainerView, instance: &InstanceInfo) -> TutumContainer {
    let spec = &view.container.spec;
    let (repository, tag) = split_image(&spec.image);
    TutumContainer {
        uuid: instance.id.to_string(),
        resource_uri: format!("/api/v1/container/{}/", instance.id),
        image_name: spec.image.clone(),
        image_tag: tag.unwrap_or("latest").to_string(),
        image_repository: repository.to_string(),
        name: spec.name.to_string(),
        unique_name: super::unique_name(spec.name.as_str(), instance),
        state: state_name(instance.state),
    }
}

/// An image reference's repository and tag (or digest).
fn split_image(image: &str) -> (&str, Option<&str>) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, Some(digest));
    }
    match image.rsplit_once(':') {
        // A colon in the last path segment is a tag; one before it is a port.
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (image, None),
    }
}

async fn find(
    runtime: &Runtime,
    caller: &Caller,
    id: InstanceId,
) -> Result<(ContainerView, InstanceInfo), ApiError> {
    Ok(runtime.find_instance(caller, id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    name: Option<String>,
    unique_name: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Instances a page holds when `limit` is not given (as Tutum).
const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 1000;

#[utoipa::path(
    get,
    path = "/api/v1/container/",
    tag = "tutum",
    summary = "Current and recently terminated containers (instances). Needs the projects_read scope.",
    params(("state" = Option<String>, Query, description = "Init, Starting, Running, Stopping, Stopped, Terminating or Terminated"), ("name" = Option<String>, Query, description = "A container name"), ("unique_name" = Option<String>, Query, description = "A unique name"), ("limit" = Option<u32>, Query, description = "1 to 1000"), ("offset" = Option<u32>, Query, description = "From 0")),
    responses((status = 200, description = "meta and objects", body = TutumList))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
    (uri, headers): (axum::http::Uri, axum::http::HeaderMap),
) -> Result<Json<TutumList>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let Query(query) = query?;
    if let Some(state) = &query.state
        && !STATE_NAMES.contains(&state.as_str())
    {
        return Err(ApiError::invalid_field(
            "state",
            format!("`{state}` is not a state ({})", STATE_NAMES.join(", ")),
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    let offset = query.offset.unwrap_or(0);
    // Filtered in memory; only the page's containers are read from the store.
    let matches =
        |value: &str, wanted: &Option<String>| wanted.as_deref().is_none_or(|w| value == w);
    let rows: Vec<_> = runtime
        .all_instances(&caller)
        .into_iter()
        .filter(|(_, name, instance)| {
            matches(state_name(instance.state), &query.state)
                && matches(name.as_str(), &query.name)
                && matches(
                    &super::unique_name(name.as_str(), instance),
                    &query.unique_name,
                )
        })
        .collect();
    let elsewhere = if crate::reach(&headers) == ember_runtime::Reach::Cluster {
        other_members_objects(&runtime, &uri, &headers).await
    } else {
        Vec::new()
    };
    let total = rows.len() + elsewhere.len();
    // This node's rows first, then the other members'.
    let skipped_elsewhere = offset.saturating_sub(rows.len());
    let rows: Vec<_> = rows.into_iter().skip(offset).take(limit).collect();
    let ids: Vec<_> = rows.iter().map(|(id, _, _)| *id).collect();
    let views = runtime.views(&caller, ids).await?;
    let mut page: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|(id, _, instance)| Some(json!(object(views.get(id)?, instance))))
        .collect();
    page.extend(
        elsewhere
            .into_iter()
            .skip(skipped_elsewhere)
            .take(limit - rows.len()),
    );
    let link = |offset: usize| format!("/api/v1/container/?limit={limit}&offset={offset}");
    Ok(Json(TutumList {
        meta: Meta {
            limit,
            offset,
            total_count: total,
            next: (offset + limit < total).then(|| link(offset + limit)),
            previous: (offset > 0).then(|| link(offset.saturating_sub(limit))),
        },
        objects: page,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/container/{uuid}/",
    tag = "tutum",
    summary = "One container. Needs the projects_read scope.",
    params(("uuid" = String, Path, description = "The instance's UUID")),
    responses((status = 200, description = "The container", body = TutumContainer))
)]
async fn show(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    uuid: Result<TutumUuidPath, ApiError>,
) -> Result<Json<TutumContainer>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let (view, instance) = find(&runtime, &caller, uuid?.0).await?;
    Ok(Json(object(&view, &instance)))
}

#[utoipa::path(
    get,
    path = "/api/v1/container/{uuid}/logs/",
    tag = "tutum",
    summary = "The container's output. Needs the projects_read scope.",
    params(("uuid" = String, Path, description = "The instance's UUID")),
    responses((status = 200, description = "The lines", body = TutumLogs))
)]
async fn logs(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    uuid: Result<TutumUuidPath, ApiError>,
) -> Result<Json<TutumLogs>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    let (view, instance) = find(&runtime, &caller, uuid?.0).await?;
    let now = std::time::SystemTime::now();
    let lines: String = runtime
        // The instance runs here (it was found here): its lines are here.
        .read_instance_logs(
            &caller,
            view.container.id,
            instance.id,
            (std::time::UNIX_EPOCH, now),
            ember_runtime::Reach::ThisNode,
        )
        .await?
        .into_iter()
        .map(|e| e.line + "\n")
        .collect();
    Ok(Json(TutumLogs { logs: lines }))
}

/// Most instances of one other member the list takes in (one page of its own
/// list).
const MEMBER_ROWS: usize = MAX_LIMIT;

/// The instances the other members list for this request's filters, each asked
/// with the client's own credentials (so each shows the client's alone).
async fn other_members_objects(
    runtime: &Runtime,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
) -> Vec<serde_json::Value> {
    let filters: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("limit=") && !p.starts_with("offset="))
        .collect();
    let mut path = format!("{}?limit={MEMBER_ROWS}&offset=0", uri.path());
    for filter in filters {
        path.push('&');
        path.push_str(filter);
    }
    let authorization = headers.get(axum::http::header::AUTHORIZATION).cloned();
    runtime
        .forward_to_other_members(axum::http::Method::GET, &path, authorization, None)
        .await
        .into_iter()
        .filter(|(status, _, _)| *status == StatusCode::OK)
        .filter_map(|(_, _, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flat_map(|list| list["objects"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Applies `action` and answers with the instance as it is then.
async fn act(
    runtime: &Runtime,
    caller: &Caller,
    uuid: Result<TutumUuidPath, ApiError>,
    action: PowerAction,
) -> Result<(StatusCode, Json<TutumContainer>), ApiError> {
    caller.require_scope(Scope::ProjectsWrite)?;
    let TutumUuidPath(uuid) = uuid?;
    let (view, instance) = find(runtime, caller, uuid).await?;
    runtime
        .power_instance(caller, view.container.id, instance.id, action)
        .await?;
    let (view, instance) = find(runtime, caller, uuid).await?;
    Ok((StatusCode::ACCEPTED, Json(object(&view, &instance))))
}

#[utoipa::path(
    post,
    path = "/api/v1/container/{uuid}/start/",
    tag = "tutum",
    summary = "Starts a stopped container. Needs the projects_write scope.",
    params(("uuid" = String, Path, description = "The instance's UUID")),
    responses((status = 202, description = "The container", body = TutumContainer))
)]
async fn start(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    uuid: Result<TutumUuidPath, ApiError>,
) -> Result<(StatusCode, Json<TutumContainer>), ApiError> {
    act(&runtime, &caller, uuid, PowerAction::Start).await
}

#[utoipa::path(
    post,
    path = "/api/v1/container/{uuid}/stop/",
    tag = "tutum",
    summary = "Stops a running container. Needs the projects_write scope.",
    params(("uuid" = String, Path, description = "The instance's UUID")),
    responses((status = 202, description = "The container", body = TutumContainer))
)]
async fn stop(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    uuid: Result<TutumUuidPath, ApiError>,
) -> Result<(StatusCode, Json<TutumContainer>), ApiError> {
    act(&runtime, &caller, uuid, PowerAction::Stop).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/container/{uuid}/",
    tag = "tutum",
    summary = "Terminates the container (irreversible). Needs the projects_write scope.",
    params(("uuid" = String, Path, description = "The instance's UUID")),
    responses((status = 202, description = "The container", body = TutumContainer))
)]
async fn terminate(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    uuid: Result<TutumUuidPath, ApiError>,
) -> Result<(StatusCode, Json<TutumContainer>), ApiError> {
    act(&runtime, &caller, uuid, PowerAction::Terminate).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(split_image("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_image("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", None)
        );
        assert_eq!(
            split_image("127.0.0.1:5000/app:v2"),
            ("127.0.0.1:5000/app", Some("v2"))
        );
        assert_eq!(split_image("app@sha256:abc"), ("app", Some("sha256:abc")));
    }
}
