//! A runtime's claim on its bridge and subnet, so that two runtimes on one host
//! never hand out each other's addresses.
//!
//! Each claim is an exclusive `flock` on a file under `/run/ember`, named after the
//! bridge or the subnet and holding the claimant's pid. The kernel drops the lock
//! when the process ends however it ends, so a killed runtime never leaves a stale
//! claim behind.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::network::Subnet;

/// Where claims live: a tmpfs, emptied at boot like the claims themselves.
const CLAIMS_DIR: &str = "/run/ember";

/// How long a claim waits for a runtime that is still exiting to let go.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Held for the runtime's life; dropping it releases the claims.
pub(crate) struct NetworkClaim {
    _bridge: Flock<File>,
    _subnet: Flock<File>,
}

impl NetworkClaim {
    /// Claims `bridge` and `subnet`, or names the runtime that holds either.
    pub(crate) fn take(bridge: &str, subnet: Subnet) -> Result<Self, String> {
        Self::take_in(Path::new(CLAIMS_DIR), bridge, subnet, RELEASE_WAIT)
    }

    fn take_in(dir: &Path, bridge: &str, subnet: Subnet, wait: Duration) -> Result<Self, String> {
        let subnet_name = subnet.to_string().replace('/', "_");
        let bridge_claim = claim(&dir.join(format!("bridge-{bridge}")), wait).map_err(|holder| {
            format!(
                "bridge {bridge} is used by another Ember runtime{holder}; give this one --bridge and --subnet of its own"
            )
        })?;
        let subnet_claim = claim(&dir.join(format!("subnet-{subnet_name}")), wait).map_err(|holder| {
            format!(
                "subnet {subnet} is used by another Ember runtime{holder}; give this one --subnet of its own"
            )
        })?;
        Ok(Self {
            _bridge: bridge_claim,
            _subnet: subnet_claim,
        })
    }
}

/// Locks `path` exclusively and writes this process's pid into it. On failure the
/// error says who holds it (" (pid N)"), as far as the file tells.
fn claim(path: &Path, wait: Duration) -> Result<Flock<File>, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!(" (creating {}: {e})", dir.display()))?;
    }
    let deadline = Instant::now() + wait;
    let mut file = open(path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let pid = std::process::id().to_string();
                let written = locked
                    .set_len(0)
                    .and_then(|()| locked.rewind())
                    .and_then(|()| locked.write_all(pid.as_bytes()));
                if let Err(e) = written {
                    return Err(format!(" (writing {}: {e})", path.display()));
                }
                return Ok(locked);
            }
            Err((mut unlocked, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                if Instant::now() >= deadline {
                    let mut holder = String::new();
                    let _ = unlocked.read_to_string(&mut holder);
                    return Err(match holder.trim().parse::<u32>() {
                        Ok(pid) => format!(" (pid {pid})"),
                        Err(_) => String::new(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
                file = unlocked;
            }
            Err((_, errno)) => return Err(format!(" (locking {}: {errno})", path.display())),
        }
    }
}

fn open(path: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!(" (opening {}: {e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn a_second_claim_on_a_bridge_or_subnet_names_the_first_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let none = Duration::ZERO;
        let first = NetworkClaim::take_in(dir.path(), "br0", subnet("10.9.0.0/24"), none).unwrap();

        let same_bridge = NetworkClaim::take_in(dir.path(), "br0", subnet("10.8.0.0/24"), none)
            .err()
            .unwrap();
        assert!(same_bridge.contains("bridge br0"), "{same_bridge}");
        assert!(
            same_bridge.contains(&format!("pid {}", std::process::id())),
            "{same_bridge}"
        );

        let same_subnet = NetworkClaim::take_in(dir.path(), "br1", subnet("10.9.0.0/24"), none)
            .err()
            .unwrap();
        assert!(same_subnet.contains("subnet 10.9.0.0/24"), "{same_subnet}");

        let other = NetworkClaim::take_in(dir.path(), "br1", subnet("10.8.0.0/24"), none);
        assert!(other.is_ok(), "a different bridge and subnet are free");

        drop(first);
        assert!(NetworkClaim::take_in(dir.path(), "br0", subnet("10.9.0.0/24"), none).is_ok());
    }
}
