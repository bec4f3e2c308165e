//! The faces over the native model, each named for what it is. None keeps state:
//! each reads and acts through the runtime as the `/v1` routes do.
//!
//! Which face (or API) implements which of the source documents, the one place
//! their numbers are used as names:
//!
//! | document | name | routes | module |
//! |---|---|---|---|
//! | 000 | the numbered containers face (an instance, by integer id) | `/api/containers` | [`numbered_containers`] |
//! | 001 | the container services face (a container, by integer id) | `/api/container_services`, `/api/products` | [`container_services`], [`packages`] |
//! | 002 | the native container API | `/v1/containers`, `/v1/gpu-models` | `crate::containers` |
//! | 003 | the Tutum face (an instance, by UUID) | `/api/v1/container/` | [`tutum`] |
//! | 004 | the instances API | `/v1/containers/{id}/instances` | `crate::instances` |

pub(crate) mod container_services;
pub(crate) mod numbered_containers;
pub(crate) mod packages;
pub(crate) mod tutum;

use crate::error::ApiError;
use crate::logs::seconds;
use crate::wire::rfc3339;
use ember_runtime::Runtime;
use ember_runtime::logs::LogEntry;
use ember_runtime::model::{InstanceInfo, InstanceState};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use utoipa_axum::router::OpenApiRouter;

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    // The faces that name an instance alone find it on whichever member runs it.
    let instance_faces = OpenApiRouter::new()
        .merge(numbered_containers::routes())
        .merge(tutum::routes())
        .route_layer(axum::middleware::from_fn(
            crate::cluster_reach::answered_by_its_member,
        ));
    OpenApiRouter::new()
        .merge(instance_faces)
        .merge(container_services::routes())
        .merge(packages::routes())
}

/// An instance's name in the faces that name instances: `<container>-<ordinal>`.
pub(crate) fn unique_name(container: &str, instance: &InstanceInfo) -> String {
    format!("{container}-{}", instance.ordinal)
}

/// The numbered containers and container services faces' log query: `limit` lines from `period_start` to
/// `period_end` (seconds since the epoch; by default the last day).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// Most lines, 1 to 10000 (default: all).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// Seconds since the epoch (default: a day ago).
    #[param(value_type = Option<u64>)]
    period_start: Option<String>,
    /// Seconds since the epoch (default: now).
    #[param(value_type = Option<u64>)]
    period_end: Option<String>,
}

/// Most rows a log answer holds.
const MAX_LOG_ROWS: usize = 10_000;

impl LogQuery {
    /// The range, checked.
    pub(crate) fn range(&self) -> Result<(SystemTime, SystemTime), ApiError> {
        let now = SystemTime::now();
        let since = seconds(
            "period_start",
            self.period_start.as_deref(),
            now - Duration::from_secs(24 * 3600),
        )?;
        let until = seconds("period_end", self.period_end.as_deref(), now)?;
        if since > until {
            return Err(ApiError::invalid_field(
                "period_start",
                "must not be after period_end",
            ));
        }
        Ok((since, until))
    }

    /// The newest `limit` entries as `[timestamp, name, line]` rows, newest first
    /// (as the documents' example), `name` being the instance's unique name.
    pub(crate) fn rows(
        &self,
        entries: Vec<LogEntry>,
        names: &HashMap<String, String>,
    ) -> Result<Vec<LogRow>, ApiError> {
        let limit = match self.limit.as_deref() {
            None => MAX_LOG_ROWS,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LOG_ROWS).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "limit",
                        format!("`{raw}` is not a number of lines from 1 to {MAX_LOG_ROWS}"),
                    )
                })?,
        };
        Ok(entries
            .into_iter()
            .rev()
            .take(limit)
            .map(|e| {
                let at = e
                    .time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                let name = names.get(&e.instance).unwrap_or(&e.instance).clone();
                (at, name, e.line)
            })
            .collect())
    }
}

/// One log line: seconds since the epoch, the instance's name, the line.
pub(crate) type LogRow = (f64, String, String);

/// Unique names of a container's instances, by instance id (as log entries name them).
pub(crate) fn names_by_id(container: &str, instances: &[InstanceInfo]) -> HashMap<String, String> {
    instances
        .iter()
        .map(|i| (i.id.to_string(), unique_name(container, i)))
        .collect()
}

/// A time as the numbered containers face's metrics show it: `2021-03-11T21:55:51.000+00:00`.
pub(crate) fn metrics_time(t: SystemTime) -> String {
    let seconds = rfc3339(t);
    let millis = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    format!("{}.{millis:03}+00:00", seconds.trim_end_matches('Z'))
}

/// Whether an instance is meant to run (the numbered containers face's `req_state`).
pub(crate) fn wants_to_run(state: InstanceState) -> bool {
    matches!(state, InstanceState::Starting | InstanceState::Running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<&str>, start: Option<&str>, end: Option<&str>) -> LogQuery {
        LogQuery {
            limit: limit.map(Into::into),
            period_start: start.map(Into::into),
            period_end: end.map(Into::into),
        }
    }

    fn entry(second: u64, instance: &str, line: &str) -> LogEntry {
        LogEntry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(second),
            instance: instance.into(),
            stream: ember_sandbox::LogStream::Stdout,
            line: line.into(),
        }
    }

    #[test]
    fn a_log_range_must_not_end_before_it_starts() {
        let (since, until) = query(None, Some("10"), Some("20")).range().unwrap();
        assert_eq!(
            until.duration_since(since).unwrap(),
            Duration::from_secs(10)
        );
        let error = query(None, Some("20"), Some("10")).range().unwrap_err();
        assert_eq!(error.field(), Some("period_start"));
        let error = query(None, Some("x"), None).range().unwrap_err();
        assert_eq!(error.field(), Some("period_start"));
    }

    #[test]
    fn log_rows_are_the_newest_first_named_by_instance() {
        let entries = vec![
            entry(1, "a", "one"),
            entry(2, "b", "two"),
            entry(3, "a", "three"),
        ];
        let names = HashMap::from([("a".to_string(), "web-1".to_string())]);
        let rows = query(Some("2"), None, None)
            .rows(entries.clone(), &names)
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (3.0, "web-1".to_string(), "three".to_string()),
                (2.0, "b".to_string(), "two".to_string()),
            ]
        );
        assert_eq!(
            query(None, None, None).rows(entries, &names).unwrap().len(),
            3
        );
        for bad in ["0", "10001", "all"] {
            let error = query(Some(bad), None, None)
                .rows(Vec::new(), &names)
                .unwrap_err();
            assert_eq!(error.field(), Some("limit"), "{bad}");
        }
    }

    #[test]
    fn metrics_times_carry_milliseconds_and_an_offset() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_615_499_751_250);
        assert_eq!(metrics_time(t), "2021-03-11T21:55:51.250+00:00");
    }
}
