//! Ember's management API.
//!
//! [`router`] builds the axum router over a [`Runtime`]; tests call it in-process.
//! One module per resource; [`error`] is the one place runtime errors become HTTP
//! statuses.
#![deny(missing_docs)]

mod auth;
mod blobs;
mod cluster_reach;
mod container_json;
mod container_request;
mod containers;
pub mod error;
mod faces;
mod gpu_models;
mod instance_access;
mod instance_query;
mod instance_resources;
mod instances;
mod jobs;
mod json;
mod logs;
mod openapi;
mod pagination;
mod path_ids;
mod quotas;
mod servers;
mod streams;
mod tokens;
mod wire;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use ember_runtime::Runtime;
use error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The management API's routes over `runtime`, with `GET /openapi.json`.
pub fn router(runtime: Runtime) -> Router {
    let (router, api) = documented_routes();
    let document: axum::body::Bytes = api
        .to_json()
        .expect("the OpenAPI document serialises")
        .into();
    router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document,
                    )
                }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by our own extractors, which answer 413 in JSON.
        .layer(DefaultBodyLimit::disable())
        // For the middleware that has no state of its own.
        .layer(axum::Extension(runtime.clone()))
        .with_state(runtime)
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().1
}

/// Every route with its OpenAPI document, completed with what all routes share.
fn documented_routes() -> (Router<Runtime>, utoipa::openapi::OpenApi) {
    let (router, mut api) = routes().split_for_parts();
    openapi::add_shared_refusal(&mut api);
    (router, api)
}

fn routes() -> OpenApiRouter<Runtime> {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .merge(containers::routes())
        .merge(instances::routes())
        .merge(instance_resources::routes())
        .merge(instance_access::routes())
        .merge(streams::routes())
        .merge(jobs::routes())
        .merge(servers::routes())
        .merge(logs::routes())
        .merge(blobs::routes())
        .merge(tokens::routes())
        .merge(quotas::routes())
        .merge(gpu_models::routes())
        .merge(faces::routes())
}

/// Prometheus text. Without a token, or with one that lacks the `metrics` scope,
/// only node-wide series; with an admin token or one with the `metrics` scope (as
/// Prometheus sends it from its scrape config), every container's series too.
/// A tenant reads its own containers' series at `/v1/containers/{id}/metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "runtime",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String))
)]
async fn metrics(
    axum::extract::State(runtime): axum::extract::State<Runtime>,
    reader: Option<auth::Authenticated>,
) -> impl axum::response::IntoResponse {
    prometheus_text(runtime.metrics_text(reader.as_ref().map(|a| &a.0)))
}

/// A Prometheus text answer.
pub(crate) fn prometheus_text(text: String) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// The state of a probe's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ProbeBody {
    /// `ok` for liveness, `ready` for readiness.
    status: &'static str,
}

/// Liveness: the process answers. Reads nothing.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "runtime",
    security(()),
    responses((status = 200, description = "The runtime is alive", body = ProbeBody))
)]
async fn healthz() -> axum::Json<ProbeBody> {
    axum::Json(ProbeBody { status: "ok" })
}

/// Readiness: the state store can write and the ingress is routing. Reads only
/// memory, so it answers at once whatever the runtime is doing.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "runtime",
    security(()),
    responses(
        (status = 200, description = "The runtime takes work", body = ProbeBody),
        (status = 503, description = "Why it does not, in `message` (code `not_ready`)", body = error::ErrorBody)
    )
)]
async fn readyz(
    axum::extract::State(runtime): axum::extract::State<Runtime>,
) -> Result<axum::Json<ProbeBody>, ApiError> {
    runtime.readiness().map_err(ApiError::not_ready)?;
    Ok(axum::Json(ProbeBody { status: "ready" }))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no API route at {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Serves the API on `listener` until the future is dropped, each connection
/// under the API's own limits and timeouts (`Runtime::api_gate`), apart from the
/// ingress's so that a flood of the ingress never starves it.
pub async fn serve(runtime: Runtime, listener: tokio::net::TcpListener) {
    let gate = runtime.api_gate().clone();
    let service = hyper_util::service::TowerToHyperService::new(router(runtime));
    let builder = std::sync::Arc::new(ember_runtime::connections::http_builder());
    loop {
        let (stream, admitted) = ember_runtime::connections::accept(&listener, &gate).await;
        let _ = stream.set_nodelay(true);
        let (service, builder) = (service.clone(), builder.clone());
        tokio::spawn(async move {
            ember_runtime::connections::serve_connection(&builder, admitted, stream, service).await;
        });
    }
}

/// Whose instances and lines a request takes in: a member of the cluster asking
/// (it marks its requests) gets this node's alone, a client the whole cluster's.
pub(crate) fn reach(headers: &axum::http::HeaderMap) -> ember_runtime::Reach {
    if headers.contains_key(ember_runtime::RELAYED_BY) {
        ember_runtime::Reach::ThisNode
    } else {
        ember_runtime::Reach::Cluster
    }
}
