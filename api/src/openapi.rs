//! The OpenAPI document, made from the handlers' own `#[utoipa::path]` annotations as
//! the router is built (see [`crate::router`]), so a route cannot be left out of it.

use crate::error::ErrorBody;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts: title, security schemes, tags.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ember management API",
        description = "The native container API (containers, revisions, logs), the instances \
                       API, and the faces over the same model: the numbered containers face \
                       (/api/containers), the container services face \
                       (/api/container_services) and the Tutum face (/api/v1/container/). \
                       See docs/API.md."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "containers", description = "The native container API: containers, revisions, logs"),
        (name = "instances", description = "The instances API: instances and their resources"),
        (name = "jobs", description = "Asynchronous operations"),
        (name = "tokens", description = "API tokens (ADMIN only)"),
        (name = "catalogue", description = "Servers, GPU models, packages"),
        (name = "numbered containers", description = "The numbered containers face: an instance by integer id"),
        (name = "container services", description = "The container services face: containers by integer id"),
        (name = "tutum", description = "The Tutum face: Tutum containers (instances) by UUID"),
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
                "`ApiKey <user>:<token>`, as the Tutum face's clients send it",
            ))),
        );
    }
}

/// The name of the shared refusal in `components/responses`.
const REFUSAL: &str = "Refusal";

/// Routes that read nothing from the request (no token, body, path id or query)
/// and so refuse nothing: the probes and the metrics.
const NOTHING_TO_REFUSE: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Declares once, as the `Refusal` response, the JSON error every route answers
/// to a request it refuses (bad token, scope, id, body or query: `4XX`), and
/// refers every other operation to it. Runs on the whole document, after every
/// route has been merged in, so that no route can be left without it.
pub(crate) fn add_shared_refusal(api: &mut utoipa::openapi::OpenApi) {
    let refusal = ResponseBuilder::new()
        .description("A JSON error naming the problem")
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build();
    api.components
        .get_or_insert_with(Default::default)
        .responses
        .insert(REFUSAL.into(), RefOr::T(refusal));
    for (path, item) in api.paths.paths.iter_mut() {
        if NOTHING_TO_REFUSE.contains(&path.as_str()) {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .insert("4XX".into(), RefOr::Ref(Ref::from_response_name(REFUSAL)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_but_the_probes_refers_to_the_shared_refusal() {
        let api = crate::openapi();
        let json = serde_json::to_value(&api).unwrap();
        assert_eq!(
            json["components"]["responses"][REFUSAL]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let mut refusing = 0;
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let refusal = &operation["responses"]["4XX"]["$ref"];
                if NOTHING_TO_REFUSE.contains(&path.as_str()) {
                    assert!(refusal.is_null(), "{method} {path}");
                } else {
                    assert_eq!(refusal, "#/components/responses/Refusal", "{method} {path}");
                    refusing += 1;
                }
            }
        }
        assert!(refusing > 40, "only {refusing} operations");
    }
}
