//! Latency samples summed up: percentiles, the worst, and the request rate.

use serde::Serialize;
use std::time::Duration;

/// One case's figures. Times are in microseconds, which keeps the JSON readable
/// from cold starts (thousands) down to warm requests (tens).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Requests answered per second over the case's wall time, for load cases.
    pub requests_per_sec: Option<f64>,
}

impl Summary {
    /// Nearest-rank percentiles of `samples`; `None` when there are none.
    /// `elapsed` is the wall time the samples were taken in, for the rate.
    pub fn of(samples: &[Duration], elapsed: Option<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| {
            let rank = (q * sorted.len() as f64).ceil() as usize;
            micros(sorted[rank.clamp(1, sorted.len()) - 1])
        };
        Some(Self {
            n: sorted.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: micros(sorted[sorted.len() - 1]),
            requests_per_sec: elapsed
                .filter(|e| !e.is_zero())
                .map(|e| sorted.len() as f64 / e.as_secs_f64()),
        })
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = ms(&(1..=100).rev().collect::<Vec<_>>());
        let summary = Summary::of(&samples, Some(Duration::from_secs(2))).unwrap();
        assert_eq!(summary.n, 100);
        assert_eq!(summary.p50_us, 50_000.0);
        assert_eq!(summary.p90_us, 90_000.0);
        assert_eq!(summary.p99_us, 99_000.0);
        assert_eq!(summary.max_us, 100_000.0);
        assert_eq!(summary.requests_per_sec, Some(50.0));
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_no_summary() {
        let summary = Summary::of(&ms(&[7]), None).unwrap();
        assert_eq!((summary.p50_us, summary.p99_us), (7000.0, 7000.0));
        assert_eq!(summary.requests_per_sec, None);
        assert!(Summary::of(&[], None).is_none());
    }
}
