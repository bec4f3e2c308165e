//! Each running instance's CPU and memory, sampled at a fixed interval and kept for
//! a bounded window: the stats and metrics series the container faces show.

use crate::model::InstanceId;
use ember_sandbox::{NetworkUsage, ResourceUsage};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

/// Samples kept per instance: an hour at the default 10 s interval.
pub const SAMPLES_KEPT: usize = 360;

/// One point of an instance's series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsageSample {
    /// When it was taken.
    pub at: SystemTime,
    /// CPU used since the sample before, in percent of one CPU.
    pub cpu_percent: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Bytes through the instance's network interface since it started (OCI).
    pub network: Option<NetworkUsage>,
}

#[derive(Default)]
struct Series {
    /// The CPU time counter at the last sample, to take the next one's difference.
    last_cpu: Option<(SystemTime, Duration)>,
    points: VecDeque<UsageSample>,
}

/// The series of every instance that ran since the runtime started (and still runs
/// or was sampled within the window).
#[derive(Default)]
pub(crate) struct UsageSeries {
    per_instance: Mutex<HashMap<InstanceId, Series>>,
}

impl UsageSeries {
    /// Adds a sample of each instance in `usages`, taken `at`; instances no longer
    /// running keep their series until it would be older than the window.
    pub(crate) fn record(&self, at: SystemTime, usages: &[(InstanceId, ResourceUsage)]) {
        let mut all = self.per_instance.lock();
        for (id, usage) in usages {
            let series = all.entry(*id).or_default();
            let cpu_percent = match series.last_cpu {
                Some((then, cpu_then)) => {
                    let wall = at.duration_since(then).unwrap_or_default().as_secs_f64();
                    let cpu = usage.cpu_time.saturating_sub(cpu_then).as_secs_f64();
                    if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 }
                }
                None => 0.0,
            };
            series.last_cpu = Some((at, usage.cpu_time));
            series.points.push_back(UsageSample {
                at,
                cpu_percent,
                memory_bytes: usage.memory_bytes,
                network: usage.network,
            });
            if series.points.len() > SAMPLES_KEPT {
                series.points.pop_front();
            }
        }
        let sampled: HashSet<_> = usages.iter().map(|(id, _)| *id).collect();
        // A series not sampled for a whole window has nothing left to show.
        all.retain(|id, series| {
            sampled.contains(id) || {
                series.points.pop_front();
                !series.points.is_empty()
            }
        });
    }

    /// The instance's samples, oldest first.
    pub(crate) fn series(&self, id: InstanceId) -> Vec<UsageSample> {
        self.per_instance
            .lock()
            .get(&id)
            .map(|s| s.points.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The instance's latest sample.
    pub(crate) fn latest(&self, id: InstanceId) -> Option<UsageSample> {
        self.per_instance
            .lock()
            .get(&id)
            .and_then(|s| s.points.back().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_ms: u64, memory_bytes: u64) -> ResourceUsage {
        ResourceUsage {
            cpu_time: Duration::from_millis(cpu_ms),
            memory_bytes,
            network: None,
            storage_bytes: None,
        }
    }

    #[test]
    fn cpu_is_the_share_of_the_interval_spent_running() {
        let series = UsageSeries::default();
        let id = InstanceId::generate();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        series.record(t0, &[(id, usage(100, 10))]);
        series.record(t0 + Duration::from_secs(2), &[(id, usage(600, 20))]);
        let points = series.series(id);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].cpu_percent, 0.0);
        assert!((points[1].cpu_percent - 25.0).abs() < 1e-9);
        assert_eq!(series.latest(id).unwrap().memory_bytes, 20);
    }

    #[test]
    fn the_window_is_bounded_and_gone_instances_fade_out() {
        let series = UsageSeries::default();
        let (kept, gone) = (InstanceId::generate(), InstanceId::generate());
        let t0 = SystemTime::UNIX_EPOCH;
        series.record(t0, &[(gone, usage(0, 1))]);
        series.record(t0, &[(gone, usage(0, 1))]);
        for i in 0..SAMPLES_KEPT + 5 {
            series.record(t0 + Duration::from_secs(i as u64), &[(kept, usage(0, 1))]);
        }
        assert_eq!(series.series(kept).len(), SAMPLES_KEPT);
        assert!(series.series(gone).is_empty());
    }
}
