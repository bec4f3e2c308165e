//! Prometheus metrics, kept in atomics and rendered as text on demand.

use crate::model::ContainerId;
use ember_sandbox::WorkloadKind;
use ember_scheduler::ScaleReason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A point-in-time view of a container's traffic, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrafficStats {
    pub(crate) in_flight: u32,
    pub(crate) queued: u32,
    pub(crate) desired: u32,
    pub(crate) running: u32,
    pub(crate) starting: u32,
    /// Sandboxes created ahead and waiting for a cold start.
    pub(crate) prepared: u32,
}

/// Upper bounds (seconds) of the cold-start histogram buckets.
const COLD_START_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes counted by `ember_requests_total`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The limits a request can be cut at: its whole time, the start of its
/// response, and a started response's silence.
const TIMEOUT_KINDS: [&str; 3] = ["request", "response_start", "stream_idle"];

/// Which of a request's limits cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTimeout {
    /// The whole request (`timeoutSeconds`).
    Request,
    /// The start of its response (`responseStartTimeoutSeconds`).
    ResponseStart,
    /// A started response's silence (`streamIdleTimeoutSeconds`).
    StreamIdle,
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; COLD_START_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        for (bound, bucket) in COLD_START_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(value.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The runtime's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; STATUS_CLASSES.len()],
    timeouts: [AtomicU64; TIMEOUT_KINDS.len()],
    cold_starts: [Histogram; 2],
    scale_downs: AtomicU64,
}

fn kind_index(kind: WorkloadKind) -> usize {
    match kind {
        WorkloadKind::Wasm => 0,
        WorkloadKind::Oci => 1,
    }
}

impl Metrics {
    /// Counts one request answered through the ingress.
    pub fn request_served(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request cut at one of its limits.
    pub fn request_cut(&self, limit: RequestTimeout) {
        self.timeouts[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one cold start and how long it took.
    pub fn cold_start(&self, kind: WorkloadKind, took: Duration) {
        self.cold_starts[kind_index(kind)].observe(took);
    }

    /// Counts one instance stopped for idleness.
    pub fn scaled_down(&self) {
        self.scale_downs.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition format. `gauges` are appended as they are.
    /// The series of the state store's writer: changes applied and flushes made.
    pub fn render_store_writes(out: &mut String, (changes, flushes): (u64, u64)) {
        let _ = writeln!(
            out,
            "# HELP ember_store_changes_total Changes the state store's writer applied.\n\
             # TYPE ember_store_changes_total counter\nember_store_changes_total {changes}\n\
             # HELP ember_store_flushes_total Flushes of the state store, each making the changes queued before it durable.\n\
             # TYPE ember_store_flushes_total counter\nember_store_flushes_total {flushes}"
        );
    }

    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP ember_requests_total Requests answered by the ingress.\n");
        out.push_str("# TYPE ember_requests_total counter\n");
        for (class, counter) in STATUS_CLASSES.iter().zip(&self.requests) {
            let _ = writeln!(
                out,
                "ember_requests_total{{code=\"{class}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP ember_request_timeouts_total Requests the ingress cut at one of their container's limits.\n");
        out.push_str("# TYPE ember_request_timeouts_total counter\n");
        for (kind, counter) in TIMEOUT_KINDS.iter().zip(&self.timeouts) {
            let _ = writeln!(
                out,
                "ember_request_timeouts_total{{limit=\"{kind}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP ember_cold_starts_total Instances started for waiting requests.\n");
        out.push_str("# TYPE ember_cold_starts_total counter\n");
        for kind in [WorkloadKind::Wasm, WorkloadKind::Oci] {
            let h = &self.cold_starts[kind_index(kind)];
            let _ = writeln!(
                out,
                "ember_cold_starts_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                h.count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP ember_cold_start_seconds Time from a request finding no instance to an instance ready.\n");
        out.push_str("# TYPE ember_cold_start_seconds histogram\n");
        for kind in [WorkloadKind::Wasm, WorkloadKind::Oci] {
            let h = &self.cold_starts[kind_index(kind)];
            let kind = kind.as_str();
            for (bound, bucket) in COLD_START_BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "ember_cold_start_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ember_cold_start_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "ember_cold_start_seconds_sum{{kind=\"{kind}\"}} {}",
                h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "ember_cold_start_seconds_count{{kind=\"{kind}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP ember_scale_downs_total Instances stopped after their idle timeout.\n",
        );
        out.push_str("# TYPE ember_scale_downs_total counter\n");
        let _ = writeln!(
            out,
            "ember_scale_downs_total {}",
            self.scale_downs.load(Ordering::Relaxed)
        );
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// One container's traffic and scaling decisions, as the metrics show them.
pub(crate) struct ContainerSeries {
    pub(crate) id: ContainerId,
    pub(crate) traffic: TrafficStats,
    pub(crate) decisions: Vec<(ScaleReason, u64)>,
}

/// A gauge: its name, its help, and how to read it.
type TrafficGauge = (&'static str, &'static str, fn(&TrafficStats) -> u32);

/// Appends the per-container series: requests in flight and queued, desired and
/// actual instances, and the scaling decisions taken, by reason.
pub(crate) fn render_per_container(out: &mut String, containers: &[ContainerSeries]) {
    let gauges: [TrafficGauge; 6] = [
        (
            "ember_container_in_flight",
            "Requests a container's instances are serving.",
            |t| t.in_flight,
        ),
        (
            "ember_container_queued",
            "Requests waiting in a container's queue for an instance.",
            |t| t.queued,
        ),
        (
            "ember_container_desired_instances",
            "Instances the autoscaler wants for a container.",
            |t| t.desired,
        ),
        (
            "ember_container_running_instances",
            "A container's instances that are running.",
            |t| t.running,
        ),
        (
            "ember_container_starting_instances",
            "A container's instances that are starting.",
            |t| t.starting,
        ),
        (
            "ember_container_prepared_sandboxes",
            "Sandboxes an OCI container has created ahead, waiting for a cold start.",
            |t| t.prepared,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for c in containers {
            let _ = writeln!(
                out,
                "{name}{{container=\"{}\"}} {}",
                c.id,
                value(&c.traffic)
            );
        }
    }
    out.push_str("# HELP ember_scaling_decisions_total Autoscaler decisions that started or stopped instances, by reason.\n");
    out.push_str("# TYPE ember_scaling_decisions_total counter\n");
    for c in containers {
        let id = c.id;
        for (reason, count) in &c.decisions {
            let _ = writeln!(
                out,
                "ember_scaling_decisions_total{{container=\"{id}\",reason=\"{}\"}} {count}",
                reason.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request_served(http::StatusCode::OK);
        m.cold_start(WorkloadKind::Wasm, Duration::from_micros(700));
        let text = m.render(&[("ember_containers", "Containers.", 3)]);
        assert!(
            text.contains("ember_requests_total{code=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("ember_cold_starts_total{kind=\"wasm\"} 1"));
        assert!(text.contains("ember_cold_start_seconds_bucket{kind=\"wasm\",le=\"0.0005\"} 0"));
        assert!(text.contains("ember_cold_start_seconds_bucket{kind=\"wasm\",le=\"0.001\"} 1"));
        assert!(text.contains("ember_cold_start_seconds_bucket{kind=\"wasm\",le=\"+Inf\"} 1"));
        assert!(text.contains("ember_containers 3"));
    }

    #[test]
    fn renders_each_container_s_traffic_and_decisions() {
        let id = ContainerId::generate();
        let traffic = TrafficStats {
            in_flight: 3,
            queued: 2,
            desired: 4,
            running: 1,
            starting: 3,
            prepared: 1,
        };
        let mut text = String::new();
        let container = ContainerSeries {
            id,
            traffic,
            decisions: vec![(ScaleReason::Panic, 5)],
        };
        render_per_container(&mut text, &[container]);
        for line in [
            format!("ember_container_in_flight{{container=\"{id}\"}} 3"),
            format!("ember_container_queued{{container=\"{id}\"}} 2"),
            format!("ember_container_desired_instances{{container=\"{id}\"}} 4"),
            format!("ember_container_running_instances{{container=\"{id}\"}} 1"),
            format!("ember_container_starting_instances{{container=\"{id}\"}} 3"),
            format!("ember_container_prepared_sandboxes{{container=\"{id}\"}} 1"),
            format!("ember_scaling_decisions_total{{container=\"{id}\",reason=\"panic\"}} 5"),
        ] {
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }
}
