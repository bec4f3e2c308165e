//! A component built by componentize-py (which imports all of WASI, not only
//! wasi:http) runs, sees its environment, and streams bodies both ways; as a
//! hostile guest, it reaches nothing outside its sandbox.

mod common;

use common::{Ember, temp_dir};
use reqwest::StatusCode;
use serde_json::json;
use std::process::Command;

/// Builds examples/python-echo with its own build script. Fails (never skips) when
/// componentize-py is missing: the README's test command installs it.
fn build_python_echo(out: &std::path::Path) -> Vec<u8> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python-echo/build.sh");
    let status = Command::new(script).arg(out).status().expect(
        "running examples/python-echo/build.sh (needs componentize-py: scripts/test installs it)",
    );
    assert!(
        status.success(),
        "building the Python component failed; is componentize-py installed?"
    );
    std::fs::read(out).unwrap()
}

/// The component, built once for every test here (a build takes a while).
fn python_echo() -> &'static [u8] {
    static BUILT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = temp_dir();
        build_python_echo(&dir.path().join("echo.wasm"))
    })
}

#[tokio::test]
async fn a_hostile_python_guest_reaches_nothing_outside_its_sandbox() {
    let dir = temp_dir();
    let wasm = python_echo();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    ember
        .deploy_wasm("pyhostile", wasm, json!({ "env": { "GREETING": "hi" } }))
        .await;
    let client = ember.ingress_client("pyhostile");
    let report = client
        .get(ember.ingress_url("pyhostile", "/escape"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let attempts: Vec<&str> = report.lines().collect();
    assert_eq!(attempts.len(), 8, "{report}");
    for attempt in attempts {
        assert!(
            attempt.contains(": refused"),
            "a way out: {attempt}\n{report}"
        );
    }
    // Outbound HTTP is denied too, and the guest still serves.
    let outbound = client
        .get(ember.ingress_url("pyhostile", "/outbound"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(outbound.starts_with("outbound: denied"), "{outbound}");
    let (status, body) = ember.invoke("pyhostile").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("hi GET /"), "{body}");
}

#[tokio::test]
async fn a_componentize_py_component_streams_bodies_both_ways() {
    let dir = temp_dir();
    let wasm = python_echo();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    ember
        .deploy_wasm(
            "pyecho",
            wasm,
            json!({ "env": { "GREETING": "hello from python" } }),
        )
        .await;
    let client = ember.ingress_client("pyecho");

    // A large body makes the round trip in 4 KiB chunks.
    let body: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let response = client
        .post(ember.ingress_url("pyecho", "/big?x=1"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = response.bytes().await.unwrap();
    let head = b"hello from python POST /big?x=1\n";
    assert_eq!(&answer[..head.len()], head);
    assert!(answer[head.len()..] == body[..], "the echoed body differs");

    // Streaming: the first part of the answer arrives before the request body is complete.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    tx.send(Ok(b"first-part;".to_vec())).await.unwrap();
    let mut response = client
        .put(ember.ingress_url("pyecho", "/stream"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("first-part;") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), response.chunk())
            .await
            .expect("the first part was not echoed while the request was still open")
            .unwrap()
            .expect("the body ended early");
        received.extend_from_slice(&chunk);
    }
    tx.send(Ok(b"second-part".to_vec())).await.unwrap();
    drop(tx);
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(
        String::from_utf8(received).unwrap(),
        "hello from python PUT /stream\nfirst-part;second-part"
    );

    // What the guest printed is in the container's logs, as an OCI container's
    // stdout is.
    let (_, containers) = ember.get_json("/v1/containers").await;
    let id = containers["items"][0]["id"].as_str().unwrap().to_string();
    let logs = ember.logs(&id).await;
    let line = logs
        .lines()
        .find(|l| l.contains("served POST /big?x=1"))
        .unwrap_or_else(|| panic!("the guest's print is not logged: {logs}"));
    let event: serde_json::Value =
        serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["stream"], "stdout");

    // Guests have no outbound network: the host refuses the request itself.
    let response = client
        .get(ember.ingress_url("pyecho", "/outbound"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        "outbound: denied ErrorCode_HttpRequestDenied\n"
    );
}

#[tokio::test]
async fn a_guest_calls_the_hosts_its_container_lists_and_nothing_else() {
    let dir = temp_dir();
    let wasm = python_echo();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    ember
        .deploy_wasm(
            "callee",
            &common::fixtures::hello("from the callee\n"),
            json!({}),
        )
        .await;
    let port = ember.ingress.port();
    let callee = format!("callee.ember.localhost:{port}");
    let api = format!("127.0.0.1:{}", ember.api.port());
    let caller = ember
        .deploy_wasm(
            "caller",
            wasm,
            json!({ "allowedOutboundHosts": [format!("http://{callee}"), api] }),
        )
        .await;
    assert_eq!(
        caller["allowedOutboundHosts"],
        json!([format!("http://{callee}"), api]),
        "{caller}"
    );
    let fetch = |url: String| {
        let client = ember.ingress_client("caller");
        let through = ember.ingress_url("caller", &format!("/fetch?url={url}"));
        async move {
            let response = client.get(through).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.unwrap()
        }
    };
    // Another container through the node's own ingress, started cold for it.
    assert_eq!(
        fetch(format!("http://{callee}/")).await,
        "fetched 200: from the callee\n"
    );
    // A container not listed, a listed host on another port, a listed address
    // that is not public (the node's own API): refused, and the guest says so.
    for (url, error) in [
        (
            format!("http://other.ember.localhost:{port}/"),
            "HttpRequestDenied",
        ),
        (
            format!("http://callee.ember.localhost:{}/", port + 1),
            "HttpRequestDenied",
        ),
        (format!("https://{callee}/"), "HttpRequestDenied"),
        (format!("http://{api}/healthz"), "DestinationIpProhibited"),
    ] {
        let answer = fetch(url.clone()).await;
        assert!(
            answer.starts_with("denied ") && answer.contains(error),
            "{url}: {answer}"
        );
    }
    // Entries are exact: anything looser is refused, naming the entry.
    for bad in ["callee.ember.localhost", "*.example.com:80", "ftp://x:21"] {
        let (status, answer) = ember
            .send_json(
                reqwest::Method::POST,
                "/v1/containers",
                &json!({ "name": "loose", "image": caller["image"], "allowedOutboundHosts": [bad] }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"], "allowedOutboundHosts[0]", "{answer}");
    }
}
