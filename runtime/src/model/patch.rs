//! Partial specs: what a create or update request changes, the rules each value
//! must keep, and how a patch is merged into a container's spec.
//!
//! The rules live here, not in the API, so that every face of the API (and every
//! other caller of the runtime) is held to the same ones: a face only maps its own
//! wire names onto a patch and back onto the field an [`InvalidPatch`] names.

use super::{AutoscalingMetric, ContainerName, ContainerSpec, Probe, Probes, Quantity};
use crate::error::RuntimeError;
use ember_sandbox::capabilities::CapabilityChanges;
use ember_sandbox::cdi::CdiDeviceName;
use std::collections::BTreeMap;

/// A partial spec: what a create or update request sets. Values are typed (a name,
/// a quantity and a device name cannot be built unless they parse);
/// [`ContainerPatch::validate`] checks each against its bounds, and
/// [`ContainerPatch::apply`] checks how they fit the spec they change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerPatch {
    /// New name.
    pub name: Option<ContainerName>,
    /// New image (checked by the runtime, which also knows whether a `sha256:`
    /// blob exists).
    pub image: Option<String>,
    /// New cpu.
    pub cpu: Option<f64>,
    /// New ram.
    pub ram: Option<Quantity>,
    /// New gpu count.
    pub gpu: Option<u32>,
    /// New disk size.
    pub ephemeral_storage: Option<Quantity>,
    /// New command (`Some(None)` clears it).
    pub command: Option<Option<Vec<String>>>,
    /// New arguments (`Some(None)` clears them).
    pub arguments: Option<Option<Vec<String>>>,
    /// New environment.
    pub env: Option<BTreeMap<String, String>>,
    /// New port.
    pub port: Option<u16>,
    /// New GPU models.
    pub desired_gpus: Option<Option<Vec<String>>>,
    /// New CDI devices.
    pub cdi_devices: Option<Vec<CdiDeviceName>>,
    /// New minimum.
    pub min_instances: Option<u32>,
    /// New maximum.
    pub max_instances: Option<u32>,
    /// New idle timeout.
    pub idle_timeout_seconds: Option<u64>,
    /// New request timeout.
    pub timeout_seconds: Option<u64>,
    /// New response start timeout.
    pub response_start_timeout_seconds: Option<u64>,
    /// New stream idle timeout.
    pub stream_idle_timeout_seconds: Option<u64>,
    /// New concurrency.
    pub concurrency: Option<u32>,
    /// New target concurrency.
    pub target_concurrency: Option<u32>,
    /// New target utilization.
    pub target_utilization_percentage: Option<u32>,
    /// New scale-down delay.
    pub scale_down_delay_seconds: Option<u64>,
    /// New initial scale.
    pub initial_scale: Option<u32>,
    /// New allowed outbound hosts (replacing the old ones whole).
    pub allowed_outbound_hosts: Option<Vec<String>>,
    /// New probes; `Some(None)` removes one.
    pub startup_probe: Option<Option<Probe>>,
    /// See `startup_probe`.
    pub readiness_probe: Option<Option<Probe>>,
    /// See `startup_probe`.
    pub liveness_probe: Option<Option<Probe>>,
    /// Whether OCI instances speak h2c.
    pub http2: Option<bool>,
    /// New autoscaling metric.
    pub metric: Option<AutoscalingMetric>,
    /// New target rate.
    pub target_requests_per_second: Option<u32>,
    /// New queue depth.
    pub queue_depth: Option<u32>,
    /// New number of prepared sandboxes.
    pub prepared_sandboxes: Option<u32>,
    /// Whether to run OCI instances under Ember's init.
    pub init: Option<bool>,
    /// Whether OCI instances run in a user namespace.
    pub user_namespace: Option<bool>,
    /// New changes to the default capabilities (replacing the old ones whole).
    pub capabilities: Option<CapabilityChanges>,
}

/// Most hosts a container may list for outbound requests.
const MAX_OUTBOUND_HOSTS: usize = 100;
/// Most CPUs one instance may ask for.
const MAX_CPU: f64 = 1024.0;
/// Longest idle timeout accepted (a week).
const MAX_IDLE_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;
/// Longest any of a request's timeouts may be (an hour, as Knative's maximum).
pub const MAX_REQUEST_TIMEOUT_SECONDS: u64 = 3600;
/// Most requests one instance may be given at once.
const MAX_CONCURRENCY: u32 = 100_000;
/// Most requests one container may queue.
const MAX_QUEUE_DEPTH: u32 = 100_000;
/// Most sandboxes one container may keep prepared: each holds mounts, cgroups and
/// an address.
const MAX_PREPARED_SANDBOXES: u32 = 8;

/// A value of a patch that breaks its rule. `field` is the name the native API
/// gives it (`cpu`, `env.KEY`, `maxInstances`); a face that calls it something else
/// renames it with [`InvalidPatch::renamed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidPatch {
    field: String,
    message: String,
}

impl InvalidPatch {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field at fault, as the native API names it.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it, without the field's name.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same fault under the name a face gives the field, for the fields
    /// `rename` knows (it answers `None` for the others, which keep their name).
    pub fn renamed(self, rename: impl FnOnce(&str) -> Option<String>) -> Self {
        match rename(&self.field) {
            Some(field) => Self { field, ..self },
            None => self,
        }
    }
}

impl From<InvalidPatch> for RuntimeError {
    fn from(e: InvalidPatch) -> Self {
        Self::InvalidField {
            field: e.field,
            message: e.message,
        }
    }
}

/// Why a port is refused, whether it failed to parse or is 0.
fn invalid_port() -> InvalidPatch {
    InvalidPatch::new("port", "must be a TCP port between 1 and 65535")
}

impl ContainerPatch {
    /// Reads a port as the documents write it (`"80"`); a number is read from its
    /// decimal digits, so that `80` and `"80"` are one port. Whether it is in range
    /// is for [`ContainerPatch::validate`].
    pub fn parse_port(raw: &str) -> Result<u16, InvalidPatch> {
        raw.parse().map_err(|_| invalid_port())
    }

    /// Checks every value the patch sets against its bounds, in the order the
    /// fields are documented, and names the first one at fault.
    pub fn validate(&self) -> Result<(), InvalidPatch> {
        if let Some(cpu) = self.cpu
            && !(cpu > 0.0 && cpu <= MAX_CPU)
        {
            return Err(InvalidPatch::new(
                "cpu",
                format!("{cpu} is not a number of CPUs greater than 0 and at most {MAX_CPU}"),
            ));
        }
        if self.port == Some(0) {
            return Err(invalid_port());
        }
        if let Some(env) = &self.env {
            // The kernel splits `KEY=VALUE` at the first `=` and strings end at NUL.
            if let Some(key) = env
                .keys()
                .find(|key| key.is_empty() || key.contains(['=', '\0']))
            {
                return Err(InvalidPatch::new(
                    format!("env.{key}"),
                    "environment variable names must be non-empty and contain no '=' or NUL",
                ));
            }
            if env.values().any(|v| v.contains('\0')) {
                return Err(InvalidPatch::new("env", "values must not contain NUL"));
            }
        }
        for (field, list) in [("command", &self.command), ("arguments", &self.arguments)] {
            if list.iter().flatten().flatten().any(|s| s.contains('\0')) {
                return Err(InvalidPatch::new(field, "must not contain NUL"));
            }
        }
        if self.max_instances == Some(0) {
            return Err(InvalidPatch::new("maxInstances", "must be at least 1"));
        }
        for (field, value) in [
            ("minInstances", self.min_instances),
            ("maxInstances", self.max_instances),
        ] {
            if let Some(value) = value
                && value > ContainerSpec::MAX_INSTANCES
            {
                return Err(InvalidPatch::new(
                    field,
                    format!(
                        "{value} is more than the {} instances a container may have",
                        ContainerSpec::MAX_INSTANCES
                    ),
                ));
            }
        }
        if let Some(idle) = self.idle_timeout_seconds
            && !(1..=MAX_IDLE_TIMEOUT_SECONDS).contains(&idle)
        {
            return Err(InvalidPatch::new(
                "idleTimeoutSeconds",
                format!("must be between 1 and {MAX_IDLE_TIMEOUT_SECONDS}"),
            ));
        }
        for (field, value) in [
            ("timeoutSeconds", self.timeout_seconds),
            (
                "responseStartTimeoutSeconds",
                self.response_start_timeout_seconds,
            ),
            ("streamIdleTimeoutSeconds", self.stream_idle_timeout_seconds),
        ] {
            if let Some(value) = value
                && !(1..=MAX_REQUEST_TIMEOUT_SECONDS).contains(&value)
            {
                return Err(InvalidPatch::new(
                    field,
                    format!("{value} is not between 1 and {MAX_REQUEST_TIMEOUT_SECONDS}"),
                ));
            }
        }
        for (field, value, max) in [
            ("concurrency", self.concurrency, MAX_CONCURRENCY),
            (
                "targetConcurrency",
                self.target_concurrency,
                MAX_CONCURRENCY,
            ),
            (
                "targetUtilizationPercentage",
                self.target_utilization_percentage,
                100,
            ),
            ("queueDepth", self.queue_depth, MAX_QUEUE_DEPTH),
            (
                "targetRequestsPerSecond",
                self.target_requests_per_second,
                MAX_CONCURRENCY,
            ),
        ] {
            if let Some(value) = value
                && !(1..=max).contains(&value)
            {
                return Err(InvalidPatch::new(
                    field,
                    format!("{value} is not between 1 and {max}"),
                ));
            }
        }
        if let Some(delay) = self.scale_down_delay_seconds
            && delay > MAX_REQUEST_TIMEOUT_SECONDS
        {
            return Err(InvalidPatch::new(
                "scaleDownDelaySeconds",
                format!("{delay} is not between 0 and {MAX_REQUEST_TIMEOUT_SECONDS}"),
            ));
        }
        for (field, probe) in [
            ("startupProbe", &self.startup_probe),
            ("readinessProbe", &self.readiness_probe),
            ("livenessProbe", &self.liveness_probe),
        ] {
            if let Some(Some(probe)) = probe {
                probe
                    .check(field)
                    .map_err(|(field, message)| InvalidPatch::new(field, message))?;
            }
        }
        if let Some(hosts) = &self.allowed_outbound_hosts {
            if hosts.len() > MAX_OUTBOUND_HOSTS {
                return Err(InvalidPatch::new(
                    "allowedOutboundHosts",
                    format!("{} entries; at most {MAX_OUTBOUND_HOSTS}", hosts.len()),
                ));
            }
            for (i, host) in hosts.iter().enumerate() {
                if let Err(e) = host.parse::<ember_sandbox::wasm::AllowedHost>() {
                    return Err(InvalidPatch::new(
                        format!("allowedOutboundHosts[{i}]"),
                        e.to_string(),
                    ));
                }
            }
        }
        if let Some(contradiction) = self.capabilities.as_ref().and_then(|c| c.contradiction()) {
            return Err(InvalidPatch::new(
                "capabilities",
                format!("{contradiction} is both added and dropped"),
            ));
        }
        if let Some(count) = self.prepared_sandboxes
            && count > MAX_PREPARED_SANDBOXES
        {
            return Err(InvalidPatch::new(
                "preparedSandboxes",
                format!("{count} is not between 0 and {MAX_PREPARED_SANDBOXES}"),
            ));
        }
        Ok(())
    }

    /// Builds a full spec for a new container, with defaults for what is missing.
    pub fn into_new_spec(self) -> Result<ContainerSpec, RuntimeError> {
        let name = self
            .name
            .clone()
            .ok_or(RuntimeError::invalid("name", "is required"))?;
        let image = self
            .image
            .clone()
            .ok_or(RuntimeError::invalid("image", "is required"))?;
        let base = ContainerSpec {
            name,
            image,
            cpu: ContainerSpec::DEFAULT_CPU,
            ram: ContainerSpec::DEFAULT_RAM.parse().expect("valid default"),
            gpu: 0,
            ephemeral_storage: ContainerSpec::DEFAULT_EPHEMERAL_STORAGE
                .parse()
                .expect("valid default"),
            command: None,
            arguments: None,
            env: BTreeMap::new(),
            port: ContainerSpec::DEFAULT_PORT,
            desired_gpus: None,
            cdi_devices: Vec::new(),
            min_instances: 0,
            max_instances: ContainerSpec::DEFAULT_MAX_INSTANCES,
            idle_timeout_seconds: None,
            timeout_seconds: None,
            response_start_timeout_seconds: None,
            stream_idle_timeout_seconds: None,
            concurrency: None,
            target_concurrency: None,
            target_utilization_percentage: None,
            scale_down_delay_seconds: None,
            initial_scale: None,
            allowed_outbound_hosts: Vec::new(),
            probes: Probes::default(),
            http2: false,
            metric: AutoscalingMetric::Concurrency,
            target_requests_per_second: None,
            queue_depth: ContainerSpec::DEFAULT_QUEUE_DEPTH,
            prepared_sandboxes: ContainerSpec::DEFAULT_PREPARED_SANDBOXES,
            init: true,
            capabilities: CapabilityChanges::default(),
            user_namespace: true,
        };
        self.apply(&base)
    }

    /// Applies the patch on top of `current`, checking each value and then the
    /// result as a whole.
    pub fn apply(self, current: &ContainerSpec) -> Result<ContainerSpec, RuntimeError> {
        // The API has checked already, to answer 400 before looking anything up;
        // checking again here keeps callers that build patches themselves honest.
        self.validate()?;
        let mut spec = current.clone();
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { spec.$field = v; })* };
        }
        set!(
            name,
            image,
            cpu,
            ram,
            gpu,
            ephemeral_storage,
            command,
            arguments,
            env,
            port,
            desired_gpus,
            cdi_devices,
            min_instances,
            max_instances,
            queue_depth,
            prepared_sandboxes,
            init,
            capabilities,
            user_namespace,
            http2
        );
        for (value, field) in [
            (self.startup_probe, &mut spec.probes.startup_probe),
            (self.readiness_probe, &mut spec.probes.readiness_probe),
            (self.liveness_probe, &mut spec.probes.liveness_probe),
        ] {
            if let Some(value) = value {
                *field = value;
            }
        }
        if let Some(hosts) = self.allowed_outbound_hosts {
            // Stored as the runtime reads them: lower-cased, the port spelled out.
            spec.allowed_outbound_hosts = hosts
                .iter()
                .filter_map(|h| h.parse::<ember_sandbox::wasm::AllowedHost>().ok())
                .map(|h| h.to_string())
                .collect();
        }
        if let Some(idle) = self.idle_timeout_seconds {
            spec.idle_timeout_seconds = Some(idle);
        }
        for (value, field) in [
            (self.timeout_seconds, &mut spec.timeout_seconds),
            (
                self.response_start_timeout_seconds,
                &mut spec.response_start_timeout_seconds,
            ),
            (
                self.stream_idle_timeout_seconds,
                &mut spec.stream_idle_timeout_seconds,
            ),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if let (Some(start), Some(whole)) =
            (spec.response_start_timeout_seconds, spec.timeout_seconds)
            && start > whole
        {
            return Err(RuntimeError::invalid(
                "responseStartTimeoutSeconds",
                format!("({start}) must not exceed timeoutSeconds ({whole})"),
            ));
        }
        if let Some(concurrency) = self.concurrency {
            spec.concurrency = Some(concurrency);
        }
        for (value, field) in [
            (self.target_concurrency, &mut spec.target_concurrency),
            (
                self.target_utilization_percentage,
                &mut spec.target_utilization_percentage,
            ),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if self.scale_down_delay_seconds.is_some() {
            spec.scale_down_delay_seconds = self.scale_down_delay_seconds;
        }
        if self.initial_scale.is_some() {
            spec.initial_scale = self.initial_scale;
        }
        if let Some(metric) = self.metric {
            spec.metric = metric;
        }
        if self.target_requests_per_second.is_some() {
            spec.target_requests_per_second = self.target_requests_per_second;
        }
        if let Some(rate) = spec.target_requests_per_second
            && spec.metric != AutoscalingMetric::Rps
        {
            return Err(RuntimeError::invalid(
                "targetRequestsPerSecond",
                format!("({rate}) applies only to metric \"rps\""),
            ));
        }
        if let Some(initial) = spec.initial_scale
            && initial > spec.max_instances
        {
            return Err(RuntimeError::invalid(
                "initialScale",
                format!(
                    "({initial}) must not exceed maxInstances ({})",
                    spec.max_instances
                ),
            ));
        }
        if let (Some(target), Some(concurrency)) = (spec.target_concurrency, spec.concurrency)
            && target > concurrency
        {
            return Err(RuntimeError::invalid(
                "targetConcurrency",
                format!("({target}) must not exceed concurrency ({concurrency})"),
            ));
        }
        if spec.min_instances > spec.max_instances {
            return Err(RuntimeError::invalid(
                "minInstances",
                format!(
                    "({}) must not exceed maxInstances ({})",
                    spec.min_instances, spec.max_instances
                ),
            ));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> ContainerPatch {
        ContainerPatch {
            name: Some("hello".parse().unwrap()),
            image: Some("sha256:00".into()),
            ..Default::default()
        }
    }

    #[test]
    fn new_specs_get_defaults_and_need_name_and_image() {
        let spec = patch().into_new_spec().unwrap();
        assert_eq!(spec.ram.bytes(), 512 << 20);
        assert_eq!(spec.port, 8080);
        let err = ContainerPatch::default().into_new_spec().unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
    }

    /// The field the patch's first fault names, or `None` when it passes.
    fn fault(change: impl FnOnce(&mut ContainerPatch)) -> Option<String> {
        let mut p = patch();
        change(&mut p);
        p.validate().err().map(|e| e.field().to_string())
    }

    #[test]
    fn cpus_are_positive_and_bounded() {
        assert_eq!(fault(|p| p.cpu = Some(0.25)), None);
        assert_eq!(fault(|p| p.cpu = Some(MAX_CPU)), None);
        for cpu in [0.0, -1.0, MAX_CPU + 1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                fault(|p| p.cpu = Some(cpu)).as_deref(),
                Some("cpu"),
                "{cpu}"
            );
        }
    }

    #[test]
    fn ports_parse_from_digits_and_are_not_zero() {
        assert_eq!(ContainerPatch::parse_port("80"), Ok(80));
        for raw in ["http", "70000", "-1", ""] {
            assert_eq!(
                ContainerPatch::parse_port(raw).unwrap_err().field(),
                "port",
                "{raw}"
            );
        }
        assert_eq!(fault(|p| p.port = Some(1)), None);
        assert_eq!(fault(|p| p.port = Some(0)).as_deref(), Some("port"));
    }

    #[test]
    fn environment_names_and_values_fit_the_kernel() {
        let env = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(fault(|p| p.env = env(&[("A", "b=c")])), None);
        assert_eq!(
            fault(|p| p.env = env(&[("A=B", "c")])).as_deref(),
            Some("env.A=B")
        );
        assert_eq!(
            fault(|p| p.env = env(&[("", "c")])).as_deref(),
            Some("env.")
        );
        assert_eq!(
            fault(|p| p.env = env(&[("A\0", "c")])).as_deref(),
            Some("env.A\0")
        );
        assert_eq!(
            fault(|p| p.env = env(&[("A", "c\0")])).as_deref(),
            Some("env")
        );
    }

    #[test]
    fn commands_and_arguments_hold_no_nul() {
        let list = |s: &str| Some(Some(vec!["ok".to_string(), s.to_string()]));
        assert_eq!(fault(|p| p.command = list("fine")), None);
        assert_eq!(fault(|p| p.command = Some(None)), None);
        assert_eq!(
            fault(|p| p.command = list("a\0b")).as_deref(),
            Some("command")
        );
        assert_eq!(
            fault(|p| p.arguments = list("a\0b")).as_deref(),
            Some("arguments")
        );
    }

    #[test]
    fn instance_counts_are_bounded() {
        assert_eq!(fault(|p| p.max_instances = Some(1)), None);
        assert_eq!(
            fault(|p| p.max_instances = Some(0)).as_deref(),
            Some("maxInstances")
        );
        let over = ContainerSpec::MAX_INSTANCES + 1;
        assert_eq!(
            fault(|p| p.min_instances = Some(over)).as_deref(),
            Some("minInstances")
        );
        assert_eq!(
            fault(|p| p.max_instances = Some(over)).as_deref(),
            Some("maxInstances")
        );
        assert_eq!(
            fault(|p| p.max_instances = Some(ContainerSpec::MAX_INSTANCES)),
            None
        );
    }

    #[test]
    fn request_timeouts_are_between_a_second_and_an_hour_and_the_start_within_the_whole() {
        type Field = fn(&mut ContainerPatch, Option<u64>);
        let fields: [(Field, &str); 3] = [
            (|p, v| p.timeout_seconds = v, "timeoutSeconds"),
            (
                |p, v| p.response_start_timeout_seconds = v,
                "responseStartTimeoutSeconds",
            ),
            (
                |p, v| p.stream_idle_timeout_seconds = v,
                "streamIdleTimeoutSeconds",
            ),
        ];
        for (set, name) in fields {
            for good in [1, MAX_REQUEST_TIMEOUT_SECONDS] {
                assert_eq!(fault(|p| set(p, Some(good))), None, "{name} {good}");
            }
            for bad in [0, MAX_REQUEST_TIMEOUT_SECONDS + 1] {
                assert_eq!(fault(|p| set(p, Some(bad))).as_deref(), Some(name));
            }
        }
        let spec = ContainerPatch {
            name: Some("t".parse().unwrap()),
            image: Some("a/b:1".into()),
            timeout_seconds: Some(10),
            response_start_timeout_seconds: Some(11),
            ..Default::default()
        }
        .into_new_spec();
        assert!(
            matches!(&spec, Err(RuntimeError::InvalidField { field, .. }) if field == "responseStartTimeoutSeconds"),
            "{spec:?}"
        );
    }

    #[test]
    fn scaling_knobs_keep_knative_s_bounds() {
        assert_eq!(fault(|p| p.target_utilization_percentage = Some(1)), None);
        assert_eq!(fault(|p| p.target_utilization_percentage = Some(100)), None);
        for bad in [0, 101] {
            assert_eq!(
                fault(|p| p.target_utilization_percentage = Some(bad)).as_deref(),
                Some("targetUtilizationPercentage")
            );
        }
        assert_eq!(
            fault(|p| p.target_concurrency = Some(0)).as_deref(),
            Some("targetConcurrency")
        );
        assert_eq!(fault(|p| p.scale_down_delay_seconds = Some(0)), None);
        assert_eq!(
            fault(|p| p.scale_down_delay_seconds = Some(MAX_REQUEST_TIMEOUT_SECONDS + 1))
                .as_deref(),
            Some("scaleDownDelaySeconds")
        );
        let spec = ContainerPatch {
            name: Some("t".parse().unwrap()),
            image: Some("a/b:1".into()),
            concurrency: Some(10),
            target_concurrency: Some(11),
            ..Default::default()
        }
        .into_new_spec();
        assert!(
            matches!(&spec, Err(RuntimeError::InvalidField { field, .. }) if field == "targetConcurrency"),
            "{spec:?}"
        );
    }

    #[test]
    fn idle_timeouts_are_between_a_second_and_a_week() {
        assert_eq!(fault(|p| p.idle_timeout_seconds = Some(1)), None);
        assert_eq!(
            fault(|p| p.idle_timeout_seconds = Some(MAX_IDLE_TIMEOUT_SECONDS)),
            None
        );
        for idle in [0, MAX_IDLE_TIMEOUT_SECONDS + 1] {
            assert_eq!(
                fault(|p| p.idle_timeout_seconds = Some(idle)).as_deref(),
                Some("idleTimeoutSeconds")
            );
        }
    }

    #[test]
    fn concurrency_and_queue_depth_are_between_one_and_their_bound() {
        assert_eq!(fault(|p| p.concurrency = Some(MAX_CONCURRENCY)), None);
        assert_eq!(fault(|p| p.queue_depth = Some(1)), None);
        for value in [0, MAX_CONCURRENCY + 1] {
            assert_eq!(
                fault(|p| p.concurrency = Some(value)).as_deref(),
                Some("concurrency")
            );
        }
        for value in [0, MAX_QUEUE_DEPTH + 1] {
            assert_eq!(
                fault(|p| p.queue_depth = Some(value)).as_deref(),
                Some("queueDepth")
            );
        }
    }

    #[test]
    fn prepared_sandboxes_may_be_none_but_are_bounded() {
        assert_eq!(fault(|p| p.prepared_sandboxes = Some(0)), None);
        assert_eq!(
            fault(|p| p.prepared_sandboxes = Some(MAX_PREPARED_SANDBOXES)),
            None
        );
        assert_eq!(
            fault(|p| p.prepared_sandboxes = Some(MAX_PREPARED_SANDBOXES + 1)).as_deref(),
            Some("preparedSandboxes")
        );
    }

    #[test]
    fn a_capability_may_not_be_both_added_and_dropped() {
        let changes = |json: &str| serde_json::from_str::<CapabilityChanges>(json).unwrap();
        assert_eq!(
            fault(|p| p.capabilities = Some(changes(r#"{"add": ["NET_RAW"]}"#))),
            None
        );
        assert_eq!(
            fault(|p| p.capabilities =
                Some(changes(r#"{"add": ["NET_RAW"], "drop": ["CAP_NET_RAW"]}"#)))
            .as_deref(),
            Some("capabilities")
        );
    }

    #[test]
    fn a_refused_patch_is_refused_by_apply_too_and_faces_may_rename_the_field() {
        let mut p = patch();
        p.queue_depth = Some(0);
        let err = p.clone().into_new_spec().unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidField { field, .. } if field == "queueDepth"),
            "{err}"
        );
        let renamed = p
            .validate()
            .unwrap_err()
            .renamed(|field| (field == "queueDepth").then(|| "body.depth".to_string()));
        assert_eq!(renamed.field(), "body.depth");
        assert_eq!(renamed.message(), "0 is not between 1 and 100000");
        let kept = patch()
            .validate()
            .err()
            .map(|e| e.renamed(|_| None).field().to_string());
        assert_eq!(kept, None);
    }

    #[test]
    fn min_may_not_exceed_max() {
        let mut p = patch();
        p.min_instances = Some(3);
        p.max_instances = Some(2);
        assert!(p.into_new_spec().is_err());
    }
}
