//! Writes a CDI spec for the NVIDIA GPUs of this host, as `nvidia-ctk cdi generate`
//! does: one device per GPU (by index, which carries the GPU's model, and by UUID),
//! `all`, and common edits that give every GPU container the control device nodes,
//! the driver's libraries and `nvidia-smi`, read-only, with a hook that adds the
//! libraries' folders to the container's linker cache.

use super::registry::GPU_MODEL_ANNOTATION;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One GPU as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaGpu {
    /// nvidia-smi's index.
    pub index: u32,
    /// `GPU-…`.
    pub uuid: String,
    /// The product name, such as `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// The minor number of its device node, `/dev/nvidia<minor>`.
    pub minor: u32,
}

/// What generation reads off the host, behind a trait so that it is tested without
/// a GPU.
pub trait NvidiaHost {
    /// The GPUs, in index order.
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, String>;
    /// The dynamic linker's cache: each library's soname and path, for this
    /// machine's word size only.
    fn linker_cache(&self) -> Result<Vec<(String, PathBuf)>, String>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// `path` with its symbolic links followed.
    fn resolve(&self, path: &Path) -> Result<PathBuf, String>;
    /// Where an executable of that name is, searching `PATH`.
    fn which(&self, program: &str) -> Option<PathBuf>;
}

/// Why no spec could be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvidiaError {
    /// The driver could not be asked (no nvidia-smi, or it failed).
    #[error("listing the NVIDIA GPUs failed: {0}")]
    Query(String),
    /// The driver answered with no GPU.
    #[error("this host has no NVIDIA GPU")]
    NoGpu,
    /// The linker cache could not be read.
    #[error("reading the linker cache failed: {0}")]
    LinkerCache(String),
}

/// The control devices every GPU container needs, where the host has them.
const CONTROL_NODES: [&str; 4] = [
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// The driver's compute and utility libraries, by soname prefix (`libcuda.so.1`
/// matches `libcuda.so.`).
const DRIVER_LIBRARIES: [&str; 11] = [
    "libcuda.so.",
    "libcudadebugger.so.",
    "libnvidia-ml.so.",
    "libnvidia-cfg.so.",
    "libnvidia-ptxjitcompiler.so.",
    "libnvidia-nvvm.so.",
    "libnvidia-gpucomp.so.",
    "libnvidia-opencl.so.",
    "libnvidia-allocator.so.",
    "libnvidia-pkcs11.so.",
    "libnvidia-pkcs11-openssl3.so.",
];

/// The driver's programs containers may run.
const DRIVER_PROGRAMS: [&str; 2] = ["nvidia-smi", "nvidia-debugdump"];

/// Mount options of everything from the driver: nothing in the container may change
/// it.
const READ_ONLY_BIND: [&str; 4] = ["ro", "nosuid", "nodev", "bind"];

/// A generated spec, as written to the spec file.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratedSpec {
    #[serde(rename = "cdiVersion")]
    version: &'static str,
    kind: &'static str,
    devices: Vec<SpecDevice>,
    #[serde(rename = "containerEdits")]
    common: Edits,
    /// What people should know: libraries not found, say.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct SpecDevice {
    name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "containerEdits")]
    edits: Edits,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Edits {
    #[serde(rename = "deviceNodes", skip_serializing_if = "Vec::is_empty")]
    device_nodes: Vec<DeviceNode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Serialize)]
struct DeviceNode {
    path: String,
}

#[derive(Debug, Clone, Serialize)]
struct Mount {
    #[serde(rename = "hostPath")]
    host_path: String,
    #[serde(rename = "containerPath")]
    container_path: String,
    options: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
struct Hook {
    #[serde(rename = "hookName")]
    hook_name: &'static str,
    path: String,
    args: Vec<String>,
}

impl GeneratedSpec {
    /// The qualified names of the devices, in the spec's order.
    pub fn device_names(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| format!("{}={}", self.kind, d.name))
            .collect()
    }

    /// The spec as JSON (which CDI's YAML parser reads too).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes")
    }

    /// Writes the spec to `path` whole or not at all: it is validated as the
    /// registry will read it, under a name the registry skips, then renamed.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let staging = path.with_extension("json.partial");
        std::fs::write(&staging, self.to_json())
            .map_err(|e| format!("writing {}: {e}", staging.display()))?;
        if let Err(e) = container_device_interface::spec::read_spec(&staging, 0) {
            let _ = std::fs::remove_file(&staging);
            return Err(format!("the generated spec does not validate: {e:#}"));
        }
        std::fs::rename(&staging, path)
            .map_err(|e| format!("renaming {} to {}: {e}", staging.display(), path.display()))
    }
}

/// Generates the spec. `model_of` turns a product name into the model code that
/// `desiredGPUs` uses; `ember` is the program the linker-cache hook runs (this one).
pub fn generate(
    host: &dyn NvidiaHost,
    model_of: &dyn Fn(&str) -> String,
    ember: &Path,
) -> Result<GeneratedSpec, NvidiaError> {
    let gpus = host.gpus().map_err(NvidiaError::Query)?;
    if gpus.is_empty() {
        return Err(NvidiaError::NoGpu);
    }
    let mut warnings = Vec::new();
    let node_of = |gpu: &NvidiaGpu| DeviceNode {
        path: format!("/dev/nvidia{}", gpu.minor),
    };
    let mut devices = Vec::new();
    for gpu in &gpus {
        let edits = Edits {
            device_nodes: vec![node_of(gpu)],
            ..Edits::default()
        };
        devices.push(SpecDevice {
            name: gpu.index.to_string(),
            annotations: BTreeMap::from([(GPU_MODEL_ANNOTATION.to_string(), model_of(&gpu.name))]),
            edits: edits.clone(),
        });
        // The same GPU by UUID: no model annotation, so that it is not counted twice.
        devices.push(SpecDevice {
            name: gpu.uuid.clone(),
            annotations: BTreeMap::new(),
            edits,
        });
    }
    devices.push(SpecDevice {
        name: "all".into(),
        annotations: BTreeMap::new(),
        edits: Edits {
            device_nodes: gpus.iter().map(node_of).collect(),
            ..Edits::default()
        },
    });

    let device_nodes = CONTROL_NODES
        .iter()
        .filter(|p| host.exists(Path::new(p)))
        .map(|p| DeviceNode {
            path: (*p).to_string(),
        })
        .collect();
    let mut mounts = Vec::new();
    let mut folders: Vec<String> = Vec::new();
    let cache = host.linker_cache().map_err(NvidiaError::LinkerCache)?;
    for prefix in DRIVER_LIBRARIES {
        // The first entry of a soname is the one the linker would pick.
        let Some((_, path)) = cache.iter().find(|(soname, _)| soname.starts_with(prefix)) else {
            if prefix == "libcuda.so." || prefix == "libnvidia-ml.so." {
                warnings.push(format!(
                    "the driver library {prefix}* is not in the linker cache"
                ));
            }
            continue;
        };
        let real = match host.resolve(path) {
            Ok(real) => real,
            Err(e) => {
                warnings.push(format!("skipping {}: {e}", path.display()));
                continue;
            }
        };
        // Mounted under the soname's path, so the linker finds it by that name.
        mounts.push(read_only(&real, path));
        if let Some(folder) = path.parent().map(|p| p.display().to_string())
            && !folders.contains(&folder)
        {
            folders.push(folder);
        }
    }
    for program in DRIVER_PROGRAMS {
        match host.which(program) {
            Some(path) => mounts.push(read_only(&path, &path)),
            None if program == "nvidia-smi" => {
                warnings.push("nvidia-smi is not on the PATH".into());
            }
            None => {}
        }
    }
    let mut hooks = Vec::new();
    if !folders.is_empty() {
        let mut args = vec!["ember".into(), "gpu".into(), "update-ldcache".into()];
        for folder in &folders {
            args.push("--folder".into());
            args.push(folder.clone());
        }
        hooks.push(Hook {
            hook_name: "createContainer",
            path: ember.display().to_string(),
            args,
        });
    }
    Ok(GeneratedSpec {
        version: "0.6.0",
        kind: "nvidia.com/gpu",
        devices,
        common: Edits {
            device_nodes,
            mounts,
            hooks,
        },
        warnings,
    })
}

fn read_only(host: &Path, container: &Path) -> Mount {
    Mount {
        host_path: host.display().to_string(),
        container_path: container.display().to_string(),
        options: READ_ONLY_BIND.to_vec(),
    }
}

/// The host itself: nvidia-smi, /proc/driver/nvidia, `ldconfig -p` and the file
/// system.
pub struct SystemNvidiaHost;

impl NvidiaHost for SystemNvidiaHost {
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, String> {
        let smi = self
            .which("nvidia-smi")
            .ok_or("nvidia-smi is not on the PATH")?;
        let output = Command::new(smi)
            .args([
                "--query-gpu=index,uuid,name,pci.bus_id",
                "--format=csv,noheader",
            ])
            .output()
            .map_err(|e| format!("running nvidia-smi: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "nvidia-smi failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        parse_gpu_query(&String::from_utf8_lossy(&output.stdout), &|bus_id| {
            std::fs::read_to_string(format!("/proc/driver/nvidia/gpus/{bus_id}/information")).ok()
        })
    }

    fn linker_cache(&self) -> Result<Vec<(String, PathBuf)>, String> {
        let ldconfig = ldconfig_program().ok_or("no ldconfig program found")?;
        let output = Command::new(ldconfig)
            .arg("-p")
            .output()
            .map_err(|e| format!("running ldconfig -p: {e}"))?;
        Ok(parse_linker_cache(
            &String::from_utf8_lossy(&output.stdout),
            HOST_LIBRARY_TAG,
        ))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn resolve(&self, path: &Path) -> Result<PathBuf, String> {
        std::fs::canonicalize(path).map_err(|e| e.to_string())
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    }
}

/// How `ldconfig -p` marks libraries of this machine's word size.
#[cfg(target_arch = "aarch64")]
const HOST_LIBRARY_TAG: &str = "AArch64";
#[cfg(not(target_arch = "aarch64"))]
const HOST_LIBRARY_TAG: &str = "x86-64";

/// The host's ldconfig, which the linker-cache hook runs too.
pub(crate) fn ldconfig_program() -> Option<PathBuf> {
    [
        "/sbin/ldconfig",
        "/usr/sbin/ldconfig",
        "/sbin/ldconfig.real",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Reads `index, uuid, name, pci.bus_id` lines; `information` gives the driver's
/// page of a GPU by its PCI address, which holds the device node's minor number
/// (not always the index).
fn parse_gpu_query(
    text: &str,
    information: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<NvidiaGpu>, String> {
    let mut gpus = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [index, uuid, name, bus_id] = fields[..] else {
            return Err(format!("unexpected nvidia-smi line {line:?}"));
        };
        let index: u32 = index
            .parse()
            .map_err(|_| format!("unexpected GPU index in {line:?}"))?;
        // nvidia-smi writes an 8-digit PCI domain; /proc uses 4, in lower case.
        let bus_id = bus_id.to_ascii_lowercase();
        let short = bus_id
            .get(bus_id.len().saturating_sub(12)..)
            .unwrap_or(&bus_id);
        let minor = information(short)
            .and_then(|page| {
                page.lines()
                    .find_map(|l| l.strip_prefix("Device Minor:"))
                    .and_then(|m| m.trim().parse().ok())
            })
            .unwrap_or(index);
        gpus.push(NvidiaGpu {
            index,
            uuid: uuid.to_string(),
            name: name.to_string(),
            minor,
        });
    }
    Ok(gpus)
}

/// Reads `ldconfig -p` lines such as
/// `\tlibcuda.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so.1`.
fn parse_linker_cache(text: &str, tag: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let (left, path) = line.split_once(" => ")?;
            let (soname, flags) = left.trim().split_once(' ')?;
            flags
                .contains(tag)
                .then(|| (soname.to_string(), PathBuf::from(path.trim())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::CdiRegistry;

    struct FakeHost {
        gpus: Vec<NvidiaGpu>,
        files: Vec<&'static str>,
    }

    impl NvidiaHost for FakeHost {
        fn gpus(&self) -> Result<Vec<NvidiaGpu>, String> {
            Ok(self.gpus.clone())
        }
        fn linker_cache(&self) -> Result<Vec<(String, PathBuf)>, String> {
            Ok(parse_linker_cache(
                "3 libs found in cache `/etc/ld.so.cache'\n\
                 \tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n\
                 \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n\
                 \tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1\n",
                "x86-64",
            ))
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.iter().any(|f| Path::new(f) == path)
        }
        fn resolve(&self, path: &Path) -> Result<PathBuf, String> {
            Ok(PathBuf::from(format!("{}.550.54.15", path.display())))
        }
        fn which(&self, program: &str) -> Option<PathBuf> {
            (program == "nvidia-smi").then(|| PathBuf::from("/usr/bin/nvidia-smi"))
        }
    }

    fn h100(index: u32, minor: u32) -> NvidiaGpu {
        NvidiaGpu {
            index,
            uuid: format!("GPU-0000000{index}-1111-2222-3333-444444444444"),
            name: "NVIDIA H100 80GB HBM3".into(),
            minor,
        }
    }

    #[test]
    fn the_query_and_the_linker_cache_parse() {
        let text = "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 00000000:17:00.0\n\
                    1, GPU-bbbb, Tesla T4, 00000000:65:00.0\n";
        let gpus = parse_gpu_query(text, &|bus| {
            (bus == "0000:65:00.0").then(|| "Model: Tesla T4\nDevice Minor: 3\n".into())
        })
        .unwrap();
        assert_eq!(
            gpus,
            [
                NvidiaGpu {
                    index: 0,
                    uuid: "GPU-aaaa".into(),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    minor: 0
                },
                NvidiaGpu {
                    index: 1,
                    uuid: "GPU-bbbb".into(),
                    name: "Tesla T4".into(),
                    minor: 3
                },
            ]
        );
        assert!(parse_gpu_query("garbage\n", &|_| None).is_err());
    }

    #[test]
    fn the_spec_has_a_device_per_gpu_by_index_and_uuid_and_all_and_validates() {
        let host = FakeHost {
            gpus: vec![h100(0, 0), h100(1, 2)],
            files: vec!["/dev/nvidiactl", "/dev/nvidia-uvm"],
        };
        let spec = generate(&host, &|_| "h100".into(), Path::new("/usr/bin/ember")).unwrap();
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
        assert_eq!(
            spec.device_names(),
            [
                "nvidia.com/gpu=0",
                "nvidia.com/gpu=GPU-00000000-1111-2222-3333-444444444444",
                "nvidia.com/gpu=1",
                "nvidia.com/gpu=GPU-00000001-1111-2222-3333-444444444444",
                "nvidia.com/gpu=all",
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
        assert_eq!(
            json["devices"][2]["containerEdits"]["deviceNodes"][0]["path"], "/dev/nvidia2",
            "the node follows the minor number"
        );
        let common = &json["containerEdits"];
        assert_eq!(common["deviceNodes"].as_array().unwrap().len(), 2);
        let mounts = common["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["containerPath"]
            == "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
            && m["hostPath"] == "/usr/lib/x86_64-linux-gnu/libcuda.so.1.550.54.15"
            && m["options"][0] == "ro"));
        assert!(
            mounts
                .iter()
                .any(|m| m["containerPath"] == "/usr/bin/nvidia-smi")
        );
        assert!(
            !mounts
                .iter()
                .any(|m| m["hostPath"].as_str().unwrap().contains("i386")),
            "only this word size's libraries"
        );
        assert_eq!(
            common["hooks"][0]["args"],
            serde_json::json!([
                "ember",
                "gpu",
                "update-ldcache",
                "--folder",
                "/usr/lib/x86_64-linux-gnu"
            ])
        );

        // The crate that reads specs accepts it, and finds the two GPUs by model.
        let dir = tempfile::tempdir().unwrap();
        spec.write(&dir.path().join("nvidia.json")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let registry = CdiRegistry::load(&[dir.path().into()]);
        assert!(registry.broken().is_empty(), "{:?}", registry.broken());
        let gpus = registry.gpus();
        assert_eq!(gpus.len(), 2);
        assert!(gpus.iter().all(|g| g.model == "h100"));
    }

    #[test]
    fn a_host_without_gpus_is_an_error() {
        let host = FakeHost {
            gpus: vec![],
            files: vec![],
        };
        assert_eq!(
            generate(&host, &|_| String::new(), Path::new("/e")).unwrap_err(),
            NvidiaError::NoGpu
        );
    }
}
