//! The runtime killed with SIGKILL at random moments, 20 times in a row, while
//! deploys, updates, deletes, token grants and traffic run on wasm and OCI
//! containers; restarted on the same data dir each time. After each restart,
//! everything the API acknowledged is there as last acknowledged, and at the end
//! nothing is left on the host: processes, mounts, cgroups, veths, network
//! namespaces, tmpfs. Root; its own test binary, so that the host-wide counts see
//! no other test.

mod common;

use common::oci::{TestNetwork, require_root};
use common::oci_image::push_busybox_http_image;
use common::{Ember, fixtures, registry::Registry, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const ROUNDS: usize = 20;

/// A small, seeded random source (xorshift), so that a failing run can be replayed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the API acknowledged, and what it was asked but had not answered when the
/// runtime died (either outcome is then right).
#[derive(Default)]
struct Acknowledged {
    /// Container name to the versions its spec may have: the last acknowledged,
    /// and any asked for since.
    containers: BTreeMap<String, BTreeSet<u32>>,
    /// Containers whose creation was asked for but not answered.
    maybe_created: BTreeSet<String>,
    /// Containers whose deletion was asked for but not answered.
    maybe_deleted: BTreeSet<String>,
    /// Containers a worker is updating: one update of a container at a time, so
    /// that the last acknowledged version is the one stored. (Two at once may be
    /// answered in the other order than they were applied, and a later answer
    /// would replace the set while the earlier-sent write lands after it.)
    updating: BTreeSet<String>,
    /// Secrets of minted tokens.
    tokens: Vec<String>,
}

/// Everything on the host a runtime's instances hold.
#[derive(Debug, PartialEq)]
struct HostCounts {
    ember_processes: usize,
    ember_cgroups: usize,
    mounts_under_data: usize,
    tmpfs_mounts: usize,
    veths: usize,
    network_namespaces: usize,
}

impl HostCounts {
    fn now(data: &Path) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let data = data.display().to_string();
        let pids: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .map(|e| e.path())
            .collect();
        let ember_processes = pids
            .iter()
            .filter(|p| {
                std::fs::read_to_string(p.join("cgroup")).is_ok_and(|c| c.contains("/ember/"))
            })
            .count();
        let network_namespaces: BTreeSet<_> = pids
            .iter()
            .filter_map(|p| std::fs::read_link(p.join("ns/net")).ok())
            .collect();
        let ember_cgroups = ["pids", "memory", "cpu", "unified", ""]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join("ember"))
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
            .filter(|e| e.path().is_dir())
            .count();
        let veths = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ve"))
            .count();
        Self {
            ember_processes,
            ember_cgroups,
            mounts_under_data: mountinfo.lines().filter(|l| l.contains(&data)).count(),
            tmpfs_mounts: mountinfo
                .lines()
                .filter(|l| l.contains(" - tmpfs "))
                .count(),
            veths,
            network_namespaces: network_namespaces.len(),
        }
    }
}

/// Runs a random mix of operations against `ember` until it dies, recording what
/// was acknowledged.
async fn churn(
    ember: Arc<Ember>,
    seed: u64,
    wasm: String,
    oci: String,
    model: Arc<Mutex<Acknowledged>>,
) {
    let mut random = Random(seed);
    loop {
        let known: Vec<String> = model.lock().await.containers.keys().cloned().collect();
        let pick = |random: &mut Random| {
            (!known.is_empty()).then(|| known[random.below(known.len() as u64) as usize].clone())
        };
        match random.below(10) {
            0..=2 => {
                let name = format!("c{}", random.below(1_000_000));
                let image = if random.below(4) == 0 { &oci } else { &wasm };
                model.lock().await.maybe_created.insert(name.clone());
                let body = json!({
                    "name": name, "image": image, "env": { "VERSION": "1" },
                    "cpu": 0.1, "ram": "32Mi", "idleTimeoutSeconds": 2,
                });
                let Ok(response) = ember
                    .api_request(Method::POST, "/v1/containers")
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() == StatusCode::CREATED {
                    let mut model = model.lock().await;
                    model.maybe_created.remove(&name);
                    model.containers.insert(name, BTreeSet::from([1]));
                }
            }
            3..=4 => {
                let Some(name) = pick(&mut random) else {
                    continue;
                };
                let version = 2 + random.below(1000) as u32;
                {
                    let mut model = model.lock().await;
                    if !model.updating.insert(name.clone()) {
                        continue;
                    }
                    model.containers.get_mut(&name).map(|v| v.insert(version));
                }
                let Some(id) = id_of(&ember, &name).await else {
                    return;
                };
                let Ok(response) = ember
                    .api_request(Method::PUT, &format!("/v1/containers/{id}"))
                    .json(&json!({ "env": { "VERSION": version.to_string() } }))
                    .send()
                    .await
                else {
                    return;
                };
                let mut model = model.lock().await;
                model.updating.remove(&name);
                if response.status() == StatusCode::OK
                    && let Some(versions) = model.containers.get_mut(&name)
                {
                    *versions = BTreeSet::from([version]);
                }
            }
            5 => {
                let Some(name) = pick(&mut random) else {
                    continue;
                };
                model.lock().await.maybe_deleted.insert(name.clone());
                let Some(id) = id_of(&ember, &name).await else {
                    return;
                };
                let Ok(response) = ember
                    .api_request(Method::DELETE, &format!("/v1/containers/{id}"))
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() == StatusCode::NO_CONTENT {
                    let mut model = model.lock().await;
                    model.maybe_deleted.remove(&name);
                    model.containers.remove(&name);
                }
            }
            6 => {
                let user = format!("u{}", random.below(100));
                let Ok(response) = ember
                    .api_request(Method::POST, "/v1/tokens")
                    .json(&json!({ "user": user }))
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() == StatusCode::CREATED
                    && let Ok(minted) = response.json::<Value>().await
                {
                    let secret = minted["token"].as_str().unwrap_or_default().to_string();
                    model.lock().await.tokens.push(secret);
                }
            }
            _ => {
                // Traffic, to whatever answers.
                let Some(name) = pick(&mut random) else {
                    continue;
                };
                let client = ember.ingress_client(&name);
                if client
                    .get(ember.ingress_url(&name, "/"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_err()
                    && ember
                        .http()
                        .get(ember.api_url("/healthz"))
                        .send()
                        .await
                        .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn id_of(ember: &Ember, name: &str) -> Option<String> {
    let response = ember
        .api_request(Method::GET, &format!("/v1/containers?name={name}"))
        .send()
        .await
        .ok()?;
    let page: Value = response.json().await.ok()?;
    page["items"][0]["id"].as_str().map(str::to_string)
}

/// Every container's name and `VERSION`, read page by page.
async fn stored(ember: &Ember) -> BTreeMap<String, u32> {
    let mut found = BTreeMap::new();
    let mut path = "/v1/containers?rowsPerPage=100".to_string();
    loop {
        let (status, page) = ember.get_json(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            let version = item["env"]["VERSION"].as_str().unwrap().parse().unwrap();
            found.insert(item["name"].as_str().unwrap().to_string(), version);
        }
        match page["continue"].as_str() {
            Some(cursor) => path = format!("/v1/containers?rowsPerPage=100&continue={cursor}"),
            None => return found,
        }
    }
}

fn check(model: &Acknowledged, found: &BTreeMap<String, u32>, round: usize) {
    for (name, versions) in &model.containers {
        match found.get(name) {
            Some(version) => assert!(
                versions.contains(version),
                "round {round}: {name} has VERSION {version}, acknowledged {versions:?}"
            ),
            None => assert!(
                model.maybe_deleted.contains(name),
                "round {round}: acknowledged container {name} is gone"
            ),
        }
    }
    for name in found.keys() {
        assert!(
            model.containers.contains_key(name) || model.maybe_created.contains(name),
            "round {round}: {name} was never created"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged_and_leaks_nothing() {
    require_root();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut random = Random(seed);
    let registry = Registry::start().unwrap();
    push_busybox_http_image(registry.addr, "apps/httpd", "v1")
        .await
        .unwrap();
    let oci = format!("{}/apps/httpd:v1", registry.addr);
    let network = TestNetwork::new();
    let data = temp_dir();
    let before = HostCounts::now(data.path());
    let flags = network.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let model = Arc::new(Mutex::new(Acknowledged::default()));
    let mut wasm = None;

    for round in 1..=ROUNDS {
        let ember = Arc::new(Ember::start(data.path(), &flags));
        // The state is as acknowledged when the runtime comes back.
        let found = stored(&ember).await;
        {
            let mut model = model.lock().await;
            check(&model, &found, round);
            for token in &model.tokens {
                let (status, _) = ember
                    .call_as(Some(token), Method::GET, "/v1/containers", None)
                    .await;
                assert_eq!(status, StatusCode::OK, "round {round}: a token was lost");
            }
            // What was in doubt is settled now: take the state as found.
            model.containers = found
                .iter()
                .map(|(name, version)| (name.clone(), BTreeSet::from([*version])))
                .collect();
            model.maybe_created.clear();
            model.maybe_deleted.clear();
            model.updating.clear();
        }
        let image = match &wasm {
            Some(image) => image,
            None => wasm.insert(ember.upload(&fixtures::hello("crash\n")).await),
        };
        let workers: Vec<_> = (0..3)
            .map(|_| {
                tokio::spawn(churn(
                    ember.clone(),
                    random.below(u64::MAX) | 1,
                    image.clone(),
                    oci.clone(),
                    model.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + random.below(2_500))).await;
        let pid = ember.pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        for worker in workers {
            worker.abort();
            let _ = worker.await;
        }
        // The last reference: reaps the killed process.
        Arc::into_inner(ember).expect("the workers are done").kill();
    }

    // Once more, to clean up: everything deleted, the runtime stopped.
    let ember = Ember::start(data.path(), &flags);
    check(&*model.lock().await, &stored(&ember).await, ROUNDS + 1);
    for name in stored(&ember).await.keys() {
        let id = id_of(&ember, name).await.unwrap();
        let response = ember
            .api_request(Method::DELETE, &format!("/v1/containers/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let (took, clean) = ember.terminate();
    assert!(clean, "the runtime did not stop cleanly ({took:?})");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after = HostCounts::now(data.path());
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left on the host:\nbefore {before:?}\nafter  {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
