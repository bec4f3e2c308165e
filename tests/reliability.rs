//! Scale to zero for every image, and Ember's init, as root on real OCI images:
//! busybox httpd as its own PID 1 has no SIGTERM handler, so the kernel drops a
//! stop's SIGTERM and only SIGKILL ends it.

mod common;

use common::oci::{TestNetwork, deploy, get, require_root};
use common::oci_image::push_busybox_http_image;
use common::{Ember, registry::Registry, temp_dir};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// The runtime on a network of the test's own, with `stop_grace` seconds between
/// SIGTERM and SIGKILL, and extra flags.
fn start(data: &std::path::Path, network: &TestNetwork, stop_grace: u64, extra: &[&str]) -> Ember {
    let grace = stop_grace.to_string();
    let mut flags = vec![
        "--bridge",
        &network.bridge,
        "--subnet",
        &network.subnet,
        "--stop-grace",
        &grace,
    ];
    flags.extend_from_slice(extra);
    Ember::start(data, &flags)
}

async fn image(registry: &Registry) -> String {
    push_busybox_http_image(registry.addr, "apps/httpd", "v1")
        .await
        .unwrap();
    format!("{}/apps/httpd:v1", registry.addr)
}

/// How often each decision that started instances was taken for the container.
async fn starts_by_scaling(ember: &Ember, id: &str) -> f64 {
    let mut total = 0.0;
    for reason in ["cold_start", "panic", "scale_up", "below_minimum"] {
        let series =
            format!("ember_scaling_decisions_total{{container=\"{id}\",reason=\"{reason}\"}}");
        let text = ember
            .api_request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        total += text
            .lines()
            .find_map(|l| {
                l.strip_prefix(&series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_pid_1_ignores_sigterm_reaches_zero_and_stays_there() {
    require_root();
    let registry = Registry::start().unwrap();
    let image = image(&registry).await;
    let network = TestNetwork::new();
    let data = temp_dir();
    // A stop of such an instance takes the whole grace: 3 s.
    let ember = start(data.path(), &network, 3, &[]);
    for prepared in [0, 1] {
        let name = format!("stubborn-{prepared}");
        let id = deploy(
            &ember,
            json!({
                "name": name, "image": image, "init": false, "idleTimeoutSeconds": 2,
                "preparedSandboxes": prepared, "cpu": 0.25, "ram": "64Mi",
            }),
        )
        .await;
        assert_eq!(get(&ember, &name, "/").await.0, StatusCode::OK);
        assert_eq!(starts_by_scaling(&ember, &id).await, 1.0);
        ember
            .wait_scaled_to_zero(&id, Duration::from_secs(30))
            .await;
        // Through the stop's grace and well after: nothing starts again.
        let quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(6) {
            let instances = ember.instances(&id).await;
            assert!(
                instances.is_empty(),
                "started again with no traffic: {instances:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(starts_by_scaling(&ember, &id).await, 1.0, "{name}");
        // A request still starts it.
        assert_eq!(get(&ember, &name, "/").await.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ember_s_init_a_stop_takes_no_grace_and_orphans_are_reaped() {
    require_root();
    let registry = Registry::start().unwrap();
    let image = image(&registry).await;
    let network = TestNetwork::new();
    let data = temp_dir();
    // A grace long enough that a stop within it can only be the SIGTERM's doing.
    let ember = start(data.path(), &network, 10, &[]);
    let id = deploy(
        &ember,
        json!({ "name": "initd", "image": image, "cpu": 0.25, "ram": "64Mi" }),
    )
    .await;
    // Orphans are reparented to PID 1, the init, which reaps them when they end.
    assert_eq!(get(&ember, "initd", "/cgi-bin/orphan").await.1, "left\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&ember, "initd", "/cgi-bin/zombies").await.1, "0\n");

    // A stop by hand: httpd, no longer PID 1, ends at SIGTERM.
    let instance = ember.instances(&id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let number = u64::from_str_radix(&instance.replace('-', "")[..12], 16).unwrap();
    let stopping = Instant::now();
    let response = ember
        .api_request(
            reqwest::Method::PUT,
            &format!("/api/containers/{number}/power/stop"),
        )
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    ember
        .wait_for(
            &format!("/v1/containers/{id}/instances/{instance}"),
            Duration::from_secs(9),
            |i| (i["data"]["state"]["current"] == "stopped").then_some(()),
        )
        .await;
    let took = stopping.elapsed();
    eprintln!("stopped under the init in {took:?} (grace 10 s)");
    assert!(
        took < Duration::from_secs(5),
        "the stop waited for the grace: {took:?}"
    );
}

/// A slow request (`/cgi-bin/slow?secs`) to `name`, answered in a task.
fn slow_request(
    ember: &std::sync::Arc<Ember>,
    name: &'static str,
    secs: u32,
) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let ember = ember.clone();
    tokio::spawn(async move { get(&ember, name, &format!("/cgi-bin/slow?{secs}")).await })
}

/// The integer id the numbered face gives instance `id` (its UUID's first 48 bits).
fn number(id: &str) -> u64 {
    u64::from_str_radix(&id.replace('-', "")[..12], 16).unwrap()
}

async fn only_instance(ember: &Ember, id: &str) -> String {
    let instances = ember.instances(id).await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    instances[0]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_in_flight_is_cut_by_a_stop_a_new_revision_a_migration_or_idleness() {
    require_root();
    let registry = Registry::start().unwrap();
    let image = image(&registry).await;
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = std::sync::Arc::new(start(data.path(), &network, 10, &[]));
    let id = deploy(
        &ember,
        json!({ "name": "drained", "image": image, "cpu": 0.25, "ram": "64Mi", "idleTimeoutSeconds": 1 }),
    )
    .await;
    let slept = (StatusCode::OK, "slept\n".to_string());

    // Idleness: a request longer than the idle timeout holds its instance.
    assert_eq!(slow_request(&ember, "drained", 3).await.unwrap(), slept);

    // A stop by hand while a request runs: it finishes, then the instance stops.
    let running = slow_request(&ember, "drained", 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let instance = only_instance(&ember, &id).await;
    let response = ember
        .api_request(
            reqwest::Method::PUT,
            &format!("/api/containers/{}/power/stop", number(&instance)),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(running.await.unwrap(), slept, "the stop cut the request");
    ember
        .wait_for(
            &format!("/v1/containers/{id}/instances/{instance}"),
            Duration::from_secs(9),
            |i| (i["data"]["state"]["current"] == "stopped").then_some(()),
        )
        .await;
    let response = ember
        .api_request(
            reqwest::Method::PUT,
            &format!("/api/containers/{}/power/start", number(&instance)),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());

    // A new revision while a request runs on the old one.
    assert_eq!(get(&ember, "drained", "/").await.0, StatusCode::OK);
    let running = slow_request(&ember, "drained", 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, updated) = ember
        .send_json(
            reqwest::Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "env": { "REVISION": "2" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        running.await.unwrap(),
        slept,
        "the new revision cut the request"
    );
    ember.wait_deployed(&id).await;

    // A migration while a request runs on the old sandbox.
    assert_eq!(get(&ember, "drained", "/").await.0, StatusCode::OK);
    // The instance started by hand came back on the new revision; the old one goes.
    let instance = ember
        .wait_for(
            &format!("/v1/containers/{id}/instances"),
            Duration::from_secs(15),
            |list| {
                let running: Vec<_> = list["data"]
                    .as_array()?
                    .iter()
                    .filter(|i| i["state"]["current"] == "running")
                    .collect();
                match running[..] {
                    [only] if only["revision"] == 2 => Some(only["id"].as_str()?.to_string()),
                    _ => None,
                }
            },
        )
        .await;
    let running = slow_request(&ember, "drained", 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, job) = ember
        .send_json(
            reqwest::Method::POST,
            &format!("/v1/containers/{id}/instances/{instance}/tasks"),
            &json!({ "action": "migration.start", "contents": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        running.await.unwrap(),
        slept,
        "the migration cut the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_stops_its_instances_at_once_not_one_after_another() {
    require_root();
    let registry = Registry::start().unwrap();
    let image = image(&registry).await;
    let network = TestNetwork::new();
    let data = temp_dir();
    // Without the init, each of these instances ignores SIGTERM and takes the whole
    // grace (2 s) to stop: one after another, 20 would take 40 s.
    let ember = start(data.path(), &network, 2, &[]);
    let id = deploy(
        &ember,
        json!({
            "name": "many", "image": image, "init": false, "cpu": 0.05, "ram": "16Mi",
            "minInstances": 20, "maxInstances": 20, "preparedSandboxes": 0,
        }),
    )
    .await;
    ember
        .wait_for(
            &format!("/v1/containers/{id}/instances"),
            Duration::from_secs(60),
            |list| {
                let running = list["data"]
                    .as_array()?
                    .iter()
                    .filter(|i| i["state"]["current"] == "running")
                    .count();
                (running == 20).then_some(())
            },
        )
        .await;
    let (took, clean) = ember.terminate();
    eprintln!("20 instances stopped and the runtime exited in {took:?} (grace 2 s)");
    assert!(clean, "the runtime did not exit cleanly");
    // At once: the grace (2 s) and the teardown, far from 20 graces one after
    // another (a loaded machine once took 3.05 s).
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let left = std::fs::read_dir(common::oci::instances_dir(data.path()))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "instances left behind");
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_stops_mid_pull_fails_the_deploy_by_name_and_the_same_deploy_works_later() {
    use common::oci_image::{
        Compression, LayerBuilder, ManifestFormat, busybox_http_config, busybox_layer,
        http_app_layer, push_image,
    };
    require_root();
    let registry = Registry::start().unwrap();
    let big = LayerBuilder::new()
        .dir("data", 0o755)
        .file("data/noise", 0o644, &noise(6 << 20))
        .build(Compression::Gzip);
    push_image(
        registry.addr,
        "apps/big",
        "v1",
        &busybox_http_config(),
        &[busybox_layer().unwrap(), http_app_layer(), big],
        ManifestFormat::Oci,
    )
    .await
    .unwrap();
    // 2 MB/s: the 6 MB layer takes about three seconds.
    let proxy = common::proxy::SlowProxy::start(registry.addr, 2 << 20).await;
    let image = format!("{}/apps/big:v1", proxy.addr);
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, 1, &[]);
    let (status, created) = ember
        .send_json(
            reqwest::Method::POST,
            "/v1/containers",
            &json!({ "name": "big", "image": image, "cpu": 0.25, "ram": "64Mi" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // Once the pull is under way, the registry goes.
    ember
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(30),
            |c| {
                c["statusReason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("pulling the image"))
                    .then_some(())
            },
        )
        .await;
    proxy.cut();
    let failed = ember
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(60),
            |c| (c["status"] == "failed").then(|| c.clone()),
        )
        .await;
    let reason = failed["statusReason"].as_str().unwrap();
    assert!(
        reason.contains(&proxy.addr.to_string()),
        "the reason names the registry: {reason}"
    );
    // No partial blob was kept: every stored blob is whole (its name is its digest).
    for blob in std::fs::read_dir(data.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let name = blob.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(blob.path()).unwrap();
        let digest = sha256_hex(&bytes);
        assert!(
            name.ends_with(&digest),
            "blob {name} holds other bytes ({digest})"
        );
    }

    // The registry comes back: the same deployment, asked again, succeeds.
    proxy.resume().await;
    let (status, again) = ember
        .send_json(
            reqwest::Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "image": image }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let deployed = ember
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(120),
            |c| (c["status"] != "deploying").then(|| c.clone()),
        )
        .await;
    assert_eq!(deployed["status"], "deployed", "{deployed}");
    assert_eq!(get(&ember, "big", "/").await.0, StatusCode::OK);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A tmpfs of `mebibytes`, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mebibytes: u64) -> Self {
        let dir = temp_dir();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mebibytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs");
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![0x5a; 1 << 20];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_refuses_writes_with_507_keeps_reads_and_loses_nothing() {
    require_root();
    let disk = SmallDisk::mount(128);
    let data = disk.path().join("data");
    let ember = Ember::start(&data, &[]);
    let wasm = common::fixtures::hello("still here\n");
    let before = ember
        .deploy_wasm("before", &wasm, json!({ "env": { "VERSION": "1" } }))
        .await;
    let id = before["id"].as_str().unwrap().to_string();
    disk.fill();

    // Every write is refused with 507 and a JSON error, and changes nothing.
    let (status, refused) = ember
        .send_json(
            reqwest::Method::POST,
            "/v1/containers",
            &json!({ "name": "during", "image": before["image"] }),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{refused}");
    assert_eq!(refused["code"], "insufficient_storage", "{refused}");
    let (status, refused) = ember
        .send_json(
            reqwest::Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "env": { "VERSION": "2" } }),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{refused}");
    let (status, _) = ember
        .send_json(
            reqwest::Method::POST,
            "/v1/tokens",
            &json!({ "user": "bob" }),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    let upload = ember
        .api_request(reqwest::Method::POST, "/v1/blobs")
        .body(common::fixtures::hello("another\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::INSUFFICIENT_STORAGE);
    let ready = ember
        .http()
        .get(ember.api_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Reads and traffic go on.
    let (status, list) = ember.get_json("/v1/containers").await;
    assert_eq!((status, list["total"].clone()), (StatusCode::OK, json!(1)));
    let (_, shown) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(shown["env"]["VERSION"], "1");
    assert_eq!(
        ember.invoke("before").await,
        (StatusCode::OK, "still here\n".into())
    );

    // Room again: writes work, and the name refused before is free.
    disk.free();
    let (status, during) = ember
        .send_json(
            reqwest::Method::POST,
            "/v1/containers",
            &json!({ "name": "during", "image": before["image"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{during}");
    ember.wait_deployed(during["id"].as_str().unwrap()).await;
    let ready = ember
        .http()
        .get(ember.api_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // And what was kept is what a restart finds.
    drop(ember);
    let ember = Ember::start(&data, &[]);
    let (_, list) = ember.get_json("/v1/containers").await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["before", "during"]);
    let (_, shown) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(shown["env"]["VERSION"], "1");
    assert_eq!(shown["latestRevision"].as_u64().unwrap_or(1), 1);
}

/// The processes in a sandbox's cgroup, its init first (the lowest pid).
fn sandbox_processes(sandbox: &str) -> Vec<u32> {
    let v1 = std::path::Path::new("/sys/fs/cgroup/pids/ember").join(sandbox);
    let dir = if std::path::Path::new("/sys/fs/cgroup/pids").exists() {
        v1
    } else {
        std::path::Path::new("/sys/fs/cgroup/ember").join(sandbox)
    };
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runtime_adopts_its_running_instances_and_no_request_fails() {
    require_root();
    let registry = Registry::start().unwrap();
    let image = image(&registry).await;
    let network = TestNetwork::new();
    let data = temp_dir();
    let (api, ingress) = (free_port(), free_port());
    let flags = ["--bridge", &network.bridge, "--subnet", &network.subnet];
    let ember = Ember::start_on(data.path(), &flags, api, ingress);
    let id = deploy(
        &ember,
        json!({ "name": "lasting", "image": image, "cpu": 0.25, "ram": "64Mi", "idleTimeoutSeconds": 3600 }),
    )
    .await;
    let doomed = deploy(
        &ember,
        json!({ "name": "doomed", "image": image, "cpu": 0.25, "ram": "64Mi", "idleTimeoutSeconds": 3600 }),
    )
    .await;
    assert_eq!(get(&ember, "lasting", "/").await.0, StatusCode::OK);
    assert_eq!(get(&ember, "doomed", "/").await.0, StatusCode::OK);
    let instances = ember.instances(&id).await;
    let (instance, sandbox) = (
        instances[0]["id"].as_str().unwrap().to_string(),
        instances[0]["sandbox_id"].as_str().unwrap().to_string(),
    );
    let pid = sandbox_processes(&sandbox)[0];
    let doomed_sandbox = ember.instances(&doomed).await[0]["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Steady load through the ingress, from a client that tries again when the
    // connection is refused (no runtime listens) but counts any other failure.
    let load = {
        let url = format!("http://{ingress}/");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut served, mut failed, mut longest_gap) = (0, Vec::new(), Duration::ZERO);
            let mut last = Instant::now();
            let until = Instant::now() + Duration::from_secs(8);
            while Instant::now() < until {
                let response = client
                    .get(&url)
                    .header("host", "lasting.ember.localhost")
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == StatusCode::OK => {
                        served += 1;
                        longest_gap = longest_gap.max(last.elapsed());
                        last = Instant::now();
                    }
                    Err(e) if e.is_connect() => {}
                    Ok(r) => failed.push((Instant::now(), r.status().to_string())),
                    Err(e) => failed.push((Instant::now(), e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (served, failed, longest_gap)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    ember.kill();
    // While no runtime runs, one instance dies: it is removed and replaced.
    for doomed_pid in sandbox_processes(&doomed_sandbox) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(doomed_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ember = Ember::start_on(data.path(), &flags, api, ingress);
    let back = Instant::now();
    let (served, failed, gap) = load.await.unwrap();
    eprintln!("{served} requests served, the longest gap {gap:?}");
    // A request the kill cut short is the kill's; once the runtime is back, none
    // fails.
    let after_restart: Vec<_> = failed.iter().filter(|(at, _)| *at >= back).collect();
    assert!(
        after_restart.is_empty(),
        "requests failed: {after_restart:?}"
    );
    assert!(
        failed.len() <= 1,
        "more than the request in flight failed: {failed:?}"
    );
    assert!(served > 100, "{served}");

    // The same instance, in the same sandbox, with the same process.
    let after = ember.instances(&id).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], instance.as_str());
    assert_eq!(after[0]["sandbox_id"], sandbox.as_str());
    assert_eq!(sandbox_processes(&sandbox)[0], pid);
    // Its output reaches the logs again.
    assert_eq!(
        get(&ember, "lasting", "/cgi-bin/log?after-adoption")
            .await
            .1,
        "ok\n"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ember.logs(&id).await.contains("logged after-adoption") {
        assert!(
            Instant::now() < deadline,
            "the output never reached the logs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The instance that died is gone from the host, and a request starts another.
    assert!(sandbox_processes(&doomed_sandbox).is_empty());
    assert!(
        !common::oci::instances_dir(data.path())
            .join(&doomed_sandbox)
            .exists()
    );
    assert_eq!(get(&ember, "doomed", "/").await.0, StatusCode::OK);
}

/// Two runtimes on one host, the second started with the first's bridge and
/// subnet: the second refuses OCI deployments, naming the first runtime and what
/// to change, instead of handing out the first one's addresses. One on the first's
/// data dir does not start, and says why. Given a network and data dir of its own,
/// a runtime serves beside the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runtime_on_the_first_s_network_says_so_and_one_on_its_own_serves() {
    require_root();
    let registry = Registry::start().unwrap();
    let image = image(&registry).await;
    let network = TestNetwork::new();
    let (data_a, data_b) = (temp_dir(), temp_dir());
    let first = start(data_a.path(), &network, 1, &[]);
    deploy(&first, json!({ "name": "first", "image": image })).await;
    assert_eq!(get(&first, "first", "/").await.0, StatusCode::OK);

    let second = start(data_b.path(), &network, 1, &[]);
    let (status, created) = second
        .send_json(
            reqwest::Method::POST,
            "/v1/containers",
            &json!({ "name": "second", "image": image }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let failed = second
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(30),
            |c| (c["status"] == "failed").then(|| c.clone()),
        )
        .await;
    let reason = failed.to_string();
    assert!(
        reason.contains(&format!(
            "bridge {} is used by another Ember runtime (pid {})",
            network.bridge,
            first.pid()
        )),
        "{failed}"
    );
    assert!(reason.contains("--bridge and --subnet"), "{failed}");
    // The first runtime's instance was not disturbed.
    assert_eq!(get(&first, "first", "/").await.0, StatusCode::OK);
    drop(second);

    // A runtime on the first one's data dir gives up after waiting for its store,
    // and says why.
    let on_same_data = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_a.path())
        .args(["--api-addr", "127.0.0.1:0", "--ingress-addr", "127.0.0.1:0"])
        .args(["--ssh-addr", "127.0.0.1:0"])
        .args(["--bridge", "embtsame", "--subnet", "10.199.0.0/24"])
        .env_remove("EMBER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!on_same_data.status.success());
    let said = String::from_utf8_lossy(&on_same_data.stderr);
    assert!(
        said.contains("another Ember runtime on this data dir"),
        "{said}"
    );
    assert_eq!(get(&first, "first", "/").await.0, StatusCode::OK);

    let own = TestNetwork::new();
    let data_c = temp_dir();
    let third = start(data_c.path(), &own, 1, &[]);
    deploy(&third, json!({ "name": "third", "image": image })).await;
    assert_eq!(get(&third, "third", "/").await.0, StatusCode::OK);
    assert_eq!(get(&first, "first", "/").await.0, StatusCode::OK);

    // A subnet another interface of the host has (here a bridge some other
    // runtime left behind, which keeps its route) is refused, naming it: the
    // host's traffic to the instances would go there.
    let leftover = TestNetwork::new();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    let gateway = leftover.subnet.replace(".0/24", ".1/24");
    run(&["link", "add", &leftover.bridge, "type", "bridge"]);
    run(&["addr", "add", &gateway, "dev", &leftover.bridge]);
    let mut on_leftover = TestNetwork::new();
    on_leftover.subnet = leftover.subnet.clone();
    let data_d = temp_dir();
    let fourth = start(data_d.path(), &on_leftover, 1, &[]);
    let (status, created) = fourth
        .send_json(
            reqwest::Method::POST,
            "/v1/containers",
            &json!({ "name": "fourth", "image": image }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let failed = fourth
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(30),
            |c| (c["status"] == "failed").then(|| c.clone()),
        )
        .await;
    assert!(
        failed.to_string().contains(&format!(
            "subnet {} is already on interface {}",
            leftover.subnet, leftover.bridge
        )),
        "{failed}"
    );
}
