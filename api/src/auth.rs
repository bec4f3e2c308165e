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
        let credentials = header
            .to_str()
            .ok()
            .and_then(Credentials::parse)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "the Authorization header must be `Bearer <token>` or `ApiKey <user>:<token>`",
                )
            })?;
        let caller = match credentials.user {
            None => runtime.authenticate(credentials.secret).await?,
            Some(user) => runtime.authenticate_as(user, credentials.secret).await?,
        };
        let caller = caller.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        // Each authenticated request counts against its tenant's rate quota.
        runtime.admit_api_request(&caller)?;
        Ok(Authenticated(caller))
    }
}

/// A caller who may also be anonymous: no Authorization header is `None`; a
/// header that does not authenticate is refused as for [`Authenticated`].
impl axum::extract::OptionalFromRequestParts<Runtime> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        runtime: &Runtime,
    ) -> Result<Option<Self>, ApiError> {
        if parts.headers.get(AUTHORIZATION).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<Runtime>>::from_request_parts(parts, runtime)
            .await
            .map(Some)
    }
}

/// What an Authorization header carries: a bearer token, or the Tutum face's
/// `ApiKey <user>:<key>`, whose key is a token of that user.
struct Credentials<'a> {
    user: Option<&'a str>,
    secret: &'a str,
}

impl<'a> Credentials<'a> {
    fn parse(header: &'a str) -> Option<Self> {
        let credentials = if let Some(secret) = header.strip_prefix("Bearer ") {
            Self {
                user: None,
                secret: secret.trim(),
            }
        } else {
            let (user, secret) = header.strip_prefix("ApiKey ")?.trim().split_once(':')?;
            Self {
                user: Some(user),
                secret,
            }
        };
        (!credentials.secret.is_empty()).then_some(credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemes_parse_and_nothing_else_does() {
        let bearer = Credentials::parse("Bearer ember_abc").unwrap();
        assert_eq!((bearer.user, bearer.secret), (None, "ember_abc"));
        let api_key = Credentials::parse("ApiKey alice:ember_abc").unwrap();
        assert_eq!((api_key.user, api_key.secret), (Some("alice"), "ember_abc"));
        for bad in [
            "Bearer ",
            "ApiKey alice",
            "ApiKey alice:",
            "Basic YWxpY2U6eA==",
            "ember_abc",
        ] {
            assert!(Credentials::parse(bad).is_none(), "{bad}");
        }
    }
}
