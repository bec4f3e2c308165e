//! How many instances a container should have right now: a concurrency-based
//! autoscaler in the manner of Knative's KPA.
//!
//! Demand is the number of requests in flight or waiting. Each instance is meant to
//! carry [`TARGET_UTILIZATION_PERCENT`] of its target (its `concurrency`, or a
//! softer `target`). Two windows average the demand:
//! the stable window (60 s) sets the count in normal times; the panic window (6 s)
//! reacts to bursts. When the panic window asks for [`PANIC_THRESHOLD`] times the
//! instances that are ready, the autoscaler panics: it scales up at once and does not
//! scale down until a whole stable window has passed without another panic, or until
//! no request has come for the idle timeout (a container idle that long has no burst
//! to protect against, and its owner asked for it to go).
//!
//! The metric is concurrency by default; a container may scale on requests per
//! second instead (Knative's `metric: rps`), each instance aimed at `target`
//! requests a second (200 unless set). A new revision may start with
//! `initialScale` instances (Knative's `initial-scale`), kept until they are all
//! ready; its idle timeout counts from then.
//!
//! Unlike the KPA, the demand seen at the moment of a decision counts as much as the
//! panic window's average: the activator asks for a decision when requests queue, so
//! a burst against a container at zero starts every instance it needs within
//! milliseconds instead of waiting for the averages to rise.

use std::collections::VecDeque;
use std::time::Duration;

/// The share of its target each instance is meant to carry, in percent, unless a
/// container says otherwise (Knative's `target-utilization-percentage`).
pub const TARGET_UTILIZATION_PERCENT: u32 = 70;
/// The window whose average demand sets the instance count in normal times.
pub const STABLE_WINDOW: Duration = Duration::from_secs(60);
/// The window whose average demand detects a burst.
pub const PANIC_WINDOW: Duration = Duration::from_secs(6);
/// Panic when the panic window wants this many times the ready instances.
pub const PANIC_THRESHOLD: f64 = 2.0;

/// Requests a second each instance is aimed at, for a container that scales on
/// `rps` and sets no target (Knative's default).
pub const DEFAULT_RPS_TARGET: u32 = 200;

/// What the autoscaler counts against each instance's target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScalingMetric {
    /// Requests in flight or waiting.
    #[default]
    Concurrency,
    /// Requests arriving per second.
    Rps,
}

/// A container's scaling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Instances kept even with no traffic.
    pub min_instances: u32,
    /// Instances never exceeded.
    pub max_instances: u32,
    /// Time without requests after which the container scales down to `min_instances`.
    pub idle_timeout: Duration,
    /// Most requests one instance serves at once (at least one).
    pub concurrency: u32,
    /// Requests each instance is aimed to carry, below the hard `concurrency`
    /// (Knative's `target`); `None`: `concurrency`.
    pub target: Option<u32>,
    /// Percent of the target the count is planned for (Knative's
    /// `target-utilization-percentage`).
    pub target_utilization_percent: u32,
    /// How long a lower count must hold before the container scales down to it
    /// (Knative's `scale-down-delay`): a scale-down goes only to the most
    /// instances decided within this window.
    pub scale_down_delay: Duration,
    /// What `target` counts.
    pub metric: ScalingMetric,
}

impl ScalingPolicy {
    /// A policy with Knative's defaults for the knobs: the target is the
    /// concurrency, planned at [`TARGET_UTILIZATION_PERCENT`], no scale-down delay.
    pub fn new(
        min_instances: u32,
        max_instances: u32,
        idle_timeout: Duration,
        concurrency: u32,
    ) -> Self {
        Self {
            min_instances,
            max_instances,
            idle_timeout,
            concurrency,
            target: None,
            target_utilization_percent: TARGET_UTILIZATION_PERCENT,
            scale_down_delay: Duration::ZERO,
            metric: ScalingMetric::Concurrency,
        }
    }
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
    /// Requests that ever arrived (a running count, for the `rps` metric).
    pub arrivals: u64,
}

impl Observation {
    /// Requests in flight or waiting.
    pub fn demand(&self) -> u32 {
        self.in_flight.saturating_add(self.waiting)
    }
}

/// Why the autoscaler chose its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleReason {
    /// Requests are waiting and nothing is running or starting.
    ColdStart,
    /// A burst: the panic window wants at least twice the ready instances.
    Panic,
    /// Holding the count while panicking: no scale-down until the burst is over.
    PanicHold,
    /// The stable window's demand needs more instances.
    ScaleUp,
    /// The stable window's demand needs fewer instances.
    ScaleDown,
    /// No request for the idle timeout: scale down to the minimum (often zero).
    Idle,
    /// Fewer instances than the minimum.
    BelowMinimum,
    /// More instances than the maximum.
    AboveMaximum,
    /// A lower count is due, held until the scale-down delay has passed.
    DelayedScaleDown,
    /// A new revision starts with its `initialScale` instances.
    InitialScale,
    /// Nothing to change.
    Steady,
}

impl ScaleReason {
    /// Every reason, for metrics that list them all.
    pub const ALL: [ScaleReason; 11] = [
        ScaleReason::ColdStart,
        ScaleReason::Panic,
        ScaleReason::PanicHold,
        ScaleReason::ScaleUp,
        ScaleReason::ScaleDown,
        ScaleReason::Idle,
        ScaleReason::BelowMinimum,
        ScaleReason::AboveMaximum,
        ScaleReason::DelayedScaleDown,
        ScaleReason::InitialScale,
        ScaleReason::Steady,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::ColdStart => "cold_start",
            ScaleReason::Panic => "panic",
            ScaleReason::PanicHold => "panic_hold",
            ScaleReason::ScaleUp => "scale_up",
            ScaleReason::ScaleDown => "scale_down",
            ScaleReason::Idle => "idle",
            ScaleReason::BelowMinimum => "below_minimum",
            ScaleReason::AboveMaximum => "above_maximum",
            ScaleReason::DelayedScaleDown => "delayed_scale_down",
            ScaleReason::InitialScale => "initial_scale",
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

/// One container's autoscaler: the demand it has seen and whether it is panicking.
#[derive(Debug, Default, Clone)]
pub struct Autoscaler {
    /// Samples of the metric, oldest first, none older than the stable window.
    samples: VecDeque<(Duration, f64)>,
    /// How many of `samples` saw some demand.
    samples_with_demand: usize,
    /// When the panic condition last held, while panicking.
    panic_since: Option<Duration>,
    /// The most instances wanted during this panic.
    panic_desired: u32,
    /// Recent decisions, oldest first, none older than the scale-down delay.
    recent: VecDeque<(Duration, u32)>,
    /// The arrivals count at the last `rps` sample, and when it was taken.
    last_arrivals: Option<(Duration, u64)>,
    /// The newest sample's value.
    latest: f64,
    /// Instances a new revision starts with, kept until they have all been ready
    /// for the idle timeout.
    initial: Option<u32>,
    /// When the initial instances were all ready.
    initial_reached: Option<Duration>,
}

impl Autoscaler {
    /// An autoscaler that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the demand (requests in flight or waiting) at `now`. The runtime
    /// samples at a fixed interval, so the windows' averages are averages over time.
    pub fn record(&mut self, now: Duration, demand: u32) {
        self.push_sample(now, f64::from(demand));
    }

    /// Records what `policy`'s metric counts at `now`: the demand, or the rate at
    /// which requests arrived since the last sample.
    pub fn record_observation(
        &mut self,
        policy: &ScalingPolicy,
        now: Duration,
        observed: &Observation,
    ) {
        match policy.metric {
            ScalingMetric::Concurrency => self.record(now, observed.demand()),
            ScalingMetric::Rps => {
                let rate = match self.last_arrivals {
                    Some((at, before)) if now > at => {
                        observed.arrivals.saturating_sub(before) as f64
                            / now.saturating_sub(at).as_secs_f64()
                    }
                    _ => 0.0,
                };
                self.last_arrivals = Some((now, observed.arrivals));
                self.push_sample(now, rate);
            }
        }
    }

    fn push_sample(&mut self, now: Duration, value: f64) {
        self.samples.push_back((now, value));
        self.latest = value;
        self.samples_with_demand += usize::from(value > 0.0);
        while let Some(&(at, old)) = self.samples.front() {
            if now.saturating_sub(at) < STABLE_WINDOW {
                break;
            }
            self.samples.pop_front();
            self.samples_with_demand -= usize::from(old > 0.0);
        }
    }

    /// A new revision starts serving: it is to have `count` instances (its
    /// `initialScale`, bounded by its maximum), whatever the demand, until they
    /// have all been ready for the idle timeout (as if each had just served).
    pub fn begin_initial_scale(&mut self, count: u32) {
        self.initial = (count > 0).then_some(count);
        self.initial_reached = None;
    }

    /// Whether the autoscaler has nothing on record that could move a decision
    /// from zero: no demand in any sample it holds, and no burst being held. For a
    /// container with nothing running, starting or waiting and no minimum, a
    /// decision then is zero, and recording another zero demand changes nothing,
    /// so a caller may skip both until demand comes (a runtime with many
    /// containers at zero spends nothing on them).
    pub fn is_at_rest(&self) -> bool {
        self.panic_since.is_none() && self.samples_with_demand == 0 && self.initial.is_none()
    }

    /// Whether a burst is being handled.
    pub fn is_panicking(&self) -> bool {
        self.panic_since.is_some()
    }

    /// Average demand over the `window` before `now` (zero with no samples).
    fn average(&self, now: Duration, window: Duration) -> f64 {
        let (sum, count) = self
            .samples
            .iter()
            .rev()
            .take_while(|(at, _)| now.saturating_sub(*at) < window)
            .fold((0.0, 0u64), |(sum, n), (_, value)| (sum + value, n + 1));
        if count == 0 { 0.0 } else { sum / count as f64 }
    }

    /// Decides the number of instances for a container at time `now`.
    ///
    /// Guarantees: never below `min_instances`, never above `max_instances` (which is
    /// at least one), never zero while a request is in flight or waiting or before
    /// the idle timeout has passed without requests, never
    /// fewer than the demand needs at `concurrency` each (within the maximum), and no
    /// scale-down while panicking (a container idle for its idle timeout stops
    /// panicking).
    pub fn decide(
        &mut self,
        policy: &ScalingPolicy,
        observed: &Observation,
        now: Duration,
    ) -> ScaleDecision {
        let max = policy.max_instances.max(1);
        let kept = policy.min_instances.min(max);
        if let Some(count) = self.initial {
            match self.initial_reached {
                None if observed.ready >= count.min(max) => self.initial_reached = Some(now),
                Some(at) if now.saturating_sub(at) >= policy.idle_timeout => {
                    self.initial = None;
                    self.initial_reached = None;
                }
                _ => {}
            }
        }
        // A new revision's initial instances are its minimum, until they have
        // been idle as long as the idle timeout allows.
        let initial = self.initial.map_or(0, |count| count.min(max));
        let min = kept.max(initial);
        let below_minimum = if initial > kept {
            ScaleReason::InitialScale
        } else {
            ScaleReason::BelowMinimum
        };
        let concurrency = policy.concurrency.max(1);
        let utilization = f64::from(policy.target_utilization_percent.clamp(1, 100)) / 100.0;
        let current = observed.ready + observed.starting;
        let demand = observed.demand();
        let (aim, metric_now) = match policy.metric {
            ScalingMetric::Concurrency => (
                policy.target.unwrap_or(concurrency).clamp(1, concurrency),
                f64::from(demand),
            ),
            ScalingMetric::Rps => (
                policy.target.unwrap_or(DEFAULT_RPS_TARGET).max(1),
                self.latest,
            ),
        };
        let target = (f64::from(aim) * utilization).max(1.0);

        let panic_demand = self.average(now, PANIC_WINDOW).max(metric_now);
        let want_panic = instances_for(panic_demand, target);
        let want_stable = instances_for(self.average(now, STABLE_WINDOW), target);
        // However the averages go, every request in flight or waiting needs a slot.
        let hard_floor = demand.div_ceil(concurrency);

        if f64::from(want_panic) >= PANIC_THRESHOLD * f64::from(observed.ready.max(1)) {
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| now.saturating_sub(since) >= STABLE_WINDOW)
        {
            self.panic_since = None;
            self.panic_desired = 0;
        }

        let idle = demand == 0 && idle_for(observed, now) >= policy.idle_timeout;
        if idle {
            // No request for the whole idle timeout: whatever burst there was is over.
            self.panic_since = None;
            self.panic_desired = 0;
        }

        // Only the idle timeout takes a container to zero: a falling average never does.
        let floor = if demand > 0 || (current > 0 && !idle) {
            min.max(1)
        } else {
            min
        };
        let (wanted, reason) = if demand > 0 && current == 0 {
            (want_panic.max(hard_floor), ScaleReason::ColdStart)
        } else if current == 0 && demand == 0 {
            // Only demand (or the minimum) starts instances from zero. The
            // averages may still remember requests, but the instances that served
            // them are gone or going (stopped by hand, idle, moved): starting one
            // again for no request would only hold capacity.
            (min, below_minimum)
        } else if idle {
            // However high the averages still are from before: no request for the
            // idle timeout means the minimum. Instances already stopped (or still
            // stopping) never count, so without this the averages would start one
            // again at once, and the count would flap between zero and one.
            let reason = if current > min {
                ScaleReason::Idle
            } else {
                below_minimum
            };
            (min, reason)
        } else if self.is_panicking() {
            self.panic_desired = self
                .panic_desired
                .max(want_panic)
                .max(hard_floor)
                .max(current);
            let reason = if self.panic_desired > current {
                ScaleReason::Panic
            } else {
                ScaleReason::PanicHold
            };
            (self.panic_desired, reason)
        } else {
            let wanted = want_stable.max(hard_floor);
            let reason = match wanted.cmp(&current) {
                std::cmp::Ordering::Greater => ScaleReason::ScaleUp,
                std::cmp::Ordering::Less => ScaleReason::ScaleDown,
                std::cmp::Ordering::Equal => ScaleReason::Steady,
            };
            (wanted, reason)
        };

        let (desired, reason) = if wanted < floor {
            (floor, below_minimum)
        } else if wanted > max {
            let reason = if current > max {
                ScaleReason::AboveMaximum
            } else {
                reason
            };
            (max, reason)
        } else {
            (wanted, reason)
        };
        // A lower count waits out the scale-down delay: the most decided within it.
        self.recent.push_back((now, desired));
        while let Some(&(at, _)) = self.recent.front() {
            if now.saturating_sub(at) <= policy.scale_down_delay {
                break;
            }
            self.recent.pop_front();
        }
        let (desired, reason) = match self.recent.iter().map(|(_, d)| *d).max() {
            Some(held) if held > desired && current > desired => {
                (held.min(current), ScaleReason::DelayedScaleDown)
            }
            _ => (desired, reason),
        };
        let reason = if desired == current
            && !matches!(
                reason,
                ScaleReason::PanicHold | ScaleReason::DelayedScaleDown
            ) {
            ScaleReason::Steady
        } else {
            reason
        };
        ScaleDecision { desired, reason }
    }
}

fn instances_for(demand: f64, per_instance: f64) -> u32 {
    let wanted = (demand / per_instance).ceil();
    if wanted >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        wanted as u32
    }
}

fn idle_for(observed: &Observation, now: Duration) -> Duration {
    observed
        .last_activity
        .map_or(Duration::MAX, |at| now.saturating_sub(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);
    const TICK: Duration = Duration::from_millis(250);

    fn policy(min: u32, max: u32, idle_secs: u64) -> ScalingPolicy {
        ScalingPolicy::new(min, max, Duration::from_secs(idle_secs), 10)
    }

    /// Simulated time: a runtime that records and decides every tick and starts or
    /// stops instances as told (starts take one tick).
    struct Simulation {
        policy: ScalingPolicy,
        scaler: Autoscaler,
        now: Duration,
        ready: u32,
        starting: u32,
        /// Ticks an instance takes to start, after the one it is asked for in.
        start_ticks: u32,
        /// Starts under way, with the ticks each has left.
        pending: Vec<u32>,
        last_activity: Option<Duration>,
        /// Requests arriving per second (for the `rps` metric), and the count so far.
        rate: u64,
        arrivals: u64,
    }

    impl Simulation {
        fn new(policy: ScalingPolicy) -> Self {
            Self {
                policy,
                scaler: Autoscaler::new(),
                now: Duration::ZERO,
                ready: 0,
                starting: 0,
                start_ticks: 0,
                pending: Vec::new(),
                last_activity: None,
                rate: 0,
                arrivals: 0,
            }
        }

        /// Runs `duration` of ticks with `demand` requests in flight or waiting.
        fn run(&mut self, duration: Duration, demand: u32) -> ScaleDecision {
            let mut last = None;
            let end = self.now + duration;
            while self.now < end {
                self.now += TICK;
                for left in &mut self.pending {
                    *left = left.saturating_sub(1);
                }
                let started = self.pending.iter().filter(|left| **left == 0).count() as u32;
                self.pending.retain(|left| *left > 0);
                self.ready += started;
                self.starting = self.pending.len() as u32;
                self.arrivals += self.rate * TICK.as_millis() as u64 / 1000;
                if demand > 0 || self.rate > 0 {
                    self.last_activity = Some(self.now);
                }
                let capacity = self.ready * self.policy.concurrency;
                let observed = Observation {
                    ready: self.ready,
                    starting: self.starting,
                    in_flight: demand.min(capacity),
                    waiting: demand.saturating_sub(capacity),
                    last_activity: self.last_activity,
                    arrivals: self.arrivals,
                };
                self.scaler
                    .record_observation(&self.policy, self.now, &observed);
                let decision = self.scaler.decide(&self.policy, &observed, self.now);
                let current = self.ready + self.starting;
                if decision.desired > current {
                    let more = decision.desired - current;
                    self.pending
                        .extend(std::iter::repeat_n(self.start_ticks + 1, more as usize));
                    self.starting = self.pending.len() as u32;
                } else if decision.desired < self.ready {
                    // Stopped instances leave the count at once, however long
                    // their stop takes.
                    self.ready = decision.desired;
                }
                last = Some(decision);
            }
            last.expect("at least one tick")
        }
    }

    #[test]
    fn a_request_at_zero_starts_one_instance() {
        let observed = Observation {
            waiting: 1,
            ..Default::default()
        };
        let decision = Autoscaler::new().decide(&policy(0, 10, 60), &observed, SECOND);
        assert_eq!(decision.desired, 1);
        assert_eq!(decision.reason, ScaleReason::ColdStart);
    }

    #[test]
    fn a_burst_at_zero_starts_every_instance_it_needs_at_once() {
        // 200 waiting, 10 each at 70%: 7 per instance, so 29 instances.
        let observed = Observation {
            waiting: 200,
            ..Default::default()
        };
        let decision = Autoscaler::new().decide(&policy(0, 100, 60), &observed, SECOND);
        assert_eq!(
            (decision.desired, decision.reason),
            (29, ScaleReason::ColdStart)
        );
        // The maximum still holds.
        let decision = Autoscaler::new().decide(&policy(0, 5, 60), &observed, SECOND);
        assert_eq!(decision.desired, 5);
    }

    #[test]
    fn at_rest_only_once_no_demand_is_on_record_and_then_decisions_stay_at_zero() {
        let mut sim = Simulation::new(policy(0, 100, 1));
        assert!(sim.scaler.is_at_rest());
        sim.run(SECOND * 5, 50);
        assert!(!sim.scaler.is_at_rest(), "demand on record");
        // Idle: down to zero, but the burst's samples stay for a stable window.
        sim.run(SECOND * 5, 0);
        assert_eq!(sim.ready, 0);
        assert!(!sim.scaler.is_at_rest());
        sim.run(STABLE_WINDOW, 0);
        assert!(sim.scaler.is_at_rest());
        // Skipping ticks from here changes nothing: a decision much later is zero,
        // and a request still starts one instance at once.
        sim.now += SECOND * 3600;
        let quiet = Observation {
            last_activity: sim.last_activity,
            ..Default::default()
        };
        assert_eq!(sim.scaler.decide(&sim.policy, &quiet, sim.now).desired, 0);
        let asked = Observation {
            waiting: 1,
            ..quiet
        };
        assert_eq!(sim.scaler.decide(&sim.policy, &asked, sim.now).desired, 1);
    }

    #[test]
    fn steady_load_settles_near_seventy_percent_of_concurrency() {
        let mut sim = Simulation::new(policy(0, 100, 60));
        let decision = sim.run(SECOND * 120, 70);
        assert_eq!(decision.desired, 10, "{decision:?}");
        assert_eq!(decision.reason, ScaleReason::Steady);
        assert!(!sim.scaler.is_panicking());
    }

    #[test]
    fn the_count_is_planned_for_the_target_at_its_utilization() {
        // 50 requests steadily; 100 allowed an instance, 10 aimed for.
        let mut knobs = ScalingPolicy::new(0, 100, Duration::from_secs(60), 100);
        knobs.target = Some(10);
        knobs.target_utilization_percent = 100;
        let mut sim = Simulation::new(knobs);
        assert_eq!(sim.run(120 * SECOND, 50).desired, 5);
        // Planned at half the target: twice the instances.
        knobs.target_utilization_percent = 50;
        let mut sim = Simulation::new(knobs);
        assert_eq!(sim.run(120 * SECOND, 50).desired, 10);
        // Without a target, the hard concurrency at Knative's 70 %.
        let mut sim = Simulation::new(ScalingPolicy::new(0, 100, Duration::from_secs(60), 10));
        assert_eq!(sim.run(120 * SECOND, 70).desired, 10);
    }

    #[test]
    fn on_rps_the_count_follows_the_arrival_rate_not_the_concurrency() {
        let mut knobs = policy(0, 100, 600);
        knobs.metric = ScalingMetric::Rps;
        knobs.target = Some(100);
        // 700 requests a second at 100 each, planned at 70%: 10 instances, though
        // only 5 are in flight at any moment (fast requests).
        let mut sim = Simulation::new(knobs);
        sim.rate = 700;
        assert_eq!(sim.run(120 * SECOND, 5).desired, 10);
        // The same load scaled on concurrency needs one.
        let mut sim = Simulation::new(policy(0, 100, 600));
        sim.rate = 700;
        assert_eq!(sim.run(120 * SECOND, 5).desired, 1);
        // With no target set, Knative's 200 a second: 700 / 140 = 5.
        let mut knobs = policy(0, 100, 600);
        knobs.metric = ScalingMetric::Rps;
        let mut sim = Simulation::new(knobs);
        sim.rate = 700;
        assert_eq!(sim.run(120 * SECOND, 5).desired, 5);
        // The rate falls to nothing: the count falls, and at the idle timeout
        // reaches zero.
        sim.rate = 0;
        assert_eq!(sim.run(700 * SECOND, 0).desired, 0);
    }

    #[test]
    fn a_new_revision_starts_its_initial_scale_and_idles_down_from_when_they_are_ready() {
        let mut sim = Simulation::new(policy(1, 10, 5));
        sim.start_ticks = 8;
        sim.scaler.begin_initial_scale(4);
        assert!(!sim.scaler.is_at_rest());
        let first = sim.run(TICK, 0);
        assert_eq!(
            (first.desired, first.reason),
            (4, ScaleReason::InitialScale)
        );
        // Held while they start (two seconds), and for the idle timeout after.
        let held = sim.run(6 * SECOND, 0);
        assert_eq!(held.desired, 4, "{held:?}");
        assert_eq!(sim.ready, 4);
        assert!(!sim.scaler.is_at_rest());
        // Then down to the minimum, as any idle container.
        let idle = sim.run(2 * SECOND, 0);
        assert_eq!(idle.desired, 1, "{idle:?}");
        assert_eq!(sim.ready, 1);
        // Bounded by the maximum.
        let mut sim = Simulation::new(policy(0, 3, 5));
        sim.scaler.begin_initial_scale(50);
        assert_eq!(sim.run(TICK, 0).desired, 3);
    }

    proptest! {
        /// Whatever the arrival rate, on `rps` the count stays within the
        /// bounds and every request in flight has a slot.
        #[test]
        fn on_rps_the_bounds_and_the_hard_floor_hold(
            rate in 0u64..5000,
            demand in 0u32..300,
            target in prop::option::of(1u32..500),
            min in 0u32..5,
            max in 1u32..60,
        ) {
            let mut knobs = policy(min.min(max), max, 30);
            knobs.metric = ScalingMetric::Rps;
            knobs.target = target;
            let mut sim = Simulation::new(knobs);
            sim.rate = rate;
            let d = sim.run(20 * SECOND, demand);
            prop_assert!(d.desired <= max);
            prop_assert!(d.desired >= min.min(max));
            prop_assert!(d.desired >= demand.div_ceil(10).min(max));
        }
    }

    #[test]
    fn a_scale_down_waits_out_the_delay_then_goes() {
        let mut knobs = policy(0, 100, 600);
        knobs.scale_down_delay = Duration::from_secs(30);
        let mut sim = Simulation::new(knobs);
        let busy = sim.run(120 * SECOND, 70).desired;
        assert_eq!(busy, 10);
        // Demand falls to a tenth: the stable window lets the count fall, but not
        // below what was decided in the last 30 s.
        let held = sim.run(20 * SECOND, 7);
        assert_eq!(held.desired, 10, "{held:?}");
        assert_eq!(held.reason, ScaleReason::DelayedScaleDown);
        // Long after: the lower count.
        let settled = sim.run(200 * SECOND, 7);
        assert!(settled.desired < 10, "{settled:?}");
        // Without a delay, the same fall.
        let mut sim = Simulation::new(policy(0, 100, 600));
        sim.run(120 * SECOND, 70);
        let fell = sim.run(200 * SECOND, 7);
        assert!(fell.desired < 10, "{fell:?}");
    }

    proptest! {
        /// The delay only ever holds a count that was there: never above the
        /// instances present, never above the maximum.
        #[test]
        fn a_delayed_scale_down_never_adds_instances(
            demands in proptest::collection::vec(0u32..200, 1..40),
            delay in 0u64..120,
        ) {
            let mut knobs = policy(0, 20, 600);
            knobs.scale_down_delay = Duration::from_secs(delay);
            let mut sim = Simulation::new(knobs);
            for demand in demands {
                let before = sim.ready + sim.starting;
                let decision = sim.run(5 * SECOND, demand);
                prop_assert!(decision.desired <= 20);
                if decision.reason == ScaleReason::DelayedScaleDown {
                    prop_assert!(decision.desired <= before.max(sim.ready + sim.starting));
                }
            }
        }
    }

    #[test]
    fn a_burst_panics_and_holds_until_a_stable_window_has_passed() {
        let mut sim = Simulation::new(policy(0, 100, 600));
        sim.run(SECOND * 120, 14);
        assert_eq!(sim.ready, 2);
        // Ten times the load: the panic window reacts within a tick.
        let decision = sim.run(TICK, 140);
        assert_eq!(decision.reason, ScaleReason::Panic);
        assert_eq!(decision.desired, 20);
        assert!(sim.scaler.is_panicking());
        // The burst ends: no scale-down while panicking.
        for _ in 0..((STABLE_WINDOW - SECOND).as_millis() / TICK.as_millis()) {
            let d = sim.run(TICK, 14);
            assert_eq!(d.desired, 20, "scaled down while panicking: {d:?}");
        }
        // A full stable window after the last panic, it scales down again.
        let decision = sim.run(SECOND * 2, 14);
        assert!(!sim.scaler.is_panicking());
        assert!(decision.desired < 20, "{decision:?}");
        let decision = sim.run(SECOND * 120, 14);
        assert_eq!(decision.desired, 2);
    }

    #[test]
    fn scales_to_zero_only_after_the_idle_timeout() {
        let mut sim = Simulation::new(policy(0, 10, 30));
        sim.run(SECOND * 10, 5);
        assert_eq!(sim.ready, 1);
        sim.run(SECOND * 29, 0);
        assert_eq!(sim.ready, 1, "scaled to zero before the idle timeout");
        let mut decision = sim.run(TICK, 0);
        while sim.ready > 0 {
            assert!(sim.now < SECOND * 45, "never scaled to zero");
            decision = sim.run(TICK, 0);
        }
        assert_eq!(decision.reason, ScaleReason::Idle);
        // And it stays there: nothing starts again without a request.
        assert_eq!(sim.run(SECOND * 120, 0).desired, 0);
        assert_eq!(sim.ready + sim.starting, 0);
    }

    #[test]
    fn a_request_in_flight_keeps_an_instance_however_long_it_runs() {
        let observed = Observation {
            ready: 1,
            in_flight: 1,
            last_activity: Some(Duration::ZERO),
            ..Default::default()
        };
        let d = Autoscaler::new().decide(&policy(0, 10, 1), &observed, SECOND * 3600);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn minimum_instances_stay_warm_and_start_without_traffic() {
        let mut sim = Simulation::new(policy(2, 5, 1));
        let decision = sim.run(TICK, 0);
        assert_eq!(
            (decision.desired, decision.reason),
            (2, ScaleReason::BelowMinimum)
        );
        sim.run(SECOND * 600, 0);
        assert_eq!(sim.ready, 2);
    }

    #[test]
    fn more_instances_than_the_maximum_are_cut() {
        let observed = Observation {
            ready: 8,
            last_activity: Some(Duration::ZERO),
            in_flight: 50,
            ..Default::default()
        };
        let mut scaler = Autoscaler::new();
        scaler.record(SECOND, 50);
        let d = scaler.decide(&policy(0, 3, 60), &observed, SECOND);
        assert_eq!((d.desired, d.reason), (3, ScaleReason::AboveMaximum));
    }

    fn observation() -> impl Strategy<Value = Observation> {
        (
            0u32..40,
            0u32..10,
            0u32..500,
            0u32..500,
            prop::option::of(0u64..200),
        )
            .prop_map(|(ready, starting, in_flight, waiting, last)| Observation {
                ready,
                starting,
                in_flight,
                waiting,
                last_activity: last.map(Duration::from_secs),
                arrivals: 0,
            })
    }

    proptest! {
        /// Over any sequence of observations on simulated time: never below min,
        /// never above max, never zero under demand, always enough slots for the
        /// demand (within max), and no scale-down while panicking.
        #[test]
        fn invariants_hold_over_any_history(
            min in 0u32..5,
            max in 0u32..50,
            concurrency in 1u32..50,
            idle in 0u64..120,
            steps in prop::collection::vec((1u64..20_000, observation()), 1..60),
        ) {
            let policy = ScalingPolicy::new(min, max, Duration::from_secs(idle), concurrency);
            let max_eff = max.max(1);
            let mut scaler = Autoscaler::new();
            let mut now = Duration::ZERO;
            for (step_ms, observed) in steps {
                now += Duration::from_millis(step_ms);
                let was_panicking = scaler.is_panicking();
                scaler.record(now, observed.demand());
                let d = scaler.decide(&policy, &observed, now);
                let demand = observed.demand();
                prop_assert!(d.desired <= max_eff, "{policy:?} {observed:?} {d:?}");
                prop_assert!(d.desired >= min.min(max_eff), "{policy:?} {observed:?} {d:?}");
                if demand > 0 {
                    prop_assert!(d.desired >= 1, "{policy:?} {observed:?} {d:?}");
                    prop_assert!(
                        d.desired >= demand.div_ceil(concurrency).min(max_eff),
                        "{policy:?} {observed:?} {d:?}"
                    );
                }
                let current = observed.ready + observed.starting;
                if d.desired == 0 && current > 0 {
                    let idle_for = observed.last_activity.map_or(Duration::MAX, |at| now.saturating_sub(at));
                    prop_assert!(
                        demand == 0 && idle_for >= policy.idle_timeout,
                        "scaled to zero before the idle timeout: {observed:?} {d:?}"
                    );
                }
                if current == 0 && demand == 0 {
                    prop_assert!(d.desired <= min, "started from zero without demand: {observed:?} {d:?}");
                }
                if was_panicking && scaler.is_panicking() && current <= max_eff {
                    prop_assert!(d.desired >= current, "scaled down in panic: {observed:?} {d:?}");
                }
            }
        }

        /// After the last request, with no traffic at all: the count reaches zero
        /// once the idle timeout has passed and stays there, however long the
        /// instances it stopped take to go (they leave the count the moment they
        /// are told to stop, as the runtime takes them out of its pool first).
        #[test]
        fn with_no_traffic_the_count_reaches_zero_after_the_idle_timeout_and_stays(
            idle_secs in 1u64..90,
            concurrency in 1u32..50,
            busy in prop::collection::vec(0u32..200, 1..240),
            start_ticks in 0u32..8,
        ) {
            let policy = ScalingPolicy::new(0, 100, Duration::from_secs(idle_secs), concurrency);
            let mut sim = Simulation::new(policy);
            sim.start_ticks = start_ticks;
            for demand in busy {
                sim.run(TICK, demand);
            }
            // The last request ends now.
            sim.last_activity = Some(sim.now);
            // A start under way is not cut short: it ends, then the instance goes.
            let quiet_until = sim.now + policy.idle_timeout + TICK * (start_ticks + 2);
            while sim.now < quiet_until {
                sim.run(TICK, 0);
            }
            prop_assert_eq!(sim.ready + sim.starting, 0, "not at zero after the idle timeout");
            for _ in 0..(2 * STABLE_WINDOW.as_millis() / TICK.as_millis()) {
                let decision = sim.run(TICK, 0);
                prop_assert_eq!(decision.desired, 0, "started again with no traffic: {:?}", decision);
                prop_assert_eq!(sim.ready + sim.starting, 0);
            }
        }
    }
}
