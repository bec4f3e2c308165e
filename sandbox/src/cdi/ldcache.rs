//! The `createContainer` hook of generated NVIDIA specs: adds the driver libraries'
//! folders to the container's linker cache, so that programs in any glibc image find
//! them, wherever that image's own libraries live.
//!
//! It runs in the container's mount namespace before `pivot_root`: the CDI mounts are
//! in place under the root file system, and the host's `ldconfig` is still reachable.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the cache was not updated.
#[derive(Debug, thiserror::Error)]
pub enum LdcacheError {
    /// The OCI state on stdin, or the bundle's config.json, is not what runtimes write.
    #[error("reading the container's state: {0}")]
    State(String),
    /// `ldconfig` could not run or failed.
    #[error("running ldconfig: {0}")]
    Ldconfig(String),
}

/// Updates the linker cache of the container whose OCI state is `state`, adding
/// `folders` (paths inside the container).
pub fn update_ldcache(state: &[u8], folders: &[PathBuf]) -> Result<(), LdcacheError> {
    let root = container_root(state)?;
    // ldconfig writes /etc/ld.so.cache under the root; an image may have no /etc.
    std::fs::create_dir_all(root.join("etc"))
        .map_err(|e| LdcacheError::Ldconfig(format!("creating /etc: {e}")))?;
    let ldconfig = super::nvidia::ldconfig_program()
        .ok_or_else(|| LdcacheError::Ldconfig("no ldconfig program on the host".into()))?;
    let output = Command::new(ldconfig)
        .arg("-r")
        .arg(&root)
        .args(folders)
        .output()
        .map_err(|e| LdcacheError::Ldconfig(e.to_string()))?;
    if !output.status.success() {
        return Err(LdcacheError::Ldconfig(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// The root file system of the container: config.json's `root.path`, relative to
/// the bundle unless absolute.
fn container_root(state: &[u8]) -> Result<PathBuf, LdcacheError> {
    let bad = |what: String| LdcacheError::State(what);
    let state: serde_json::Value =
        serde_json::from_slice(state).map_err(|e| bad(format!("the state is not JSON: {e}")))?;
    let bundle = state["bundle"]
        .as_str()
        .ok_or_else(|| bad("the state names no bundle".into()))?;
    let bundle = Path::new(bundle);
    let config = std::fs::read(bundle.join("config.json"))
        .map_err(|e| bad(format!("reading the bundle's config.json: {e}")))?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| bad(format!("config.json is not JSON: {e}")))?;
    let root = config["root"]["path"]
        .as_str()
        .ok_or_else(|| bad("config.json has no root.path".into()))?;
    Ok(bundle.join(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cdi::nvidia::{NvidiaHost, SystemNvidiaHost};

    /// A real shared library of the host, to cache.
    fn some_host_library() -> (String, PathBuf) {
        SystemNvidiaHost
            .linker_cache()
            .unwrap()
            .into_iter()
            .find(|(soname, _)| soname.starts_with("libz.so.") || soname.starts_with("libm.so."))
            .expect("the host has libz or libm")
    }

    #[test]
    fn the_hook_adds_the_folders_to_the_containers_linker_cache() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "ldconfig -r chroots: this test needs root (CI runs as root)"
        );
        let bundle = tempfile::tempdir().unwrap();
        let rootfs = bundle.path().join("rootfs");
        let driver = rootfs.join("opt/driver");
        std::fs::create_dir_all(&driver).unwrap();
        let (soname, path) = some_host_library();
        std::fs::copy(std::fs::canonicalize(&path).unwrap(), driver.join(&soname)).unwrap();
        std::fs::write(
            bundle.path().join("config.json"),
            r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}"#,
        )
        .unwrap();
        let state = serde_json::json!({
            "ociVersion": "1.0.2",
            "id": "test",
            "status": "creating",
            "pid": 1,
            "bundle": bundle.path(),
        });

        update_ldcache(
            state.to_string().as_bytes(),
            &[PathBuf::from("/opt/driver")],
        )
        .unwrap();
        let cache = std::fs::read(rootfs.join("etc/ld.so.cache")).unwrap();
        let wanted = format!("/opt/driver/{soname}");
        assert!(
            cache.windows(wanted.len()).any(|w| w == wanted.as_bytes()),
            "{wanted} is in the container's cache"
        );

        let err = update_ldcache(b"{}", &[]).unwrap_err();
        assert!(err.to_string().contains("no bundle"), "{err}");
    }
}
