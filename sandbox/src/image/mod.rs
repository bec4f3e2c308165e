//! Images: references, and pulling artifacts from OCI registries into the content store.

mod credentials;
pub(crate) mod destinations;
mod egress;
mod pull;
mod reference;
mod shared;
mod uploaded;

pub use credentials::Credentials;
pub use destinations::{AllowedRegistries, InvalidRule, Refused};
pub use pull::{
    PullError, PullProgress, PulledImage, RegistryPuller, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
};
pub use reference::{DEFAULT_REGISTRY, ImageRef, InvalidImageRef, RegistryRef};
pub use uploaded::{
    UploadedImage, UploadedImageError, check_manifest, may_be_manifest, uploaded_image,
};
