//! `GET /v1/containers/{id}/logs`: the container's recent output as an event stream
//! (document 002), one event per line, each a JSON object.

use crate::auth::Authenticated;
use crate::containers::{container_id, rfc3339};
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use ember_runtime::Runtime;
use serde::Deserialize;
use std::time::{Duration, SystemTime};

pub(crate) fn routes() -> Router<Runtime> {
    Router::new().route("/v1/containers/{id}/logs", get(logs))
}

/// The range, in seconds since the epoch (document 000's `period_start`/`period_end`);
/// by default the last day.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    period_start: Option<String>,
    period_end: Option<String>,
}

fn seconds(field: &str, value: Option<&str>, default: SystemTime) -> Result<SystemTime, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| ApiError::invalid_field(field, "must be whole seconds since the epoch")),
    }
}

async fn logs(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<Period>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(period) = query.map_err(|e| ApiError::invalid_field("query", e.body_text()))?;
    let now = SystemTime::now();
    let since = seconds(
        "period_start",
        period.period_start.as_deref(),
        now - Duration::from_secs(24 * 3600),
    )?;
    let until = seconds("period_end", period.period_end.as_deref(), now)?;
    if since > until {
        return Err(ApiError::invalid_field(
            "period_start",
            "must not be after period_end",
        ));
    }
    let entries = runtime.read_logs(&caller, container_id(&id)?, since, until)?;
    let mut body = String::new();
    for entry in entries {
        let event = serde_json::json!({
            "timestamp": rfc3339(entry.time),
            "instance": entry.instance,
            "stream": entry.stream,
            "line": entry.line,
        });
        body.push_str("data: ");
        body.push_str(&event.to_string());
        body.push_str("\n\n");
    }
    Ok(([(header::CONTENT_TYPE, "text/event-stream")], body))
}
