//! Ember's init in each OCI instance (the program is `sandbox/init/ember_init.rs`,
//! built statically by `build.rs` and embedded here): installed in the runtime's
//! directory when the OCI sandbox starts, and bind-mounted read-only into each
//! instance whose container keeps `init` on, as its PID 1.

use oci_spec::runtime::{Mount, MountBuilder};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the init is inside an instance.
pub(crate) const PATH_IN_INSTANCE: &str = "/.ember/init";

/// The init, a static executable.
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ember-init"));

/// Writes the init into `dir` (replacing an older one in one rename, so that no
/// instance ever mounts half a file); returns its path.
pub(crate) fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("ember-init");
    if std::fs::read(&path).is_ok_and(|installed| installed == PROGRAM) {
        return Ok(path);
    }
    let mut staged = tempfile::NamedTempFile::new_in(dir)?;
    staged.write_all(PROGRAM)?;
    staged.as_file().sync_all()?;
    staged
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))?;
    staged.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// The workload's `argv`, run by the init.
pub(crate) fn wrap(args: &[String]) -> Vec<String> {
    [PATH_IN_INSTANCE.to_string(), "--".to_string()]
        .into_iter()
        .chain(args.iter().cloned())
        .collect()
}

/// The read-only bind mount of the installed init at [`PATH_IN_INSTANCE`].
pub(crate) fn mount(installed: &Path) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(PATH_IN_INSTANCE)
        .typ("bind")
        .source(installed)
        .options(["bind", "ro", "nosuid", "nodev"].map(String::from).to_vec())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_installed_init_runs_its_program_and_exits_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let init = install(dir.path()).unwrap();
        // Installing again keeps the file.
        assert_eq!(install(dir.path()).unwrap(), init);
        let status = Command::new(&init)
            .args(["--", "/bin/sh", "-c", "exit 7"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(7));
        let missing = Command::new(&init)
            .args(["--", "/no/such/program"])
            .output()
            .unwrap();
        assert_eq!(missing.status.code(), Some(127));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot run /no/such/program"));
        assert_eq!(
            wrap(&["/bin/httpd".into(), "-f".into()]),
            ["/.ember/init", "--", "/bin/httpd", "-f"]
        );
    }

    #[test]
    fn a_signal_to_the_init_reaches_the_workload() {
        let dir = tempfile::tempdir().unwrap();
        let init = install(dir.path()).unwrap();
        let marker = dir.path().join("got-term");
        // The workload exits 3 on SIGTERM.
        let script = format!(
            "trap 'touch {}; exit 3' TERM; while :; do sleep 0.05; done",
            marker.display()
        );
        let mut child = Command::new(&init)
            .args(["--", "/bin/sh", "-c", &script])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        assert!(marker.exists(), "the workload never got SIGTERM");
    }
}
