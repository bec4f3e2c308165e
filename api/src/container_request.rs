//! The body of a container's POST and PUT, read into the model's patch (or, for a
//! PUT of `traffic` alone, a traffic target), each field checked and named.

use crate::error::ApiError;
use ember_runtime::TrafficTarget;
use ember_runtime::model::{
    CapabilityChanges, CapabilityName, CdiDeviceName, ContainerPatch, Probe,
};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// The body of POST and PUT. Every field is optional here; POST needs `name` and
/// `image`, PUT changes only what it names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ContainerRequest {
    name: Option<String>,
    image: Option<String>,
    cpu: Option<f64>,
    ram: Option<String>,
    gpu: Option<u32>,
    ephemeral_storage: Option<String>,
    #[serde(default, deserialize_with = "present")]
    command: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    arguments: Option<Option<Vec<String>>>,
    env: Option<BTreeMap<String, String>>,
    port: Option<PortValue>,
    #[serde(rename = "desiredGPUs", default, deserialize_with = "present")]
    desired_gpus: Option<Option<Vec<String>>>,
    cdi_devices: Option<Vec<String>>,
    min_instances: Option<u32>,
    max_instances: Option<u32>,
    idle_timeout_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
    response_start_timeout_seconds: Option<u64>,
    stream_idle_timeout_seconds: Option<u64>,
    concurrency: Option<u32>,
    target_concurrency: Option<u32>,
    target_utilization_percentage: Option<u32>,
    scale_down_delay_seconds: Option<u64>,
    initial_scale: Option<u32>,
    allowed_outbound_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    startup_probe: Option<Option<Probe>>,
    #[serde(default, deserialize_with = "present")]
    readiness_probe: Option<Option<Probe>>,
    #[serde(default, deserialize_with = "present")]
    liveness_probe: Option<Option<Probe>>,
    http2: Option<bool>,
    metric: Option<String>,
    pub(crate) traffic: Option<Vec<TrafficEntry>>,
    target_requests_per_second: Option<u32>,
    queue_depth: Option<u32>,
    prepared_sandboxes: Option<u32>,
    init: Option<bool>,
    capabilities: Option<CapabilitiesRequest>,
    user_namespace: Option<bool>,
}

/// One target of `traffic`: a revision (by number, or the latest) and its share.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TrafficEntry {
    revision_number: Option<u32>,
    latest_revision: Option<bool>,
    percent: u32,
}

/// Where `traffic` sends requests. One target takes all of them: splitting
/// between revisions is refused, naming `traffic`, until it is built.
pub(crate) fn traffic_target(entries: &[TrafficEntry]) -> Result<TrafficTarget, ApiError> {
    let [entry] = entries else {
        return Err(invalid(
            "traffic",
            "lists one target taking 100 percent: splitting traffic between revisions is not supported yet",
        ));
    };
    if entry.percent != 100 {
        return Err(invalid(
            "traffic[0].percent",
            format!(
                "{} is not 100: one target takes all the traffic",
                entry.percent
            ),
        ));
    }
    match (entry.revision_number, entry.latest_revision) {
        (Some(number), None | Some(false)) if number > 0 => Ok(TrafficTarget::Revision(number)),
        (None, Some(true)) => Ok(TrafficTarget::Latest),
        _ => Err(invalid(
            "traffic[0]",
            "names either `revisionNumber` (from 1) or `latestRevision: true`",
        )),
    }
}

/// `capabilities`: names added to and dropped from the default set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesRequest {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    drop: Vec<String>,
}

impl CapabilitiesRequest {
    /// Each name parsed, a bad one refused under its place (`capabilities.add[1]`).
    fn parse(self) -> Result<CapabilityChanges, ApiError> {
        let names = |list: Vec<String>, field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, name)| {
                    name.parse::<CapabilityName>()
                        .map_err(|e| invalid(&format!("capabilities.{field}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(CapabilityChanges {
            add: names(self.add, "add")?,
            drop: names(self.drop, "drop")?,
        })
    }
}

/// The port may be written as the document does (`"80"`) or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    Number(u64),
    Text(String),
}

/// Distinguishes a field set to `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(crate) fn invalid(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_field(field, e.to_string())
}

impl ContainerRequest {
    /// Parses each field into the model's types and checks the patch with the
    /// model's rules ([`ContainerPatch::validate`]), before anything is looked up.
    pub(crate) fn into_patch(self) -> Result<ContainerPatch, ApiError> {
        let name = self
            .name
            .map(|n| n.parse().map_err(|e| invalid("name", e)))
            .transpose()?;
        let ram = self
            .ram
            .map(|r| r.parse().map_err(|e| invalid("ram", e)))
            .transpose()?;
        let ephemeral_storage = self
            .ephemeral_storage
            .map(|r| r.parse().map_err(|e| invalid("ephemeralStorage", e)))
            .transpose()?;
        let port = self
            .port
            .map(|p| match p {
                PortValue::Number(n) => ContainerPatch::parse_port(&n.to_string()),
                PortValue::Text(t) => ContainerPatch::parse_port(&t),
            })
            .transpose()?;
        let cdi_devices = self
            .cdi_devices
            .map(|names| {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        name.parse::<CdiDeviceName>()
                            .map_err(|e| invalid(&format!("cdiDevices[{i}]"), e))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let patch = ContainerPatch {
            name,
            image: self.image,
            cpu: self.cpu,
            ram,
            gpu: self.gpu,
            ephemeral_storage,
            command: self.command,
            arguments: self.arguments,
            env: self.env,
            port,
            desired_gpus: self.desired_gpus,
            cdi_devices,
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            idle_timeout_seconds: self.idle_timeout_seconds,
            timeout_seconds: self.timeout_seconds,
            response_start_timeout_seconds: self.response_start_timeout_seconds,
            stream_idle_timeout_seconds: self.stream_idle_timeout_seconds,
            concurrency: self.concurrency,
            target_concurrency: self.target_concurrency,
            target_utilization_percentage: self.target_utilization_percentage,
            scale_down_delay_seconds: self.scale_down_delay_seconds,
            initial_scale: self.initial_scale,
            allowed_outbound_hosts: self.allowed_outbound_hosts,
            startup_probe: self.startup_probe,
            readiness_probe: self.readiness_probe,
            liveness_probe: self.liveness_probe,
            http2: self.http2,
            metric: self
                .metric
                .map(|m| m.parse().map_err(|e: String| invalid("metric", e)))
                .transpose()?,
            target_requests_per_second: self.target_requests_per_second,
            queue_depth: self.queue_depth,
            prepared_sandboxes: self.prepared_sandboxes,
            init: self.init,
            user_namespace: self.user_namespace,
            capabilities: self
                .capabilities
                .map(CapabilitiesRequest::parse)
                .transpose()?,
        };
        patch.validate()?;
        Ok(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn patch(body: serde_json::Value) -> Result<ContainerPatch, ApiError> {
        serde_json::from_value::<ContainerRequest>(body)
            .expect("the body deserialises")
            .into_patch()
    }

    fn refused_field(body: serde_json::Value) -> String {
        let error = patch(body.clone()).expect_err(&body.to_string());
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body}");
        error.field().unwrap_or_default().to_string()
    }

    #[test]
    fn an_empty_body_changes_nothing() {
        let p = patch(json!({})).unwrap();
        assert!(p.name.is_none() && p.image.is_none() && p.port.is_none());
        assert!(p.command.is_none() && p.env.is_none() && p.cdi_devices.is_none());
    }

    #[test]
    fn wire_values_become_the_models_types() {
        let p = patch(json!({
            "name": "hello", "image": "a/b:1", "cpu": 0.5, "ram": "256Mi",
            "ephemeralStorage": "2Gi", "port": "80", "env": { "A": "b" },
            "cdiDevices": ["vendor.com/class=name"], "minInstances": 1, "maxInstances": 3,
        }))
        .unwrap();
        assert_eq!(p.name.unwrap().as_str(), "hello");
        assert_eq!(p.image.as_deref(), Some("a/b:1"));
        assert_eq!(p.ram.unwrap().bytes(), 256 << 20);
        assert_eq!(p.ephemeral_storage.unwrap().bytes(), 2 << 30);
        assert_eq!(p.port, Some(80));
        assert_eq!(
            p.cdi_devices.unwrap()[0].to_string(),
            "vendor.com/class=name"
        );
        assert_eq!((p.min_instances, p.max_instances), (Some(1), Some(3)));
        // A port may be a number as well as text.
        assert_eq!(patch(json!({ "port": 8081 })).unwrap().port, Some(8081));
    }

    #[test]
    fn null_clears_a_list_and_absence_keeps_it() {
        let cleared = patch(json!({ "command": null, "desiredGPUs": null })).unwrap();
        assert_eq!(cleared.command, Some(None));
        assert_eq!(cleared.desired_gpus, Some(None));
        assert_eq!(cleared.arguments, None);
        let set = patch(json!({ "arguments": ["-v"] })).unwrap();
        assert_eq!(set.arguments, Some(Some(vec!["-v".to_string()])));
    }

    #[test]
    fn values_that_do_not_parse_name_their_field() {
        assert_eq!(refused_field(json!({ "name": "Not_DNS" })), "name");
        assert_eq!(refused_field(json!({ "ram": "lots" })), "ram");
        assert_eq!(
            refused_field(json!({ "ephemeralStorage": "1.5Gi" })),
            "ephemeralStorage"
        );
        assert_eq!(refused_field(json!({ "port": "http" })), "port");
        assert_eq!(refused_field(json!({ "port": 70000 })), "port");
        assert_eq!(
            refused_field(json!({ "cdiDevices": ["vendor.com/class=ok", "bad"] })),
            "cdiDevices[1]"
        );
    }

    #[test]
    fn the_models_rules_apply_before_anything_is_looked_up() {
        assert_eq!(refused_field(json!({ "cpu": 0 })), "cpu");
        assert_eq!(refused_field(json!({ "port": 0 })), "port");
        assert_eq!(refused_field(json!({ "maxInstances": 0 })), "maxInstances");
        assert_eq!(refused_field(json!({ "env": { "": "x" } })), "env.");
        assert_eq!(
            refused_field(json!({ "preparedSandboxes": 9 })),
            "preparedSandboxes"
        );
    }

    #[test]
    fn unknown_fields_do_not_deserialise() {
        let error = serde_json::from_value::<ContainerRequest>(json!({ "status": "deployed" }))
            .err()
            .expect("an unknown field is refused");
        assert!(error.to_string().contains("status"), "{error}");
    }
}
