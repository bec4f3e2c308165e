//! Ten thousand wasm containers on one node, from a real registry: they all
//! deploy, and a runtime killed with SIGKILL comes back with every one of them,
//! answering its API and its ingress within two seconds of starting, three times
//! in a row.

mod common;

use common::{Ember, registry::Registry, temp_dir};
use ember::workloads::{HELLO_BODY, HELLO_COMPONENT};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONTAINERS: usize = 10_000;
/// Clients creating containers at once, each on its own keep-alive connection.
const CLIENTS: usize = 8;
/// How soon after it starts a restarted runtime must answer.
const RESTART_BUDGET: Duration = Duration::from_secs(2);

fn name(n: usize) -> String {
    format!("scale-{n:05}")
}

/// Creates containers `n` for every `n` in `range` of `image`, one after another.
async fn create(ember: Arc<Ember>, image: String, numbers: Vec<usize>) {
    for n in numbers {
        let body = json!({ "name": name(n), "image": image, "idleTimeoutSeconds": 1 });
        let (status, created) = ember
            .send_json(reqwest::Method::POST, "/v1/containers", &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
}

/// Every container's name, read page by page through the list's cursors.
async fn every_name(ember: &Ember) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut path = "/v1/containers?rowsPerPage=100".to_string();
    loop {
        let (status, page) = ember.get_json(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            names.insert(item["name"].as_str().unwrap().to_string());
        }
        match page["continue"].as_str() {
            Some(cursor) => path = format!("/v1/containers?rowsPerPage=100&continue={cursor}"),
            None => return names,
        }
    }
}

async fn total(ember: &Ember, query: &str) -> u64 {
    let (status, page) = ember
        .get_json(&format!("/v1/containers?rowsPerPage=1&{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["total"].as_u64().unwrap()
}

/// Polls until the restarted runtime is ready, lists every container and its
/// ingress serves one of them; returns how long that took from `started`.
async fn answering(ember: &Ember, started: Instant) -> Duration {
    let client = ember.ingress_client(&name(CONTAINERS - 1));
    loop {
        let ready = ember
            .http()
            .get(ember.api_url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready && total(ember, "").await == CONTAINERS as u64 {
            let response = client
                .get(ember.ingress_url(&name(CONTAINERS - 1), "/"))
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::OK {
                assert_eq!(response.text().await.unwrap(), HELLO_BODY);
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the restarted runtime did not answer within a minute"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_containers_deploy_and_come_back_at_once_after_each_kill() {
    let registry = Registry::start().unwrap();
    registry
        .push_wasm("scale/hello", "v1", HELLO_COMPONENT)
        .await
        .unwrap();
    let image = format!("{}/scale/hello:v1", registry.addr);
    let data = temp_dir();
    let ember = Arc::new(Ember::start(data.path(), &[]));

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let numbers = (client..CONTAINERS).step_by(CLIENTS).collect();
            tokio::spawn(create(ember.clone(), image.clone(), numbers))
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let created = started.elapsed();
    ember
        .wait_for(
            "/v1/containers?status=deploying&rowsPerPage=1",
            Duration::from_secs(300),
            |page: &Value| (page["total"] == 0).then_some(()),
        )
        .await;
    eprintln!(
        "{CONTAINERS} containers created in {created:?}, all deployed {:?} after the first",
        started.elapsed()
    );
    assert_eq!(total(&ember, "status=failed").await, 0);
    assert_eq!(total(&ember, "status=deployed").await, CONTAINERS as u64);
    let expected: BTreeSet<_> = (0..CONTAINERS).map(name).collect();
    assert_eq!(every_name(&ember).await, expected);

    let mut ember = Arc::into_inner(ember).expect("the clients are done");
    for round in 1..=3 {
        ember.kill();
        let started = Instant::now();
        ember = Ember::start(data.path(), &[]);
        let took = answering(&ember, started).await;
        eprintln!("restart {round}: ready, listing and routing {took:?} after start");
        assert!(
            took < RESTART_BUDGET,
            "restart {round} took {took:?} to answer"
        );
        assert_eq!(every_name(&ember).await, expected, "restart {round}");
        assert_eq!(total(&ember, "status=deployed").await, CONTAINERS as u64);
        // A page deep in the list, by number, is the same rows the cursor gave.
        let (status, page) = ember
            .get_json("/v1/containers?rowsPerPage=100&page=77")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["items"].as_array().unwrap().len(), 100);
    }
}
