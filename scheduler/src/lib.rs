//! Ember's scheduling decisions, as pure functions.
//!
//! Nothing here performs I/O or reads a clock: time is passed in as a
//! [`std::time::Duration`] since an arbitrary origin, so every decision can be
//! tested on simulated time.
#![deny(missing_docs)]

pub mod autoscaler;

pub use autoscaler::{Observation, ScaleDecision, ScaleReason, ScalingPolicy, decide};
