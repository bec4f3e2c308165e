//! An OCI instance's CPU time and memory, read from its cgroups (v1 or v2).

use crate::{NetworkUsage, ResourceUsage};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The traffic through the host end of an instance's veth: what the host end
/// received, the instance sent. `None` when the interface is gone.
pub(crate) fn read_network(host_veth: &str) -> Option<NetworkUsage> {
    let statistics = Path::new("/sys/class/net")
        .join(host_veth)
        .join("statistics");
    Some(NetworkUsage {
        sent_bytes: read_number(&statistics.join("rx_bytes"))?,
        received_bytes: read_number(&statistics.join("tx_bytes"))?,
    })
}

/// Bytes in use on the filesystem mounted at `mount` (an instance's sized tmpfs).
pub(crate) fn read_filesystem_used(mount: &Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(mount).ok()?;
    let used_blocks = stats.blocks().saturating_sub(stats.blocks_free());
    Some(used_blocks as u64 * stats.fragment_size() as u64)
}

/// Reads the usage of the cgroups at `cgroups_path` (as in the spec's
/// `linux.cgroupsPath`, e.g. `/ember/<id>`); what cannot be read counts as zero.
pub(crate) fn read(cgroups_path: &str) -> ResourceUsage {
    let relative = cgroups_path.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(relative);
        ResourceUsage {
            cpu_time: read_file(&dir.join("cpu.stat"))
                .and_then(|stat| usage_usec(&stat))
                .map_or(Duration::ZERO, Duration::from_micros),
            memory_bytes: read_number(&dir.join("memory.current")).unwrap_or(0),
            network: None,
            storage_bytes: None,
        }
    } else {
        ResourceUsage {
            cpu_time: v1_file(root, &["cpuacct", "cpu,cpuacct"], relative, "cpuacct.usage")
                .and_then(|path| read_number(&path))
                .map_or(Duration::ZERO, Duration::from_nanos),
            memory_bytes: v1_file(root, &["memory"], relative, "memory.usage_in_bytes")
                .and_then(|path| read_number(&path))
                .unwrap_or(0),
            network: None,
            storage_bytes: None,
        }
    }
}

/// The first of the controller's mount points that has the file.
fn v1_file(root: &Path, controllers: &[&str], relative: &str, file: &str) -> Option<PathBuf> {
    controllers
        .iter()
        .map(|c| root.join(c).join(relative).join(file))
        .find(|p| p.exists())
}

fn read_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_number(path: &Path) -> Option<u64> {
    read_file(path)?.trim().parse().ok()
}

/// `usage_usec` from a cgroup v2 `cpu.stat`.
fn usage_usec(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_gives_its_usage_line() {
        let stat = "usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\n";
        assert_eq!(usage_usec(stat), Some(12345));
        assert_eq!(usage_usec("user_usec 1\n"), None);
    }

    #[test]
    fn loopback_has_statistics_and_a_missing_interface_has_none() {
        assert!(read_network("lo").is_some());
        assert_eq!(read_network("ve-no-such"), None);
    }

    #[test]
    fn a_missing_cgroup_reads_as_nothing_used() {
        assert_eq!(
            read("/ember/no-such-instance-anywhere"),
            ResourceUsage::default()
        );
    }
}
