//! The OCI runtime spec (`config.json`) of one instance.

use super::process::ProcessPlan;
use crate::IdRange;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    ProcessBuilder, RootBuilder, Spec, UserBuilder, get_default_maskedpaths, get_default_mounts,
    get_default_namespaces, get_default_readonly_paths,
};
use std::collections::HashSet;
use std::path::Path;

/// cgroup limits of one instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) memory_bytes: u64,
    /// CPUs, possibly fractional.
    pub(crate) cpus: f64,
    pub(crate) pids: u32,
}

/// The CFS period quotas are expressed in (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Everything that differs between instances of one revision.
pub(crate) struct InstanceSpec<'a> {
    pub(crate) rootfs: &'a Path,
    pub(crate) hostname: &'a str,
    pub(crate) cgroups_path: &'a str,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Ember's init on the host, when the instance runs under it.
    pub(crate) init: Option<&'a Path>,
    /// The host ids a user namespace maps the instance's onto; `None` for none.
    pub(crate) id_range: Option<IdRange>,
}

/// Where an instance's cgroups go, under each controller (or the v2 root).
pub(crate) fn cgroups_path(sandbox_id: &str) -> String {
    format!("/ember/{sandbox_id}")
}

/// Builds the spec: pid, network, ipc, uts, mount and cgroup namespaces (and a user
/// namespace with the instance's id range); the plan's
/// capabilities; no new privileges; masked and read-only proc paths; limits.
pub(crate) fn build(
    plan: &ProcessPlan,
    limits: Limits,
    instance: &InstanceSpec<'_>,
) -> Result<Spec, OciSpecError> {
    let caps: HashSet<Capability> = plan.capabilities.iter().copied().collect();
    // libcontainer 0.7 fails to create a container whose bounding set lacks
    // AUDIT_WRITE ("failed syscall", found by trying each capability), so it stays
    // in the bounding set alone: with no_new_privileges, nothing the instance
    // executes can raise a capability the permitted set lacks.
    let mut bounding = caps.clone();
    bounding.insert(Capability::AuditWrite);
    let capabilities = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(bounding)
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let args = match instance.init {
        Some(_) => super::init::wrap(&plan.args),
        None => plan.args.clone(),
    };
    let process = ProcessBuilder::default()
        .args(args)
        .env(plan.env.clone())
        .cwd(plan.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(instance.uid)
                .gid(instance.gid)
                .build()?,
        )
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()?;

    let quota = (limits.cpus * CPU_PERIOD_US as f64).round().max(1000.0) as i64;
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX))
                .build()?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(i64::from(limits.pids))
                .build()?,
        )
        .build()?;
    let mut namespaces = get_default_namespaces();
    let mut linux = LinuxBuilder::default();
    if let Some(range) = instance.id_range {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
        let mapping = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(range.host_base())
            .size(IdRange::SIZE)
            .build()?;
        linux = linux
            .uid_mappings(vec![mapping])
            .gid_mappings(vec![mapping]);
    }
    let linux = linux
        .namespaces(namespaces)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .resources(resources)
        .cgroups_path(instance.cgroups_path)
        .build()?;

    let mut mounts = get_default_mounts();
    if let Some(init) = instance.init {
        mounts.push(super::init::mount(init)?);
    }
    let mut spec = Spec::default();
    spec.set_process(Some(process))
        .set_root(Some(
            RootBuilder::default()
                .path(instance.rootfs)
                .readonly(false)
                .build()?,
        ))
        .set_hostname(Some(instance.hostname.to_string()))
        .set_mounts(Some(mounts))
        .set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_isolation_are_in_the_spec() {
        let plan = ProcessPlan {
            args: vec!["/bin/httpd".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/www".into(),
            user: None,
            port: 8080,
            capabilities: crate::capabilities::DEFAULT_CAPABILITIES.to_vec(),
        };
        let spec = build(
            &plan,
            Limits {
                memory_bytes: 64 << 20,
                cpus: 0.5,
                pids: 100,
            },
            &InstanceSpec {
                rootfs: Path::new("/data/rootfs"),
                hostname: "hello",
                cgroups_path: "/ember/abc",
                uid: 65534,
                gid: 65534,
                init: Some(Path::new("/data/oci/ember-init")),
                id_range: IdRange::new(1),
            },
        )
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let resources = &json["linux"]["resources"];
        assert_eq!(resources["memory"]["limit"], 64 << 20);
        assert_eq!(resources["cpu"]["quota"], 50_000);
        assert_eq!(resources["pids"]["limit"], 100);
        assert_eq!(json["linux"]["cgroupsPath"], "/ember/abc");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        // The init runs the plan's program, mounted read-only.
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/.ember/init", "--", "/bin/httpd"])
        );
        let init = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/.ember/init")
            .unwrap();
        assert_eq!(init["source"], "/data/oci/ember-init");
        assert!(init["options"].as_array().unwrap().contains(&"ro".into()));
        assert_eq!(json["process"]["user"]["uid"], 65534);
        let namespaces: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        let mapping = serde_json::json!([{"containerID": 0, "hostID": 1_114_112, "size": 65536}]);
        assert_eq!(json["linux"]["uidMappings"], mapping);
        assert_eq!(json["linux"]["gidMappings"], mapping);
        for ns in ["pid", "network", "ipc", "uts", "mount", "user"] {
            assert!(namespaces.contains(&ns), "{ns} namespace");
        }
        let bounding = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(bounding.len(), 11);
        assert!(bounding.contains(&serde_json::json!("CAP_AUDIT_WRITE")));
        let effective = json["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert_eq!(effective.len(), 10);
        for absent in [
            "CAP_SYS_ADMIN",
            "CAP_NET_RAW",
            "CAP_MKNOD",
            "CAP_AUDIT_WRITE",
            "CAP_SYS_CHROOT",
        ] {
            assert!(!effective.contains(&serde_json::json!(absent)), "{absent}");
        }
        let set = |key: &str| {
            let mut names: Vec<String> = json["process"]["capabilities"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        };
        assert_eq!(set("effective"), set("permitted"));
        assert!(!json["linux"]["maskedPaths"].as_array().unwrap().is_empty());
    }
}
