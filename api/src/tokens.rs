//! `/v1/tokens`: minting, listing and revoking API tokens (ADMIN role only).

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::pagination::{ListEnvelope, page_request};
use crate::path_ids::TokenIdPath;
use crate::wire::rfc3339;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ember_runtime::Runtime;
use ember_runtime::model::{Capabilities, NewToken, Role, Scopes, Token, UserName, default_scopes};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, revoke))
}

/// POST's body. Scopes default to the faces' two (not `metrics`), capabilities to
/// all of them, the role to USER.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: UserName,
    #[serde(default = "user_role")]
    role: Role,
    #[serde(default = "default_scopes")]
    scopes: Scopes,
    #[serde(default = "Capabilities::all")]
    capabilities: Capabilities,
}

fn user_role() -> Role {
    Role::User
}

/// What POST answers: the secret is shown here and never again.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct MintedJson {
    id: String,
    token: String,
    user_id: String,
}

/// A token as listed: everything but its secret, which is not kept.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokenJson {
    id: String,
    user_id: String,
    user: String,
    /// `USER` or `ADMIN`.
    #[schema(value_type = String)]
    role: Role,
    #[schema(value_type = Vec<String>)]
    scopes: Scopes,
    #[schema(value_type = Vec<String>)]
    capabilities: Capabilities,
    created: Option<String>,
    bootstrap: bool,
}

impl From<Token> for TokenJson {
    fn from(t: Token) -> Self {
        Self {
            id: t.id.to_string(),
            user_id: t.user_id.to_string(),
            user: t.user.to_string(),
            role: t.role,
            scopes: t.scopes,
            capabilities: t.capabilities,
            created: t.created.map(rfc3339),
            bootstrap: t.bootstrap,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Mints a token (ADMIN only)",
    request_body = serde_json::Value,
    responses((status = 201, description = "The token's id, secret (shown once) and user id", body = MintedJson))
)]
async fn create(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    StrictJson(body): StrictJson<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let request = NewToken {
        user: body.user,
        role: body.role,
        scopes: body.scopes,
        capabilities: body.capabilities,
    };
    let (token, secret) = runtime.create_token(&caller, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(MintedJson {
            id: token.id.to_string(),
            token: secret,
            user_id: token.user_id.to_string(),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Every token (ADMIN only)",
    params(("page" = Option<u32>, Query, description = "Page number, from 1"), ("rowsPerPage" = Option<u32>, Query, description = "Items per page")),
    responses((status = 200, description = "A page of tokens", body = ListEnvelope<TokenJson>))
)]
async fn list(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let page = runtime.list_tokens(&caller, page_request(&query)?).await?;
    Ok(Json(ListEnvelope::from_page(page, TokenJson::from)))
}

#[utoipa::path(
    get,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    summary = "One token (ADMIN only)",
    params(("id" = String, Path, description = "The token's id (a UUID)")),
    responses((status = 200, description = "The token", body = TokenJson))
)]
async fn show(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    TokenIdPath(id): TokenIdPath,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(TokenJson::from(runtime.get_token(&caller, id).await?)))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    summary = "Revokes a token (ADMIN only)",
    params(("id" = String, Path, description = "The token's id (a UUID)")),
    responses((status = 204, description = "Revoked"))
)]
async fn revoke(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    TokenIdPath(id): TokenIdPath,
) -> Result<impl IntoResponse, ApiError> {
    runtime.revoke_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
