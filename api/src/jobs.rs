//! `/v1/jobs/{id}`: the progress of an asynchronous operation.

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::path_ids::JobIdPath;
use crate::wire::{DataEnvelope, rfc3339};
use axum::Json;
use axum::extract::State;
use ember_runtime::Runtime;
use ember_runtime::model::{Job, JobAction, JobState};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(get_job))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "One job",
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses((status = 200, description = "The job", body = DataEnvelope<JobJson>))
)]
async fn get_job(
    State(runtime): State<Runtime>,
    Authenticated(caller): Authenticated,
    JobIdPath(id): JobIdPath,
) -> Result<Json<DataEnvelope<JobJson>>, ApiError> {
    Ok(Json(DataEnvelope {
        data: JobJson::from(runtime.get_job(&caller, id).await?),
    }))
}

/// A job: what the instances endpoints answer (the job descriptor) and what
/// GET /v1/jobs/{id} shows.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobJson {
    id: String,
    #[serde(rename = "type")]
    action: &'static str,
    container_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    creator: String,
    state: JobStateJson,
    steps: StepsJson,
    created: String,
    links: LinksJson,
}

#[derive(Serialize, utoipa::ToSchema)]
struct JobStateJson {
    /// `queued`, `running`, `completed` or `error`.
    #[schema(value_type = String)]
    current: JobState,
    changed: String,
    error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StepsJson {
    total: u32,
    done: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LinksJson {
    #[serde(rename = "self")]
    this: String,
    container: String,
}

impl From<Job> for JobJson {
    fn from(job: Job) -> Self {
        let instance_id = match &job.action {
            JobAction::DeleteInstance { instance_id }
            | JobAction::MigrateInstance { instance_id, .. } => Some(instance_id.to_string()),
            _ => None,
        };
        Self {
            id: job.id.to_string(),
            action: job.action.name(),
            container_id: job.container_id.to_string(),
            instance_id,
            creator: job.created_by.to_string(),
            state: JobStateJson {
                current: job.state,
                changed: rfc3339(job.date_updated),
                error: job.error,
            },
            steps: StepsJson {
                total: job.steps_total,
                done: job.steps_done,
            },
            created: rfc3339(job.date_created),
            links: LinksJson {
                this: format!("/v1/jobs/{}", job.id),
                container: format!("/v1/containers/{}", job.container_id),
            },
        }
    }
}
