//! Ember's domain model: containers, their revisions and instances, jobs, users and
//! their tokens.

mod access;
mod container;
mod gpu;
mod ids;
mod job;
mod name;
mod patch;
mod probe;
mod quantity;
mod quota;
mod rebase;
mod spec;
mod token;

pub use access::{
    Capabilities, Capability, Grant, GrantSet, InvalidUserName, Scope, Scopes, UnknownGrant,
    UserName, default_scopes,
};
pub use container::{
    Caller, Container, ContainerQuery, ContainerStatus, InstanceInfo, InstanceMove, InstanceState,
    Page, PageRequest, Revision, Role, RunningInstance, StoppedInstance, pinned_share,
};
/// A CDI device's qualified name (`vendor.com/class=name`), from the sandbox.
pub use ember_sandbox::capabilities::{CapabilityChanges, CapabilityName, DEFAULT_CAPABILITIES};
pub use ember_sandbox::cdi::{CdiDeviceName, InvalidCdiDeviceName};
/// Nodes (servers) and the resources they offer, from the scheduler.
pub use ember_scheduler::placement::{Node, Resources};
pub use gpu::{GPU_MODELS, GpuModel};
pub use ids::{ContainerId, InstanceId, InvalidId, JobId, ServerId, TokenId, UserId};
pub use job::{Job, JobAction, JobState};
pub use name::{ContainerName, InvalidName};
pub use patch::{ContainerPatch, InvalidPatch};
pub use probe::{HttpGet, Probe, Probes, TcpSocket};
pub use quantity::{InvalidQuantity, Quantity};
pub use quota::{Quota, QuotaKind, QuotaUse, RequestBucket};
pub use spec::{AutoscalingMetric, ContainerSpec};
pub use token::{NewToken, Token};
