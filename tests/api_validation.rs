//! Every bad input gets a 4xx with a JSON body naming the problem, and changes nothing.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Everything the API would show about the state, to compare before and after.
async fn snapshot(ember: &Ember) -> Value {
    let (_, list) = ember.get_json("/v1/containers?rowsPerPage=100").await;
    let mut revisions = Vec::new();
    for c in list["items"].as_array().unwrap() {
        let (_, r) = ember
            .get_json(&format!(
                "/v1/containers/{}/revisions",
                c["id"].as_str().unwrap()
            ))
            .await;
        revisions.push(r);
    }
    json!({ "containers": list, "revisions": revisions })
}

async fn raw(
    ember: &Ember,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = ember
        .api_request(method, path)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text:?}"));
    (status, body)
}

#[tokio::test]
async fn bad_inputs_get_4xx_naming_the_field_and_change_nothing() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let existing = ember
        .deploy_wasm("existing", &fixtures::hello("x\n"), json!({}))
        .await;
    let id = existing["id"].as_str().unwrap().to_string();
    let digest = existing["image"].as_str().unwrap().to_string();
    let before = snapshot(&ember).await;

    let ok = |extra: Value| {
        let mut body = json!({ "name": "fresh", "image": digest });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // (body, field the error must name)
    let cases: Vec<(Value, &str)> = vec![
        (ok(json!({ "bogus": 1 })), "bogus"),
        (ok(json!({ "image": "localhost:5000/hello" })), "image"),
        (ok(json!({ "image": "Not A Reference:1" })), "image"),
        (
            ok(json!({ "image": format!("sha256:{}", "0".repeat(64)) })),
            "image",
        ),
        (ok(json!({ "ram": "lots" })), "ram"),
        (ok(json!({ "ram": 512 })), "ram"),
        (ok(json!({ "cpu": -1 })), "cpu"),
        (ok(json!({ "cpu": 0 })), "cpu"),
        (ok(json!({ "gpu": -2 })), "gpu"),
        (ok(json!({ "name": "a".repeat(64) })), "name"),
        (ok(json!({ "name": "Not_DNS" })), "name"),
        (ok(json!({ "name": "-dash" })), "name"),
        (ok(json!({ "port": "http" })), "port"),
        (ok(json!({ "port": 70000 })), "port"),
        (ok(json!({ "env": { "A=B": "c" } })), "env.A=B"),
        (ok(json!({ "env": { "A": 1 } })), "env.A"),
        (ok(json!({ "command": "not-a-list" })), "command"),
        (
            ok(json!({ "minInstances": 3, "maxInstances": 2 })),
            "minInstances",
        ),
        (ok(json!({ "maxInstances": 0 })), "maxInstances"),
        (ok(json!({ "idleTimeoutSeconds": 0 })), "idleTimeoutSeconds"),
        (
            ok(json!({ "ephemeralStorage": "1.5Gi" })),
            "ephemeralStorage",
        ),
        (json!({ "image": digest }), "name"),
        (json!({ "name": "noimage" }), "image"),
        (ok(json!({ "name": "existing" })), ""),
    ];
    for (body, field) in cases {
        let (status, error) = ember.send_json(Method::POST, "/v1/containers", &body).await;
        assert!(status.is_client_error(), "{body} got {status}: {error}");
        assert!(error["message"].is_string(), "{body}: {error}");
        if field.is_empty() {
            assert_eq!(status, StatusCode::CONFLICT, "{error}");
        } else {
            assert_eq!(error["field"], field, "{body}: {error}");
        }
    }

    // The same checks on update, against the existing container.
    for body in [
        json!({ "ram": "lots" }),
        json!({ "cpu": -0.5 }),
        json!({ "status": "deployed" }),
    ] {
        let (status, error) = ember
            .send_json(Method::PUT, &format!("/v1/containers/{id}"), &body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
    }

    // Malformed JSON, wrong media type, an oversized body, a bad id.
    let (status, error) = raw(
        &ember,
        Method::POST,
        "/v1/containers",
        "application/json",
        b"{\"name\": ".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _) = raw(
        &ember,
        Method::POST,
        "/v1/containers",
        "text/plain",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(
        "{{\"name\": \"big\", \"env\": {{\"X\": \"{}\"}}}}",
        "x".repeat(2 << 20)
    );
    let (status, error) = raw(
        &ember,
        Method::POST,
        "/v1/containers",
        "application/json",
        huge.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    let (status, error) = ember.get_json("/v1/containers/not-a-uuid").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (status, _) = ember
        .get_json(&format!("/v1/containers/{}", uuid_like()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = ember.get_json("/v1/containers?page=0").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("page"))
    );
    let (status, error) = ember.get_json("/v1/containers?rowsPerPage=1000").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("rowsPerPage"))
    );

    // An upload that is not a component.
    let (status, error) = raw(
        &ember,
        Method::POST,
        "/v1/blobs",
        "application/wasm",
        b"not wasm".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    assert_eq!(
        snapshot(&ember).await,
        before,
        "a refused request changed the state"
    );
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut request = client.get(ember.api_url("/v1/containers"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    let response = client
        .post(ember.api_url("/v1/containers"))
        .json(&json!({ "name": "sneaky", "image": "a/b:1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (_, list) = ember.get_json("/v1/containers").await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn the_documented_shapes_and_pagination() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let digest = ember.upload(&fixtures::hello("shape\n")).await;
    // The document's create example, with our image.
    let (status, created) = ember
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({
                "name": "hello-world", "image": digest, "cpu": 1, "ram": "512Mi", "gpu": 0,
                "ephemeralStorage": "10Gi", "port": "80", "env": { "FOO": "bar" }
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for key in [
        "id",
        "name",
        "createdBy",
        "image",
        "cpu",
        "ram",
        "gpu",
        "ephemeralStorage",
        "command",
        "arguments",
        "env",
        "port",
        "dateCreated",
        "dateUpdated",
        "status",
        "urls",
        "desiredGPUs",
    ] {
        assert!(created.get(key).is_some(), "missing {key} in {created}");
    }
    assert_eq!(created["cpu"], 1);
    assert_eq!(created["port"], "80");
    assert_eq!(created["ram"], "512Mi");
    assert_eq!(created["command"], Value::Null);
    assert!(created["dateCreated"].as_str().unwrap().ends_with('Z'));
    let deployed = ember.wait_deployed(created["id"].as_str().unwrap()).await;
    assert_eq!(deployed["status"], "deployed");

    for i in 0..11 {
        ember
            .deploy(json!({ "name": format!("page-{i}"), "image": digest }))
            .await;
    }
    let (_, first) = ember.get_json("/v1/containers").await;
    assert_eq!(
        (
            first["total"].as_u64(),
            first["page"].as_u64(),
            first["rowsPerPage"].as_u64()
        ),
        (Some(12), Some(1), Some(10))
    );
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    let (_, second) = ember.get_json("/v1/containers?page=2&rowsPerPage=10").await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    let (_, small) = ember.get_json("/v1/containers?page=3&rowsPerPage=5").await;
    assert_eq!(small["items"].as_array().unwrap().len(), 2);

    let id = created["id"].as_str().unwrap();
    let response = ember
        .api_request(Method::DELETE, &format!("/v1/containers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ember.get_json(&format!("/v1/containers/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(ember.invoke("hello-world").await.0, StatusCode::NOT_FOUND);
}

fn uuid_like() -> &'static str {
    "5cf37266-3473-4006-984f-9325122678b7"
}

#[tokio::test]
async fn gpu_models_list_the_documented_catalogue() {
    let dir = temp_dir();
    // No CDI specs: whatever the machine has, this node offers no GPU.
    let specs = dir.path().join("no-cdi-specs");
    let ember = Ember::start(
        &dir.path().join("data"),
        &["--cdi-spec-dir", specs.to_str().unwrap()],
    );
    let (status, list) = ember.get_json("/v1/gpu-models").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 25);
    assert_eq!(list["page"], 1);
    assert_eq!(list["rowsPerPage"], 100);
    assert_eq!(
        list["items"][0],
        json!({ "code": "h100", "name": "Nvidia h100", "installed": 0, "free": 0 })
    );
    assert_eq!(
        list["items"][24],
        json!({ "code": "1080ti", "name": "Nvidia gtx-1080-ti", "installed": 0, "free": 0 })
    );
    let (_, last_page) = ember.get_json("/v1/gpu-models?rowsPerPage=10&page=3").await;
    assert_eq!(last_page["items"].as_array().unwrap().len(), 5);
    let (status, error) = ember.get_json("/v1/gpu-models?rowsPerPage=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["field"], "rowsPerPage");
    let (status, _) = ember
        .call_as(None, Method::GET, "/v1/gpu-models", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn instance_lists_filter_sort_page_and_include() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let container = ember
        // A quarter CPU each, so that three fit on a 2-core node.
        .deploy_wasm("many", &fixtures::hello("many\n"), json!({ "cpu": 0.25 }))
        .await;
    let id = container["id"].as_str().unwrap();
    let (_, servers) = ember.get_json("/v1/servers").await;
    let server = servers["data"][0]["id"].as_str().unwrap();
    let (status, job) = ember
        .send_json(
            Method::POST,
            &format!("/v1/containers/{id}/instances"),
            &json!([{ "server_id": server, "new_instances": 3 }]),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let list = |query: &str| {
        let path = format!("/v1/containers/{id}/instances{query}");
        let ember = &ember;
        async move { ember.get_json(&path).await }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while list("?filter[state]=running").await.1["data"]
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        if std::time::Instant::now() > deadline {
            let job = ember
                .get_json(&format!("/v1/jobs/{}", job["data"]["id"].as_str().unwrap()))
                .await;
            panic!("3 instances never ran: {:?} {job:?}", list("").await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (_, plain) = list("").await;
    assert_eq!(plain["includes"], json!({}));
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut ascending = ids(&plain);
    assert_eq!(ascending.len(), 3);
    let (_, descending) = list("?sort=-id").await;
    ascending.reverse();
    assert_eq!(ids(&descending), ascending);
    let (_, second_page) = list("?sort=-id&page[size]=2&page[number]=2").await;
    assert_eq!(ids(&second_page), [ascending[2].clone()]);
    let (_, pinned) = list(&format!("?filter[pinned]=true&filter[server_id]={server}")).await;
    assert_eq!(ids(&pinned).len(), 3);
    let (_, starting) = list("?filter[state]=starting").await;
    assert_eq!(ids(&starting).len(), 0);

    let (status, included) = list("?include=servers,containers,creators,locations").await;
    assert_eq!(status, StatusCode::OK, "{included}");
    let includes = &included["includes"];
    assert_eq!(includes["servers"][server]["id"], server);
    assert_eq!(includes["containers"][id]["name"], "many");
    let creator = container["createdBy"].as_str().unwrap();
    assert_eq!(includes["creators"][creator]["id"], creator);
    assert_eq!(includes["locations"], json!({}));

    for (query, field) in [
        ("?sort=name", "sort"),
        ("?include=friends", "include"),
        ("?filter[color]=red", "filter[color]"),
        ("?page[size]=0", "page[size]"),
    ] {
        let (status, error) = list(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
        assert_eq!(error["field"], field, "{query}: {error}");
    }
}

/// The names in a list page, in order.
fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn lists_continue_by_cursor_filter_by_status_and_name_and_refuse_bad_queries() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let digest = ember.upload(&fixtures::hello("listed\n")).await;
    let mut made = Vec::new();
    for i in 0..6 {
        for kind in ["web", "api"] {
            let name = format!("{kind}-{i}");
            ember.deploy(json!({ "name": name, "image": digest })).await;
            made.push(name);
        }
    }
    // A registry no one listens on: the deployment fails.
    let (status, broken) = ember
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": "broken", "image": "127.0.0.1:9/none/such:v1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{broken}");
    made.push("broken".into());
    ember
        .wait_for(
            "/v1/containers?status=failed",
            std::time::Duration::from_secs(30),
            |p| (p["total"] == 1).then_some(()),
        )
        .await;

    // Cursors read the whole list once, oldest first.
    let mut seen = Vec::new();
    let mut path = "/v1/containers?rowsPerPage=5".to_string();
    loop {
        let (status, page) = ember.get_json(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 13);
        seen.extend(names(&page));
        match page["continue"].as_str() {
            Some(cursor) => path = format!("/v1/containers?rowsPerPage=5&continue={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, made);

    // Filters.
    let (_, webs) = ember
        .get_json("/v1/containers?namePrefix=web&rowsPerPage=100")
        .await;
    assert_eq!(webs["total"], 6);
    assert_eq!(
        names(&webs),
        (0..6).map(|i| format!("web-{i}")).collect::<Vec<_>>()
    );
    let (_, deployed) = ember
        .get_json("/v1/containers?status=deployed&rowsPerPage=100")
        .await;
    assert_eq!(deployed["total"], 12);
    let (_, failed) = ember.get_json("/v1/containers?status=failed").await;
    assert_eq!(names(&failed), ["broken"]);
    let (_, one) = ember.get_json("/v1/containers?name=api-3").await;
    assert_eq!(
        (one["total"].clone(), names(&one)),
        (json!(1), vec!["api-3".to_string()])
    );
    let (_, none) = ember
        .get_json("/v1/containers?name=api-3&status=failed")
        .await;
    assert_eq!(none["total"], 0);

    // Another user sees none of these, even by name.
    let (status, minted) = ember
        .send_json(Method::POST, "/v1/tokens", &json!({ "user": "alice" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let alice = minted["token"].as_str().unwrap();
    let (status, hers) = ember
        .call_as(Some(alice), Method::GET, "/v1/containers?name=api-3", None)
        .await;
    assert_eq!((status, hers["total"].clone()), (StatusCode::OK, json!(0)));

    // Bad queries name the parameter.
    let (_, first) = ember.get_json("/v1/containers?rowsPerPage=5").await;
    let cursor = first["continue"].as_str().unwrap().to_string();
    for (query, field) in [
        ("status=sleeping", "status"),
        ("namePrefix=Web", "namePrefix"),
        ("namePrefix=", "namePrefix"),
        ("name=-x", "name"),
        ("continue=zz", "continue"),
        (&*format!("continue={cursor}&page=2"), "continue"),
        (&*format!("continue={cursor}&status=deployed"), "continue"),
        ("rowsPerPage=0", "rowsPerPage"),
    ] {
        let (status, body) = ember.get_json(&format!("/v1/containers?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }

    // The container services list pages when asked to, and holds every one when not.
    let (_, all) = ember.get_json("/api/container_services").await;
    assert_eq!(all["container_services"].as_array().unwrap().len(), 13);
    let (_, page) = ember
        .get_json("/api/container_services?page=2&per_page=5")
        .await;
    let services = page["container_services"].as_array().unwrap();
    let expected: Vec<_> = made[5..10].to_vec();
    let got: Vec<_> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    let (status, body) = ember
        .get_json("/api/container_services?per_page=1000")
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("per_page"))
    );

    // The probes answer without a token.
    for (path, state) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let (status, body) = ember.call_as(None, Method::GET, path, None).await;
        assert_eq!(
            (status, body["status"].clone()),
            (StatusCode::OK, json!(state)),
            "{path}"
        );
    }
}
