//! Deploy, invoke, scale to zero and back, restart, and pull from a registry: wasm
//! components through the real runtime binary.

mod common;

use common::{Ember, fixtures, registry::Registry, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn deploy_invoke_scale_to_zero_and_cold_start_again() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let container = ember
        .deploy_wasm(
            "hello",
            &fixtures::hello("hi there\n"),
            json!({ "idleTimeoutSeconds": 1 }),
        )
        .await;
    let id = container["id"].as_str().unwrap();
    assert_eq!(container["status"], "deployed");
    assert_eq!(
        container["urls"][0],
        format!("hello.ember.localhost:{}", ember.ingress.port())
    );

    let (status, body) = ember.invoke("hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hi there\n"));
    let instances = ember.instances(id).await;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["state"]["current"], "running");
    assert_eq!(
        ember.metric("ember_cold_starts_total{kind=\"wasm\"}").await,
        1.0
    );

    ember.wait_scaled_to_zero(id, Duration::from_secs(10)).await;

    let (status, body) = ember.invoke("hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hi there\n"));
    assert_eq!(
        ember.metric("ember_cold_starts_total{kind=\"wasm\"}").await,
        2.0
    );
    assert_eq!(
        ember
            .metric("ember_cold_start_seconds_count{kind=\"wasm\"}")
            .await,
        2.0
    );
    assert!(ember.metric("ember_requests_total{code=\"2xx\"}").await >= 2.0);
}

#[tokio::test]
async fn fifty_concurrent_requests_share_one_cold_start() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let container = ember
        .deploy_wasm("burst", &fixtures::hello("burst\n"), json!({}))
        .await;
    assert!(
        ember
            .instances(container["id"].as_str().unwrap())
            .await
            .is_empty()
    );

    let client = ember.ingress_client("burst");
    let url = ember.ingress_url("burst", "/");
    let requests = (0..50).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        })
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(answers.len(), 50);
    for answer in answers {
        assert_eq!(answer.unwrap(), (StatusCode::OK, "burst\n".to_string()));
    }
    assert_eq!(
        ember.metric("ember_cold_starts_total{kind=\"wasm\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_restart_keeps_containers_serving_without_recompiling() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let container = ember
        .deploy_wasm("durable", &fixtures::hello("still here\n"), json!({}))
        .await;
    let id = container["id"].as_str().unwrap().to_string();
    assert_eq!(ember.invoke("durable").await.0, StatusCode::OK);
    let compiled = compiled_files(dir.path());
    assert_eq!(compiled.len(), 1, "one compiled component: {compiled:?}");
    ember.kill();

    let ember = Ember::start(dir.path(), &[]);
    let (status, list) = ember.get_json("/v1/containers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    ember.wait_deployed(&id).await;
    let (status, body) = ember.invoke("durable").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "still here\n"));
    assert_eq!(
        compiled_files(dir.path()),
        compiled,
        "the restart compiled again"
    );
}

/// Compiled code files with their modification times.
fn compiled_files(data_dir: &std::path::Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut files = Vec::new();
    for engine_dir in std::fs::read_dir(data_dir.join("compiled")).unwrap() {
        for file in std::fs::read_dir(engine_dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            files.push((path, modified));
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn pulls_a_wasm_artifact_from_a_real_registry() {
    let registry = Registry::start().unwrap();
    let wasm = fixtures::hello("pulled from a registry\n");
    registry.push_wasm("apps/hello", "v1", &wasm).await.unwrap();

    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let image = format!("{}/apps/hello:v1", registry.addr);
    let container = ember
        .deploy(json!({ "name": "pulled", "image": image }))
        .await;
    assert_eq!(container["image"], image);
    let (status, body) = ember.invoke("pulled").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "pulled from a registry\n")
    );

    // The blob is stored content-addressed under the data dir.
    let blob = dir
        .path()
        .join("blobs/sha256")
        .join(&common::registry::digest(&wasm)[7..]);
    assert_eq!(std::fs::read(blob).unwrap(), wasm);

    // A tag that does not exist fails the deployment with a reason.
    let (status, created) = ember
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": "missing", "image": format!("{}/apps/hello:nope", registry.addr) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    let failed = loop {
        let (_, c) = ember.get_json(&format!("/v1/containers/{id}")).await;
        if c["status"] != "deploying" {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["statusReason"]
            .as_str()
            .unwrap()
            .contains("apps/hello:nope"),
        "{failed}"
    );
    assert_eq!(
        ember.invoke("missing").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn updates_make_revisions_and_move_traffic_without_failed_requests() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let container = ember
        .deploy_wasm("rolling", &fixtures::hello("v1\n"), json!({}))
        .await;
    let id = container["id"].as_str().unwrap().to_string();
    let v2 = ember.upload(&fixtures::hello("v2\n")).await;

    let client = ember.ingress_client("rolling");
    let url = ember.ingress_url("rolling", "/");
    let load = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..400 {
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "a request failed during the update"
            );
            seen.push(response.text().await.unwrap());
            if seen.last().is_some_and(|b| b == "v2\n") && seen.len() > 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, updated) = ember
        .send_json(
            Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "image": v2, "env": { "FOO": "bar" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["image"], v2.as_str());
    assert_eq!(updated["env"]["FOO"], "bar");
    ember.wait_deployed(&id).await;
    let seen = load.await.unwrap();
    assert_eq!(seen.first().map(String::as_str), Some("v1\n"));
    assert_eq!(seen.last().map(String::as_str), Some("v2\n"));
    assert_eq!(ember.invoke("rolling").await.1, "v2\n");

    let (status, revisions) = ember
        .get_json(&format!("/v1/containers/{id}/revisions"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revisions["total"], 2);
    assert_eq!(revisions["items"][0]["revisionNumber"], 2);
    assert_eq!(revisions["items"][0]["image"], v2.as_str());
    assert_eq!(revisions["items"][1]["revisionNumber"], 1);
    assert_eq!(revisions["items"][0]["containerID"], id.as_str());
}

#[tokio::test]
async fn a_runaway_guest_is_cut_at_the_timeout_while_others_answer() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &["--request-timeout", "5"]);
    ember
        .deploy_wasm("spinner", &fixtures::spin_forever(), json!({}))
        .await;
    ember
        .deploy_wasm("healthy", &fixtures::hello("fine\n"), json!({}))
        .await;

    let started = std::time::Instant::now();
    // More spinning guests, each on a connection of its own, than the machine has
    // ingress threads: every thread serves one, so the answers below prove that a
    // spinning guest yields its thread to the other requests it serves.
    let spinners: Vec<_> = (0..4 * available_cpus())
        .map(|_| {
            let client = ember.ingress_client("spinner");
            let url = ember.ingress_url("spinner", "/");
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..10 {
        let (status, body) = ember.invoke("healthy").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        spinners.iter().all(|spinner| !spinner.is_finished()),
        "the healthy container answered only once the spinners had ended: {:?} after {:?}",
        spinners.iter().map(|s| s.is_finished()).collect::<Vec<_>>(),
        started.elapsed()
    );
    for spinner in spinners {
        assert_eq!(spinner.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(30),
        "cut after {took:?}"
    );
}

fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[tokio::test]
async fn unknown_hosts_get_a_clear_404() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    let response = ember
        .ingress_client("nobody")
        .get(ember.ingress_url("nobody", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nobody.ember.localhost"),
        "{body}"
    );
}

#[tokio::test]
async fn ram_caps_what_a_guest_may_grow_its_memory_to() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    // 100 pages are 6.25 MiB.
    let grower = fixtures::memory_grower(100);
    ember
        .deploy_wasm("small", &grower, json!({ "ram": "4Mi" }))
        .await;
    ember
        .deploy_wasm("large", &grower, json!({ "ram": "64Mi" }))
        .await;
    assert_eq!(
        ember.invoke("small").await,
        (StatusCode::OK, "refused\n".to_string())
    );
    assert_eq!(
        ember.invoke("large").await,
        (StatusCode::OK, "grown\n".to_string())
    );
}

#[test]
fn the_shipped_hello_component_is_built_from_its_source() {
    let built = common::component::component_from_wat(include_str!("../examples/hello/hello.wat"));
    assert!(
        built == ember::workloads::HELLO_COMPONENT,
        "examples/hello/hello.wasm is stale: rebuild it with \
         `cargo run --example wat2component -- examples/hello/hello.wat examples/hello/hello.wasm`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_300_s_by_default_and_the_queue_wait_is_bounded_apart() {
    let dir = temp_dir();
    // The wait for an instance is allowed 1 s; a request that runs 2 s once it
    // has one is not cut by it.
    let ember = Ember::start(dir.path(), &["--queue-timeout", "1"]);
    let slow = ember
        .deploy_wasm("slow", &fixtures::sleeper(2000), json!({}))
        .await;
    assert_eq!(slow["timeoutSeconds"], 300, "{slow}");
    let (status, body) = ember.invoke("slow").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_container_s_timeouts_cut_its_requests_with_a_504_and_are_counted() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    // The whole request: a guest that answers after 3 s, allowed 1 (cut where it
    // waits, not when it next runs). Its instance is up first, so that the time
    // measured is the request's alone.
    let whole = ember
        .deploy_wasm(
            "whole",
            &fixtures::sleeper(3000),
            json!({ "timeoutSeconds": 1, "minInstances": 1 }),
        )
        .await;
    assert_eq!(whole["timeoutSeconds"], 1, "{whole}");
    let id = whole["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ember
        .instances(id)
        .await
        .iter()
        .any(|i| i["state"]["current"] == "running")
    {
        assert!(std::time::Instant::now() < deadline, "no instance ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    let (status, body) = ember.invoke("whole").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("\"timeout\""), "{body}");
    assert!(started.elapsed() < Duration::from_millis(2500));

    // The start of the response: allowed 1 s of the request's 10.
    ember
        .deploy_wasm(
            "start",
            &fixtures::sleeper(3000),
            json!({ "timeoutSeconds": 10, "responseStartTimeoutSeconds": 1 }),
        )
        .await;
    let (status, body) = ember.invoke("start").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("response_start_timeout"), "{body}");

    // A started response's silence: the head comes at once, the body after 3 s,
    // allowed 1 s of silence: the client's body ends short.
    let silent = ember
        .deploy_wasm(
            "silent",
            &fixtures::slow_body(3000),
            json!({ "streamIdleTimeoutSeconds": 1 }),
        )
        .await;
    let response = ember
        .ingress_client("silent")
        .get(ember.ingress_url("silent", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.text().await.is_err(),
        "the body should have been cut"
    );
    // Given more silence than the guest keeps, the same guest answers whole.
    let (status, _) = ember
        .send_json(
            Method::PUT,
            &format!("/v1/containers/{}", silent["id"].as_str().unwrap()),
            &json!({ "streamIdleTimeoutSeconds": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    ember.wait_deployed(silent["id"].as_str().unwrap()).await;
    // Until the new revision serves, a request may still meet the old limit and
    // have its body cut: asked again then.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = ember
            .ingress_client("silent")
            .get(ember.ingress_url("silent", "/"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await;
        if status == StatusCode::OK && body.as_deref().ok() == Some("Hello from Ember!\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body:?}");
    }

    for limit in ["request", "response_start", "stream_idle"] {
        let cut = ember
            .metric(&format!(
                "ember_request_timeouts_total{{limit=\"{limit}\"}}"
            ))
            .await;
        assert!(cut >= 1.0, "{limit}: {cut}");
    }
    // Out of bounds, or a start longer than the whole: refused, naming the field.
    for (body, field) in [
        (json!({ "timeoutSeconds": 0 }), "timeoutSeconds"),
        (json!({ "timeoutSeconds": 3601 }), "timeoutSeconds"),
        (
            json!({ "streamIdleTimeoutSeconds": 0 }),
            "streamIdleTimeoutSeconds",
        ),
        (
            json!({ "timeoutSeconds": 5, "responseStartTimeoutSeconds": 6 }),
            "responseStartTimeoutSeconds",
        ),
    ] {
        let mut body = body;
        body["name"] = json!("refused");
        body["image"] = json!(whole["image"]);
        let (status, answer) = ember.send_json(Method::POST, "/v1/containers", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_starts_and_a_failing_liveness_probe_replaces_the_instance() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &[]);
    // Probes that pass: served as before, and shown as set.
    let ready = ember
        .deploy_wasm(
            "ready",
            &fixtures::hello("ready\n"),
            json!({
                "readinessProbe": { "httpGet": { "path": "/healthz" } },
                "livenessProbe": { "httpGet": { "path": "/healthz" }, "periodSeconds": 1 },
            }),
        )
        .await;
    assert_eq!(
        ready["readinessProbe"]["httpGet"]["path"], "/healthz",
        "{ready}"
    );
    assert_eq!(ready["livenessProbe"]["periodSeconds"], 1, "{ready}");
    assert_eq!(
        ember.invoke("ready").await,
        (StatusCode::OK, "ready\n".to_string())
    );

    // A readiness probe that never passes: the start fails once its allowance
    // (period × threshold, 2 s) is spent, and the request is told why at once.
    ember
        .deploy_wasm(
            "unready",
            &fixtures::answering_status(503),
            json!({ "readinessProbe": {
                "httpGet": { "path": "/healthz" }, "periodSeconds": 1, "failureThreshold": 2
            } }),
        )
        .await;
    let started = std::time::Instant::now();
    let (status, body) = ember.invoke("unready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("start_failed") && body.contains("readiness probe"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A liveness probe that fails: the instance is replaced, counted in
    // `restarts`, and `statusReason` says why.
    let unhealthy = ember
        .deploy_wasm(
            "unhealthy",
            &fixtures::answering_status(500),
            json!({ "minInstances": 1, "livenessProbe": {
                "httpGet": { "path": "/live" }, "periodSeconds": 1, "failureThreshold": 2
            } }),
        )
        .await;
    let id = unhealthy["id"].as_str().unwrap();
    let replaced = ember
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(30),
            |c| (c["restarts"].as_u64() >= Some(1)).then(|| c.clone()),
        )
        .await;
    let reason = replaced["statusReason"].as_str().unwrap_or_default();
    assert!(reason.contains("liveness probe"), "{replaced}");
    assert!(reason.contains("500"), "{replaced}");

    // Malformed probes are refused, naming the field, and nothing is made.
    for (probe, field) in [
        (json!({ "readinessProbe": {} }), "readinessProbe"),
        (
            json!({ "livenessProbe": { "httpGet": { "path": "live" } } }),
            "livenessProbe.httpGet.path",
        ),
        (
            json!({ "startupProbe": { "tcpSocket": {}, "failureThreshold": 0 } }),
            "startupProbe.failureThreshold",
        ),
    ] {
        let mut body = probe;
        body["name"] = json!("refused");
        body["image"] = json!(ready["image"]);
        let (status, answer) = ember.send_json(Method::POST, "/v1/containers", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
}
