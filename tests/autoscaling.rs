//! Autoscaling and the activator's queue through the real ingress, and the
//! instances API with its jobs, against wasm containers.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn wait_job(ember: &Ember, job: &Value) -> Value {
    let path = job["links"]["self"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ember.get_json(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match body["data"]["state"]["current"].as_str().unwrap() {
            "completed" | "error" => return body["data"].clone(),
            _ => assert!(Instant::now() < deadline, "job never finished: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_at_zero_starts_several_instances_in_parallel_and_they_all_go_when_idle() {
    let data = temp_dir();
    let ember = Ember::start(data.path(), &[]);
    let container = ember
        .deploy_wasm(
            "bursty",
            &fixtures::sleeper(300),
            json!({ "concurrency": 20, "idleTimeoutSeconds": 2, "cpu": 0.05, "ram": "16Mi" }),
        )
        .await;
    let id = container["id"].as_str().unwrap();
    assert!(ember.instances(id).await.is_empty());

    let results = ember.burst("bursty", "/", 200).await;
    common::assert_all_answered(&results, "slept\n");

    // 200 requests of 300 ms at 20 per instance need at least 10 instances at once.
    let instances = ember.instances(id).await;
    assert!(instances.len() >= 10, "only {} instances", instances.len());
    let panics = ember
        .metric(&format!(
            "ember_scaling_decisions_total{{container=\"{id}\",reason=\"cold_start\"}}"
        ))
        .await
        + ember
            .metric(&format!(
                "ember_scaling_decisions_total{{container=\"{id}\",reason=\"panic\"}}"
            ))
            .await;
    assert!(panics >= 1.0, "no burst decision recorded");

    ember.wait_scaled_to_zero(id, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_with_retry_after_and_the_queued_are_served() {
    let data = temp_dir();
    let ember = Ember::start(data.path(), &[]);
    let container = ember
        .deploy_wasm(
            "narrow",
            &fixtures::sleeper(500),
            json!({ "maxInstances": 1, "concurrency": 1, "queueDepth": 5 }),
        )
        .await;
    let id = container["id"].as_str().unwrap();
    // Warm, so the burst finds one instance with one slot.
    assert_eq!(ember.invoke("narrow").await.0, StatusCode::OK);

    let began = Instant::now();
    let results = ember.burst("narrow", "/", 12).await;
    let served = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let refused: Vec<_> = results
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    // One in flight and five queued are served, one after another; the rest are
    // refused at once.
    assert_eq!((served, refused.len()), (6, 6), "{results:?}");
    for (_, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "queue_full", "{body}");
    }
    assert!(began.elapsed() >= Duration::from_millis(2500));
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        ember.instances(id).await.len(),
        1,
        "maxInstances was passed"
    );
    let queued = ember
        .metric(&format!("ember_container_queued{{container=\"{id}\"}}"))
        .await;
    assert_eq!(queued, 0.0);
}

#[tokio::test]
async fn a_container_that_can_never_fit_is_refused_at_create() {
    let data = temp_dir();
    // No CDI specs, so no GPUs, whatever the machine has.
    let specs = data.path().join("no-cdi-specs");
    let ember = Ember::start(
        &data.path().join("data"),
        &[
            "--node-cpus",
            "2",
            "--node-memory",
            "4Gi",
            "--cdi-spec-dir",
            specs.to_str().unwrap(),
        ],
    );
    let digest = ember.upload(&fixtures::hello("hi")).await;
    // GPUs are for container images (never pulled: refused before).
    let image = "127.0.0.1:1/never/pulled:v1".to_string();
    for (field, value, needle, image) in [
        (
            "ram",
            json!("100Ti"),
            "of memory, 4096Mi available",
            &digest,
        ),
        ("cpu", json!(3), "asks for 3 CPU, 2 available", &digest),
        ("gpu", json!(1), "asks for 1 GPU, 0 available", &image),
    ] {
        let mut body = json!({ "name": "huge", "image": image });
        body[field] = value;
        let (status, error) = ember.send_json(Method::POST, "/v1/containers", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["field"], field, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
        assert!(message.contains("no server can ever run"), "{message}");
    }
    let (_, list) = ember.get_json("/v1/containers").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

    let (_, servers) = ember.get_json("/v1/servers").await;
    let server = &servers["data"][0];
    assert_eq!(server["capacity"]["cpu"], 2.0, "{servers}");
    assert_eq!(server["capacity"]["ram"], "4096Mi", "{servers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_by_hand_stay_through_idleness_and_restarts_until_deleted() {
    let data = temp_dir();
    let mut ember = Ember::start(data.path(), &[]);
    let container = ember
        .deploy_wasm(
            "pinned",
            &fixtures::hello("pinned\n"),
            json!({ "idleTimeoutSeconds": 1, "cpu": 0.1, "ram": "16Mi" }),
        )
        .await;
    let id = container["id"].as_str().unwrap().to_string();
    let (_, servers) = ember.get_json("/v1/servers").await;
    let server_id = servers["data"][0]["id"].as_str().unwrap().to_string();
    let instances_path = format!("/v1/containers/{id}/instances");

    // Bad input changes nothing.
    for (body, field) in [
        (
            json!([{ "server_id": server_id, "new_instances": 0 }]),
            Some("[0].new_instances"),
        ),
        (
            json!([{ "server_id": "nope", "new_instances": 1 }]),
            Some("[0].server_id"),
        ),
        (
            json!([{ "server_id": uuid_like(), "new_instances": 1 }]),
            Some("[0].server_id"),
        ),
        (
            json!([{ "server_id": server_id, "new_instances": 1, "x": 1 }]),
            Some("[0].x"),
        ),
        (json!([]), None),
        (json!({ "server_id": server_id }), None),
    ] {
        let (status, error) = ember.send_json(Method::POST, &instances_path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {error}");
        if let Some(field) = field {
            assert_eq!(error["field"], field, "{error}");
        }
    }
    assert!(ember.instances(&id).await.is_empty());

    let (status, job) = ember
        .send_json(
            Method::POST,
            &instances_path,
            &json!([{ "server_id": server_id, "new_instances": 2 }]),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["data"]["type"], "container.instances.create");
    let done = wait_job(&ember, &job["data"]).await;
    assert_eq!(done["state"]["current"], "completed", "{done}");
    assert_eq!(done["steps"]["done"], 2);

    // Pinned instances outlive the idle timeout, and serve.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let instances = ember.instances(&id).await;
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert!(instances.iter().all(|i| i["pinned"] == true));
    assert_eq!(ember.invoke("pinned").await.1, "pinned\n");
    let one = instances[0]["id"].as_str().unwrap().to_string();
    let (status, got) = ember.get_json(&format!("{instances_path}/{one}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["data"]["id"], one.as_str());
    assert_eq!(got["data"]["state"]["current"], "running");

    // A restart brings them back: the pinned count was stored.
    drop(ember);
    ember = Ember::start(data.path(), &[]);
    ember.wait_deployed(&id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ember.instances(&id).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "pinned instances did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting one leaves the other; deleting all leaves none.
    let one = ember.instances(&id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, job) = ember
        .send_json(
            Method::DELETE,
            &format!("{instances_path}/{one}"),
            &json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        wait_job(&ember, &job["data"]).await["state"]["current"],
        "completed"
    );
    let (status, _) = ember.get_json(&format!("{instances_path}/{one}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ember.instances(&id).await.len(), 1);

    let (status, job) = ember
        .send_json(Method::DELETE, &instances_path, &json!(null))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        wait_job(&ember, &job["data"]).await["state"]["current"],
        "completed"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(ember.instances(&id).await.is_empty());
    let (_, container) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(container["pinnedInstances"], 0);

    // Unknown ids are told apart from malformed ones.
    let (status, _) = ember
        .get_json(&format!("{instances_path}/{}", uuid_like()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = ember.get_json(&format!("{instances_path}/nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _) = ember.get_json(&format!("/v1/jobs/{}", uuid_like())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn uuid_like() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_scale_starts_instances_before_any_request_and_rps_scales_on_the_arrival_rate() {
    let data = temp_dir();
    let ember = Ember::start(data.path(), &[]);
    let small = json!({ "cpu": 0.05, "ram": "16Mi" });

    // initialScale: three instances with no request at all; once they have been
    // idle for the idle timeout, they go.
    let mut knobs = small.clone();
    knobs["initialScale"] = json!(3);
    knobs["idleTimeoutSeconds"] = json!(2);
    let warm = ember
        .deploy_wasm("warm", &fixtures::hello("warm\n"), knobs)
        .await;
    assert_eq!(warm["initialScale"], 3, "{warm}");
    let id = warm["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = ember
            .instances(&id)
            .await
            .iter()
            .filter(|i| i["state"]["current"] == "running")
            .count();
        if running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} of 3 initial instances"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let initial = ember
        .metric(&format!(
            "ember_scaling_decisions_total{{container=\"{id}\",reason=\"initial_scale\"}}"
        ))
        .await;
    assert!(initial >= 1.0, "{initial}");
    ember
        .wait_scaled_to_zero(&id, Duration::from_secs(20))
        .await;

    // metric rps: 10 a second each. About 50 requests a second, each answered at
    // once, never have more than one in flight (one instance on concurrency),
    // but need several instances on their rate.
    let mut knobs = small.clone();
    knobs["metric"] = json!("rps");
    knobs["targetRequestsPerSecond"] = json!(10);
    knobs["maxInstances"] = json!(20);
    let rated = ember
        .deploy_wasm("rated", &fixtures::hello("rated\n"), knobs)
        .await;
    assert_eq!(rated["metric"], "rps", "{rated}");
    assert_eq!(rated["targetRequestsPerSecond"], 10, "{rated}");
    let id = rated["id"].as_str().unwrap().to_string();
    let client = ember.ingress_client("rated");
    let url = ember.ingress_url("rated", "/");
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let instances = ember.instances(&id).await.len();
    assert!(
        instances >= 3,
        "{instances} instances for ~50 requests a second"
    );

    // The default container scales on concurrency and says so.
    let (_, plain) = ember
        .get_json(&format!("/v1/containers/{}", warm["id"].as_str().unwrap()))
        .await;
    assert_eq!(plain["metric"], "concurrency", "{plain}");
    assert_eq!(plain["targetRequestsPerSecond"], Value::Null, "{plain}");

    // Refused, naming the field, and nothing made.
    for (body, field) in [
        (json!({ "metric": "cpu" }), "metric"),
        (
            json!({ "targetRequestsPerSecond": 5 }),
            "targetRequestsPerSecond",
        ),
        (
            json!({ "metric": "rps", "targetRequestsPerSecond": 0 }),
            "targetRequestsPerSecond",
        ),
        (
            json!({ "initialScale": 5, "maxInstances": 2 }),
            "initialScale",
        ),
    ] {
        let mut body = body;
        body["name"] = json!("refused");
        body["image"] = json!(rated["image"]);
        let (status, answer) = ember.send_json(Method::POST, "/v1/containers", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (_, refused) = ember.get_json("/v1/containers/refused").await;
    assert_ne!(refused["name"], "refused", "{refused}");
}
