//! Bearer-token authentication as an extractor.

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ember_runtime::Runtime;
use ember_runtime::model::Caller;

/// The authenticated caller of a request.
pub(crate) struct Authenticated(pub(crate) Caller);

impl FromRequestParts<Runtime> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, runtime: &Runtime) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <token> header")
        })?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        runtime
            .authenticate(secret)?
            .map(Authenticated)
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}
