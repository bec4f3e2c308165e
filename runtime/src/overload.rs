//! Shedding load before the process runs out of descriptors or memory, in the
//! manner of Envoy's overload manager: past a threshold the ingress takes no new
//! connection and answers requests that would wait `503` with `Retry-After`;
//! once pressure falls well below it, it serves as before, by itself.

use std::time::Duration;

/// When the runtime counts as overloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct OverloadPolicy {
    /// Share of the open files limit in use past which the ingress sheds load.
    pub descriptors_percent: u8,
    /// Resident memory past which the ingress sheds load; `None` for no limit.
    pub memory_bytes: Option<u64>,
    /// How often pressure is read.
    pub interval: Duration,
}

impl Default for OverloadPolicy {
    fn default() -> Self {
        Self {
            descriptors_percent: 90,
            memory_bytes: None,
            interval: Duration::from_millis(250),
        }
    }
}

/// The process's use of what it may run out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pressure {
    pub(crate) descriptors: u64,
    pub(crate) descriptor_limit: u64,
    pub(crate) memory_bytes: u64,
}

/// A shedding ends only once use is this share of the threshold or less, so that
/// it does not flap at the threshold.
const RECOVERY_PERCENT: u64 = 80;

impl OverloadPolicy {
    /// Why the runtime should shed load now, given `pressure` and whether it
    /// sheds already; `None` when it should serve.
    pub(crate) fn overloaded(&self, pressure: &Pressure, shedding: bool) -> Option<String> {
        // Entering at the threshold, leaving well below it.
        let scale = |threshold: u64| {
            if shedding {
                threshold * RECOVERY_PERCENT / 100
            } else {
                threshold
            }
        };
        let descriptor_threshold =
            pressure.descriptor_limit * u64::from(self.descriptors_percent) / 100;
        if pressure.descriptors >= scale(descriptor_threshold) {
            return Some(format!(
                "{} of {} open files in use",
                pressure.descriptors, pressure.descriptor_limit
            ));
        }
        if let Some(memory) = self.memory_bytes
            && pressure.memory_bytes >= scale(memory)
        {
            return Some(format!(
                "{} bytes resident, past {memory}",
                pressure.memory_bytes
            ));
        }
        None
    }
}

/// Connections that must have closed since the last peak before freed memory is
/// handed back to the system.
const TRIM_AFTER_FALL: u32 = 1000;

/// Hands memory back to the system once a flood of connections has gone: the
/// allocator keeps what they freed (about 17 KB each) for reuse, so a runtime
/// that once held 10,000 connections stayed 170 MB larger for good.
#[derive(Default)]
pub(crate) struct MemoryReturn {
    /// The most connections open since the last trim.
    high: std::sync::atomic::AtomicU32,
}

impl MemoryReturn {
    /// Notes `open` connections; true when enough have closed since the peak
    /// that freed memory should be returned now.
    pub(crate) fn observe(&self, open: u32) -> bool {
        use std::sync::atomic::Ordering;
        let high = self.high.fetch_max(open, Ordering::Relaxed).max(open);
        if high >= open + TRIM_AFTER_FALL {
            self.high.store(open, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`,
/// which also releases free pages inside its heaps).
pub(crate) fn return_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a padding size and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the process's pressure from /proc.
pub(crate) fn read_pressure() -> std::io::Result<Pressure> {
    let descriptors = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let (descriptor_limit, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_err(std::io::Error::from)?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let resident_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Pressure {
        descriptors,
        descriptor_limit,
        memory_bytes: resident_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure(descriptors: u64, memory_bytes: u64) -> Pressure {
        Pressure {
            descriptors,
            descriptor_limit: 1000,
            memory_bytes,
        }
    }

    #[test]
    fn sheds_past_a_threshold_and_recovers_well_below_it() {
        let policy = OverloadPolicy {
            memory_bytes: Some(1000),
            ..OverloadPolicy::default()
        };
        assert_eq!(policy.overloaded(&pressure(899, 0), false), None);
        let why = policy.overloaded(&pressure(900, 0), false).unwrap();
        assert_eq!(why, "900 of 1000 open files in use");
        // Still shedding just under the threshold; serving again at 80% of it.
        assert!(policy.overloaded(&pressure(850, 0), true).is_some());
        assert_eq!(policy.overloaded(&pressure(719, 0), true), None);
        assert!(policy.overloaded(&pressure(0, 1000), false).is_some());
        assert!(policy.overloaded(&pressure(0, 900), true).is_some());
        assert_eq!(policy.overloaded(&pressure(0, 799), true), None);
    }

    #[test]
    fn memory_is_returned_once_a_thousand_connections_have_closed_since_the_peak() {
        let trimmer = MemoryReturn::default();
        assert!(!trimmer.observe(5000));
        assert!(!trimmer.observe(4100));
        assert!(trimmer.observe(4000));
        // The peak starts again from there.
        assert!(!trimmer.observe(3500));
        assert!(!trimmer.observe(3001));
        assert!(trimmer.observe(3000));
        return_free_memory();
    }

    #[test]
    fn this_process_pressure_can_be_read() {
        let pressure = read_pressure().unwrap();
        assert!(pressure.descriptors > 0 && pressure.descriptor_limit >= pressure.descriptors);
        assert!(pressure.memory_bytes > 0);
    }
}
