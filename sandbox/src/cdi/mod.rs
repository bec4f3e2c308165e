//! The Container Device Interface: devices (GPUs among them) described by vendors'
//! spec files, given to OCI containers by editing their runtime spec, the way
//! containerd, CRI-O and Podman do.

pub mod ldcache;
mod name;
pub mod nvidia;
mod registry;

pub use name::{CdiDeviceName, InvalidCdiDeviceName};
pub use registry::{
    BrokenSpec, CdiError, CdiGpu, CdiRegistry, DEFAULT_SPEC_DIRS, DeviceNodes, GPU_MODEL_ANNOTATION,
};
