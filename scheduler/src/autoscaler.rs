//! How many instances a container should have right now.

use std::time::Duration;

/// A container's scaling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Instances kept even with no traffic.
    pub min_instances: u32,
    /// Instances never exceeded.
    pub max_instances: u32,
    /// Time without requests after which the container scales down to `min_instances`.
    pub idle_timeout: Duration,
}

/// What the runtime observed about a container at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// Instances ready to serve.
    pub ready: u32,
    /// Instances being started.
    pub starting: u32,
    /// Requests being served.
    pub in_flight: u32,
    /// Requests waiting for an instance.
    pub waiting: u32,
    /// When the last request arrived or finished, if ever.
    pub last_activity: Option<Duration>,
}

/// Why the autoscaler chose its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReason {
    /// Requests are waiting and nothing is running or starting: start one.
    ColdStart,
    /// No request for the idle timeout: scale down to the minimum (often zero).
    Idle,
    /// Fewer instances than the minimum.
    BelowMinimum,
    /// More instances than the maximum.
    AboveMaximum,
    /// Nothing to change.
    Steady,
}

impl ScaleReason {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::ColdStart => "cold_start",
            ScaleReason::Idle => "idle",
            ScaleReason::BelowMinimum => "below_minimum",
            ScaleReason::AboveMaximum => "above_maximum",
            ScaleReason::Steady => "steady",
        }
    }
}

/// The autoscaler's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Instances the container should have (ready plus starting).
    pub desired: u32,
    /// Why.
    pub reason: ScaleReason,
}

/// Decides the number of instances for a container at time `now`.
///
/// Guarantees: never below `min_instances`, never above `max_instances` (which is
/// at least one), and never zero while a request is in flight or waiting.
pub fn decide(policy: &ScalingPolicy, observed: &Observation, now: Duration) -> ScaleDecision {
    let max = policy.max_instances.max(1);
    let min = policy.min_instances.min(max);
    let current = observed.ready + observed.starting;
    let demand = observed.in_flight + observed.waiting;
    let floor = if demand > 0 { min.max(1) } else { min };

    let (desired, reason) = if demand > 0 && current == 0 {
        (floor, ScaleReason::ColdStart)
    } else if current < floor {
        (floor, ScaleReason::BelowMinimum)
    } else if current > max {
        (max, ScaleReason::AboveMaximum)
    } else if demand == 0 && current > min && idle_for(observed, now) >= policy.idle_timeout {
        (min, ScaleReason::Idle)
    } else {
        (current, ScaleReason::Steady)
    };
    ScaleDecision { desired, reason }
}

fn idle_for(observed: &Observation, now: Duration) -> Duration {
    observed
        .last_activity
        .map_or(Duration::MAX, |at| now.saturating_sub(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy(min: u32, max: u32, idle_secs: u64) -> ScalingPolicy {
        ScalingPolicy {
            min_instances: min,
            max_instances: max,
            idle_timeout: Duration::from_secs(idle_secs),
        }
    }

    #[test]
    fn a_request_at_zero_starts_one_instance() {
        let observed = Observation {
            waiting: 50,
            ..Default::default()
        };
        let decision = decide(&policy(0, 10, 60), &observed, SECOND);
        assert_eq!(decision.desired, 1);
        assert_eq!(decision.reason, ScaleReason::ColdStart);
    }

    #[test]
    fn scales_to_zero_only_after_the_idle_timeout() {
        let p = policy(0, 10, 60);
        let mut observed = Observation {
            ready: 1,
            last_activity: Some(Duration::ZERO),
            ..Default::default()
        };
        // Simulated time: one tick a second.
        for second in 0..60 {
            let d = decide(&p, &observed, SECOND * second);
            assert_eq!(d.desired, 1, "scaled down early at {second}s");
        }
        let d = decide(&p, &observed, SECOND * 60);
        assert_eq!((d.desired, d.reason), (0, ScaleReason::Idle));

        // A request in flight keeps the instance, however long it has been.
        observed.in_flight = 1;
        assert_eq!(decide(&p, &observed, SECOND * 3600).desired, 1);
    }

    #[test]
    fn activity_resets_the_idle_clock() {
        let p = policy(0, 1, 10);
        let observed = Observation {
            ready: 1,
            last_activity: Some(SECOND * 95),
            ..Default::default()
        };
        assert_eq!(decide(&p, &observed, SECOND * 100).desired, 1);
        assert_eq!(decide(&p, &observed, SECOND * 105).desired, 0);
    }

    #[test]
    fn minimum_instances_stay_warm_and_start_without_traffic() {
        let p = policy(2, 5, 1);
        let at_zero = Observation::default();
        let d = decide(&p, &at_zero, SECOND * 1000);
        assert_eq!((d.desired, d.reason), (2, ScaleReason::BelowMinimum));
        let warm = Observation {
            ready: 2,
            last_activity: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(decide(&p, &warm, SECOND * 1000).desired, 2);
    }

    #[test]
    fn invariants_hold_over_every_small_observation() {
        // Exhaustive over small values: never below min, never above max, never zero
        // under demand.
        for min in 0..3 {
            for max in 0..4 {
                let p = policy(min, max, 5);
                for ready in 0..5 {
                    for starting in 0..3 {
                        for in_flight in 0..3 {
                            for waiting in 0..3 {
                                for last in [None, Some(0u64), Some(8)] {
                                    let observed = Observation {
                                        ready,
                                        starting,
                                        in_flight,
                                        waiting,
                                        last_activity: last.map(Duration::from_secs),
                                    };
                                    let d = decide(&p, &observed, SECOND * 10);
                                    let max_eff = max.max(1);
                                    assert!(d.desired <= max_eff, "{p:?} {observed:?} {d:?}");
                                    assert!(
                                        d.desired >= min.min(max_eff),
                                        "{p:?} {observed:?} {d:?}"
                                    );
                                    if in_flight + waiting > 0 {
                                        assert!(d.desired >= 1, "{p:?} {observed:?} {d:?}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
