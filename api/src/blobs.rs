//! `POST /v1/blobs`: uploads a wasm component to the content store, for deploying
//! local files by digest (`image: "sha256:<hex>"`).

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::read_body;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ember_runtime::{MAX_BLOB_BYTES, Runtime};

pub(crate) fn routes() -> Router<Runtime> {
    Router::new().route("/v1/blobs", post(upload))
}

async fn upload(
    State(runtime): State<Runtime>,
    Authenticated(_caller): Authenticated,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let bytes = read_body(body, MAX_BLOB_BYTES).await?;
    let digest = runtime.put_blob(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "digest": digest.to_string(), "size": bytes.len() })),
    ))
}
