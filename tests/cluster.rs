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

/// Waits until each of `nodes` lists `count` servers: a member's record reaches
/// the others through etcd, later on a loaded machine.
async fn wait_members(nodes: &[&Ember], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes {
        while server_names(node).await.len() < count {
            assert!(
                Instant::now() < deadline,
                "the members never saw each other"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
    let image = nodes[1].upload(&common::fixtures::hello("alice's")).await;

    // Alice's container, created through node 2.
    let (status, created) = nodes[1]
        .call_as(
            Some(&secret(&alice)),
            Method::POST,
            "/v1/containers",
            Some(&json!({ "name": "alices", "image": image })),
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
            &json!({ "name": "alices", "image": image }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{clash}");

    // A quota set through node 1 holds on node 3 within a few seconds.
    let (status, body) = nodes[0]
        .send_json(
            Method::PUT,
            "/v1/users/alice/quota",
            &json!({ "containers": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Nodes read the quotas again every 2 s.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, body) = nodes[2]
        .call_as(
            Some(&secret(&alice)),
            Method::POST,
            "/v1/containers",
            Some(&json!({ "name": "alices-second", "image": image })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "quota_exceeded", "{body}");

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

/// Waits until `node` answers `name` with `body`, as a node that follows a change
/// made on another does within a watch delivery.
async fn wait_answers(node: &Ember, name: &str, body: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, answer) = node.invoke(name).await;
        if status == StatusCode::OK && answer == body {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never answered {name} with {body:?}: {status} {answer}",
            node.ingress
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_deployed_through_one_node_is_served_updated_and_deleted_through_any() {
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 3);
    // Uploaded to node 1 and deployed there: node 3 fetches the component from
    // node 1 at its first cold start.
    let created = nodes[0]
        .deploy_wasm(
            "greeter",
            &common::fixtures::hello("hello from the cluster"),
            json!({ "idleTimeoutSeconds": 2 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let learned = Instant::now();
    wait_answers(
        &nodes[2],
        "greeter",
        "hello from the cluster",
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "node 3 served a container deployed on node 1 after {:?}",
        learned.elapsed()
    );
    let here = nodes[2].instances(&id).await;
    assert_eq!(here.len(), 1, "{here:?}");
    let (_, servers) = nodes[2].get_json("/v1/servers").await;
    let node_3_id = servers["data"][2]["id"].clone();
    assert_eq!(here[0]["server_id"], node_3_id, "{here:?}");
    // Scale to zero on node 3, and back through node 2.
    nodes[2]
        .wait_scaled_to_zero(&id, Duration::from_secs(20))
        .await;
    wait_answers(
        &nodes[1],
        "greeter",
        "hello from the cluster",
        Duration::from_secs(10),
    )
    .await;

    // An update through node 2 is served by every node.
    let digest = nodes[1]
        .upload(&common::fixtures::hello("revision two"))
        .await;
    let (status, updated) = nodes[1]
        .send_json(
            Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "image": digest }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    for node in &nodes {
        wait_answers(node, "greeter", "revision two", Duration::from_secs(15)).await;
    }
    // A delete through node 3 stops it everywhere.
    let (status, _) = nodes[2]
        .send_json(Method::DELETE, &format!("/v1/containers/{id}"), &json!({}))
        .await;
    assert!(status.is_success(), "{status}");
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _) = node.invoke("greeter").await;
            if status == StatusCode::NOT_FOUND {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still serves it: {status}",
                node.ingress
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_read_by_admins_only_and_checked_by_digest() {
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 1);
    let digest = nodes[0].upload(&common::fixtures::hello("blob")).await;
    let response = nodes[0]
        .api_request(Method::GET, &format!("/v1/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.bytes().await.unwrap().to_vec(),
        common::fixtures::hello("blob")
    );
    let (_, minted) = nodes[0]
        .send_json(Method::POST, "/v1/tokens", &json!({ "user": "carol" }))
        .await;
    let (status, body) = nodes[0]
        .call_as(
            minted["token"].as_str(),
            Method::GET,
            &format!("/v1/blobs/{digest}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let missing = format!("sha256:{}", "0".repeat(64));
    let (status, body) = nodes[0].get_json(&format!("/v1/blobs/{missing}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = nodes[0].get_json("/v1/blobs/not-a-digest").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("digest"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_later_or_restarts_serves_what_was_deployed_before() {
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 1);
    nodes[0]
        .deploy_wasm(
            "early",
            &common::fixtures::hello("deployed before you came"),
            json!({}),
        )
        .await;
    let late_dir = common::temp_dir();
    let late = Ember::start(
        late_dir.path(),
        &["--cluster", &etcd.url, "--node-name", "late"],
    );
    wait_answers(
        &late,
        "early",
        "deployed before you came",
        Duration::from_secs(10),
    )
    .await;
    // Killed and started again on its data dir: it loads the container from etcd
    // and serves it from the component it fetched before.
    late.kill();
    let late = Ember::start(
        late_dir.path(),
        &["--cluster", &etcd.url, "--node-name", "late"],
    );
    wait_answers(
        &late,
        "early",
        "deployed before you came",
        Duration::from_secs(10),
    )
    .await;
    let (_, servers) = late.get_json("/v1/servers").await;
    let names: Vec<_> = servers["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["late", "node-1"]);
}

/// GETs of `name` through `node`'s ingress, one after another, for `how_long`:
/// how many were answered 200, and how many not.
fn steady_load(
    node: &Ember,
    name: &str,
    how_long: Duration,
) -> tokio::task::JoinHandle<(usize, usize)> {
    let client = node.ingress_client(name);
    let url = node.ingress_url(name, "/");
    tokio::spawn(async move {
        let (mut answered, mut failed) = (0, 0);
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            match client.get(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => answered += 1,
                _ => failed += 1,
            }
        }
        (answered, failed)
    })
}

/// The server id of `node`, as the cluster lists it.
async fn server_id_of(node: &Ember) -> String {
    let (_, servers) = node.get_json("/v1/servers").await;
    servers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["api"] == json!(node.api.to_string()))
        .unwrap_or_else(|| panic!("{} is not among {servers}", node.api))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The instances of container `id` that `node` itself runs (any node lists the
/// whole cluster's).
async fn own_instances(node: &Ember, id: &str) -> Vec<Value> {
    let server = server_id_of(node).await;
    let (status, body) = node
        .get_json(&format!(
            "/v1/containers/{id}/instances?filter[server_id]={server}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Instances of container `id` on each node.
/// Pins one instance of container `id` on the member `on`, asked through `via`,
/// and waits until `on` runs it: its id.
async fn pin_one_and_wait(via: &Ember, on: &Ember, id: &str) -> String {
    let server = server_id_of(on).await;
    let (status, body) = via
        .send_json(
            Method::POST,
            &format!("/v1/containers/{id}/instances"),
            &json!([{ "server_id": server, "new_instances": 1 }]),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let own = own_instances(on, id).await;
        if let Some(running) = own.iter().find(|i| i["state"]["current"] == "running") {
            return running["id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the pinned instance never ran: {own:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn instances_per_node(nodes: &[Ember], id: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for node in nodes {
        counts.push(own_instances(node, id).await.len());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_instances_spread_over_nodes_and_a_killed_node_s_share_is_taken_over() {
    let etcd = Etcd::start();
    let (mut nodes, _dirs) = start_nodes(&etcd, 3);
    let created = nodes[0]
        .deploy_wasm(
            "kept",
            &common::fixtures::hello("kept warm"),
            json!({ "minInstances": 2 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    // Two instances in the cluster, on two nodes: not two per node.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = instances_per_node(&nodes, &id).await;
        if counts.iter().sum::<usize>() == 2 && counts.iter().all(|c| *c <= 1) {
            break counts;
        }
        assert!(Instant::now() < deadline, "instances per node: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let victim = counts.iter().position(|c| *c == 1).unwrap();
    let survivor = (0..3).find(|i| *i != victim && counts[*i] == 1).unwrap();
    let heir = counts.iter().position(|c| *c == 0).unwrap();

    // Steady load through a surviving node while the victim is killed.
    let load = steady_load(&nodes[survivor], "kept", Duration::from_secs(6));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    nodes.remove(victim).kill();
    // The node that held none (and took no load) takes the killed node's share.
    let heir = &nodes[if heir > victim { heir - 1 } else { heir }];
    let deadline = killed + Duration::from_secs(10);
    loop {
        if own_instances(heir, &id).await.len() == 1 {
            eprintln!(
                "the killed node's share was running elsewhere after {:?}",
                killed.elapsed()
            );
            break;
        }
        assert!(Instant::now() < deadline, "not replaced within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (answered, failed) = load.await.unwrap();
    eprintln!(
        "through a surviving node while one was killed: {answered} answered, {failed} failed"
    );
    assert!(answered > 0);
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_an_instance_sends_requests_to_a_warm_member_instead_of_cold_starting() {
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 3);
    let created = nodes[0]
        .deploy_wasm(
            "warm",
            &common::fixtures::hello("served warm"),
            json!({ "minInstances": 1 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = instances_per_node(&nodes, &id).await;
        if counts.iter().sum::<usize>() == 1 {
            break counts;
        }
        assert!(Instant::now() < deadline, "instances per node: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cold = counts.iter().position(|c| *c == 0).unwrap();
    // The members learn which node holds it warm within a second or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..20 {
        let (status, body) = nodes[cold].invoke("warm").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "served warm"));
    }
    assert_eq!(
        instances_per_node(&nodes, &id).await,
        counts,
        "a request through a node without an instance cold-started one there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_etcd_member_changes_nothing_losing_two_refuses_writes_and_keeps_reads() {
    let mut etcd = common::etcd::EtcdCluster::start(3).unwrap();
    let urls = etcd.urls();
    let dirs: Vec<_> = (0..2).map(|_| common::temp_dir()).collect();
    let nodes: Vec<Ember> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let name = format!("node-{}", i + 1);
            Ember::start(dir.path(), &["--cluster", &urls, "--node-name", &name])
        })
        .collect();
    let hello = common::fixtures::hello("still here");
    nodes[0].deploy_wasm("before", &hello, json!({})).await;
    wait_answers(&nodes[1], "before", "still here", Duration::from_secs(10)).await;

    // One member of three lost: writes and reads go on.
    etcd.kill(2);
    nodes[1].deploy_wasm("after-one", &hello, json!({})).await;
    wait_answers(
        &nodes[0],
        "after-one",
        "still here",
        Duration::from_secs(10),
    )
    .await;

    // Two lost: no quorum. A write is refused with a clear 503 and changes
    // nothing; reads answer from what the members know; traffic is served.
    etcd.kill(1);
    let digest = nodes[0].upload(&hello).await;
    let (status, body) = nodes[0]
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": "no-quorum", "image": digest }),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    for node in &nodes {
        let (status, listed) = node.get_json("/v1/containers").await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let names: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"before") && names.contains(&"after-one"),
            "{names:?}"
        );
        assert!(!names.contains(&"no-quorum"), "{names:?}");
        let (status, answer) = node.invoke("before").await;
        assert_eq!((status, answer.as_str()), (StatusCode::OK, "still here"));
    }

    // The members come back: writes work again.
    etcd.restart(1).unwrap();
    etcd.restart(2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = nodes[1]
            .send_json(
                Method::POST,
                "/v1/containers",
                &json!({ "name": "healed", "image": digest }),
            )
            .await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes not back after the members returned: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_answers(&nodes[0], "healed", "still here", Duration::from_secs(15)).await;
}

/// The pinned instances of container `id` on each node.
async fn pinned_per_node(nodes: &[Ember], id: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for node in nodes {
        let pinned = own_instances(node, id)
            .await
            .iter()
            .filter(|i| i["pinned"] == json!(true))
            .count();
        counts.push(pinned);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_pinned_on_a_named_server_start_there_and_outlive_its_loss() {
    let etcd = Etcd::start();
    let (mut nodes, _dirs) = start_nodes(&etcd, 3);
    let created = nodes[0]
        .deploy_wasm("pinned", &common::fixtures::hello("pinned"), json!({}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let (_, servers) = nodes[0].get_json("/v1/servers").await;
    let server_of = |name: &str| {
        servers["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == json!(name))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // An id no member has: 400 naming it.
    let stranger = "00000000-0000-4000-8000-000000000000";
    let (status, body) = nodes[0]
        .send_json(
            Method::POST,
            &format!("/v1/containers/{id}/instances"),
            &json!([{ "server_id": stranger, "new_instances": 1 }]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "[0].server_id", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(stranger),
        "{body}"
    );

    // Two on node 2, asked through node 1.
    let (status, body) = nodes[0]
        .send_json(
            Method::POST,
            &format!("/v1/containers/{id}/instances"),
            &json!([{ "server_id": server_of("node-2"), "new_instances": 2 }]),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pinned = pinned_per_node(&nodes, &id).await;
        if pinned == [0, 2, 0] {
            break;
        }
        assert!(Instant::now() < deadline, "pinned per node: {pinned:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Pins asked of two nodes at once edit the one record from both: each
    // node's write finds the other's and makes its own on top, none lost.
    let node_3 = server_of("node-3");
    let pins = (0..6).map(|n| {
        let (node, node_3, id) = (&nodes[[0, 2][n % 2]], node_3.clone(), id.clone());
        async move {
            node.send_json(
                Method::POST,
                &format!("/v1/containers/{id}/instances"),
                &json!([{ "server_id": node_3, "new_instances": 1 }]),
            )
            .await
        }
    });
    for (status, body) in futures::future::join_all(pins).await {
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pinned = pinned_per_node(&nodes, &id).await;
        if pinned == [0, 2, 6] {
            break;
        }
        assert!(Instant::now() < deadline, "pinned per node: {pinned:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node 2 lost: its two are dealt over the others once its lease lapses.
    nodes.remove(1).kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(10);
    loop {
        let pinned = pinned_per_node(&nodes, &id).await;
        if pinned.iter().sum::<usize>() == 8 {
            eprintln!(
                "pinned instances of a killed node ran elsewhere after {:?}: {pinned:?}",
                killed.elapsed()
            );
            break;
        }
        assert!(Instant::now() < deadline, "pinned per node: {pinned:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_cluster_bench_measures_the_hop_a_cold_start_and_the_scheduler() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["bench", "--cluster", "--quick"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for case in [
        "warm, through the node holding the instance",
        "warm, through the other node (one relay hop)",
        "cold start through a node, none warm anywhere",
        "scheduler decisions per second",
    ] {
        assert!(table.contains(case), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_with_no_room_here_is_placed_on_a_member_with_room() {
    let etcd = Etcd::start();
    let (small, large, _dirs) = small_and_large(&etcd);
    wait_members(&[&small, &large], 2).await;
    // Two CPUs an instance: never on `small`, which still takes the create.
    let created = small
        .deploy_wasm(
            "big",
            &common::fixtures::hello("placed by room"),
            json!({ "cpu": 2 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let (status, body) = small.invoke("big").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "placed by room"));
    assert_eq!(own_instances(&small, &id).await.len(), 0);
    assert_eq!(own_instances(&large, &id).await.len(), 1);
    // Any node lists the cluster's instances, each with its server.
    let listed = small.instances(&id).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["server_id"], json!(server_id_of(&large).await));
    // Stopping every instance through one node stops the others' too.
    let (status, body) = small
        .send_json(
            Method::DELETE,
            &format!("/v1/containers/{id}/instances"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    large
        .wait_scaled_to_zero(&id, Duration::from_secs(10))
        .await;
    // Nothing fits anywhere: refused at create, naming the field.
    let digest = small.upload(&common::fixtures::hello("too big")).await;
    let (status, body) = small
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": "huge", "image": digest, "cpu": 8 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "cpu", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_cluster_starts_nodes_in_namespaces_and_removes_them() {
    common::oci::require_root();
    let dir = common::temp_dir();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");
    let mut cluster = std::process::Command::new(script)
        .arg("2")
        .env("EMBER_BIN", env!("CARGO_BIN_EXE_ember"))
        .env("EMBER_CLUSTER_NET", "10.79.0")
        .env("EMBER_CLUSTER_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = cluster.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.starts_with("Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .join()
    .unwrap();
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("node-2: api http://10.79.0.2:8080")),
        "{printed:?}"
    );
    let token = std::fs::read_to_string(dir.path().join("node-1/admin.token")).unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed: Value = client
            .get("http://10.79.0.2:8080/v1/servers")
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed["data"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGTERM: the nodes and etcd stop, the namespaces and the host's veth go.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cluster.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(cluster.wait().unwrap().code().is_some());
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains("ember-cl-"));
    assert!(!std::path::Path::new("/sys/class/net/embcl-host").exists());
}

/// Waits until job `job` (as node `node` shows it) ends; its final state.
async fn job_outcome(node: &Ember, job: &Value) -> Value {
    let path = format!("/v1/jobs/{}", job["data"]["id"].as_str().unwrap());
    node.wait_for(&path, Duration::from_secs(60), |job| {
        let state = job["data"]["state"]["current"].as_str()?;
        (state == "completed" || state == "error").then(|| job.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_migrates_to_another_node_under_its_id_serving_throughout_and_back() {
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 2);
    let created = nodes[0]
        .deploy_wasm("mover", &common::fixtures::hello("moving"), json!({}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let two = server_id_of(&nodes[1]).await;
    // One instance, pinned on node 1.
    let instance = pin_one_and_wait(&nodes[0], &nodes[0], &id).await;

    // Steady traffic through node 1 while the instance moves to node 2.
    let load = steady_load(&nodes[0], "mover", Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/v1/containers/{id}/instances/{instance}/tasks");
    let (status, job) = nodes[0]
        .send_json(
            Method::POST,
            &path,
            &json!({ "action": "migration.start", "contents": { "server_id": two } }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let outcome = job_outcome(&nodes[0], &job).await;
    assert_eq!(
        outcome["data"]["state"]["current"], "completed",
        "{outcome}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // On node 2 under its id, still pinned; node 1's copy gone (an instance
        // node 1 started for the load meanwhile would be another id).
        let listed = nodes[1].instances(&id).await;
        let copies: Vec<_> = listed
            .iter()
            .filter(|i| i["id"] == json!(instance) && i["state"]["current"] == "running")
            .collect();
        if copies.len() == 1 && copies[0]["server_id"] == json!(two) {
            assert_eq!(copies[0]["pinned"], json!(true));
            break;
        }
        assert!(Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Any node answers for it by id.
    let (status, one) = nodes[0]
        .get_json(&format!("/v1/containers/{id}/instances/{instance}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["data"]["server_id"], json!(two), "{one}");
    let (answered, failed) = load.await.unwrap();
    eprintln!("through the move: {answered} answered, {failed} failed");
    assert!(answered > 0);
    assert_eq!(failed, 0);

    // An unknown server is a 400 naming the field; a revert brings it back, asked
    // of node 1, which no longer runs it and sends the request on to node 2.
    let (status, body) = nodes[1]
        .send_json(
            Method::POST,
            &path,
            &json!({ "action": "migration.start", "contents": { "server_id": "00000000-0000-4000-8000-000000000000" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "contents.server_id", "{body}");
    let (status, job) = nodes[0]
        .send_json(
            Method::POST,
            &path,
            &json!({ "action": "migration.revert", "contents": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let outcome = job_outcome(&nodes[1], &job).await;
    assert_eq!(
        outcome["data"]["state"]["current"], "completed",
        "{outcome}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let own = own_instances(&nodes[0], &id).await;
        if own
            .iter()
            .any(|i| i["id"] == json!(instance) && i["state"]["current"] == "running")
            && own_instances(&nodes[1], &id)
                .await
                .iter()
                .all(|i| i["state"]["current"] != "running")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{own:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_runs_the_manifest_the_tag_named_at_deploy_time() {
    let registry = ember::workloads::registry::Registry::start().unwrap();
    registry
        .push_wasm("apps/tagged", "v1", &common::fixtures::hello("first\n"))
        .await
        .unwrap();
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 2);
    let image = format!("{}/apps/tagged:v1", registry.addr);
    let created = nodes[0]
        .deploy(json!({ "name": "tagged", "image": image }))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(nodes[0].invoke("tagged").await.1, "first\n");
    // The tag moves on after the deploy.
    registry
        .push_wasm("apps/tagged", "v1", &common::fixtures::hello("second\n"))
        .await
        .unwrap();
    // Node 2 pulls only now, for an instance pinned on it: the manifest node 1
    // resolved, not the tag's new one.
    pin_one_and_wait(&nodes[0], &nodes[1], &id).await;
    for _ in 0..5 {
        assert_eq!(nodes[1].invoke("tagged").await.1, "first\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_face_shows_and_acts_on_another_node_s_instances_and_their_output() {
    const LINE: &str = "written-by-the-guest";
    let etcd = Etcd::start();
    let (nodes, _dirs) = start_nodes(&etcd, 2);
    let created = nodes[0]
        .deploy_wasm(
            "elsewhere",
            &common::fixtures::hello_logging("served\n", LINE),
            json!({}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    // One instance, pinned on node 2; node 1 runs none.
    let instance = pin_one_and_wait(&nodes[0], &nodes[1], &id).await;
    assert!(own_instances(&nodes[0], &id).await.is_empty());
    assert_eq!(nodes[1].invoke("elsewhere").await.1, "served\n");

    // The native logs API on node 1: node 2's lines, in a closed range...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = nodes[0].logs(&id).await;
        if text.contains(LINE) {
            assert!(text.contains(&instance), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2's line never showed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and followed: a line node 2's instance writes now arrives too.
    let mut follow = nodes[0]
        .api_request(Method::GET, &format!("/v1/containers/{id}/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), StatusCode::OK);
    let mut streamed = String::new();
    let mut read_lines = async |count: usize, streamed: &mut String| {
        while streamed.matches(LINE).count() < count {
            let chunk = tokio::time::timeout(Duration::from_secs(20), follow.chunk())
                .await
                .unwrap_or_else(|_| panic!("{count} lines did not come within 20 s: {streamed}"))
                .unwrap()
                .expect("the stream ended");
            streamed.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_lines(1, &mut streamed).await;
    assert_eq!(nodes[1].invoke("elsewhere").await.1, "served\n");
    read_lines(2, &mut streamed).await;
    drop(follow);

    // Tutum's face (003) on node 1 lists node 2's instance and reads it.
    let (_, list) = nodes[0].get_json("/api/v1/container/").await;
    let uuids: Vec<_> = list["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uuids, std::slice::from_ref(&instance), "{list}");
    assert_eq!(list["meta"]["total_count"], 1, "{list}");
    let (status, shown) = nodes[0]
        .get_json(&format!("/api/v1/container/{instance}/"))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let (status, logs) = nodes[0]
        .get_json(&format!("/api/v1/container/{instance}/logs/"))
        .await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(logs["logs"].as_str().unwrap().contains(LINE), "{logs}");

    // The container services face (001) on node 1 lists it, and the numbered
    // containers face (000) on node 1 shows and stops it on node 2.
    let (_, services) = nodes[0].get_json("/api/container_services").await;
    let service = services["container_services"][0]["id"].as_u64().unwrap();
    let (_, listed) = nodes[0]
        .get_json(&format!("/api/container_services/{service}/containers"))
        .await;
    let number = listed["containers"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{listed}"));
    let (status, shown) = nodes[0]
        .get_json(&format!("/api/containers/{number}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let (status, stopped) = nodes[0]
        .send_json(
            Method::PUT,
            &format!("/api/containers/{number}/power/stop"),
            &json!({}),
        )
        .await;
    assert!(status.is_success(), "{status} {stopped}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while own_instances(&nodes[1], &id)
        .await
        .iter()
        .any(|i| i["state"]["current"] == "running")
    {
        assert!(Instant::now() < deadline, "node 2's instance did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An instance no member has is still a 404.
    let (status, _) = nodes[0]
        .get_json("/api/v1/container/00000000-0000-4000-8000-000000000000/")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A small node (half a CPU) and a large one (four), on `etcd`.
fn small_and_large(etcd: &Etcd) -> (Ember, Ember, Vec<tempfile::TempDir>) {
    let dirs = vec![common::temp_dir(), common::temp_dir()];
    let node = |dir: &tempfile::TempDir, name: &str, cpus: &str| {
        Ember::start(
            dir.path(),
            &[
                "--cluster",
                &etcd.url,
                "--node-name",
                name,
                "--node-cpus",
                cpus,
            ],
        )
    };
    let small = node(&dirs[0], "small", "0.5");
    let large = node(&dirs[1], "large", "4");
    (small, large, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_instances_are_dealt_only_to_nodes_that_could_hold_them() {
    let etcd = Etcd::start();
    let (small, large, _dirs) = small_and_large(&etcd);
    wait_members(&[&small, &large], 2).await;
    let created = small
        .deploy_wasm(
            "kept-big",
            &common::fixtures::hello("kept"),
            json!({ "cpu": 2, "minInstances": 2 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (on_small, on_large) = (
            own_instances(&small, &id).await.len(),
            own_instances(&large, &id).await.len(),
        );
        if (on_small, on_large) == (0, 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kept instances: {on_small} on small, {on_large} on large"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_room_for_more_sends_the_overflow_to_a_member_with_room() {
    let etcd = Etcd::start();
    let (small, large, _dirs) = small_and_large(&etcd);
    wait_members(&[&small, &large], 2).await;
    // One request at a time an instance, a quarter of a CPU each: `small` holds
    // two, then has no room for a third.
    let created = small
        .deploy_wasm(
            "overflow",
            &common::fixtures::sleeper(1500),
            json!({ "cpu": 0.25, "concurrency": 1 }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let requests = (0..6).map(|_| small.invoke("overflow"));
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Requests that came at once may each have seen room for one more on
    // `small` (an instance then waits there for room a while): count those
    // that ran.
    let running = |listed: Vec<Value>| {
        listed
            .iter()
            .filter(|i| i["state"]["current"] == "running")
            .count()
    };
    let (on_small, on_large) = (
        running(own_instances(&small, &id).await),
        running(own_instances(&large, &id).await),
    );
    assert!(on_small <= 2, "{on_small} on small, {on_large} on large");
    assert!(on_large >= 1, "{on_small} on small, {on_large} on large");
}
