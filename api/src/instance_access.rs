//! The instances API's ways into one instance: console and telemetry stream
//! authorizations (a WebSocket address and a single-use token), SSH credentials,
//! and instance tasks (migration).

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::instances::accepted;
use crate::jobs::JobJson;
use crate::json::StrictJson;
use crate::path_ids::InstanceIdPath;
use crate::wire::{DataEnvelope, rfc3339};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use ember_runtime::grants::StreamPurpose;
use ember_runtime::model::{Caller, Capability, ContainerId, InstanceId, ServerId};
use ember_runtime::{InstanceTask, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new()
        .routes(routes!(console))
        .routes(routes!(telemetry_stream))
        .routes(routes!(ssh_credentials, expire_ssh_credentials))
        .routes(routes!(create_task))
}

/// Where to open a stream's WebSocket: `<address>?token=<token>`.
#[derive(Serialize, ToSchema)]
struct StreamAuthorization {
    /// The WebSocket's URL, on the API's own host.
    address: String,
    /// Single-use; opens this stream of this instance only, within a minute.
    token: String,
    /// When the token stops opening the stream (RFC 3339).
    expires: String,
}

/// The host the client reached the API by, for addresses it can use in turn.
fn request_host(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| !host.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_host",
                "the request has no Host header to build the stream's address from",
            )
        })
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances/{instance}/console",
    tag = "instances",
    summary = "Authorizes a WebSocket to a running instance's console (needs containers-console)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 200, description = "The WebSocket's address and token", body = DataEnvelope<StreamAuthorization>))
)]
async fn console(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    headers: HeaderMap,
) -> Result<Json<DataEnvelope<StreamAuthorization>>, ApiError> {
    let InstanceIdPath(id, instance) = ids?;
    let ids = (id, instance);
    authorize_stream(&runtime, &caller, ids, &headers, StreamPurpose::Console).await
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances/{instance}/telemetry/resources/stream",
    tag = "instances",
    summary = "Authorizes a WebSocket of a running instance's live resource figures (needs containers-view)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 200, description = "The WebSocket's address and token", body = DataEnvelope<StreamAuthorization>))
)]
async fn telemetry_stream(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    headers: HeaderMap,
) -> Result<Json<DataEnvelope<StreamAuthorization>>, ApiError> {
    let InstanceIdPath(id, instance) = ids?;
    let ids = (id, instance);
    authorize_stream(&runtime, &caller, ids, &headers, StreamPurpose::Telemetry).await
}

/// A token for `purpose`'s WebSocket of the caller's instance, behind the
/// capability that stream needs.
async fn authorize_stream(
    runtime: &Runtime,
    caller: &Caller,
    (id, instance): (ContainerId, InstanceId),
    headers: &HeaderMap,
    purpose: StreamPurpose,
) -> Result<Json<DataEnvelope<StreamAuthorization>>, ApiError> {
    let (capability, path) = match purpose {
        StreamPurpose::Console => (Capability::ContainersConsole, crate::streams::CONSOLE_PATH),
        StreamPurpose::Telemetry => (Capability::ContainersView, crate::streams::TELEMETRY_PATH),
    };
    caller.require_capability(capability)?;
    let grant = runtime.grant_stream(caller, id, instance, purpose).await?;
    Ok(Json(DataEnvelope {
        data: StreamAuthorization {
            address: format!("ws://{}{path}", request_host(headers)?),
            token: grant.token,
            expires: rfc3339(grant.expires),
        },
    }))
}

/// How to log in to an instance over SSH.
#[derive(Serialize, ToSchema)]
struct SshConnection {
    /// `host:port` of Ember's SSH server.
    address: String,
    /// The login name: the instance's id.
    user: String,
    /// A one-off password.
    secret: String,
    /// When the password stops being accepted (RFC 3339).
    valid_until: String,
}

/// How many credentials a DELETE expired.
#[derive(Serialize, ToSchema)]
struct Expired {
    /// Credentials that were still valid.
    removed: usize,
}

#[utoipa::path(
    get,
    path = "/v1/containers/{id}/instances/{instance}/ssh",
    tag = "instances",
    summary = "Generates SSH credentials for a running OCI instance (needs containers-ssh)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 200, description = "Where and how to log in", body = DataEnvelope<SshConnection>))
)]
async fn ssh_credentials(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    headers: HeaderMap,
) -> Result<Json<DataEnvelope<SshConnection>>, ApiError> {
    caller.require_capability(Capability::ContainersSsh)?;
    let InstanceIdPath(id, instance) = ids?;
    let Some(ssh_addr) = runtime.config().ssh_addr else {
        return Err(ApiError::conflict(
            "ssh_disabled",
            "this runtime runs no SSH server (ember serve --ssh-addr)",
        ));
    };
    let credentials = runtime.grant_ssh(&caller, id, instance).await?;
    // A server listening on every address is reached by the host the client used.
    let address = if ssh_addr.ip().is_unspecified() {
        let host = request_host(&headers)?;
        let name = host_name(host);
        format!("{name}:{}", ssh_addr.port())
    } else {
        ssh_addr.to_string()
    };
    Ok(Json(DataEnvelope {
        data: SshConnection {
            address,
            user: credentials.user,
            secret: credentials.secret,
            valid_until: rfc3339(credentials.valid_until),
        },
    }))
}

/// The host of a `Host` header, without its port (`[::1]:8080` gives `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            if name.starts_with('[') || !name.contains(':') {
                name
            } else {
                host
            }
        }
        _ => host,
    }
}

#[utoipa::path(
    delete,
    path = "/v1/containers/{id}/instances/{instance}/ssh",
    tag = "instances",
    summary = "Expires every SSH credential of an instance (needs containers-ssh)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    responses((status = 200, description = "How many were still valid", body = DataEnvelope<Expired>))
)]
async fn expire_ssh_credentials(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
) -> Result<Json<DataEnvelope<Expired>>, ApiError> {
    caller.require_capability(Capability::ContainersSsh)?;
    let InstanceIdPath(id, instance) = ids?;
    let removed = runtime.expire_ssh(&caller, id, instance).await?;
    Ok(Json(DataEnvelope {
        data: Expired { removed },
    }))
}

/// `{"action": ..., "contents": {...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    action: String,
    contents: Map<String, Value>,
}

/// The actions instance tasks take.
const TASK_ACTIONS: &str = "`migration.start` or `migration.revert`";

fn task_from(body: TaskBody) -> Result<InstanceTask, ApiError> {
    let allowed: &[&str] = match body.action.as_str() {
        "migration.start" => &["server_id"],
        "migration.revert" => &[],
        other => {
            return Err(ApiError::invalid_field(
                "action",
                format!("`{other}` is not an instance task; the actions are {TASK_ACTIONS}"),
            ));
        }
    };
    if let Some(key) = body
        .contents
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(ApiError::invalid_field(
            format!("contents.{key}"),
            match allowed {
                [] => format!("{} takes no contents", body.action),
                _ => format!("{} takes only `server_id`", body.action),
            },
        ));
    }
    if body.action == "migration.revert" {
        return Ok(InstanceTask::MigrationRevert);
    }
    let server = match body.contents.get("server_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => Some(raw.parse::<ServerId>().map_err(
            |e: ember_runtime::model::InvalidId| {
                ApiError::invalid_field("contents.server_id", e.to_string())
            },
        )?),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "contents.server_id",
                "must be a server's id (a string)",
            ));
        }
    };
    Ok(InstanceTask::MigrationStart { server })
}

#[utoipa::path(
    post,
    path = "/v1/containers/{id}/instances/{instance}/tasks",
    tag = "instances",
    summary = "Migrates a running instance, or reverts its migration (needs containers-instance-migrate)",
    params(("id" = String, Path, description = "The container's id (a UUID)"), ("instance" = String, Path, description = "The instance's id (a UUID)")),
    request_body = serde_json::Value,
    responses((status = 202, description = "The job that does it", body = DataEnvelope<JobJson>))
)]
async fn create_task(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    ids: Result<InstanceIdPath, ApiError>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    StrictJson(body): StrictJson<TaskBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require_capability(Capability::ContainersInstanceMigrate)?;
    let InstanceIdPath(id, instance) = ids?;
    let as_sent = serde_json::to_vec(&serde_json::json!({
        "action": &body.action,
        "contents": &body.contents,
    }))
    .unwrap_or_default();
    let task = task_from(body)?;
    match runtime.run_instance_task(&caller, id, instance, task).await {
        Ok(job) => Ok(accepted(job).into_response()),
        // In a cluster, another member may run it.
        Err(e @ ember_runtime::RuntimeError::NotFound { .. }) => {
            let request = (&method, &uri, &headers);
            crate::instances::on_its_member(
                &runtime,
                &caller,
                (id, instance),
                request,
                Some(as_sent),
            )
            .await?
            .ok_or_else(|| e.into())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_drops_only_a_port() {
        assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_name("example.test"), "example.test");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    #[test]
    fn tasks_are_migrations_with_known_contents_only() {
        let body = |v: Value| serde_json::from_value::<TaskBody>(v).unwrap();
        assert_eq!(
            task_from(body(
                serde_json::json!({"action": "migration.start", "contents": {}})
            ))
            .unwrap(),
            InstanceTask::MigrationStart { server: None }
        );
        assert_eq!(
            task_from(body(
                serde_json::json!({"action": "migration.revert", "contents": {}})
            ))
            .unwrap(),
            InstanceTask::MigrationRevert
        );
        for (bad, field) in [
            (
                serde_json::json!({"action": "reboot", "contents": {}}),
                "action",
            ),
            (
                serde_json::json!({"action": "migration.start", "contents": {"zone": "x"}}),
                "contents.zone",
            ),
            (
                serde_json::json!({"action": "migration.start", "contents": {"server_id": 3}}),
                "contents.server_id",
            ),
            (
                serde_json::json!({"action": "migration.start", "contents": {"server_id": "nope"}}),
                "contents.server_id",
            ),
            (
                serde_json::json!({"action": "migration.revert", "contents": {"server_id": "x"}}),
                "contents.server_id",
            ),
        ] {
            let error = task_from(body(bad)).unwrap_err();
            assert_eq!(error.field(), Some(field));
        }
    }
}
