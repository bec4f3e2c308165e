//! The faces over the native model: document 000's `/api/containers` (an instance by
//! integer id), 001's `/api/container_services` (a container by integer id) and
//! 003's Tutum `/api/v1/container/` (an instance by UUID), on real wasm instances;
//! scopes, Tutum's `ApiKey` and another user's 404s.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Deploys a wasm container that keeps one instance; returns its 001 service (by
/// way of the list) and its one instance's 000 id.
async fn deploy_one(ember: &Ember, name: &str, extra: Value) -> (Value, u64) {
    let mut body = json!({ "cpu": 0.25, "minInstances": 1 });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let container = ember
        .deploy_wasm(name, &fixtures::hello(&format!("{name}\n")), body)
        .await;
    let (status, services) = ember.get_json("/api/container_services").await;
    assert_eq!(status, StatusCode::OK, "{services}");
    let service = services["container_services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {services} ({container})"))
        .clone();
    let instance = ember
        .wait_for(&format!("{}/containers", path(&service)), WITHIN, |b| {
            b["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["current_state"] == "online")
                .map(|c| c["id"].as_u64().unwrap())
        })
        .await;
    (service, instance)
}

fn path(service: &Value) -> String {
    format!("/api/container_services/{}", service["id"])
}

/// How long a state change may take to show.
const WITHIN: Duration = Duration::from_secs(30);

/// The 000 view of an instance.
async fn numbered(ember: &Ember, id: u64) -> Value {
    let (status, body) = ember.get_json(&format!("/api/containers/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["containers"][0].clone()
}

async fn wait_state(ember: &Ember, id: u64, state: &str) -> Value {
    ember
        .wait_for(&format!("/api/containers/{id}"), WITHIN, |b| {
            (b["containers"][0]["current_state"] == state).then(|| b["containers"][0].clone())
        })
        .await
}

#[tokio::test]
async fn an_instance_by_integer_id_shows_stats_series_and_takes_power_actions() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &["--usage-sample-ms", "200"]);
    let (service, id) = deploy_one(&ember, "numbered", json!({})).await;

    let instance = numbered(&ember, id).await;
    assert_eq!(instance["id"], id);
    assert_eq!(instance["name"], "numbered-1");
    assert_eq!(instance["req_state"], "running");
    assert!(instance["stats"]["cpu"].is_number() && instance["stats"]["mem"].is_number());
    assert!(instance["created_at"].is_string() && instance["updated_at"].is_string());
    let rule = &instance["ingress_rules"][0];
    assert_eq!(rule["container_service_id"], service["id"]);
    assert_eq!(rule["proto"], "http");

    // The series fill at the sampling interval; a request makes the guest run.
    let (status, _) = ember.invoke("numbered").await;
    assert_eq!(status, StatusCode::OK);
    for kind in ["cpu", "memory"] {
        let stats = ember
            .wait_for(
                &format!("/api/containers/{id}/metrics/{kind}"),
                WITHIN,
                |b| {
                    let stats = b["stats"].as_array().unwrap();
                    (stats.len() >= 2).then(|| stats.clone())
                },
            )
            .await;
        assert!(
            stats[0][0].as_str().unwrap().ends_with("+00:00"),
            "{stats:?}"
        );
        assert!(stats[0][1].is_number(), "{stats:?}");
    }
    let (status, body) = ember
        .get_json(&format!("/api/containers/{id}/metrics/disk"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A component runs no process of its own, and this one writes no output.
    let (status, processes) = ember
        .get_json(&format!("/api/containers/{id}/container_processes"))
        .await;
    assert_eq!((status, processes), (StatusCode::OK, json!([])));
    let (status, logs) = ember
        .get_json(&format!("/api/containers/{id}/logs?limit=5&period_start=0"))
        .await;
    assert_eq!((status, logs), (StatusCode::OK, json!([])));
    for bad in [
        "limit=0",
        "limit=x",
        "period_start=9&period_end=3",
        "since=1",
    ] {
        let (status, body) = ember
            .get_json(&format!("/api/containers/{id}/logs?{bad}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Power: stop, start, restart, rebuild; each keeps the instance's id.
    let power = |action: &'static str| {
        let ember = &ember;
        async move {
            ember
                .send_json(
                    Method::PUT,
                    &format!("/api/containers/{id}/power/{action}"),
                    &json!({}),
                )
                .await
        }
    };
    let (status, body) = power("start").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a running instance cannot start: {body}"
    );
    assert_eq!(body["code"], "invalid_state");
    let (status, body) = power("stop").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let stopped = wait_state(&ember, id, "offline").await;
    assert_eq!(stopped["req_state"], "stopped");
    let (status, body) = power("stop").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = power("start").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_state(&ember, id, "online").await;
    for action in ["restart", "rebuild"] {
        let (status, body) = power(action).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{action}: {body}");
        wait_state(&ember, id, "online").await;
    }
    let (status, body) = power("reboot").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "action");
    let (status, _) = ember.invoke("numbered").await;
    assert_eq!(status, StatusCode::OK);

    for missing in ["/api/containers/12345", "/api/containers/12345/power/stop"] {
        let method = if missing.ends_with("stop") {
            Method::PUT
        } else {
            Method::GET
        };
        let (status, body) = ember.send_json(method, missing, &json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
    }
    let (status, body) = ember.get_json("/api/containers/not-a-number").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A stopped instance deleted through document 004 is terminated at once.
    let (status, body) = power("stop").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_state(&ember, id, "offline").await;
    let (_, containers) = ember.get_json("/v1/containers").await;
    let native = containers["items"][0]["id"].as_str().unwrap().to_string();
    let (_, tutum) = ember
        .get_json("/api/v1/container/?unique_name=numbered-1")
        .await;
    let uuid = tutum["objects"][0]["uuid"].as_str().unwrap().to_string();
    let (status, job) = ember
        .send_json(
            Method::DELETE,
            &format!("/v1/containers/{native}/instances/{uuid}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["data"]["state"]["current"], "completed", "{job}");
    let (_, terminated) = ember.get_json(&format!("/api/v1/container/{uuid}/")).await;
    assert_eq!(terminated["state"], "Terminated", "{terminated}");
    let (status, body) = ember
        .send_json(
            Method::DELETE,
            &format!("/v1/containers/{native}/instances/{uuid}"),
            &json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "004 lists no terminated instance: {body}"
    );
}

#[tokio::test]
async fn tutum_containers_walk_only_the_documented_state_transitions() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    deploy_one(&ember, "tutum", json!({})).await;
    let (_, alice) = ember
        .send_json(Method::POST, "/v1/tokens", &json!({ "user": "alice" }))
        .await;
    let key = |user: &str, token: &str| format!("ApiKey {user}:{token}");
    let admin_key = key("admin", &ember.token);

    let call = |method: Method, path: String| {
        let ember = &ember;
        let auth = admin_key.clone();
        async move {
            let response = ember
                .http()
                .request(method, ember.api_url(&path))
                .header("Authorization", auth)
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, list) = call(Method::GET, "/api/v1/container/".into()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["meta"]["total_count"], 1, "{list}");
    let object = list["objects"][0].clone();
    let uuid = object["uuid"].as_str().unwrap().to_string();
    assert_eq!(object["state"], "Running");
    assert_eq!(object["name"], "tutum");
    assert_eq!(object["unique_name"], "tutum-1");
    assert_eq!(object["resource_uri"], format!("/api/v1/container/{uuid}/"));
    assert!(
        object["image_name"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{object}"
    );
    let (status, fetched) = call(Method::GET, format!("/api/v1/container/{uuid}/")).await;
    assert_eq!((status, &fetched), (StatusCode::OK, &object));
    for (query, count) in [
        ("state=Running", 1),
        ("state=Stopped", 0),
        ("name=tutum", 1),
        ("unique_name=tutum-1", 1),
        ("unique_name=tutum-2", 0),
    ] {
        let (status, list) = call(Method::GET, format!("/api/v1/container/?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {list}");
        assert_eq!(
            list["objects"].as_array().unwrap().len(),
            count,
            "{query}: {list}"
        );
    }
    let (status, body) = call(Method::GET, "/api/v1/container/?state=Sleeping".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Another user's key, a key given under the wrong name, and no key at all.
    let alice_token = alice["token"].as_str().unwrap();
    for (auth, expected) in [
        (key("alice", alice_token), StatusCode::NOT_FOUND),
        (key("bob", alice_token), StatusCode::UNAUTHORIZED),
        ("ApiKey alice".to_string(), StatusCode::UNAUTHORIZED),
    ] {
        let response = ember
            .http()
            .get(ember.api_url(&format!("/api/v1/container/{uuid}/")))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{auth}");
    }

    let object_path = format!("/api/v1/container/{uuid}/");
    let wait = |wanted: &'static str| {
        ember.wait_for(&object_path, WITHIN, move |b| {
            (b["state"] == wanted).then_some(())
        })
    };
    let (status, body) = call(Method::POST, format!("/api/v1/container/{uuid}/start/")).await;
    assert_eq!(status, StatusCode::CONFLICT, "Running cannot start: {body}");
    let (status, body) = call(Method::POST, format!("/api/v1/container/{uuid}/stop/")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        body["state"] == "Stopping" || body["state"] == "Stopped",
        "{body}"
    );
    wait("Stopped").await;
    let (status, _) = call(Method::POST, format!("/api/v1/container/{uuid}/stop/")).await;
    assert_eq!(status, StatusCode::CONFLICT, "Stopped cannot stop");
    let (status, body) = call(Method::POST, format!("/api/v1/container/{uuid}/start/")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait("Running").await;
    let (status, body) = call(Method::DELETE, format!("/api/v1/container/{uuid}/")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait("Terminated").await;
    for (method, action) in [
        (Method::POST, "start/"),
        (Method::POST, "stop/"),
        (Method::DELETE, ""),
    ] {
        let (status, body) = call(method, format!("/api/v1/container/{uuid}/{action}")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "Terminated takes no {action}: {body}"
        );
    }
    let (_, terminated) = call(Method::GET, "/api/v1/container/?state=Terminated".into()).await;
    assert_eq!(
        terminated["objects"][0]["uuid"],
        uuid.as_str(),
        "{terminated}"
    );
    let (status, logs) = call(Method::GET, format!("/api/v1/container/{uuid}/logs/")).await;
    assert_eq!((status, logs), (StatusCode::OK, json!({ "logs": "" })));
    let (status, _) = call(
        Method::GET,
        "/api/v1/container/0b7f1e9a-3c1d-4c55-9a57-2f1f2a0e0c11/".into(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn container_services_resize_scale_power_and_delete() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let (service, _) = deploy_one(&ember, "svc", json!({})).await;
    let base = path(&service);
    let (status, shown) = ember.get_json(&base).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let shown = &shown["container_service"];
    assert_eq!(shown["name"], "svc");
    assert_eq!(shown["deployed_containers"], 1);
    assert_eq!(
        shown["package"]["label"], "custom",
        "0.25 CPU and 512Mi is no package"
    );
    assert_eq!(shown["product_id"], 0);
    // Every link answers.
    for (name, link) in shown["links"].as_object().unwrap() {
        let (status, body) = ember.get_json(link.as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
    }
    let (_, products) = ember.get_json("/api/products").await;
    assert_eq!(products["products"][0]["label"], "nano");

    // Resize to a package (the document's example body), then scale to two.
    let (status, resized) = ember
        .send_json(
            Method::POST,
            &format!("{base}/resize"),
            &json!({ "container_service": { "product_id": 2 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resized}");
    assert_eq!(resized["container_service"]["package"]["label"], "small");
    let (status, scaled) = ember
        .send_json(
            Method::POST,
            &format!("{base}/scale"),
            &json!({ "container_service": { "qty": 2 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{scaled}");
    ember
        .wait_for(&base, WITHIN, |b| {
            (b["container_service"]["deployed_containers"] == 2).then_some(())
        })
        .await;
    let (_, container) = ember.get_json("/v1/containers?rowsPerPage=10").await;
    let spec = &container["items"][0];
    assert_eq!(
        (spec["minInstances"].clone(), spec["maxInstances"].clone()),
        (json!(2), json!(2)),
        "{container}"
    );
    assert_eq!(spec["cpu"], 0.5);

    // PATCH: name, scale and package at once.
    let (status, patched) = ember
        .send_json(
            Method::PATCH,
            &base,
            &json!({ "container_service": { "name": "svc2", "scale": 1, "package_id": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let patched = &patched["container_service"];
    assert_eq!(
        (patched["name"].clone(), patched["package"]["label"].clone()),
        (json!("svc2"), json!("nano"))
    );

    // Bad input changes nothing.
    for (method, route, body, field) in [
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "package_id": 99 } }),
            "container_service.package_id",
        ),
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "name": "Bad Name" } }),
            "container_service.name",
        ),
        (
            Method::POST,
            format!("{base}/resize"),
            json!({ "container_service": { "product_id": 5 } }),
            "cpu",
        ),
        (
            Method::POST,
            format!("{base}/scale"),
            json!({ "container_service": { "qty": -1 } }),
            "",
        ),
        (
            Method::POST,
            format!("{base}/scale"),
            json!({ "qty": 2 }),
            "",
        ),
        (
            Method::POST,
            format!("{base}/scale"),
            json!({ "container_service": { "qty": 5000 } }),
            "container_service.qty",
        ),
        (
            Method::PATCH,
            base.clone(),
            json!({ "container_service": { "scale": 5000 } }),
            "container_service.scale",
        ),
    ] {
        let (status, answer) = ember.send_json(method, &route, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
    }
    // The same bound holds on the native API.
    let (_, native) = ember.get_json("/v1/containers").await;
    let native = native["items"][0]["id"].as_str().unwrap().to_string();
    let (status, answer) = ember
        .send_json(
            Method::PUT,
            &format!("/v1/containers/{native}"),
            &json!({ "minInstances": 5000 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["field"], "minInstances", "{answer}");
    let (_, unchanged) = ember.get_json(&base).await;
    assert_eq!(unchanged["container_service"]["name"], "svc2");

    // Power on every instance: stop, then start again.
    let (status, body) = ember
        .send_json(Method::POST, &format!("{base}/power/stop"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["containers"].as_u64().unwrap() >= 1, "{body}");
    ember
        .wait_for(&format!("{base}/containers"), WITHIN, |b| {
            let all = b["containers"].as_array().unwrap();
            all.iter()
                .any(|c| c["current_state"] == "offline")
                .then_some(())
        })
        .await;
    let (status, body) = ember
        .send_json(Method::POST, &format!("{base}/power/start"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, logs) = ember.get_json(&format!("{base}/logs?limit=10")).await;
    assert_eq!((status, logs), (StatusCode::OK, json!([])));

    let (status, _) = ember.send_json(Method::DELETE, &base, &json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = ember.get_json(&base).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_face_hides_another_users_things_and_checks_scopes() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let (service, instance) = deploy_one(&ember, "mine", json!({})).await;
    let (_, list) = ember.get_json("/api/v1/container/").await;
    let uuid = list["objects"][0]["uuid"].as_str().unwrap().to_string();
    let mint = |body: Value| {
        let ember = &ember;
        async move {
            let (status, minted) = ember.send_json(Method::POST, "/v1/tokens", &body).await;
            assert_eq!(status, StatusCode::CREATED, "{minted}");
            minted["token"].as_str().unwrap().to_string()
        }
    };
    let bob = mint(json!({ "user": "bob" })).await;
    let base = path(&service);
    let (_, containers) = ember.get_json("/v1/containers").await;
    let native = containers["items"][0]["id"].as_str().unwrap().to_string();
    let wrapped = |body: Value| Some(json!({ "container_service": body }));
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/containers/{instance}"), None),
        (
            Method::PUT,
            format!("/api/containers/{instance}/power/stop"),
            None,
        ),
        (
            Method::GET,
            format!("/api/containers/{instance}/logs"),
            None,
        ),
        (
            Method::GET,
            format!("/api/containers/{instance}/container_processes"),
            None,
        ),
        (
            Method::GET,
            format!("/api/containers/{instance}/metrics/cpu"),
            None,
        ),
        (
            Method::GET,
            format!("/api/containers/{instance}/metrics/memory"),
            None,
        ),
        (Method::GET, base.clone(), None),
        (
            Method::PATCH,
            base.clone(),
            wrapped(json!({ "name": "stolen" })),
        ),
        (Method::DELETE, base.clone(), None),
        (Method::GET, format!("{base}/containers"), None),
        (
            Method::POST,
            format!("{base}/resize"),
            wrapped(json!({ "product_id": 1 })),
        ),
        (
            Method::POST,
            format!("{base}/scale"),
            wrapped(json!({ "qty": 3 })),
        ),
        (Method::POST, format!("{base}/power/stop"), None),
        (Method::GET, format!("{base}/logs"), None),
        (Method::GET, format!("/api/v1/container/{uuid}/"), None),
        (Method::GET, format!("/api/v1/container/{uuid}/logs/"), None),
        (
            Method::POST,
            format!("/api/v1/container/{uuid}/start/"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/container/{uuid}/stop/"),
            None,
        ),
        (Method::DELETE, format!("/api/v1/container/{uuid}/"), None),
        (
            Method::GET,
            format!("/v1/containers/{native}/instances/{uuid}/volumes"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/containers/{native}/instances/{uuid}/telemetry/resources/report"),
            None,
        ),
    ];
    for (method, route, body) in &routes {
        let (status, answer) = ember
            .call_as(Some(&bob), method.clone(), route, body.as_ref())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {route}: {answer}");
    }
    for list in ["/api/container_services", "/api/v1/container/"] {
        let (status, answer) = ember.call_as(Some(&bob), Method::GET, list, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(!answer.to_string().contains("mine"), "{list}: {answer}");
    }
    // Nothing changed.
    let after = numbered(&ember, instance).await;
    assert_eq!(
        (after["current_state"].clone(), after["name"].clone()),
        (json!("online"), json!("mine-1"))
    );

    // Scopes: reading needs projects_read, changing projects_write.
    let reader =
        mint(json!({ "user": "admin", "role": "ADMIN", "scopes": ["projects_read"] })).await;
    let writer =
        mint(json!({ "user": "admin", "role": "ADMIN", "scopes": ["projects_write"] })).await;
    for (method, route, body) in routes
        .iter()
        .filter(|(_, route, _)| route.starts_with("/api/"))
    {
        let reads = *method == Method::GET;
        let (token, allowed) = if reads {
            (&writer, "projects_read")
        } else {
            (&reader, "projects_write")
        };
        let (status, answer) = ember
            .call_as(Some(token), method.clone(), route, body.as_ref())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {route}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(allowed),
            "{answer}"
        );
    }
    let after = numbered(&ember, instance).await;
    assert_eq!(after["current_state"], "online");
}

#[tokio::test]
async fn an_instance_reports_its_volumes_and_resources() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    deploy_one(&ember, "report", json!({})).await;
    let (_, containers) = ember.get_json("/v1/containers").await;
    let id = containers["items"][0]["id"].as_str().unwrap().to_string();
    let instance = ember.instances(&id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/v1/containers/{id}/instances/{instance}");

    let (status, volumes) = ember
        .get_json(&format!(
            "{base}/volumes?sort=-id&page[size]=5&page[number]=1"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{volumes}");
    assert_eq!(
        volumes,
        json!({ "data": [] }),
        "a component has no filesystem"
    );
    for bad in ["sort=size", "page[size]=0", "color=red"] {
        let (status, body) = ember.get_json(&format!("{base}/volumes?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let (status, report) = ember
        .get_json(&format!("{base}/telemetry/resources/report"))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let data = &report["data"];
    assert_eq!(data["instance_id"], instance.as_str());
    assert_eq!(data["cpu"]["limit_cores"], 0.25);
    assert_eq!(data["memory"]["limit_bytes"], 512u64 << 20);
    assert!(
        data["memory"]["used_bytes"].is_u64() && data["cpu"]["usage_percent"].is_number(),
        "{report}"
    );
    assert!(
        data["network"].is_null(),
        "a component has no interface: {report}"
    );
    let (status, body) = ember
        .get_json(&format!("{base}/telemetry/resources/report?filter[cpu]=1"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = ember
        .get_json(&format!(
            "/v1/containers/{id}/instances/0b7f1e9a-3c1d-4c55-9a57-2f1f2a0e0c11/volumes"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_stopped_instance_stays_stopped_across_a_restart() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    deploy_one(&ember, "kept", json!({})).await;
    let (_, list) = ember
        .get_json("/api/v1/container/?unique_name=kept-1")
        .await;
    let uuid = list["objects"][0]["uuid"].as_str().unwrap().to_string();
    let path = format!("/api/v1/container/{uuid}/");
    let (status, body) = ember
        .send_json(Method::POST, &format!("{path}stop/"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    ember
        .wait_for(&path, WITHIN, |b| (b["state"] == "Stopped").then_some(()))
        .await;
    drop(ember);

    let ember = Ember::start(dir.path(), &[]);
    let (status, object) = ember.get_json(&path).await;
    assert_eq!(status, StatusCode::OK, "{object}");
    assert_eq!(
        (object["state"].clone(), object["unique_name"].clone()),
        (json!("Stopped"), json!("kept-1"))
    );
    let (status, body) = ember
        .send_json(Method::POST, &format!("{path}start/"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    ember
        .wait_for(&path, WITHIN, |b| (b["state"] == "Running").then_some(()))
        .await;
    // Instances started since count on from the restored ones.
    let (_, all) = ember.get_json("/api/v1/container/").await;
    let names: Vec<_> = all["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["unique_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "kept-1").count(),
        1,
        "{names:?}"
    );
}
