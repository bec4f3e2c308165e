//! Token management (`/v1/tokens`, ADMIN only) and what tokens allow: another user's
//! containers, instances and jobs are 404 exactly as if they did not exist, and a
//! token without a capability gets 403 on the routes that need it.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Mints a token as the admin; returns the answer's body.
async fn mint(ember: &Ember, body: Value) -> Value {
    let (status, minted) = ember.send_json(Method::POST, "/v1/tokens", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    minted
}

fn secret(minted: &Value) -> &str {
    minted["token"].as_str().unwrap()
}

/// The token list, as the admin sees it.
async fn token_list(ember: &Ember) -> Value {
    let (status, list) = ember.get_json("/v1/tokens?rowsPerPage=100").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list
}

#[tokio::test]
async fn admins_mint_list_and_revoke_tokens_that_survive_a_restart() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);

    let alice = mint(&ember, json!({ "user": "alice" })).await;
    assert!(secret(&alice).starts_with("ember_"), "{alice}");
    let alice_admin = mint(&ember, json!({ "user": "alice", "role": "ADMIN" })).await;
    assert_eq!(alice_admin["userId"], alice["userId"], "one user per name");
    let bob = mint(
        &ember,
        json!({ "user": "bob", "scopes": ["projects_read"], "capabilities": ["containers-view"] }),
    )
    .await;
    assert_ne!(bob["userId"], alice["userId"]);

    // The list shows every token but no secret; the bootstrap admin token is marked.
    let list = token_list(&ember).await;
    assert_eq!(list["total"], 4, "{list}");
    let items = list["items"].as_array().unwrap();
    assert!(items.iter().all(|t| t.get("token").is_none()), "{list}");
    assert_eq!(
        items.iter().filter(|t| t["bootstrap"] == true).count(),
        1,
        "{list}"
    );
    let (status, shown) = ember
        .get_json(&format!("/v1/tokens/{}", bob["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["user"], "bob");
    assert_eq!(shown["role"], "USER");
    assert_eq!(shown["userId"], bob["userId"]);
    assert_eq!(shown["scopes"], json!(["projects_read"]));
    assert_eq!(shown["capabilities"], json!(["containers-view"]));
    let (_, alices) = ember
        .get_json(&format!("/v1/tokens/{}", alice["id"].as_str().unwrap()))
        .await;
    assert_eq!(alices["scopes"], json!(["projects_read", "projects_write"]));
    assert_eq!(alices["capabilities"].as_array().unwrap().len(), 5);

    // A USER token works on the API but manages no tokens; an ADMIN one does.
    let (status, _) = ember
        .call_as(Some(secret(&alice)), Method::GET, "/v1/containers", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (Method::GET, "/v1/tokens".to_string(), None),
        (
            Method::POST,
            "/v1/tokens".to_string(),
            Some(json!({ "user": "mallory", "role": "ADMIN" })),
        ),
        (
            Method::DELETE,
            format!("/v1/tokens/{}", bob["id"].as_str().unwrap()),
            None,
        ),
    ] {
        let (status, error) = ember
            .call_as(Some(secret(&alice)), method, &path, body.as_ref())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {error}");
        assert_eq!(error["code"], "forbidden");
        assert!(
            error["message"].as_str().unwrap().contains("ADMIN"),
            "{error}"
        );
    }
    let (status, _) = ember
        .call_as(Some(secret(&alice_admin)), Method::GET, "/v1/tokens", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token_list(&ember).await["total"], 4, "nothing changed");

    // No token, or one that was never minted: 401.
    for token in [None, Some("ember_not-a-real-token")] {
        let (status, error) = ember
            .call_as(token, Method::GET, "/v1/containers", None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
        assert_eq!(error["code"], "unauthorized");
    }

    // The bootstrap admin token is not revoked through the API.
    let bootstrap = items.iter().find(|t| t["bootstrap"] == true).unwrap();
    let (status, error) = ember
        .send_json(
            Method::DELETE,
            &format!("/v1/tokens/{}", bootstrap["id"].as_str().unwrap()),
            &Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["code"], "bootstrap_token");

    // Tokens survive a restart (a crash, even).
    ember.kill();
    let ember = Ember::start(dir.path(), &[]);
    let (status, _) = ember
        .call_as(Some(secret(&alice)), Method::GET, "/v1/containers", None)
        .await;
    assert_eq!(status, StatusCode::OK, "alice's token after a restart");
    assert_eq!(token_list(&ember).await["total"], 4);

    // Revoked: it authenticates nothing, and is gone from the list.
    let alice_path = format!("/v1/tokens/{}", alice["id"].as_str().unwrap());
    let response = ember
        .api_request(Method::DELETE, &alice_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = ember
        .call_as(Some(secret(&alice)), Method::GET, "/v1/containers", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(ember.get_json(&alice_path).await.0, StatusCode::NOT_FOUND);
    let (status, _) = ember
        .send_json(Method::DELETE, &alice_path, &Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(token_list(&ember).await["total"], 3);
    // Her other token still works: revoking is per token.
    let (status, _) = ember
        .call_as(Some(secret(&alice_admin)), Method::GET, "/v1/tokens", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_token_requests_get_4xx_naming_the_field_and_mint_nothing() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let before = token_list(&ember).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), ""),
        (json!({ "user": "" }), "user"),
        (json!({ "user": "al ice" }), "user"),
        (json!({ "user": "../etc" }), "user"),
        (json!({ "user": "a".repeat(65) }), "user"),
        (json!({ "user": 7 }), "user"),
        (json!({ "user": "alice", "role": "ROOT" }), "role"),
        (json!({ "user": "alice", "role": "admin" }), "role"),
        (
            json!({ "user": "alice", "scopes": ["projects_admin"] }),
            "scopes",
        ),
        (
            json!({ "user": "alice", "scopes": "projects_read" }),
            "scopes",
        ),
        (
            json!({ "user": "alice", "capabilities": ["containers-fly"] }),
            "capabilities",
        ),
        (json!({ "user": "alice", "bogus": true }), "bogus"),
        (json!(["alice"]), ""),
    ];
    for (body, field) in cases {
        let (status, error) = ember.send_json(Method::POST, "/v1/tokens", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert!(error["message"].is_string(), "{body}: {error}");
        if !field.is_empty() {
            assert_eq!(error["field"], field, "{body}: {error}");
        }
    }
    for path in ["/v1/tokens/not-an-id", "/v1/tokens/123"] {
        let (status, error) = ember.get_json(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {error}");
        assert_eq!(error["field"], "id");
    }
    let (status, _) = ember
        .get_json("/v1/tokens/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(token_list(&ember).await, before, "nothing was minted");
}

#[tokio::test]
async fn another_users_containers_instances_and_jobs_are_not_found_and_stay_unchanged() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let alice = mint(&ember, json!({ "user": "alice" })).await;
    let bob = mint(&ember, json!({ "user": "bob" })).await;
    let carol = mint(
        &ember,
        json!({ "user": "carol", "capabilities": ["containers-update"] }),
    )
    .await;
    let (alice_token, bob_token) = (secret(&alice), secret(&bob));

    // Alice deploys a container with her own token.
    let digest = {
        let response = ember
            .api_url("/v1/blobs")
            .parse::<reqwest::Url>()
            .map(|url| {
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(alice_token)
                    .body(fixtures::hello("alice's\n"))
            })
            .unwrap()
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (status, created) = ember
        .call_as(
            Some(alice_token),
            Method::POST,
            "/v1/containers",
            Some(&json!({ "name": "alices", "image": digest })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["createdBy"], alice["userId"]);
    let id = created["id"].as_str().unwrap().to_string();
    ember.wait_deployed(&id).await;
    assert_eq!(ember.invoke("alices").await.1, "alice's\n");
    let (status, job) = ember
        .call_as(
            Some(alice_token),
            Method::POST,
            &format!("/v1/containers/{id}/instances"),
            Some(&json!([{ "server_id": server_id(&ember).await, "new_instances": 1 }])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["data"]["id"].as_str().unwrap().to_string();
    let instance_id = loop {
        let (_, instances) = ember
            .call_as(
                Some(alice_token),
                Method::GET,
                &format!("/v1/containers/{id}/instances"),
                None,
            )
            .await;
        if let Some(first) = instances["data"].as_array().and_then(|list| list.first()) {
            break first["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let container = format!("/v1/containers/{id}");
    let (_, before) = ember
        .call_as(Some(alice_token), Method::GET, &container, None)
        .await;

    // Every route that names alice's things answers bob 404, as if they did not exist.
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, container.clone(), None),
        (
            Method::PUT,
            container.clone(),
            Some(json!({ "name": "bobs", "image": digest })),
        ),
        (Method::DELETE, container.clone(), None),
        (Method::GET, format!("{container}/revisions"), None),
        (Method::GET, format!("{container}/logs"), None),
        (Method::GET, format!("{container}/instances"), None),
        (
            Method::POST,
            format!("{container}/instances"),
            Some(json!([{ "server_id": server_id(&ember).await, "new_instances": 1 }])),
        ),
        (Method::DELETE, format!("{container}/instances"), None),
        (
            Method::GET,
            format!("{container}/instances/{instance_id}"),
            None,
        ),
        (
            Method::DELETE,
            format!("{container}/instances/{instance_id}"),
            None,
        ),
        (Method::GET, format!("/v1/jobs/{job_id}"), None),
    ];
    for (method, path, body) in &routes {
        let (status, error) = ember
            .call_as(Some(bob_token), method.clone(), path, body.as_ref())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
        assert_eq!(error["code"], "not_found", "{method} {path}: {error}");
    }
    let (_, bobs_list) = ember
        .call_as(Some(bob_token), Method::GET, "/v1/containers", None)
        .await;
    assert_eq!(bobs_list["total"], 0, "{bobs_list}");
    let (_, after) = ember
        .call_as(Some(alice_token), Method::GET, &container, None)
        .await;
    assert_eq!(after, before, "bob changed nothing");
    assert_eq!(ember.invoke("alices").await.1, "alice's\n");

    // A token without containers-view is refused the instance routes that need it,
    // before anything is looked up; the admin sees alice's container.
    for path in [
        format!("{container}/instances"),
        format!("{container}/instances/{instance_id}"),
    ] {
        let (status, error) = ember
            .call_as(Some(secret(&carol)), Method::GET, &path, None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("containers-view"),
            "{error}"
        );
    }
    let (status, _) = ember.get_json(&container).await;
    assert_eq!(status, StatusCode::OK);
}

async fn server_id(ember: &Ember) -> String {
    let (status, servers) = ember.get_json("/v1/servers").await;
    assert_eq!(status, StatusCode::OK, "{servers}");
    servers["data"][0]["id"].as_str().unwrap().to_string()
}

/// `/metrics` as `token` (or without one) sees it.
async fn metrics_as(ember: &Ember, token: Option<&str>) -> (StatusCode, String) {
    let mut request = ember.http().get(ember.api_url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_show_containers_only_to_admins_and_scrapers_and_each_tenant_its_own() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let id = ember
        .deploy_wasm("counted", &fixtures::hello("hi\n"), json!({}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    ember.wait_deployed(&id).await;
    let series = format!("container=\"{id}\"");
    let tenant = mint(&ember, json!({ "user": "tenant" })).await;
    let (_, shown) = ember
        .get_json(&format!("/v1/tokens/{}", tenant["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        shown["scopes"],
        json!(["projects_read", "projects_write"]),
        "no token gets the metrics scope unasked"
    );
    let scraper = mint(
        &ember,
        json!({ "user": "prometheus", "scopes": ["metrics"], "capabilities": [] }),
    )
    .await;

    for (who, token) in [
        ("no token", None),
        ("another tenant", Some(secret(&tenant))),
    ] {
        let (status, text) = metrics_as(&ember, token).await;
        assert_eq!(status, StatusCode::OK, "{who}");
        assert!(
            text.contains("ember_containers "),
            "{who}: node-wide series: {text}"
        );
        assert!(
            !text.contains(&series),
            "{who} read a container's series: {text}"
        );
    }
    for (who, token) in [
        ("the scraper", secret(&scraper)),
        ("the admin", ember.token.as_str()),
    ] {
        let (status, text) = metrics_as(&ember, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{who}");
        assert!(
            text.contains(&series),
            "{who} misses the container's series: {text}"
        );
    }
    let (status, _) = metrics_as(&ember, Some("ember_not_a_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Each container's own series, to whoever may see it; another tenant's is 404.
    let own = ember
        .api_request(Method::GET, &format!("/v1/containers/{id}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let text = own.text().await.unwrap();
    assert!(
        text.contains(&series) && !text.contains("ember_containers "),
        "{text}"
    );
    let theirs = ember
        .http()
        .get(ember.api_url(&format!("/v1/containers/{id}/metrics")))
        .bearer_auth(secret(&tenant))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
}
