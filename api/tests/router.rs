//! The router called in-process (`tower::ServiceExt::oneshot`) over a real runtime
//! in a temporary data dir: every malformed or out-of-range request answers 4xx
//! with a JSON body naming the problem, and changes nothing.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ember_runtime::{Runtime, RuntimeConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

/// The router over a fresh runtime, and the admin token.
struct Api {
    router: Router,
    admin: String,
    _data: tempfile::TempDir,
}

/// An image reference that parses but names a registry no one listens on: a
/// create is accepted, and the deployment fails without reaching the network.
const UNREACHABLE_IMAGE: &str = "127.0.0.1:9/none/such:v1";

impl Api {
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = RuntimeConfig::new(data.path());
        config.cdi_spec_dirs = Vec::new();
        let (runtime, token) = Runtime::start(config).await.unwrap();
        Self {
            router: ember_api::router(runtime),
            admin: token.expect("a fresh data dir makes an admin token"),
            _data: data,
        }
    }

    /// Sends `body` (raw, as `content_type`) with `token`; answers the status and
    /// the body as JSON (every answer of this API is JSON).
    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{method} {path} answered {status} with non-JSON {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(&self.admin, method, path, "application/json", &body)
            .await
    }

    /// Creates a container and waits until its deployment has failed (it names
    /// an unreachable registry), so that nothing changes under a later snapshot.
    async fn container(&self, name: &str) -> Value {
        let (status, created) = self
            .call(
                Method::POST,
                "/v1/containers",
                Some(json!({ "name": name, "image": UNREACHABLE_IMAGE })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let path = format!("/v1/containers/{}", created["id"].as_str().unwrap());
        for _ in 0..1000 {
            let (_, now) = self.call(Method::GET, &path, None).await;
            if now["status"] == "failed" {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the deployment of {name} never failed");
    }

    /// Everything the API shows about containers, to compare before and after.
    async fn snapshot(&self) -> Value {
        let (_, list) = self
            .call(Method::GET, "/v1/containers?rowsPerPage=100", None)
            .await;
        let mut revisions = Vec::new();
        for c in list["items"].as_array().unwrap() {
            let path = format!("/v1/containers/{}/revisions", c["id"].as_str().unwrap());
            revisions.push(self.call(Method::GET, &path, None).await.1);
        }
        json!({ "containers": list, "revisions": revisions })
    }
}

/// Asserts a 4xx answer whose JSON names `field` (or, for `None`, carries a code
/// and a message).
#[track_caller]
fn refused(answer: &(StatusCode, Value), status: StatusCode, field: Option<&str>, what: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{what}: {body}");
    assert!(body["code"].is_string(), "{what}: no code in {body}");
    assert!(body["message"].is_string(), "{what}: no message in {body}");
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{what}: {body}");
    }
}

#[tokio::test]
async fn bad_bodies_are_refused_naming_the_problem_and_change_nothing() {
    let api = Api::start().await;
    let existing = api.container("existing").await;
    let id = existing["id"].as_str().unwrap().to_string();
    let before = api.snapshot().await;

    let malformed = api
        .send(
            &api.admin,
            Method::POST,
            "/v1/containers",
            "application/json",
            "{\"name\": ",
        )
        .await;
    refused(&malformed, StatusCode::BAD_REQUEST, None, "malformed JSON");
    assert_eq!(malformed.1["code"], "malformed_json");

    let not_json = api
        .send(
            &api.admin,
            Method::POST,
            "/v1/containers",
            "text/plain",
            "{}",
        )
        .await;
    refused(
        &not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
        "a text/plain body",
    );

    let array = api
        .call(Method::POST, "/v1/containers", Some(json!([1])))
        .await;
    refused(&array, StatusCode::BAD_REQUEST, None, "an array body");

    let create = |extra: Value| {
        let mut body = json!({ "name": "fresh", "image": UNREACHABLE_IMAGE });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // (what it sets, the field the answer must name)
    let cases = [
        (json!({ "bogus": 1 }), "bogus"),
        (json!({ "cpu": "one" }), "cpu"),
        (json!({ "cpu": 0 }), "cpu"),
        (json!({ "cpu": 1025 }), "cpu"),
        (json!({ "ram": "lots" }), "ram"),
        (json!({ "port": 0 }), "port"),
        (json!({ "port": 70000 }), "port"),
        (json!({ "port": "http" }), "port"),
        (json!({ "env": { "A=B": "c" } }), "env.A=B"),
        (json!({ "env": { "A": "b\u{0}" } }), "env"),
        (json!({ "command": ["a\u{0}"] }), "command"),
        (json!({ "maxInstances": 0 }), "maxInstances"),
        (json!({ "minInstances": 5000 }), "minInstances"),
        (
            json!({ "minInstances": 3, "maxInstances": 2 }),
            "minInstances",
        ),
        (json!({ "idleTimeoutSeconds": 0 }), "idleTimeoutSeconds"),
        (
            json!({ "idleTimeoutSeconds": 604801 }),
            "idleTimeoutSeconds",
        ),
        (json!({ "concurrency": 0 }), "concurrency"),
        (json!({ "queueDepth": 100001 }), "queueDepth"),
        (json!({ "preparedSandboxes": 9 }), "preparedSandboxes"),
        (json!({ "cdiDevices": ["nonsense"] }), "cdiDevices[0]"),
        (json!({ "name": "Not_DNS" }), "name"),
    ];
    for (extra, field) in &cases {
        let answer = api
            .call(Method::POST, "/v1/containers", Some(create(extra.clone())))
            .await;
        refused(
            &answer,
            StatusCode::BAD_REQUEST,
            Some(field),
            &format!("create {extra}"),
        );
        if field != &"bogus" {
            // The same rule holds for an update of the existing container.
            let answer = api
                .call(
                    Method::PUT,
                    &format!("/v1/containers/{id}"),
                    Some(extra.clone()),
                )
                .await;
            refused(
                &answer,
                StatusCode::BAD_REQUEST,
                Some(field),
                &format!("update {extra}"),
            );
        }
    }
    let missing_name = api
        .call(
            Method::POST,
            "/v1/containers",
            Some(json!({ "image": UNREACHABLE_IMAGE })),
        )
        .await;
    refused(
        &missing_name,
        StatusCode::BAD_REQUEST,
        Some("name"),
        "no name",
    );

    assert_eq!(
        api.snapshot().await,
        before,
        "a refused request changed the state"
    );
}

#[tokio::test]
async fn bad_ids_in_paths_are_refused_naming_the_id() {
    let api = Api::start().await;
    let existing = api.container("existing").await;
    let id = existing["id"].as_str().unwrap().to_string();
    let before = api.snapshot().await;
    let uuid = "5cf37266-3473-4006-984f-9325122678b7";
    let cases = [
        (Method::GET, "/v1/containers/not-a-uuid".to_string(), "id"),
        (
            Method::DELETE,
            "/v1/containers/not-a-uuid".to_string(),
            "id",
        ),
        (Method::GET, "/v1/containers/12/revisions".to_string(), "id"),
        (Method::GET, "/v1/jobs/nope".to_string(), "id"),
        (Method::GET, "/v1/tokens/nope".to_string(), "id"),
        (
            Method::GET,
            format!("/v1/containers/{id}/instances/nope"),
            "instanceId",
        ),
        (
            Method::DELETE,
            format!("/v1/containers/{id}/instances/nope"),
            "instanceId",
        ),
        (
            Method::GET,
            "/v1/containers/nope/instances".to_string(),
            "id",
        ),
        (Method::GET, "/api/containers/abc".to_string(), "id"),
        (Method::GET, "/api/container_services/-1".to_string(), "id"),
        (
            Method::DELETE,
            "/api/container_services/x".to_string(),
            "id",
        ),
        (
            Method::POST,
            "/api/container_services/1/power/dance".to_string(),
            "action",
        ),
        (
            Method::PUT,
            "/api/containers/1/power/dance".to_string(),
            "action",
        ),
        (Method::GET, "/api/v1/container/zz/".to_string(), "uuid"),
        (
            Method::POST,
            "/api/v1/container/zz/stop/".to_string(),
            "uuid",
        ),
    ];
    for (method, path, field) in cases {
        let answer = api.call(method.clone(), &path, None).await;
        refused(
            &answer,
            StatusCode::BAD_REQUEST,
            Some(field),
            &format!("{method} {path}"),
        );
    }
    // A segment that is not UTF-8 once decoded is refused in JSON too.
    let answer = api.call(Method::GET, "/v1/containers/%FF", None).await;
    refused(&answer, StatusCode::BAD_REQUEST, None, "a non-UTF-8 id");
    assert_eq!(answer.1["code"], "invalid_path");
    // A well-formed id of nothing is not found.
    let answer = api
        .call(Method::GET, &format!("/v1/containers/{uuid}"), None)
        .await;
    refused(&answer, StatusCode::NOT_FOUND, None, "an unknown container");
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused request changed the state"
    );
}

#[tokio::test]
async fn a_caller_without_the_scope_hears_that_before_a_bad_id() {
    let api = Api::start().await;
    let (status, minted) = api
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({ "user": "bob", "scopes": [], "capabilities": [] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let bob = minted["token"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, "/api/containers/abc"),
        (Method::PUT, "/api/containers/abc/power/dance"),
        (Method::GET, "/api/container_services/abc"),
        (Method::GET, "/api/v1/container/zz/"),
        (Method::GET, "/v1/containers/not-a-uuid/instances"),
    ] {
        let answer = api
            .send(bob, method.clone(), path, "application/json", "")
            .await;
        refused(
            &answer,
            StatusCode::FORBIDDEN,
            None,
            &format!("{method} {path}"),
        );
    }
}

#[tokio::test]
async fn faces_name_their_own_fields_and_share_the_models_rules() {
    let api = Api::start().await;
    let existing = api.container("service").await;
    let (_, services) = api.call(Method::GET, "/api/container_services", None).await;
    let number = services["container_services"][0]["id"].as_u64().unwrap();
    assert_eq!(services["container_services"][0]["name"], existing["name"]);
    let base = format!("/api/container_services/{number}");
    let before = api.snapshot().await;
    let cases = [
        (
            Method::POST,
            format!("{base}/scale"),
            json!({ "container_service": { "qty": 5000 } }),
            "container_service.qty",
        ),
        (
            Method::POST,
            format!("{base}/scale"),
            json!({ "container_service": { "qty": 0 } }),
            "container_service.qty",
        ),
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "scale": 5000 } }),
            "container_service.scale",
        ),
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "name": "Bad Name" } }),
            "container_service.name",
        ),
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "package_id": 99 } }),
            "container_service.package_id",
        ),
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "colour": "red" } }),
            "container_service.colour",
        ),
    ];
    for (method, path, body, field) in cases {
        let answer = api.call(method.clone(), &path, Some(body.clone())).await;
        refused(
            &answer,
            StatusCode::BAD_REQUEST,
            Some(field),
            &format!("{method} {path} {body}"),
        );
    }
    assert_eq!(
        api.snapshot().await,
        before,
        "a refused request changed the state"
    );
}

#[tokio::test]
async fn bad_queries_unknown_routes_and_methods_answer_json() {
    let api = Api::start().await;
    for (path, field) in [
        ("/v1/containers?page=0", "page"),
        ("/v1/containers?rowsPerPage=101", "rowsPerPage"),
        ("/v1/containers?status=sleeping", "status"),
        ("/api/container_services?per_page=0", "per_page"),
    ] {
        let answer = api.call(Method::GET, path, None).await;
        refused(&answer, StatusCode::BAD_REQUEST, Some(field), path);
    }
    let answer = api.call(Method::GET, "/v1/nothing-here", None).await;
    refused(&answer, StatusCode::NOT_FOUND, None, "an unknown route");
    let answer = api.call(Method::PATCH, "/v1/containers", None).await;
    refused(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "PATCH on a list",
    );
    let answer = api
        .send(
            "not-a-token",
            Method::GET,
            "/v1/containers",
            "application/json",
            "",
        )
        .await;
    refused(&answer, StatusCode::UNAUTHORIZED, None, "a bad token");
}
