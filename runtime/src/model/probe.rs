//! Health probes of a container's instances (Kubernetes' and Knative's
//! `startupProbe`, `readinessProbe` and `livenessProbe`).

use std::time::Duration;

/// One probe: what to ask an instance, how often, and how many failures in a row
/// mean it failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// A GET of this path, answered 200-399, passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    /// A TCP connection to the instance's port passes (OCI; a wasm instance
    /// always passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    /// Seconds between two tries; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u64>,
    /// Failures in a row that fail the probe; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Seconds one try may take; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// `httpGet`: the path asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    /// Starts with `/`.
    pub path: String,
}

/// `tcpSocket`: the instance's own port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocket {}

/// A container's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// Passes once before the instance takes requests, within period ×
    /// threshold (instead of `--startup-timeout`): room for slow starters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// Passes before the instance takes requests (after the startup probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Asked every period while the instance runs; failing replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
}

impl Probes {
    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_SECONDS: u64 = 3600;
const MAX_FAILURE_THRESHOLD: u32 = 10_000;

impl Probe {
    /// The path an HTTP probe asks for; `None` for a TCP probe.
    pub fn path(&self) -> Option<&str> {
        self.http_get.as_ref().map(|h| h.path.as_str())
    }

    /// Seconds between tries.
    pub fn period(&self) -> Duration {
        self.period_seconds
            .map_or(DEFAULT_PERIOD, Duration::from_secs)
    }

    /// Failures in a row that fail it.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD)
    }

    /// How long one try may take.
    pub fn timeout(&self) -> Duration {
        self.timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
    }

    /// Checks the probe: the field at fault under `field` (`readinessProbe`) and
    /// what is wrong with it.
    pub fn check(&self, field: &str) -> Result<(), (String, String)> {
        match (&self.http_get, &self.tcp_socket) {
            (Some(_), Some(_)) | (None, None) => {
                return Err((
                    field.to_string(),
                    "needs exactly one of httpGet and tcpSocket".to_string(),
                ));
            }
            (Some(get), None) => {
                let path_ok = get.path.starts_with('/')
                    && get.path.len() <= 2048
                    && get.path.parse::<http::uri::PathAndQuery>().is_ok();
                if !path_ok {
                    return Err((
                        format!("{field}.httpGet.path"),
                        format!("{:?} is not a path starting with /", get.path),
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        for (name, value) in [
            ("periodSeconds", self.period_seconds),
            ("timeoutSeconds", self.timeout_seconds),
        ] {
            if let Some(value) = value
                && !(1..=MAX_SECONDS).contains(&value)
            {
                return Err((
                    format!("{field}.{name}"),
                    format!("{value} is not between 1 and {MAX_SECONDS}"),
                ));
            }
        }
        if let Some(threshold) = self.failure_threshold
            && !(1..=MAX_FAILURE_THRESHOLD).contains(&threshold)
        {
            return Err((
                format!("{field}.failureThreshold"),
                format!("{threshold} is not between 1 and {MAX_FAILURE_THRESHOLD}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_probe_has_one_action_a_path_and_bounded_numbers() {
        let ok = probe(serde_json::json!({"httpGet": {"path": "/healthz"}, "periodSeconds": 2}));
        ok.check("readinessProbe").unwrap();
        assert_eq!(
            (ok.period(), ok.failure_threshold()),
            (Duration::from_secs(2), 3)
        );
        for (bad, field) in [
            (serde_json::json!({}), "livenessProbe"),
            (
                serde_json::json!({"httpGet": {"path": "/"}, "tcpSocket": {}}),
                "livenessProbe",
            ),
            (
                serde_json::json!({"httpGet": {"path": "healthz"}}),
                "livenessProbe.httpGet.path",
            ),
            (
                serde_json::json!({"tcpSocket": {}, "periodSeconds": 0}),
                "livenessProbe.periodSeconds",
            ),
            (
                serde_json::json!({"tcpSocket": {}, "failureThreshold": 0}),
                "livenessProbe.failureThreshold",
            ),
        ] {
            let (f, _) = probe(bad).check("livenessProbe").unwrap_err();
            assert_eq!(f, field);
        }
    }
}
