//! Quotas per tenant: defaults from `ember serve`, a user's own set by an ADMIN
//! token, a create past the containers quota refused naming the quota and its
//! use, and an instance past the instances quota waiting (the ingress answers 503
//! with Retry-After) until the tenant frees one or its quota is raised.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn mint(ember: &Ember, user: &str) -> String {
    let (status, minted) = ember
        .send_json(Method::POST, "/v1/tokens", &json!({ "user": user }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    minted["token"].as_str().unwrap().to_string()
}

async fn create_as(ember: &Ember, token: &str, name: &str, digest: &str) -> (StatusCode, Value) {
    ember
        .call_as(
            Some(token),
            Method::POST,
            "/v1/containers",
            Some(&json!({ "name": name, "image": digest, "idleTimeoutSeconds": 600 })),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_held_to_their_quotas_which_admins_set() {
    let dir = temp_dir();
    let ember = Ember::start(
        dir.path(),
        &[
            "--quota-containers",
            "2",
            "--quota-instances",
            "1",
            "--queue-timeout",
            "2",
        ],
    );
    let alice = mint(&ember, "alice").await;
    let bob = mint(&ember, "bob").await;
    let digest = ember.upload(&fixtures::hello("hello\n")).await;

    // Containers: two, then a 403 naming the quota and its use; nothing stored.
    let mut ids = Vec::new();
    for name in ["a1", "a2"] {
        let (status, created) = create_as(&ember, &alice, name, &digest).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        ember.wait_deployed(&id).await;
        ids.push(id);
    }
    let (status, refused) = create_as(&ember, &alice, "a3", &digest).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["code"], "quota_exceeded");
    assert_eq!(refused["field"], "quota.containers");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("2 containers in use of a quota of 2"),
        "{message}"
    );
    let (_, listed) = ember.get_json("/v1/containers?rowsPerPage=100").await;
    assert!(!listed.to_string().contains("\"a3\""), "{listed}");
    // Another tenant has a quota of its own, and the admin none.
    let (status, _) = create_as(&ember, &bob, "b1", &digest).await;
    assert_eq!(status, StatusCode::CREATED);
    for name in ["admin1", "admin2", "admin3"] {
        let (status, _) = create_as(&ember, &ember.token, name, &digest).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    // Instances: the first container's instance runs; the second's waits for the
    // quota, and its request is answered at once (not at the request timeout) with
    // a 503 the client may retry, naming the quota.
    let client = |name: &str| ember.ingress_client(name);
    let first = client("a1")
        .get(ember.ingress_url("a1", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = client("a2")
        .get(ember.ingress_url("a2", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key("retry-after"));
    let answer: Value = second.json().await.unwrap();
    assert_eq!(answer["code"], "quota_exceeded", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("instances quota: 1 instances in use of a quota of 1"),
        "{answer}"
    );
    let (_, view) = ember.get_json(&format!("/v1/containers/{}", ids[1])).await;
    let reason = view["statusReason"].as_str().unwrap_or_default();
    assert!(reason.contains("instances quota"), "{view}");

    // The admin reads and raises alice's quota; the waiting start goes on.
    let (status, shown) = ember.get_json("/v1/users/alice/quota").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["data"]["quota"]["containers"], 2);
    assert_eq!(shown["data"]["use"]["containers"], 2);
    assert_eq!(shown["data"]["use"]["instances"], 1);
    let (status, set) = ember
        .send_json(
            Method::PUT,
            "/v1/users/alice/quota",
            &json!({ "containers": 3, "instances": 2 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["data"]["quota"]["instances"], 2);
    let again = client("a2")
        .get(ember.ingress_url("a2", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let (status, _) = create_as(&ember, &alice, "a3", &digest).await;
    assert_eq!(status, StatusCode::CREATED);

    // Only an admin reads or sets quotas; bad quotas are 400 naming the field.
    let (status, _) = ember
        .call_as(Some(&alice), Method::GET, "/v1/users/alice/quota", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({ "pods": 1 }), "pods"),
        (json!({ "cpu": 0 }), "cpu"),
        (json!({ "ram": "lots" }), "ram"),
        (json!({ "ephemeralStorage": "lots" }), "ephemeralStorage"),
    ] {
        let (status, refused) = ember
            .send_json(Method::PUT, "/v1/users/alice/quota", &body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field)
                || refused["field"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
            "{body}: {refused}"
        );
    }
    let (_, kept) = ember.get_json("/v1/users/alice/quota").await;
    assert_eq!(
        kept["data"]["quota"]["instances"], 2,
        "a refused quota changed nothing"
    );

    // Set quotas survive a restart.
    drop(ember);
    let ember = Ember::start(
        dir.path(),
        &["--quota-containers", "2", "--quota-instances", "1"],
    );
    let (_, kept) = ember.get_json("/v1/users/alice/quota").await;
    assert_eq!(kept["data"]["quota"]["containers"], 3, "{kept}");
}

#[tokio::test]
async fn a_tenant_past_its_request_rate_gets_429_with_retry_after_and_others_do_not() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &["--quota-requests-per-minute", "100"]);
    let alice = mint(&ember, "alice").await;
    let bob = mint(&ember, "bob").await;
    let (status, _) = ember
        .send_json(
            Method::PUT,
            "/v1/users/alice/quota",
            &json!({ "requestsPerMinute": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for n in 0..5 {
        let (status, _) = ember
            .call_as(Some(&alice), Method::GET, "/v1/containers", None)
            .await;
        assert_eq!(status, StatusCode::OK, "request {n}");
    }
    let response = ember
        .http()
        .get(ember.api_url("/v1/containers"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["field"], "quota.requestsPerMinute");
    // Bob's own quota (the default, 100) and the admin are not touched by it.
    for _ in 0..10 {
        let (status, _) = ember
            .call_as(Some(&bob), Method::GET, "/v1/containers", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = ember.get_json("/v1/containers").await;
        assert_eq!(status, StatusCode::OK);
    }
}
