//! What a started instance leaves in its directory, so that a runtime started
//! after this one (this one killed, say) can tell it still runs and take it over:
//! its init's pid with the time that process started (a pid alone may have been
//! reused by then), and its address.

use std::net::SocketAddr;
use std::path::Path;

const FILE: &str = "instance.json";

/// A started instance, as its directory records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct InstanceRecord {
    /// The init's pid on the host.
    pub(crate) pid: i32,
    /// When that process started, in clock ticks since boot (`/proc/<pid>/stat`).
    pub(crate) pid_started: u64,
    /// Where it listens.
    pub(crate) address: SocketAddr,
}

impl InstanceRecord {
    /// The record of the instance whose init is `pid`, running now.
    pub(crate) fn of(pid: i32, address: SocketAddr) -> std::io::Result<Self> {
        let pid_started = process_start(pid).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no process {pid}"))
        })?;
        Ok(Self {
            pid,
            pid_started,
            address,
        })
    }

    /// Writes the record into `dir`, whole or not at all.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::blob_store::write_atomically(&dir.join(FILE), &bytes)
    }

    /// The record in `dir`, if it has a readable one.
    pub(crate) fn read(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(dir.join(FILE)).ok()?).ok()
    }

    /// Whether the recorded init still runs: the same pid, started at the same time.
    pub(crate) fn is_running(&self) -> bool {
        process_start(self.pid) == Some(self.pid_started)
    }

    /// Whether the recorded init still runs, and in the cgroup at `cgroups_path`
    /// (as in the spec): a process that is not where Ember put it is not its.
    pub(crate) fn is_running_in(&self, cgroups_path: &str) -> bool {
        self.is_running() && in_cgroup(self.pid, cgroups_path)
    }
}

/// Whether process `pid` sits in the cgroup at `cgroups_path` in any hierarchy
/// (cgroup v1 has one per controller, v2 one).
fn in_cgroup(pid: i32, cgroups_path: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|lines| {
        lines
            .lines()
            .filter_map(|line| line.splitn(3, ':').nth(2))
            .any(|path| path == cgroups_path)
    })
}

/// When process `pid` started, in clock ticks since boot; `None` when there is no
/// such process (a zombie has none either: it no longer runs).
fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold
    // spaces: state is the first, start time the twentieth.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_tells_a_live_process_from_a_gone_or_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let record = InstanceRecord::of(pid, "10.0.0.2:8080".parse().unwrap()).unwrap();
        record.write(dir.path()).unwrap();
        let read = InstanceRecord::read(dir.path()).unwrap();
        assert_eq!(read, record);
        assert!(read.is_running());
        // Another start time is another process, whatever its pid.
        let reused = InstanceRecord {
            pid_started: record.pid_started + 1,
            ..record.clone()
        };
        assert!(!reused.is_running());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!record.is_running());
        assert!(InstanceRecord::read(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn a_process_is_in_the_cgroups_proc_lists_and_no_other() {
        let pid = std::process::id() as i32;
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own.lines().next().unwrap().splitn(3, ':').nth(2).unwrap();
        assert!(in_cgroup(pid, path));
        assert!(!in_cgroup(pid, "/ember/someone-else"));
        assert!(!in_cgroup(i32::MAX, path));
    }
}
