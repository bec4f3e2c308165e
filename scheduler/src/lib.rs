//! Ember's scheduling decisions, as pure functions.
//!
//! Nothing here performs I/O or reads a clock: time is passed in as a
//! [`std::time::Duration`] since an arbitrary origin, so every decision can be
//! tested on simulated time.
#![deny(missing_docs)]

pub mod autoscaler;
pub mod fair_share;
pub mod ownership;
pub mod placement;

pub use autoscaler::{
    Autoscaler, DEFAULT_RPS_TARGET, Observation, ScaleDecision, ScaleReason, ScalingMetric,
    ScalingPolicy,
};
pub use fair_share::{FairQueue, Ticket};
pub use placement::{Allocation, Misfit, Node, Request, Resources, Unplaced};
