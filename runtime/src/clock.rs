//! The runtime's monotonic clock: time since the runtime started, the form the
//! scheduler takes time in.
//!
//! It reads tokio's clock, so tests that pause tokio's time drive it too: the
//! activator's tests advance time instead of sleeping through it.

use std::time::Duration;
use tokio::time::Instant;

/// Measures time from one origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}
