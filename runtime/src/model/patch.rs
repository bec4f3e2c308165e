//! Partial specs: what a create or update request changes, and how it is merged
//! into a container's spec.

use super::{ContainerName, ContainerSpec, Quantity};
use crate::error::RuntimeError;
use ember_sandbox::cdi::CdiDeviceName;
use std::collections::BTreeMap;

/// A partial spec: what a create or update request sets. Every value is already
/// validated on its own; [`ContainerPatch::apply`] checks how they fit together.
#[derive(Debug, Clone, Default)]
pub struct ContainerPatch {
    /// New name.
    pub name: Option<ContainerName>,
    /// New image (already checked to parse).
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
    /// New concurrency.
    pub concurrency: Option<u32>,
    /// New queue depth.
    pub queue_depth: Option<u32>,
    /// New number of prepared sandboxes.
    pub prepared_sandboxes: Option<u32>,
    /// Whether to run OCI instances under Ember's init.
    pub init: Option<bool>,
}

impl ContainerPatch {
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
            concurrency: None,
            queue_depth: ContainerSpec::DEFAULT_QUEUE_DEPTH,
            prepared_sandboxes: ContainerSpec::DEFAULT_PREPARED_SANDBOXES,
            init: true,
        };
        self.apply(&base)
    }

    /// Applies the patch on top of `current`, checking the result as a whole.
    pub fn apply(self, current: &ContainerSpec) -> Result<ContainerSpec, RuntimeError> {
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
            init
        );
        if let Some(idle) = self.idle_timeout_seconds {
            spec.idle_timeout_seconds = Some(idle);
        }
        if let Some(concurrency) = self.concurrency {
            spec.concurrency = Some(concurrency);
        }
        for (field, value) in [
            ("minInstances", spec.min_instances),
            ("maxInstances", spec.max_instances),
        ] {
            if value > ContainerSpec::MAX_INSTANCES {
                return Err(RuntimeError::invalid(
                    field,
                    format!(
                        "{value} is more than the {} instances a container may have",
                        ContainerSpec::MAX_INSTANCES
                    ),
                ));
            }
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

    #[test]
    fn min_may_not_exceed_max() {
        let mut p = patch();
        p.min_instances = Some(3);
        p.max_instances = Some(2);
        assert!(p.into_new_spec().is_err());
    }
}
