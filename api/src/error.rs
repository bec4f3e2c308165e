//! API errors: one JSON shape, `{"code", "message", "field"?}`, and the one mapping
//! from runtime errors to statuses.

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
}

impl ApiError {
    /// An error with a status, a stable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
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
        }
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
