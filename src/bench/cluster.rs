//! `ember bench --cluster`: what cluster mode costs a request. One etcd (`etcd`
//! on the PATH, Debian's `etcd-server`) and two nodes of this executable on
//! loopback; a wasm container kept warm on one node (`minInstances: 1`). It
//! measures warm latency through the node that holds the instance and through
//! the other (one relay hop), a cold start through a node when no node holds
//! one, and the pure scheduler's decisions per second for 100 simulated nodes and
//! 10,000 containers (owner, this node's share, and a spread placement each).

use super::stats::Summary;
use super::target::Target;
use crate::workloads::HELLO_COMPONENT;
use anyhow::{Context, bail, ensure};
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The two nodes' names.
const NAMES: [&str; 2] = ["bench-a", "bench-b"];

/// What the run measured, as `--json` writes it.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub machine: super::report::Machine,
    /// Warm requests through the node that holds the instance.
    pub warm_on_holder: Summary,
    /// Warm requests through the other node, relayed to the holder.
    pub warm_relayed: Summary,
    /// First request through a node while no node holds an instance.
    pub cold_start: Summary,
    /// Decisions of the pure scheduler per second (100 nodes, 10,000 containers).
    pub scheduler_decisions_per_sec: f64,
}

/// A client whose requests for `host` go to `ingress`.
fn client_for(host: &str, ingress: SocketAddr) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .resolve(host, ingress)
        .pool_max_idle_per_host(4)
        .build()?)
}

/// `n` sequential GETs of `url`, each timed; every one must answer 200.
async fn timed_gets(client: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    let began = Instant::now();
    for _ in 0..n {
        let sent = Instant::now();
        let response = client.get(url).send().await?;
        ensure!(
            response.status().is_success(),
            "{url} answered {}",
            response.status()
        );
        response.bytes().await?;
        samples.push(sent.elapsed());
    }
    Summary::of(&samples, Some(began.elapsed())).context("no samples")
}

/// Instances of container `id` that node `name` runs (any node lists the
/// whole cluster's, each with its server).
async fn instances_on(node: &Target, name: &str, id: &str) -> anyhow::Result<usize> {
    let servers = node.client.get("/v1/servers").await?;
    let server = servers["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .and_then(|s| s["id"].as_str())
        .with_context(|| format!("{name} is not a member"))?
        .to_string();
    let listed = node
        .client
        .get(&format!(
            "/v1/containers/{id}/instances?filter[server_id]={server}"
        ))
        .await?;
    Ok(listed["data"].as_array().map_or(0, Vec::len))
}

pub async fn run_cluster(args: &super::BenchArgs) -> anyhow::Result<()> {
    let (warm_requests, cold_starts) = if args.quick { (500, 5) } else { (5_000, 20) };
    let etcd = crate::workloads::etcd::EtcdCluster::start(1)?;
    let url = etcd.urls();
    let node = |name: &str, bridge: &str, subnet: &str| {
        Target::start_node(&["--cluster", &url, "--node-name", name], bridge, subnet)
    };
    let nodes = [
        node(NAMES[0], "emberbench1", "10.251.1.0/24")?,
        node(NAMES[1], "emberbench2", "10.251.2.0/24")?,
    ];
    let outcome = measure(&nodes, warm_requests, cold_starts).await;
    for node in nodes {
        node.stop();
    }
    let report = outcome?;
    println!("{}", table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn measure(
    nodes: &[Target; 2],
    warm_requests: usize,
    cold_starts: usize,
) -> anyhow::Result<ClusterReport> {
    let uploaded = nodes[0].client.upload(HELLO_COMPONENT.to_vec()).await?;
    let digest = uploaded["digest"].as_str().context("a digest")?.to_string();
    let suffix = format!("{:06x}", std::process::id() & 0xff_ffff);

    // Kept warm on one node: one request there, one through the other.
    let warm = nodes[0]
        .deploy(
            json!({ "name": format!("cluster-warm-{suffix}"), "image": digest, "minInstances": 1 }),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        let mut held = Vec::new();
        for (node, name) in nodes.iter().zip(NAMES) {
            held.push(instances_on(node, name, &warm.id).await?);
        }
        if let Some(holder) = held.iter().position(|n| *n == 1)
            && held.iter().sum::<usize>() == 1
        {
            break holder;
        }
        if Instant::now() > deadline {
            bail!("the kept instance did not start on one node: {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = 1 - holder;
    // The other node hears which node holds it warm within a second or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let host = warm.url.split(':').next().unwrap_or_default().to_string();
    let ingress = |i: usize| nodes[i].ingress().context("a node's ingress");
    let url = |i: usize| -> anyhow::Result<String> {
        Ok(format!("http://{host}:{}/", ingress(i)?.port()))
    };
    let direct = client_for(&host, ingress(holder)?)?;
    let relayed = client_for(&host, ingress(other)?)?;
    timed_gets(&direct, &url(holder)?, 50).await?;
    timed_gets(&relayed, &url(other)?, 50).await?;
    let warm_on_holder = timed_gets(&direct, &url(holder)?, warm_requests).await?;
    let warm_relayed = timed_gets(&relayed, &url(other)?, warm_requests).await?;
    ensure!(
        instances_on(&nodes[other], NAMES[other], &warm.id).await? == 0,
        "the other node cold-started an instance instead of relaying"
    );

    // Cold: no node holds one; the first request through node `other` starts it there.
    let cold = nodes[0]
        .deploy(json!({ "name": format!("cluster-cold-{suffix}"), "image": digest }))
        .await?;
    let cold_host = cold.url.split(':').next().unwrap_or_default().to_string();
    let cold_url = format!("http://{cold_host}:{}/", ingress(other)?.port());
    let mut samples = Vec::with_capacity(cold_starts);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..cold_starts {
        for node in nodes {
            node.scale_to_zero(&cold, 0).await?;
        }
        // Both nodes' records say nothing is warm before the next start.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let client = client_for(&cold_host, ingress(other)?)?;
        let sent = Instant::now();
        let response = client.get(&cold_url).send().await?;
        ensure!(
            response.status().is_success(),
            "a cold start answered {}",
            response.status()
        );
        response.bytes().await?;
        samples.push(sent.elapsed());
    }
    let cold_start = Summary::of(&samples, None).context("no cold starts")?;
    nodes[0].remove(&warm).await?;
    nodes[0].remove(&cold).await?;
    Ok(ClusterReport {
        machine: super::report::Machine::this(),
        warm_on_holder,
        warm_relayed,
        cold_start,
        scheduler_decisions_per_sec: scheduler_decisions_per_sec(),
    })
}

/// The pure scheduler's decisions per second for 10,000 containers over 100
/// nodes: each decision is a container's owner, this node's share of its two
/// kept instances, and one spread placement.
fn scheduler_decisions_per_sec() -> f64 {
    use ember_scheduler::ownership::{owner, share};
    use ember_scheduler::placement::{Node, Request, Resources, place_spread};
    let names: Vec<String> = (0..100).map(|i| format!("node-{i:03}")).collect();
    let mut nodes: Vec<Node<String>> = names
        .iter()
        .map(|name| Node {
            id: name.clone(),
            name: name.clone(),
            capacity: Resources {
                millicpus: 64_000,
                memory_bytes: 256 << 30,
                gpus: Default::default(),
            },
            allocated: Resources::default(),
        })
        .collect();
    let keys: Vec<[u8; 16]> = (0..10_000u128).map(|i| i.to_be_bytes()).collect();
    let request = Request {
        millicpus: 5,
        memory_bytes: 16 << 20,
        ..Request::default()
    };
    let began = Instant::now();
    let mut decided = 0u64;
    for key in &keys {
        let Some(owner) = owner(key, &names) else {
            continue;
        };
        let kept = share(key, &names, owner.as_bytes(), 2);
        let held = std::collections::HashMap::from([(owner.clone(), kept)]);
        if place_spread(&mut nodes, &request, &held).is_ok() {
            decided += 1;
        }
    }
    decided as f64 / began.elapsed().as_secs_f64()
}

fn table(report: &ClusterReport) -> String {
    let row = |name: &str, s: &Summary| {
        format!(
            "{name:<44} {:>6} {:>10.0} {:>10.0} {:>10.0}\n",
            s.n, s.p50_us, s.p99_us, s.max_us
        )
    };
    let mut out = format!(
        "{:<44} {:>6} {:>10} {:>10} {:>10}\n",
        "cluster case", "n", "p50 µs", "p99 µs", "max µs"
    );
    out += &row(
        "warm, through the node holding the instance",
        &report.warm_on_holder,
    );
    out += &row(
        "warm, through the other node (one relay hop)",
        &report.warm_relayed,
    );
    out += &row(
        "cold start through a node, none warm anywhere",
        &report.cold_start,
    );
    out += &format!(
        "scheduler decisions per second (100 nodes, 10,000 containers): {:.0}\n",
        report.scheduler_decisions_per_sec
    );
    out
}
