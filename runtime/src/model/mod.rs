//! Ember's domain model: containers, their revisions and instances, jobs, and users.

mod container;
mod ids;
mod job;
mod name;
mod quantity;

pub use container::{
    Caller, Container, ContainerPatch, ContainerSpec, ContainerStatus, InstanceInfo, InstanceState,
    Page, PageRequest, Revision, Role,
};
pub use ids::{ContainerId, InstanceId, InvalidId, JobId, ServerId, TokenId, UserId};
pub use job::{Job, JobAction, JobState};
pub use name::{ContainerName, InvalidName};
pub use quantity::{InvalidQuantity, Quantity};
