//! `/v1/users/{user}/quota`: what a tenant may hold (ADMIN only), and what it
//! holds now.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::path_ids::UserNamePath;
use crate::wire::DataEnvelope;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use ember_runtime::Runtime;
use ember_runtime::model::{Quota, QuotaUse, UserName};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(show, replace))
}

/// A user's quota (`null`: no limit) and use.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct QuotaJson {
    user: String,
    /// `containers`, `instances`, `cpu` (CPUs), `ram` and `ephemeralStorage`
    /// (quantities) and `requestsPerMinute`, each `null` for no limit.
    #[schema(value_type = Object)]
    quota: Quota,
    /// What it holds now: `containers`, `instances`, `millicpus`, `memoryBytes`,
    /// `ephemeralStorageBytes`.
    #[schema(value_type = Object)]
    r#use: QuotaUse,
}

fn answer(user: UserName, (quota, used): (Quota, QuotaUse)) -> impl IntoResponse {
    Json(DataEnvelope {
        data: QuotaJson {
            user: user.to_string(),
            quota,
            r#use: used,
        },
    })
}

#[utoipa::path(
    get,
    path = "/v1/users/{user}/quota",
    tag = "quotas",
    summary = "A user's quota and what it holds (ADMIN only)",
    params(("user" = String, Path, description = "The user's name")),
    responses((status = 200, description = "The quota and its use", body = DataEnvelope<QuotaJson>))
)]
async fn show(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    UserNamePath(user): UserNamePath,
) -> Result<impl IntoResponse, ApiError> {
    let found = runtime.quota(&caller, user.clone()).await?;
    Ok(answer(user, found))
}

#[utoipa::path(
    put,
    path = "/v1/users/{user}/quota",
    tag = "quotas",
    summary = "Sets a user's quota (ADMIN only)",
    params(("user" = String, Path, description = "The user's name")),
    request_body = serde_json::Value,
    responses((status = 200, description = "The quota set and its use", body = DataEnvelope<QuotaJson>))
)]
async fn replace(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    UserNamePath(user): UserNamePath,
    StrictJson(quota): StrictJson<Quota>,
) -> Result<impl IntoResponse, ApiError> {
    let set = runtime.set_quota(&caller, user.clone(), quota).await?;
    Ok(answer(user, set))
}
