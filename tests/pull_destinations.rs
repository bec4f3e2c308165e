//! Image pulls reach only what `--allowed-registries` allows: a tenant cannot aim
//! the node's pulls at its loopback services, a metadata address or a private
//! network, neither directly nor through a registry that redirects there, and a
//! failed pull's reason carries nothing the far end wrote.

mod common;

use common::{Ember, fixtures, registry::Registry, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A service on 127.0.0.6 that no pull may reach; it notes whether anything
/// connected to it.
async fn forbidden_service() -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.6:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reached = Arc::new(AtomicBool::new(false));
    let flag = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            flag.store(true, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nsecret-content")
                .await;
        }
    });
    (addr, reached)
}

/// A "registry" on 127.0.0.5 that answers every request with a redirect to `to`.
async fn redirector(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&head)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{to}{path}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

async fn create(ember: &Ember, name: &str, image: &str) -> (StatusCode, serde_json::Value) {
    ember
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": name, "image": image }),
        )
        .await
}

async fn wait_settled(ember: &Ember, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, c) = ember.get_json(&format!("/v1/containers/{id}")).await;
        if c["status"] != "deploying" {
            return c;
        }
        assert!(Instant::now() < deadline, "still deploying: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pulls_reach_only_the_registries_the_operator_allows() {
    let registry = Registry::start().unwrap();
    registry
        .push_wasm("apps/hello", "v1", &fixtures::hello("pulled\n"))
        .await
        .unwrap();
    let (forbidden, reached) = forbidden_service().await;
    let redirecting = redirector(forbidden).await;
    let rules = format!(
        "public,127.0.0.1:{},{}",
        registry.addr.port(),
        redirecting.ip()
    );
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &["--allowed-registries", &rules]);

    // Named by address, a destination no rule allows is refused at create, and
    // nothing is created.
    for (image, class) in [
        (format!("{}/x:y", ember.api), "a loopback address"),
        (format!("{forbidden}/x:y"), "a loopback address"),
        (
            "169.254.169.254/latest/meta-data:v1".to_string(),
            "a link-local address",
        ),
        ("10.1.2.3:5000/x:y".to_string(), "a private address"),
        ("[::1]:5000/x:y".to_string(), "a loopback address"),
        ("localhost:5000/x:y".to_string(), "a loopback address"),
    ] {
        let (status, body) = create(&ember, "probe", &image).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{image}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(class) && message.contains("--allowed-registries"),
            "{image}: {body}"
        );
    }
    let (_, list) = ember.get_json("/v1/containers").await;
    assert_eq!(list["total"], 0, "{list}");

    // A registry the rules allow that redirects to one they do not: the pull is
    // refused at the redirect, and the reason says so without the far end's words.
    let (status, created) = create(&ember, "redirected", &format!("{redirecting}/x:y")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let failed = wait_settled(&ember, created["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["statusReason"].as_str().unwrap();
    assert!(
        reason.contains("refused") && reason.contains(&forbidden.to_string()),
        "{reason}"
    );
    assert!(!reason.contains("secret-content"), "{reason}");
    assert!(
        !reached.load(Ordering::SeqCst),
        "a pull connected to the forbidden service"
    );

    // The allowed loopback registry serves as before.
    let (status, created) =
        create(&ember, "hello", &format!("{}/apps/hello:v1", registry.addr)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let deployed = wait_settled(&ember, created["id"].as_str().unwrap()).await;
    assert_eq!(deployed["status"], "deployed", "{deployed}");
    assert_eq!(
        ember.invoke("hello").await,
        (StatusCode::OK, "pulled\n".into())
    );

    // A tag the registry lacks: the reason says "not found", in Ember's words.
    let (_, created) = create(
        &ember,
        "missing",
        &format!("{}/apps/hello:nope", registry.addr),
    )
    .await;
    let failed = wait_settled(&ember, created["id"].as_str().unwrap()).await;
    let reason = failed["statusReason"].as_str().unwrap();
    assert!(reason.contains("not found"), "{reason}");
}

#[tokio::test]
async fn by_default_a_runtime_whose_api_is_on_loopback_pulls_from_loopback_and_public_only() {
    let (forbidden, reached) = forbidden_service().await;
    let dir = temp_dir();
    // The default: public, and loopback (the API listens on 127.0.0.1).
    let ember = Ember::start(dir.path(), &[]);
    let (status, body) = create(&ember, "meta", "169.254.169.254/x:y").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // 127.0.0.6 is loopback: allowed by default, so the pull reaches it (and fails
    // on what it answers, without echoing it).
    let (status, created) = create(&ember, "local", &format!("{forbidden}/x:y")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let failed = wait_settled(&ember, created["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    let reason = failed["statusReason"].as_str().unwrap();
    assert!(!reason.contains("secret-content"), "{reason}");
    assert!(reached.load(Ordering::SeqCst));
}
