//! `/v1/containers/{id}/instances`: live instances, in the shape of document 004.

use crate::auth::Authenticated;
use crate::containers::{container_id, rfc3339};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use ember_runtime::Runtime;
use ember_runtime::model::{InstanceInfo, InstanceState};
use serde::Serialize;

pub(crate) fn routes() -> Router<Runtime> {
    Router::new().route("/v1/containers/{id}/instances", get(list))
}

async fn list(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<DataEnvelope<Vec<InstanceJson>>>, ApiError> {
    let instances = runtime.list_instances(&caller, container_id(&id)?)?;
    Ok(Json(DataEnvelope {
        data: instances.into_iter().map(InstanceJson::from).collect(),
    }))
}

/// Document 004's envelope: `{"data": ...}`.
#[derive(Serialize)]
pub(crate) struct DataEnvelope<T> {
    data: T,
}

#[derive(Serialize)]
struct InstanceJson {
    id: String,
    container_id: String,
    server_id: String,
    revision: u32,
    state: StateJson,
    in_flight: u32,
}

#[derive(Serialize)]
struct StateJson {
    current: InstanceState,
    changed: String,
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
            },
            in_flight: i.in_flight,
        }
    }
}
