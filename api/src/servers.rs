//! `/v1/servers`: the nodes instances run on, their capacity and what is allocated.

use crate::auth::Authenticated;
use crate::wire::DataEnvelope;
use axum::Json;
use axum::extract::State;
use ember_runtime::Runtime;
use ember_runtime::cluster::Server;
use ember_runtime::model::Resources;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(list))
}

#[utoipa::path(
    get,
    path = "/v1/servers",
    tag = "catalogue",
    summary = "The servers instances run on",
    responses((status = 200, description = "The servers", body = DataEnvelope<Vec<ServerJson>>))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(_caller): Authenticated,
) -> Json<DataEnvelope<Vec<ServerJson>>> {
    Json(DataEnvelope {
        data: runtime.servers().iter().map(ServerJson::from).collect(),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ServerJson {
    id: String,
    name: String,
    capacity: ResourcesJson,
    allocated: ResourcesJson,
    /// Where the server's management API answers (cluster mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<String>,
    /// Where the server's ingress answers (cluster mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    ingress: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ResourcesJson {
    cpu: f64,
    ram: String,
    gpus: BTreeMap<String, u32>,
}

impl From<&Resources> for ResourcesJson {
    fn from(r: &Resources) -> Self {
        Self {
            cpu: r.millicpus as f64 / 1000.0,
            ram: format!("{}Mi", r.memory_bytes / (1 << 20)),
            gpus: r.gpu_counts(),
        }
    }
}

impl From<&Server> for ServerJson {
    fn from(server: &Server) -> Self {
        let node = &server.node;
        Self {
            id: node.id.to_string(),
            name: node.name.clone(),
            capacity: (&node.capacity).into(),
            allocated: (&node.allocated).into(),
            api: server.addresses.map(|(api, _)| api.to_string()),
            ingress: server.addresses.map(|(_, ingress)| ingress.to_string()),
        }
    }
}
