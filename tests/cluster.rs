//! Cluster mode for real: one etcd (Debian's `etcd-server`) and several `ember
//! serve --cluster` nodes on loopback, each with a data dir of its own.

mod common;

use common::Ember;
use common::etcd::Etcd;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `n` nodes of one cluster on `etcd`, named node-1, node-2, ...
fn start_nodes(etcd: &Etcd, n: usize) -> (Vec<Ember>, Vec<tempfile::TempDir>) {
    let dirs: Vec<_> = (0..n).map(|_| common::temp_dir()).collect();
    let nodes = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let name = format!("node-{}", i + 1);
            Ember::start(dir.path(), &["--cluster", &etcd.url, "--node-name", &name])
        })
        .collect();
    (nodes, dirs)
}

/// The names of the servers `node` lists.
async fn server_names(node: &Ember) -> Vec<String> {
    let (status, body) = node.get_json("/v1/servers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_every_member_and_a_killed_node_leaves_the_list() {
    let etcd = Etcd::start();
    let (mut nodes, _dirs) = start_nodes(&etcd, 3);
    for node in &nodes {
        assert_eq!(server_names(node).await, ["node-1", "node-2", "node-3"]);
    }
    let (_, body) = nodes[2].get_json("/v1/servers").await;
    for (server, node) in body["data"].as_array().unwrap().iter().zip(&nodes) {
        assert_eq!(server["api"], json!(node.api.to_string()), "{server}");
        assert_eq!(
            server["ingress"],
            json!(node.ingress.to_string()),
            "{server}"
        );
        assert!(
            server["capacity"]["cpu"].as_f64().unwrap() > 0.0,
            "{server}"
        );
    }
    // The CLI's table, from another node.
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["nodes", "--api", &format!("http://{}", nodes[1].api)])
        .env("EMBER_TOKEN", &nodes[0].token)
        .output()
        .unwrap();
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    for name in ["node-1", "node-2", "node-3"] {
        assert!(table.contains(name), "{table}");
    }

    // SIGKILL: the node's registration lapses with its lease (3 s).
    let killed = Instant::now();
    nodes.pop().unwrap().kill();
    loop {
        let names = server_names(&nodes[0]).await;
        if names == ["node-1", "node-2"] {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "a killed node still listed: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = killed.elapsed();
    assert!(gone_after >= Duration::from_secs(1), "{gone_after:?}");

    // A node that stops gracefully leaves at once.
    let stopped = Instant::now();
    let (_, clean) = nodes.pop().unwrap().terminate();
    assert!(clean);
    loop {
        if server_names(&nodes[0]).await == ["node-1"] {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "a stopped node still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_on_every_node_a_revoked_one_on_none_and_tenants_stay_apart() {
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 3);
    let mint = |user: &str| {
        let body = json!({ "user": user });
        let node = &nodes[0];
        async move {
            let (status, minted) = node.send_json(Method::POST, "/v1/tokens", &body).await;
            assert_eq!(status, StatusCode::CREATED, "{minted}");
            minted
        }
    };
    let alice = mint("alice").await;
    let bob = mint("bob").await;
    let secret = |minted: &Value| minted["token"].as_str().unwrap().to_string();

    // Alice's container, created through node 2.
    let (status, created) = nodes[1]
        .call_as(
            Some(&secret(&alice)),
            Method::POST,
            "/v1/containers",
            Some(&json!({ "name": "alices", "image": "registry.invalid/app:1" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    for node in &nodes {
        let (status, seen) = node
            .call_as(
                Some(&secret(&alice)),
                Method::GET,
                &format!("/v1/containers/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "alice on {}: {seen}", node.api);
        let (status, seen) = node
            .call_as(
                Some(&secret(&bob)),
                Method::GET,
                &format!("/v1/containers/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "bob on {}: {seen}", node.api);
    }
    // A name is unique across the cluster.
    let (status, clash) = nodes[2]
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": "alices", "image": "registry.invalid/app:1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{clash}");

    // Revoked on node 3: refused on every node within a second.
    let token_id = alice["id"].as_str().unwrap();
    let (status, _) = nodes[2]
        .send_json(
            Method::DELETE,
            &format!("/v1/tokens/{token_id}"),
            &json!({}),
        )
        .await;
    assert!(status.is_success(), "{status}");
    let revoked = Instant::now();
    for node in &nodes {
        loop {
            let (status, _) = node
                .call_as(Some(&secret(&alice)), Method::GET, "/v1/containers", None)
                .await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "{status} on {}",
                node.api
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
