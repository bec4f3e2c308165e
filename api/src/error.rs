//! API errors: one JSON shape, `{"code", "message", "field"?}`, and the one place
//! where a failure gets its status: runtime errors through the `From` mapping,
//! the API's own refusals through the named constructors. Success statuses (201,
//! 202, 204) stay with the handler whose OpenAPI annotation declares them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ember_runtime::RuntimeError;
use ember_runtime::model::InvalidPatch;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds the client should wait before trying again (`Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable code and a message for people. Private:
    /// the statuses are chosen by the constructors below, in this one file.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400: `field` is invalid.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after: None,
        }
    }

    /// 400 about the request as a whole (its body, its headers), with a stable
    /// `code` saying which.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 409: the request is valid but the runtime's setup or state refuses it.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413: the body is over `limit` bytes (the connection is then closed: the
    /// rest of the body was never read).
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415: the body is not sent as JSON.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 405: the path exists, but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 426: a WebSocket route called without the upgrade.
    pub fn websocket_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UPGRADE_REQUIRED, "websocket_required", message)
    }

    /// 503: the runtime does not take work now (a readiness probe's answer).
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The request field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// A query string that does not parse into what the route takes. Handlers take
/// the extraction's `Result` and apply `?` after their permission checks, so that a
/// caller without the right scope hears that first.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid_field("query", e.body_text())
    }
}

/// A value the model's rules refuse: 400 naming the field.
impl From<InvalidPatch> for ApiError {
    fn from(e: InvalidPatch) -> Self {
        Self::invalid_field(e.field(), e.message())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        if e.is_storage_full() {
            tracing::warn!(error = %e, "refused for want of disk space");
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!("{e}; free space on the data dir's disk and try again"),
            );
        }
        match e {
            RuntimeError::InvalidField { field, message } => Self::invalid_field(field, message),
            RuntimeError::NotFound { .. } => Self::not_found(e.to_string()),
            RuntimeError::Forbidden(_) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            RuntimeError::RateLimited {
                retry_after_seconds,
                ..
            } => {
                let mut error =
                    Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
                error.field = Some("quota.requestsPerMinute".into());
                error.retry_after = Some(retry_after_seconds);
                error
            }
            RuntimeError::QuotaExceeded { quota, .. } => {
                let mut error = Self::new(StatusCode::FORBIDDEN, "quota_exceeded", e.to_string());
                error.field = Some(format!("quota.{}", quota.name()));
                error
            }
            RuntimeError::Conflict { code, .. } => {
                Self::new(StatusCode::CONFLICT, code, e.to_string())
            }
            RuntimeError::NameTaken(_) => {
                Self::new(StatusCode::CONFLICT, "name_taken", e.to_string())
            }
            RuntimeError::Unprocessable(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                e.to_string(),
            ),
            RuntimeError::Storage(ember_runtime::store::StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, "the state store is out of reach");
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                );
                error.retry_after = Some(1);
                error
            }
            RuntimeError::Storage(_)
            | RuntimeError::TaskFailed { .. }
            | RuntimeError::StorageFull(_)
            | RuntimeError::SchemaTooNew { .. }
            | RuntimeError::Sandbox(_)
            | RuntimeError::Io { .. } => {
                tracing::error!(error = %e, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code for clients (`invalid_field`, `not_found`, `forbidden`, ...).
    code: &'static str,
    /// What went wrong, for people.
    message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            field: self.field,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: the connection cannot be reused.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: ApiError) -> (StatusCode, serde_json::Value) {
        let status = error.status();
        let body = ErrorBody {
            code: error.code,
            message: error.message,
            field: error.field,
        };
        (status, serde_json::to_value(body).unwrap())
    }

    #[test]
    fn runtime_errors_map_to_their_statuses() {
        let cases = [
            (
                RuntimeError::invalid("cpu", "too many"),
                StatusCode::BAD_REQUEST,
                "invalid_field",
            ),
            (
                RuntimeError::NotFound {
                    what: "container",
                    id: "x".into(),
                },
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                RuntimeError::Forbidden("no".into()),
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                RuntimeError::Conflict {
                    code: "invalid_state",
                    message: "stopped".into(),
                },
                StatusCode::CONFLICT,
                "invalid_state",
            ),
            (
                RuntimeError::NameTaken("a".into()),
                StatusCode::CONFLICT,
                "name_taken",
            ),
            (
                RuntimeError::Unprocessable("no".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
            ),
            (
                RuntimeError::StorageFull("disk".into()),
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
            ),
            (
                RuntimeError::Storage(ember_runtime::store::StoreError::Broken("sled".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            let what = error.to_string();
            let (got, json) = body(error.into());
            assert_eq!((got, json["code"].as_str()), (status, Some(code)), "{what}");
        }
    }

    #[test]
    fn an_invalid_field_is_named_in_the_body_and_the_message() {
        let (status, json) = body(RuntimeError::invalid("env.A=B", "bad name").into());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["field"], "env.A=B");
        assert_eq!(json["message"], "env.A=B: bad name");
        let (_, json) = body(ApiError::not_found("gone"));
        assert!(json.get("field").is_none(), "{json}");
    }

    #[test]
    fn an_io_error_for_want_of_space_is_insufficient_storage() {
        let error = RuntimeError::Io {
            context: "writing a blob".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        let (status, json) = body(error.into());
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(
            json["message"].as_str().unwrap().contains("free space"),
            "{json}"
        );
    }

    #[test]
    fn a_body_too_large_closes_the_connection() {
        let response = ApiError::body_too_large(10).into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[axum::http::header::CONNECTION], "close");
        let response = ApiError::not_ready("starting").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response
                .headers()
                .get(axum::http::header::CONNECTION)
                .is_none()
        );
    }
}
