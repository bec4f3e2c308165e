//! Runtime settings.

use std::path::PathBuf;
use std::time::Duration;

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where state, blobs and compiled code live.
    pub data_dir: PathBuf,
    /// Containers are served at `<name>.<domain>`.
    pub domain: String,
    /// Port the ingress is reached on, for the URLs containers report (omitted when 80).
    pub ingress_port: u16,
    /// Idle time before scaling to zero, for containers that set none.
    pub default_idle_timeout: Duration,
    /// Longest a request may take (waiting for an instance included).
    pub request_timeout: Duration,
    /// How often the autoscaler looks at every container.
    pub reconcile_interval: Duration,
    /// Wasm instances (one per request in flight) that may exist at once.
    pub max_wasm_instances: u32,
    /// The admin token, when given by the environment.
    pub admin_token: Option<String>,
}

impl RuntimeConfig {
    /// Defaults for a data dir: `ember.localhost`, port 8000, 60 s idle, 30 s requests.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            domain: "ember.localhost".into(),
            ingress_port: 8000,
            default_idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            reconcile_interval: Duration::from_millis(250),
            max_wasm_instances: 1000,
            admin_token: None,
        }
    }
}
