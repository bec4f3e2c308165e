//! `POST /v1/blobs`: uploads a wasm component, or the parts of an image read from
//! disk (layers, config, then manifest, each with its OCI media type), to the
//! content store, for deploying by digest (`image: "sha256:<hex>"`).

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::read_body;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use ember_runtime::{ImagePart, MAX_BLOB_BYTES, Runtime};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(download))
}

#[utoipa::path(
    post,
    path = "/v1/blobs",
    tag = "runtime",
    summary = "Stores a wasm component, or a part of an image (by its media type)",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A component binary; or, sent with an OCI or Docker media type as Content-Type (application/vnd.oci.image.layer.v1.tar+gzip, ...config.v1+json, ...manifest.v1+json), an image's layer, config or manifest. A manifest's digest deploys the image once its config and layers are stored"),
    responses((status = 201, description = "Its digest", body = serde_json::Value))
)]
async fn upload(
    State(runtime): State<Runtime>,
    Authenticated(_caller): Authenticated,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let part = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(ImagePart::from_media_type);
    let bytes = read_body(body, MAX_BLOB_BYTES).await?;
    let size = bytes.len();
    let digest = match part {
        Some(part) => runtime.put_image_blob(bytes, part).await?,
        None => runtime.put_blob(bytes).await?,
    };
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "digest": digest.to_string(), "size": size })),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/blobs/{digest}",
    tag = "runtime",
    summary = "Reads a stored component (ADMIN only: a cluster's nodes fetch components uploaded to one another)",
    params(("digest" = String, Path, description = "sha256:<64 hex digits>")),
    responses(
        (status = 200, description = "The component binary", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Not a digest", body = crate::error::ErrorBody),
        (status = 403, description = "Not an ADMIN token", body = crate::error::ErrorBody),
        (status = 404, description = "No such blob here", body = crate::error::ErrorBody),
    )
)]
async fn download(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let bytes = runtime.read_blob(&caller, &digest).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    ))
}
