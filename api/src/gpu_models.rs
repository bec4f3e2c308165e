//! `GET /v1/gpu-models`: the GPU models containers may ask for (document 002).

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::pagination::{ListEnvelope, page_request};
use axum::Json;
use axum::extract::Query;
use ember_runtime::Runtime;
use ember_runtime::model::{GPU_MODELS, GpuModel, PageRequest};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(list))
}

#[utoipa::path(
    get,
    path = "/v1/gpu-models",
    tag = "catalogue",
    summary = "The GPU model catalogue",
    params(("page" = Option<u32>, Query, description = "Page number, from 1"), ("rowsPerPage" = Option<u32>, Query, description = "Items per page")),
    responses((status = 200, description = "A page of GPU models", body = serde_json::Value), (status = "4XX", description = "A JSON error naming the problem", body = crate::error::ErrorBody))
)]
async fn list(
    Authenticated(_caller): Authenticated,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<Json<ListEnvelope<GpuModel>>, ApiError> {
    // The whole catalogue fits one page, as in the document's example.
    query
        .entry("rowsPerPage".into())
        .or_insert_with(|| PageRequest::MAX_ROWS.to_string());
    let page = page_request(&query)?;
    Ok(Json(ListEnvelope::from_page(
        page.slice(GPU_MODELS.to_vec()),
        |model| model,
    )))
}
