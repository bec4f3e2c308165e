//! `GET /v1/gpu-models`: the GPU models containers may ask for (document 002).

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::pagination::{ListEnvelope, page_request};
use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use ember_runtime::Runtime;
use ember_runtime::model::{GPU_MODELS, GpuModel, PageRequest};
use std::collections::HashMap;

pub(crate) fn routes() -> Router<Runtime> {
    Router::new().route("/v1/gpu-models", get(list))
}

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
