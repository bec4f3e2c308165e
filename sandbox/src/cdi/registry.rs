//! The CDI devices this node offers: every spec file in the spec directories, parsed
//! and validated by the container-device-interface crate, and the edits that give a
//! container some of those devices.

use super::name::CdiDeviceName;
use container_device_interface::container_edits::ContainerEdits;
use container_device_interface::device::Device;
use container_device_interface::spec::read_spec;
use oci_spec::runtime::{MountBuilder, Spec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The annotation that makes a CDI device one of the node's GPUs: its value is the
/// GPU's model, as `desiredGPUs` names it. Only devices that are one whole GPU carry
/// it (not `nvidia.com/gpu=all`, say), so no GPU is counted twice.
pub const GPU_MODEL_ANNOTATION: &str = "ember.dev/gpu-model";

/// A spec file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenSpec {
    /// The file.
    pub path: PathBuf,
    /// Its `kind`, when that much could be read.
    pub kind: Option<String>,
    /// What is wrong with it.
    pub error: String,
}

/// One GPU the specs define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdiGpu {
    /// The device that gives it to a container.
    pub device: CdiDeviceName,
    /// Its model (the device's [`GPU_MODEL_ANNOTATION`]).
    pub model: String,
}

/// Why devices cannot be given to a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdiError {
    /// No spec defines the device.
    #[error("no CDI spec in {dirs} defines the device {device}")]
    UnknownDevice {
        /// The device asked for.
        device: CdiDeviceName,
        /// The spec directories, for people.
        dirs: String,
    },
    /// The spec of the device's kind failed to load or validate.
    #[error("the CDI spec {path} for {device} is invalid: {error}")]
    InvalidSpec {
        /// The device asked for.
        device: CdiDeviceName,
        /// The spec file.
        path: PathBuf,
        /// What is wrong with it.
        error: String,
    },
    /// The edits could not be applied (a device node missing on the host, say).
    #[error("giving the container the CDI devices {devices} failed: {error}")]
    Apply {
        /// The devices asked for.
        devices: String,
        /// What failed.
        error: String,
    },
}

#[derive(Debug)]
struct Defined {
    device: Device,
    /// The index of its directory: a later directory overrides an earlier one.
    priority: usize,
    path: PathBuf,
}

/// The devices of the specs found in a list of directories when it was loaded.
#[derive(Debug, Default)]
pub struct CdiRegistry {
    dirs: Vec<PathBuf>,
    devices: BTreeMap<CdiDeviceName, Defined>,
    broken: Vec<BrokenSpec>,
}

/// Where CDI specs live when no directory is configured: static specs, then those
/// generated at boot (which win).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

fn is_spec_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("yaml"))
}

/// The `kind` of a spec that failed to load, if the file is at least YAML (or JSON).
fn sniff_kind(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    value.get("kind")?.as_str().map(str::to_string)
}

impl CdiRegistry {
    /// Reads every `.json` and `.yaml` file of `dirs` (a missing directory holds none).
    /// A file that fails to parse or validate is kept aside with its error, so that a
    /// container asking for its devices is told why; the other files still count.
    pub fn load(dirs: &[PathBuf]) -> Self {
        let mut registry = Self {
            dirs: dirs.to_vec(),
            ..Self::default()
        };
        for (priority, dir) in dirs.iter().enumerate() {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    registry.broken.push(BrokenSpec {
                        path: dir.clone(),
                        kind: None,
                        error: format!("reading the directory: {e}"),
                    });
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_spec_file(p))
                .collect();
            files.sort();
            for path in files {
                registry.add_file(&path, priority);
            }
        }
        registry
    }

    fn add_file(&mut self, path: &Path, priority: usize) {
        let spec = match read_spec(&path.to_path_buf(), priority as i32) {
            Ok(spec) => spec,
            Err(e) => {
                self.broken.push(BrokenSpec {
                    path: path.to_path_buf(),
                    kind: sniff_kind(path),
                    // The crate's context chain says which check failed.
                    error: format!("{e:#}"),
                });
                return;
            }
        };
        // CDI names join the vendor and class the crate keeps apart.
        let kind = format!("{}/{}", spec.get_vendor(), spec.get_class());
        for (name, device) in spec.get_devices() {
            let qualified = CdiDeviceName::from_parts(&kind, &name);
            match self.devices.get(&qualified) {
                Some(other) if other.priority == priority => {
                    self.broken.push(BrokenSpec {
                        path: path.to_path_buf(),
                        kind: Some(kind.clone()),
                        error: format!(
                            "it defines {qualified}, which {} defines too",
                            other.path.display()
                        ),
                    });
                    self.devices.remove(&qualified);
                }
                _ => {
                    self.devices.insert(
                        qualified,
                        Defined {
                            device,
                            priority,
                            path: path.to_path_buf(),
                        },
                    );
                }
            }
        }
    }

    /// The spec directories, as given.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every device defined, by name.
    pub fn devices(&self) -> impl Iterator<Item = &CdiDeviceName> {
        self.devices.keys()
    }

    /// The spec files that could not be used.
    pub fn broken(&self) -> &[BrokenSpec] {
        &self.broken
    }

    /// The devices that are one GPU each, with their models.
    pub fn gpus(&self) -> Vec<CdiGpu> {
        self.devices
            .iter()
            .filter_map(|(name, defined)| {
                let model = gpu_model(&defined.device)?;
                Some(CdiGpu {
                    device: name.clone(),
                    model,
                })
            })
            .collect()
    }

    /// Checks that every one of `devices` is defined by a valid spec.
    pub fn check(&self, devices: &[CdiDeviceName]) -> Result<(), CdiError> {
        devices.iter().try_for_each(|d| self.defined(d).map(|_| ()))
    }

    fn defined(&self, device: &CdiDeviceName) -> Result<&Defined, CdiError> {
        if let Some(defined) = self.devices.get(device) {
            return Ok(defined);
        }
        // A broken spec of the same kind most likely meant to define it.
        if let Some(broken) = self
            .broken
            .iter()
            .find(|b| b.kind.as_deref() == Some(device.kind()))
        {
            return Err(CdiError::InvalidSpec {
                device: device.clone(),
                path: broken.path.clone(),
                error: broken.error.clone(),
            });
        }
        Err(CdiError::UnknownDevice {
            device: device.clone(),
            dirs: self
                .dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Applies the edits of `devices` to `spec`: each device's own, and once the
    /// edits its spec file makes for all of its devices. Device nodes reach the
    /// container as `nodes` says.
    pub fn inject(
        &self,
        devices: &[CdiDeviceName],
        spec: &mut Spec,
        nodes: DeviceNodes,
    ) -> Result<(), CdiError> {
        if devices.is_empty() {
            return Ok(());
        }
        let listed = || {
            devices
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let failed = |error: String| CdiError::Apply {
            devices: listed(),
            error,
        };
        let mut edits = ContainerEdits::new();
        let mut spec_files = BTreeSet::new();
        for device in devices {
            let defined = self.defined(device)?;
            if spec_files.insert(&defined.path)
                && let Some(common) = defined.device.get_spec().edits()
            {
                edits.append(common).map_err(|e| failed(format!("{e:#}")))?;
            }
            edits
                .append(defined.device.edits())
                .map_err(|e| failed(format!("{e:#}")))?;
        }
        edits.apply(spec).map_err(|e| failed(format!("{e:#}")))?;
        if nodes == DeviceNodes::BindMounted {
            bind_nodes(&edits, spec).map_err(failed)?;
        }
        Ok(())
    }
}

/// How device nodes reach a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNodes {
    /// Made in the container's `/dev` by the runtime (`mknod`, as host root).
    Created,
    /// Bind-mounted from the host's node: a container in a user namespace cannot
    /// make device nodes, and libcontainer would bind the node's container path,
    /// which on the host may be another device or none.
    BindMounted,
}

/// Replaces the device nodes `edits` added to `spec` with bind mounts of their host
/// nodes, keeping the cgroup rules that let the container open them.
fn bind_nodes(edits: &ContainerEdits, spec: &mut Spec) -> Result<(), String> {
    // The crate keeps a node's paths private; they serialize as the spec has them.
    let nodes =
        serde_json::to_value(&edits.container_edits.device_nodes).map_err(|e| e.to_string())?;
    let mut binds = Vec::new();
    for node in nodes.as_array().into_iter().flatten() {
        let path = node["path"].as_str().ok_or("a device node has no path")?;
        let host = node["hostPath"].as_str().unwrap_or(path);
        binds.push((PathBuf::from(path), PathBuf::from(host)));
    }
    if binds.is_empty() {
        return Ok(());
    }
    if let Some(linux) = spec.linux_mut()
        && let Some(devices) = linux.devices_mut()
    {
        devices.retain(|d| !binds.iter().any(|(path, _)| d.path() == path));
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (path, host) in binds {
        mounts.push(
            MountBuilder::default()
                .destination(path)
                .source(host)
                .typ("bind")
                .options(vec!["bind".to_string(), "nosuid".to_string()])
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// A device's [`GPU_MODEL_ANNOTATION`]. The crate keeps annotations private, but its
/// types serialize as the spec file has them.
fn gpu_model(device: &Device) -> Option<String> {
    let raw = serde_json::to_value(&device.cdi_device).ok()?;
    raw.get("annotations")?
        .get(GPU_MODEL_ANNOTATION)?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceType;

    const FAKE: &str = r#"{
        "cdiVersion": "0.6.0",
        "kind": "test.ember.dev/fake",
        "containerEdits": { "env": ["FAKE_VENDOR=1"] },
        "devices": [
            {
                "name": "zero",
                "containerEdits": {
                    "deviceNodes": [{ "path": "/dev/fake0", "hostPath": "/dev/zero" }],
                    "env": ["FAKE_DEVICE=zero"],
                    "mounts": [{ "hostPath": "/tmp", "containerPath": "/opt/fake", "options": ["ro", "bind"] }],
                    "hooks": [{ "hookName": "createContainer", "path": "/bin/true" }]
                }
            },
            { "name": "null", "containerEdits": { "env": ["FAKE_DEVICE=null"] } }
        ]
    }"#;

    const GPUS: &str = r#"
cdiVersion: "0.6.0"
kind: test.ember.dev/gpu
devices:
  - name: "0"
    annotations: { "ember.dev/gpu-model": "t4" }
    containerEdits: { env: ["FAKE_GPU=0"] }
  - name: "1"
    annotations: { "ember.dev/gpu-model": "a100" }
    containerEdits: { env: ["FAKE_GPU=1"] }
  - name: all
    containerEdits: { env: ["FAKE_GPU=all"] }
"#;

    /// A device with no edits fails validation.
    const BROKEN: &str = r#"{
        "cdiVersion": "0.6.0",
        "kind": "test.ember.dev/broken",
        "devices": [{ "name": "x", "containerEdits": {} }]
    }"#;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn name(s: &str) -> CdiDeviceName {
        s.parse().unwrap()
    }

    #[test]
    fn specs_load_and_broken_files_are_kept_aside_with_their_reason() {
        let dir = dir_with(&[
            ("fake.json", FAKE),
            ("gpus.yaml", GPUS),
            ("broken.json", BROKEN),
            ("notes.txt", "not a spec"),
        ]);
        let missing = PathBuf::from("/nonexistent/cdi");
        let registry = CdiRegistry::load(&[missing, dir.path().to_path_buf()]);
        let names: Vec<String> = registry.devices().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "test.ember.dev/fake=null",
                "test.ember.dev/fake=zero",
                "test.ember.dev/gpu=0",
                "test.ember.dev/gpu=1",
                "test.ember.dev/gpu=all"
            ]
        );
        assert_eq!(registry.broken().len(), 1);
        assert_eq!(
            registry.broken()[0].kind.as_deref(),
            Some("test.ember.dev/broken")
        );
        assert_eq!(
            registry.gpus(),
            [
                CdiGpu {
                    device: name("test.ember.dev/gpu=0"),
                    model: "t4".into()
                },
                CdiGpu {
                    device: name("test.ember.dev/gpu=1"),
                    model: "a100".into()
                },
            ]
        );

        assert!(registry.check(&[name("test.ember.dev/fake=zero")]).is_ok());
        let unknown = registry
            .check(&[name("test.ember.dev/fake=one")])
            .unwrap_err();
        assert!(
            matches!(unknown, CdiError::UnknownDevice { .. }),
            "{unknown}"
        );
        let broken = registry
            .check(&[name("test.ember.dev/broken=x")])
            .unwrap_err();
        let CdiError::InvalidSpec { error, .. } = &broken else {
            panic!("{broken}");
        };
        assert!(error.contains("empty device edits"), "{broken}");
    }

    #[test]
    fn a_later_directory_overrides_an_earlier_one_and_a_tie_removes_the_device() {
        let low = dir_with(&[("fake.json", FAKE)]);
        let high = dir_with(&[("fake.json", &FAKE.replace("FAKE_DEVICE=null", "FROM=high"))]);
        let registry = CdiRegistry::load(&[low.path().into(), high.path().into()]);
        let mut spec = Spec::default();
        registry
            .inject(
                &[name("test.ember.dev/fake=null")],
                &mut spec,
                DeviceNodes::Created,
            )
            .unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"FROM=high".to_string()), "{env:?}");

        let tie = dir_with(&[("a.json", FAKE), ("b.json", FAKE)]);
        let registry = CdiRegistry::load(&[tie.path().into()]);
        assert_eq!(registry.devices().count(), 0);
        let err = registry
            .check(&[name("test.ember.dev/fake=zero")])
            .unwrap_err();
        assert!(err.to_string().contains("defines too"), "{err}");
    }

    #[test]
    fn injection_adds_nodes_cgroup_rules_env_mounts_and_hooks() {
        let dir = dir_with(&[("fake.json", FAKE)]);
        let registry = CdiRegistry::load(&[dir.path().into()]);
        let mut spec = Spec::default();
        registry
            .inject(
                &[name("test.ember.dev/fake=zero")],
                &mut spec,
                DeviceNodes::Created,
            )
            .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let node = &linux.devices().as_ref().unwrap()[0];
        assert_eq!(node.path(), Path::new("/dev/fake0"));
        assert_eq!(node.typ(), LinuxDeviceType::C);
        assert_eq!((node.major(), node.minor()), (1, 5), "/dev/zero's numbers");
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r.allow() && r.major() == Some(1) && r.minor() == Some(5)),
            "{rules:?}"
        );
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"FAKE_DEVICE=zero".to_string()), "{env:?}");
        assert!(env.contains(&"FAKE_VENDOR=1".to_string()), "{env:?}");
        let mount = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/opt/fake"))
            .unwrap();
        assert_eq!(mount.source().as_deref(), Some(Path::new("/tmp")));
        let hooks = spec.hooks().as_ref().unwrap();
        assert_eq!(hooks.create_container().as_ref().unwrap().len(), 1);

        let mut untouched = Spec::default();
        registry
            .inject(&[], &mut untouched, DeviceNodes::BindMounted)
            .unwrap();
        assert_eq!(untouched, Spec::default());
    }

    #[test]
    fn in_a_user_namespace_nodes_are_bind_mounts_of_their_host_nodes() {
        let dir = dir_with(&[("fake.json", FAKE)]);
        let registry = CdiRegistry::load(&[dir.path().into()]);
        let mut spec = Spec::default();
        registry
            .inject(
                &[name("test.ember.dev/fake=zero")],
                &mut spec,
                DeviceNodes::BindMounted,
            )
            .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.devices().as_ref().unwrap().is_empty());
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(rules.iter().any(|r| r.allow() && r.minor() == Some(5)));
        let bind = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/fake0"))
            .unwrap();
        assert_eq!(bind.source().as_deref(), Some(Path::new("/dev/zero")));
        assert_eq!(bind.typ().as_deref(), Some("bind"));
    }
}
