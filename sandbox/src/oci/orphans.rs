//! Killing a container that nothing else can stop: a runtime killed while
//! libcontainer wrote the container's state leaves a running container whose
//! state file is empty, so libcontainer cannot load it to kill it. Its cgroup
//! still names every process it has, in every hierarchy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the processes of an orphaned cgroup get to die after SIGKILL.
const DEATH_WAIT: Duration = Duration::from_secs(2);

/// Kills every process in the cgroup at `cgroups_path` (in each hierarchy it is
/// in) and removes the cgroup.
pub(super) fn kill_cgroup(cgroups_path: &str) {
    let relative = cgroups_path.trim_start_matches('/');
    let dirs: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|root| root.join(relative))
        .filter(|dir| dir.is_dir())
        .collect();
    // A runtime killed while libcontainer killed a container (it freezes the
    // cgroup, signals, then thaws) leaves the cgroup frozen, and a frozen process
    // does not die of SIGKILL until it is thawed.
    for dir in &dirs {
        thaw(dir);
    }
    let deadline = Instant::now() + DEATH_WAIT;
    for dir in &dirs {
        loop {
            let pids = processes_in(dir);
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for dir in &dirs {
        // Empty now; a cgroup directory goes with rmdir, not with its files.
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::warn!(cgroup = %dir.display(), error = %e, "removing an orphaned container's cgroup failed");
        }
    }
}

/// Thaws the cgroup directory `dir` if it is frozen: the v1 freezer's
/// `freezer.state`, or v2's `cgroup.freeze`.
fn thaw(dir: &std::path::Path) {
    let (v1, v2) = (dir.join("freezer.state"), dir.join("cgroup.freeze"));
    if v1.exists() {
        let _ = std::fs::write(v1, "THAWED");
    }
    if v2.exists() {
        let _ = std::fs::write(v2, "0");
    }
}

/// The processes in the cgroup directory `dir`.
fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Where each cgroup hierarchy is mounted (one for v2, one per controller group
/// for v1, both on a hybrid host).
fn cgroup_mounts() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            // "... mount_point options ... - fstype source super_options"
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cgroup_hierarchy_of_this_host_is_found() {
        let mounts = cgroup_mounts();
        assert!(!mounts.is_empty(), "no cgroup hierarchy mounted");
    }

    #[test]
    fn a_cgroup_that_does_not_exist_is_left_alone() {
        kill_cgroup("/ember/no-such-container-for-this-test");
    }
}
