//! Ember's engine.
//!
//! [`Runtime`] is the handle the API and the CLI use: it keeps state in the store (sled by default),
//! deploys revisions through the sandboxes, routes ingress traffic by host name
//! through the activator, and scales idle containers to zero.
#![deny(missing_docs)]

mod activator;
pub mod auth;
mod awake;
mod background;
mod clock;
pub mod cluster;
mod config;
pub mod connections;
mod containers;
mod deploy;
mod error;
pub mod grants;
mod ingress;
mod instance_access;
mod instance_usage;
mod instances;
mod jobs;
mod journal;
pub mod logs;
mod metrics;
mod migration;
pub mod model;
mod node;
mod overload;
mod power;
mod quotas;
mod record_locks;
mod relay;
pub mod routing;
mod runtime;
mod ssh;
pub mod store;
mod tenants;
mod tokens;
mod usage;

pub use cluster::Reach;
pub use config::RuntimeConfig;
pub use ember_sandbox::processes::ProcessInfo;
pub use error::RuntimeError;
pub use ingress::serve_ingress;
pub use instance_access::TelemetryReading;
pub use migration::InstanceTask;
pub use node::host_name;
pub use overload::OverloadPolicy;
pub use power::PowerAction;
pub use relay::RELAYED_BY;
pub use runtime::{ContainerView, ImagePart, MAX_BLOB_BYTES, Runtime, TrafficTarget};
pub use ssh::serve_ssh;
pub use usage::{SAMPLES_KEPT, UsageSample};
