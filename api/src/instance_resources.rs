//! The instances API's views of one instance's resources: its volumes, and a
//! point-in-time telemetry report of what it uses against what it may use.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::instance_query::{MAX_PAGE_SIZE, number_in};
use crate::path_ids::InstanceIdPath;
use crate::wire::{DataEnvelope, rfc3339};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use ember_runtime::Runtime;
use ember_runtime::model::{Capability, InstanceState};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(volumes))
        .routes(routes!(report))
        // An instance another member runs is answered by that member.
        .route_layer(axum::middleware::from_fn(
            crate::cluster_reach::answered_by_its_member,
        ))
}

/// Checks the volume list's query: `sort` over `id` and `name` (`-` for
/// descending), `page[size]` and `page[number]`. A list of at most one volume reads
/// the same in every order and on its first page.
fn check_volume_query(query: &[(String, String)]) -> Result<(usize, usize), ApiError> {
    let (mut size, mut number) = (20usize, 1usize);
    for (key, value) in query {
        match key.as_str() {
            "sort" => {
                let sortable = |field: &str| matches!(field.trim_start_matches('-'), "id" | "name");
                if !value.split(',').all(sortable) {
                    return Err(ApiError::invalid_field(
                        key.clone(),
                        format!("`{value}` is not a sort over `id` or `name`"),
                    ));
                }
            }
            "page[size]" => size = number_in(key, value, 1, MAX_PAGE_SIZE)?,
            "page[number]" => number = number_in(key, value, 1, usize::MAX)?,
            _ => {
                return Err(ApiError::invalid_field(
                    key.clone(),
                    "volumes take `sort`, `page[size]` and `page[number]`",
                ));
            }
        }
    }
    Ok((size, number))
}

/// A running OCI instance has one volume, its writable root filesystem (as big as
/// the container's `ephemeralStorage`); a wasm instance has no filesystem, and a
/// stopped instance has nothing mounted.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances/{instance}/volumes",
    tag = "instances",
    summary = "An instance's volumes (needs containers-view)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)"), ("sort" = Option<String>, Query, description = "id or name; - for descending"), ("page[size]" = Option<u32>, Query, description = "1 to 100"), ("page[number]" = Option<u32>, Query, description = "From 1")),
    responses((status = 200, description = "The volumes", body = serde_json::Value))
)]
async fn volumes(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<DataEnvelope<Vec<Value>>>, ApiError> {
    caller.require_capability(Capability::ContainersView)?;
    let Query(query) = query?;
    let (size, number) = check_volume_query(&query)?;
    let InstanceIdPath(id, instance) = ids?;
    let info = runtime.get_instance(&caller, id, instance).await?;
    let view = runtime.get_container(&caller, id).await?;
    let mut data = Vec::new();
    if info.state == InstanceState::Running && info.sandbox_id.is_some() {
        data.push(json!({
            "id": format!("{}-rootfs", info.id),
            "name": "rootfs",
            "path": "/",
            "kind": "ephemeral",
            "read_only": false,
            "size_bytes": view.container.spec.ephemeral_storage.bytes(),
            "created": rfc3339(info.state_changed),
        }));
    }
    let data = data
        .into_iter()
        .skip((number - 1) * size)
        .take(size)
        .collect();
    Ok(Json(DataEnvelope { data }))
}

/// What the instance uses now against its limits. `network` counts the bytes
/// through an OCI instance's interface; a wasm instance has none (`null`).
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances/{instance}/telemetry/resources/report",
    tag = "instances",
    summary = "What an instance uses against its limits (needs containers-view)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 200, description = "The report", body = serde_json::Value))
)]
async fn report(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<DataEnvelope<Value>>, ApiError> {
    caller.require_capability(Capability::ContainersView)?;
    let Query(query) = query?;
    if let Some((key, _)) = query.first() {
        return Err(ApiError::invalid_field(
            key.clone(),
            "the report takes no filter: it covers cpu, memory, storage and network",
        ));
    }
    let InstanceIdPath(id, instance) = ids?;
    let info = runtime.get_instance(&caller, id, instance).await?;
    let view = runtime.get_container(&caller, id).await?;
    let spec = &view.container.spec;
    let sample = runtime.instance_usage_now(&caller, id, info.id).await?;
    Ok(Json(DataEnvelope {
        data: json!({
            "instance_id": info.id.to_string(),
            "state": info.state,
            "timestamp": rfc3339(sample.map_or_else(std::time::SystemTime::now, |s| s.at)),
            "cpu": {
                "usage_percent": sample.map_or(0.0, |s| s.cpu_percent),
                "limit_cores": spec.cpu,
            },
            "memory": {
                "used_bytes": sample.map_or(0, |s| s.memory_bytes),
                "limit_bytes": spec.ram.bytes(),
            },
            "storage": {
                "limit_bytes": spec.ephemeral_storage.bytes(),
            },
            "network": sample.and_then(|s| s.network).map(|n| json!({
                "received_bytes": n.received_bytes,
                "sent_bytes": n.sent_bytes,
            })),
        }),
    }))
}
