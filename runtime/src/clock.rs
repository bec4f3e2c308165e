//! The runtime's monotonic clock: time since the runtime started, the form the
//! scheduler takes time in.

use std::time::{Duration, Instant};

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
