//! The WebSockets that stream authorizations open: `?token=` is the only
//! credential, used up by the connection. The console sends the instance's output
//! as text, a line per message (what it retained first, then live), and writes
//! what the client sends to the instance's standard input. The telemetry stream
//! sends a JSON reading about once a second. Both close when the instance stops.

use crate::error::ApiError;
use crate::wire::rfc3339;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use ember_runtime::grants::{GrantTarget, StreamPurpose};
use ember_runtime::logs::LogEntry;
use ember_runtime::{Runtime, TelemetryReading};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The console WebSocket's path.
pub(crate) const CONSOLE_PATH: &str = "/v1/streams/console";
/// The telemetry WebSocket's path.
pub(crate) const TELEMETRY_PATH: &str = "/v1/streams/telemetry";

/// Time between telemetry readings.
const TELEMETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Time between checks that a console's instance still runs.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// WebSocket close codes (RFC 6455, 7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_UNSUPPORTED: u16 = 1003;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(console))
        .routes(routes!(telemetry))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    token: String,
}

/// Uses up the request's token for `purpose`, then upgrades.
fn open(
    runtime: &Runtime,
    query: Result<Query<TokenQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    purpose: StreamPurpose,
) -> Result<(GrantTarget, WebSocketUpgrade), ApiError> {
    let Query(TokenQuery { token }) = query.map_err(|_| {
        ApiError::unauthorized("the stream needs ?token=<token> from its authorization")
    })?;
    let upgrade =
        upgrade.map_err(|e| ApiError::websocket_required(format!("this is a WebSocket: {e}")))?;
    let target = runtime.redeem_stream(&token, purpose).ok_or_else(|| {
        ApiError::unauthorized(
            "the token is unknown, used, expired, or for another stream; ask for a new one",
        )
    })?;
    Ok((target, upgrade))
}

#[utoipa::path(
    get,
    path = "/v1/streams/console",
    tag = "instances",
    summary = "The console WebSocket (opened with a console authorization's token)",
    security(()),
    params(("token" = String, Query, description = "From GET .../instances/{instance}/console")),
    responses((status = 101, description = "Switching to the WebSocket"))
)]
async fn console(
    State(runtime): State<Runtime>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (target, upgrade) = open(&runtime, query, upgrade, StreamPurpose::Console)?;
    Ok(upgrade.on_upgrade(move |socket| attach_console(runtime, target, socket)))
}

async fn attach_console(runtime: Runtime, target: GrantTarget, mut socket: WebSocket) {
    let (recent, mut lines) = runtime.console_output(&target);
    let name = target.instance.to_string();
    for entry in recent {
        if socket.send(line_message(&entry)).await.is_err() {
            return;
        }
    }
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
    let reason = loop {
        tokio::select! {
            line = lines.recv() => match line {
                Ok(entry) if entry.instance == name => {
                    if socket.send(line_message(&entry)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    let note = format!("[ember: {missed} lines were missed]\n");
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => break (CLOSE_NORMAL, "the container was deleted".to_string()),
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Err(e) = runtime.console_input(&target, text.as_bytes()).await {
                        break (CLOSE_UNSUPPORTED, e.to_string());
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if let Err(e) = runtime.console_input(&target, &bytes).await {
                        break (CLOSE_UNSUPPORTED, e.to_string());
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = liveness.tick() => {
                if !runtime.grant_is_running(&target) {
                    break (CLOSE_NORMAL, "the instance stopped".to_string());
                }
            }
        }
    };
    close(socket, reason).await;
}

fn line_message(entry: &LogEntry) -> Message {
    Message::Text(format!("{}\n", entry.line).into())
}

async fn close(mut socket: WebSocket, (code, reason): (u16, String)) {
    // A close frame's reason is at most 123 bytes.
    let mut reason = reason;
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

#[utoipa::path(
    get,
    path = "/v1/streams/telemetry",
    tag = "instances",
    summary = "The telemetry WebSocket (opened with a telemetry stream authorization's token)",
    security(()),
    params(("token" = String, Query, description = "From GET .../instances/{instance}/telemetry/resources/stream")),
    responses((status = 101, description = "Switching to the WebSocket"))
)]
async fn telemetry(
    State(runtime): State<Runtime>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (target, upgrade) = open(&runtime, query, upgrade, StreamPurpose::Telemetry)?;
    Ok(upgrade.on_upgrade(move |socket| stream_telemetry(runtime, target, socket)))
}

async fn stream_telemetry(runtime: Runtime, target: GrantTarget, mut socket: WebSocket) {
    let mut ticks = tokio::time::interval(TELEMETRY_INTERVAL);
    // CPU use is the CPU time between two readings over the time between them.
    let mut previous: Option<(Instant, Duration)> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let Some(reading) = runtime.telemetry_reading(&target).await else {
                    close(socket, (CLOSE_NORMAL, "the instance stopped".into())).await;
                    return;
                };
                let now = Instant::now();
                let cpu_percent = previous.map_or(0.0, |(then, cpu)| {
                    let wall = now.duration_since(then).as_secs_f64();
                    let used = reading.usage.cpu_time.saturating_sub(cpu).as_secs_f64();
                    if wall > 0.0 { 100.0 * used / wall } else { 0.0 }
                });
                previous = Some((now, reading.usage.cpu_time));
                let sample = reading_json(&target, &reading, cpu_percent);
                if socket.send(Message::Text(sample.to_string().into())).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One telemetry reading, shaped as the telemetry report is.
fn reading_json(target: &GrantTarget, reading: &TelemetryReading, cpu_percent: f64) -> Value {
    let usage = &reading.usage;
    json!({
        "instance_id": target.instance.to_string(),
        "state": reading.state,
        "timestamp": rfc3339(reading.at),
        "cpu": {
            "usage_percent": cpu_percent,
            "limit_cores": reading.spec.cpu,
        },
        "memory": {
            "used_bytes": usage.memory_bytes,
            "limit_bytes": reading.spec.ram.bytes(),
        },
        "storage": {
            "used_bytes": usage.storage_bytes,
            "limit_bytes": reading.spec.ephemeral_storage.bytes(),
        },
        "network": usage.network.map(|n| json!({
            "received_bytes": n.received_bytes,
            "sent_bytes": n.sent_bytes,
        })),
    })
}
