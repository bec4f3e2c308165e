//! The OpenAPI document, made from the handlers' own `#[utoipa::path]` annotations as
//! the router is built (see [`crate::router`]), so a route cannot be left out of it.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts: title, security schemes, tags.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ember management API",
        description = "Containers (documents 002 and 004) and the faces over the same model: \
                       000's /api/containers, 001's /api/container_services and 003's Tutum \
                       /api/v1/container/. See docs/API.md."
    ),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "containers", description = "Document 002: containers, revisions, logs"),
        (name = "instances", description = "Document 004: instances and their resources"),
        (name = "jobs", description = "Asynchronous operations"),
        (name = "tokens", description = "API tokens (ADMIN only)"),
        (name = "catalogue", description = "Servers, GPU models, packages"),
        (name = "000", description = "Document 000: an instance by integer id"),
        (name = "001", description = "Document 001: container services by integer id"),
        (name = "003", description = "Document 003: Tutum containers (instances) by UUID"),
        (name = "runtime", description = "Blobs and metrics"),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`ApiKey <user>:<token>`, as document 003 shows",
            ))),
        );
    }
}
