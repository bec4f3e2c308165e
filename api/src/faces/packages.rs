//! The package catalogue of the container services face: the plans a container service's instances
//! can be sized to (`package_id` in a PATCH, `product_id` in a resize), served at
//! `GET /api/products`. A package sets the container's cpu, ram and disk; a container
//! sized some other way (through `/v1`) shows as the `custom` package, id 0.

use crate::auth::Authenticated;
use crate::error::ApiError;
use axum::Json;
use ember_runtime::Runtime;
use ember_runtime::model::{ContainerPatch, ContainerSpec, Quantity, Scope};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// One plan.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) struct Package {
    /// Its id (`product_id`, `package_id`).
    pub(crate) id: u64,
    pub(crate) label: &'static str,
    /// CPUs per instance.
    pub(crate) cpu: f64,
    /// Memory per instance, MiB.
    pub(crate) memory: u64,
    /// Disk per instance, GiB.
    pub(crate) storage: u64,
    /// Monthly transfer, GB (not metered by Ember).
    pub(crate) bandwidth: u64,
    /// Local disk, GiB (the same as `storage`: instances have only one disk).
    pub(crate) local_disk: u64,
    /// Backup space, GiB (Ember keeps no backups).
    pub(crate) backup: u64,
    /// Swap, MiB (instances get none).
    pub(crate) memory_swap: u64,
    /// Kernel swappiness for the instances' cgroups.
    pub(crate) memory_swappiness: u64,
}

const fn package(id: u64, label: &'static str, cpu: f64, memory: u64, storage: u64) -> Package {
    Package {
        id,
        label,
        cpu,
        memory,
        storage,
        bandwidth: 1000,
        local_disk: storage,
        backup: 0,
        memory_swap: 0,
        memory_swappiness: 60,
    }
}

/// The catalogue.
pub(crate) const PACKAGES: [Package; 5] = [
    package(1, "nano", 0.25, 256, 1),
    package(2, "small", 0.5, 512, 2),
    package(3, "medium", 1.0, 1024, 5),
    package(4, "large", 2.0, 2048, 10),
    package(5, "xlarge", 4.0, 4096, 20),
];

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl Package {
    /// The package `id`, or a 400 naming `field`.
    pub(crate) fn find(field: &str, id: u64) -> Result<Self, ApiError> {
        PACKAGES.into_iter().find(|p| p.id == id).ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("there is no package {id}; GET /api/products lists them (ids 1 to 5)"),
            )
        })
    }

    /// The package a spec matches, if any.
    pub(crate) fn of(spec: &ContainerSpec) -> Option<Self> {
        PACKAGES.into_iter().find(|p| {
            p.cpu == spec.cpu
                && p.memory * MIB == spec.ram.bytes()
                && p.storage * GIB == spec.ephemeral_storage.bytes()
        })
    }

    /// What sizing a container to this package changes. The caller checks the
    /// patch with [`ContainerPatch::validate`], as every patch is checked.
    pub(crate) fn apply(&self, patch: &mut ContainerPatch) {
        patch.cpu = Some(self.cpu);
        patch.ram = Some(quantity(self.memory * MIB));
        patch.ephemeral_storage = Some(quantity(self.storage * GIB));
    }

    /// How a service shows its package: the catalogue's entry, or what the spec
    /// holds as `custom` (id 0).
    pub(crate) fn describe(spec: &ContainerSpec) -> Self {
        Self::of(spec).unwrap_or_else(|| {
            package(
                0,
                "custom",
                spec.cpu,
                spec.ram.bytes() / MIB,
                spec.ephemeral_storage.bytes() / GIB,
            )
        })
    }
}

/// `{"products": [...]}`.
#[derive(Serialize, ToSchema)]
struct Products {
    products: Vec<Package>,
}

fn quantity(bytes: u64) -> Quantity {
    bytes
        .to_string()
        .parse()
        .expect("a whole number of bytes is a quantity")
}

pub(crate) fn routes() -> OpenApiRouter<Runtime> {
    OpenApiRouter::new().routes(routes!(products))
}

#[utoipa::path(
    get,
    path = "/api/products",
    tag = "container services",
    summary = "The package catalogue. Needs the projects_read scope.",
    responses((status = 200, description = "The packages", body = Products))
)]
async fn products(Authenticated(caller): Authenticated) -> Result<Json<Products>, ApiError> {
    caller.require_scope(Scope::ProjectsRead)?;
    Ok(Json(Products {
        products: PACKAGES.to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_applied_is_the_package_read_back() {
        let mut patch = ContainerPatch::default();
        PACKAGES[1].apply(&mut patch);
        assert_eq!(patch.ram.unwrap().bytes(), 512 * MIB);
        assert_eq!(patch.ephemeral_storage.unwrap().bytes(), 2 * GIB);
        assert!(Package::find("package_id", 9).is_err());
    }

    #[test]
    fn every_package_passes_the_models_rules() {
        for package in PACKAGES {
            let mut patch = ContainerPatch::default();
            package.apply(&mut patch);
            assert_eq!(patch.validate(), Ok(()), "{}", package.label);
        }
    }
}
