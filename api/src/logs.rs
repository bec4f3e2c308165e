//! `GET /v1/containers/{id}/logs`: the container's output as an event stream
//! (the native container API), one event per line, each a JSON object: the recent lines, then
//! each new line as it is written, until the client leaves or the container is
//! deleted. With `period_end` the stream ends after the range instead.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::path_ids::ContainerIdPath;
use crate::wire::rfc3339;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use ember_runtime::Runtime;
use ember_runtime::logs::LogEntry;
use futures::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How often a quiet stream sends a comment, so that proxies keep it open and a
/// client that has gone is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(logs))
}

/// The range, in seconds since the epoch (as the numbered containers face's
/// `period_start`/`period_end`); by default the last day.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    period_start: Option<String>,
    period_end: Option<String>,
}

/// The last second of year 9999: later times are refused, not overflowed.
const LATEST_SECONDS: u64 = 253_402_300_799;

pub(crate) fn seconds(
    field: &str,
    value: Option<&str>,
    default: SystemTime,
) -> Result<SystemTime, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= LATEST_SECONDS)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    field,
                    format!("must be whole seconds since the epoch, at most {LATEST_SECONDS}"),
                )
            }),
    }
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/logs",
    tag = "containers",
    summary = "A container's output: recent lines, then each new one, as server-sent events",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("period_start" = Option<u64>, Query, description = "Seconds since the epoch (default: a day ago)"), ("period_end" = Option<u64>, Query, description = "Seconds since the epoch; given, the stream ends after the range")),
    responses((status = 200, description = "One event per line", content_type = "text/event-stream", body = String))
)]
async fn logs(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    id: Result<ContainerIdPath, ApiError>,
    query: Result<Query<Period>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let reach = crate::reach(&headers);
    let Query(period) = query?;
    let now = SystemTime::now();
    let since = seconds(
        "period_start",
        period.period_start.as_deref(),
        now - Duration::from_secs(24 * 3600),
    )?;
    let ContainerIdPath(id) = id?;
    let event_stream = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let Some(end) = period.period_end.as_deref() else {
        let (recent, follower) = runtime.follow_logs(&caller, id, since, reach).await?;
        let replay = futures::stream::iter(recent.iter().map(event).collect::<Vec<_>>());
        let body = replay.chain(follow(follower)).map(Ok::<_, Infallible>);
        return Ok((event_stream, Body::from_stream(body)));
    };
    let until = seconds("period_end", Some(end), now)?;
    if since > until {
        return Err(ApiError::invalid_field(
            "period_start",
            "must not be after period_end",
        ));
    }
    let entries = runtime
        .read_logs(&caller, id, (since, until), reach)
        .await?;
    let body: Vec<u8> = entries.iter().flat_map(|e| event(e).to_vec()).collect();
    Ok((event_stream, Body::from(body)))
}

/// One line as an event.
fn event(entry: &LogEntry) -> Bytes {
    let data = serde_json::json!({
        "timestamp": rfc3339(entry.time),
        "instance": entry.instance,
        "stream": entry.stream,
        "line": entry.line,
    });
    Bytes::from(format!("data: {data}\n\n"))
}

/// Each line as it is written, a keep-alive comment after each quiet spell, and a
/// comment saying how many lines a slow client missed.
fn follow(follower: broadcast::Receiver<LogEntry>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::unfold(follower, |mut follower| async move {
        let bytes = match tokio::time::timeout(KEEP_ALIVE, follower.recv()).await {
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            Ok(Ok(entry)) => event(&entry),
            Ok(Err(RecvError::Lagged(missed))) => Bytes::from(format!(
                ": {missed} lines skipped (the client read too slowly)\n\n"
            )),
            // The container was deleted.
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((bytes, follower))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_default_parse_and_refuse_naming_the_field() {
        let default = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        assert_eq!(seconds("period_start", None, default).unwrap(), default);
        assert_eq!(
            seconds("period_start", Some("60"), default).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(60)
        );
        let latest = LATEST_SECONDS.to_string();
        assert!(seconds("period_end", Some(&latest), default).is_ok());
        let past = (LATEST_SECONDS + 1).to_string();
        for bad in ["-1", "1.5", "soon", "", past.as_str()] {
            let error = seconds("period_end", Some(bad), default).unwrap_err();
            assert_eq!(error.field(), Some("period_end"), "{bad}");
        }
    }
}
