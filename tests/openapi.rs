//! `GET /openapi.json`: the OpenAPI document made from the handlers covers every
//! route of every face, the API reference (docs/API.md) names every route in it, and
//! schemathesis (PyPI), fuzzing the API from it, finds no 5xx and no answer that
//! breaks the document's schemas.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::StatusCode;
use serde_json::json;
use std::process::Command;

/// Every route the API serves, as the document names it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/v1/blobs"),
    ("get", "/v1/blobs/{digest}"),
    ("get", "/v1/containers"),
    ("post", "/v1/containers"),
    ("get", "/v1/containers/{id}"),
    ("put", "/v1/containers/{id}"),
    ("delete", "/v1/containers/{id}"),
    ("get", "/v1/containers/{id}/revisions"),
    ("get", "/v1/containers/{id}/metrics"),
    ("get", "/v1/users/{user}/quota"),
    ("put", "/v1/users/{user}/quota"),
    ("get", "/v1/containers/{id}/logs"),
    ("get", "/v1/containers/{id}/instances"),
    ("post", "/v1/containers/{id}/instances"),
    ("delete", "/v1/containers/{id}/instances"),
    ("get", "/v1/containers/{id}/instances/{instance}"),
    ("delete", "/v1/containers/{id}/instances/{instance}"),
    ("get", "/v1/containers/{id}/instances/{instance}/volumes"),
    (
        "get",
        "/v1/containers/{id}/instances/{instance}/telemetry/resources/report",
    ),
    (
        "get",
        "/v1/containers/{id}/instances/{instance}/telemetry/resources/stream",
    ),
    ("get", "/v1/containers/{id}/instances/{instance}/console"),
    ("get", "/v1/containers/{id}/instances/{instance}/ssh"),
    ("delete", "/v1/containers/{id}/instances/{instance}/ssh"),
    ("post", "/v1/containers/{id}/instances/{instance}/tasks"),
    ("get", "/v1/streams/console"),
    ("get", "/v1/streams/telemetry"),
    ("get", "/v1/jobs/{id}"),
    ("get", "/v1/servers"),
    ("get", "/v1/gpu-models"),
    ("get", "/v1/tokens"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens/{id}"),
    ("delete", "/v1/tokens/{id}"),
    ("get", "/api/containers/{id}"),
    ("put", "/api/containers/{id}/power/{action}"),
    ("get", "/api/containers/{id}/logs"),
    ("get", "/api/containers/{id}/container_processes"),
    ("get", "/api/containers/{id}/metrics/{kind}"),
    ("get", "/api/products"),
    ("get", "/api/container_services"),
    ("get", "/api/container_services/{id}"),
    ("patch", "/api/container_services/{id}"),
    ("delete", "/api/container_services/{id}"),
    ("get", "/api/container_services/{id}/containers"),
    ("post", "/api/container_services/{id}/resize"),
    ("post", "/api/container_services/{id}/scale"),
    ("post", "/api/container_services/{id}/power/{action}"),
    ("get", "/api/container_services/{id}/logs"),
    ("get", "/api/v1/container/"),
    ("get", "/api/v1/container/{uuid}/"),
    ("delete", "/api/v1/container/{uuid}/"),
    ("get", "/api/v1/container/{uuid}/logs/"),
    ("post", "/api/v1/container/{uuid}/start/"),
    ("post", "/api/v1/container/{uuid}/stop/"),
];

#[tokio::test]
async fn the_document_covers_every_route() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let response = reqwest::get(ember.api_url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let mut documented = 0;
    for (method, path) in ROUTES {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[*method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(operation["responses"].is_object(), "{method} {path}");
        documented += 1;
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        operations, documented,
        "the document has routes this list lacks"
    );
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
}

/// `METHOD /path` with every path parameter's name dropped, so that `{id}` and
/// `{instanceId}` compare equal.
fn normalised(method: &str, path: &str) -> String {
    let mut out = format!("`{} ", method.to_uppercase());
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_parameter = true;
                out.push('{');
            }
            '}' => {
                in_parameter = false;
                out.push('}');
            }
            _ if in_parameter => {}
            _ => out.push(c),
        }
    }
    out.push('`');
    out
}

#[tokio::test]
async fn the_api_reference_names_every_documented_route() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let document: serde_json::Value = reqwest::get(ember.api_url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
    // The reference's own spans, normalised as the document's are.
    let spans: Vec<String> = reference
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| span.split_once(' '))
        .map(|(method, path)| normalised(method, path))
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            checked += 1;
            let wanted = normalised(method, path);
            if !spans.contains(&wanted) {
                missing.push(wanted);
            }
        }
    }
    assert_eq!(checked, ROUTES.len(), "every operation was checked");
    assert!(missing.is_empty(), "docs/API.md does not name {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    // Something to find, for the lists.
    ember
        .deploy_wasm(
            "fuzzed",
            &fixtures::hello("fuzzed\n"),
            json!({ "cpu": 0.25, "minInstances": 1 }),
        )
        .await;
    let url = ember.api_url("/openapi.json");
    let auth = format!("Authorization: Bearer {}", ember.token);
    // schemathesis keeps a cache in the directory it runs in: not the checkout's.
    let scratch = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .current_dir(scratch)
            .args(["run", &url, "-H", &auth])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args(["--max-examples", "25", "--request-timeout", "10"])
            // The stateful phase infers links between operations from their responses,
            // and on this API infers some that name parameters their target lacks.
            .args(["--phases", "examples,coverage,fuzzing"])
            .arg("--generation-deterministic")
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("schemathesis could not run ({e}): scripts/test installs it into target/tools/venv")
    });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}
