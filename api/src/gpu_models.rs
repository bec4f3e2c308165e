//! `GET /v1/gpu-models`: the GPU models containers may ask for (the native container API), and
//! how many of each this node has and has free.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::pagination::{ListEnvelope, page_request};
use axum::Json;
use axum::extract::{Query, State};
use ember_runtime::Runtime;
use ember_runtime::model::{GPU_MODELS, PageRequest};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(list))
}

/// A model of the catalogue, with this node's stock of it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct GpuModelJson {
    /// What `desiredGPUs` names.
    code: String,
    /// For people (`desiredGPUs` may name this too).
    name: String,
    /// GPUs of this model the node has.
    installed: u32,
    /// Those no instance holds.
    free: u32,
}

#[utoipa::path(
    get,
    path = "/v1/gpu-models",
    tag = "catalogue",
    summary = "The GPU model catalogue, with the node's stock of each model",
    description = "Every model of the catalogue, then any model this node has that the catalogue lacks. `installed` counts the node's GPUs of the model (from its CDI specs) and `free` those no instance holds.",
    params(("page" = Option<u32>, Query, description = "Page number, from 1"), ("rowsPerPage" = Option<u32>, Query, description = "Items per page")),
    responses((status = 200, description = "A page of GPU models", body = serde_json::Value))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(_caller): Authenticated,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<Json<ListEnvelope<GpuModelJson>>, ApiError> {
    // The whole catalogue fits one page, as in the document's example.
    query
        .entry("rowsPerPage".into())
        .or_insert_with(|| PageRequest::MAX_ROWS.to_string());
    let page = page_request(&query)?;
    let (mut installed, mut held) = (BTreeMap::new(), BTreeMap::new());
    for server in runtime.servers() {
        for (model, n) in server.node.capacity.gpu_counts() {
            *installed.entry(model).or_insert(0) += n;
        }
        for (model, n) in server.node.allocated.gpu_counts() {
            *held.entry(model).or_insert(0) += n;
        }
    }
    let stock = |code: &str| {
        let installed = installed.get(code).copied().unwrap_or(0);
        (
            installed,
            installed.saturating_sub(held.get(code).copied().unwrap_or(0)),
        )
    };
    let catalogue = GPU_MODELS.iter().map(|m| (m.code, m.name));
    let uncatalogued = installed
        .keys()
        .filter(|code| !GPU_MODELS.iter().any(|m| m.code == code.as_str()))
        .map(|code| (code.as_str(), code.as_str()));
    let models: Vec<GpuModelJson> = catalogue
        .chain(uncatalogued)
        .map(|(code, name)| {
            let (installed, free) = stock(code);
            GpuModelJson {
                code: code.into(),
                name: name.into(),
                installed,
                free,
            }
        })
        .collect();
    Ok(Json(ListEnvelope::from_page(page.slice(models), |m| m)))
}
