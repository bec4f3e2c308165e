//! Ember's domain model: containers, their revisions and instances, and users.

mod container;
mod ids;
mod name;
mod quantity;

pub use container::{
    Caller, Container, ContainerPatch, ContainerSpec, ContainerStatus, InstanceInfo, InstanceState,
    Page, PageRequest, Revision, Role,
};
pub use ids::{ContainerId, InstanceId, InvalidId, ServerId, TokenId, UserId};
pub use name::{ContainerName, InvalidName};
pub use quantity::{InvalidQuantity, Quantity};
