//! OCI containers end to end, as root: images the harness builds and pushes to a real
//! registry, run through libcontainer behind the ingress. These tests need root and
//! fail (never skip) without it: CI runs as root.

mod common;

use common::oci::{Setup, TestNetwork, deploy, get, require_root, setup, start};
use common::oci_image::{
    Compression, LayerBuilder, ManifestFormat, RawEntries, busybox_http_config, busybox_layer,
    http_app_layer, push_busybox_http_image, push_image, push_index,
};
use common::{Ember, registry::Registry, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything one instance holds on the host, to check it is all gone afterwards.
struct Traces {
    cgroups: Vec<PathBuf>,
    mounts_under: PathBuf,
    veth: String,
}

impl Traces {
    fn of(data: &Path, sandbox: &str) -> Self {
        let id = sandbox.to_string();
        let cgroups = ["pids", "memory", "cpu", "unified", ""]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join("ember").join(&id))
            .collect();
        let hex: String = sandbox
            .trim_start_matches("ember-")
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(13)
            .collect();
        Self {
            cgroups,
            mounts_under: common::oci::instances_dir(data).join(&id),
            veth: format!("ve{hex}"),
        }
    }

    fn present(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .cgroups
            .iter()
            .filter(|c| c.exists())
            .map(|c| c.display().to_string())
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let under = self.mounts_under.display().to_string();
        found.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&under))
                .map(|l| format!("mount {l}")),
        );
        if Path::new("/sys/class/net").join(&self.veth).exists() {
            found.push(format!("veth {}", self.veth));
        }
        if self.mounts_under.exists() {
            found.push(format!("dir {}", self.mounts_under.display()));
        }
        found
    }
}

/// The sandbox id (which names cgroups, mounts and veth) of the container's only
/// instance; also checks that its address is on the test subnet at port 8080.
async fn only_sandbox(ember: &Ember, id: &str) -> String {
    let instances = ember.instances(id).await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    let address: std::net::SocketAddr = instances[0]["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(address.port(), 8080, "{instances:?}");
    assert!(!address.ip().is_loopback(), "{instances:?}");
    instances[0]["sandbox_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_an_image_and_passes_command_arguments_and_env() {
    require_root();
    let Setup {
        ember,
        data,
        image,
        network: _network,
        _registry,
    } = setup(&[]).await;

    deploy(&ember, json!({ "name": "web", "image": image })).await;
    assert_eq!(
        get(&ember, "web", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );
    let (status, env) = get(&ember, "web", "/cgi-bin/env").await;
    assert_eq!(status, StatusCode::OK);
    assert!(env.contains("GREETING=from-image"), "{env}");
    assert!(env.contains("PORT=8080"), "{env}");

    let script =
        "echo started-$GREETING; echo $GREETING > /www/index.html; exec httpd -f -p 8080 -h /www";
    deploy(
        &ember,
        json!({
            "name": "custom",
            "image": image,
            "command": ["/bin/sh", "-c"],
            "arguments": [script],
            "env": { "GREETING": "from-the-container" },
        }),
    )
    .await;
    assert_eq!(
        get(&ember, "custom", "/").await,
        (StatusCode::OK, "from-the-container\n".into())
    );
    // PID 1 is Ember's init, which ran the command with its arguments.
    let (_, args) = get(&ember, "custom", "/cgi-bin/args").await;
    assert!(
        args.starts_with("/.ember/init -- /bin/sh -c echo started-$GREETING"),
        "pid 1 is the init: {args}"
    );
    // Without it, the command itself is PID 1: the shell that exec'd httpd.
    deploy(
        &ember,
        json!({
            "name": "bare",
            "image": image,
            "command": ["/bin/sh", "-c"],
            "arguments": [script],
            "init": false,
        }),
    )
    .await;
    let (_, args) = get(&ember, "bare", "/cgi-bin/args").await;
    assert!(
        args.starts_with("httpd -f -p 8080"),
        "pid 1 is exec'd httpd: {args}"
    );

    // Its stdout reached the log store, with the instance's name.
    let (_, container) = ember.get_json("/v1/containers").await;
    let custom = container["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "custom")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A closed range (period_end) is answered and ends.
    let text = ember.logs(&custom).await;
    assert!(text.contains("started-from-the-container"), "{text}");
    let instances = ember.instances(&custom).await;
    let instance = instances[0]["id"].as_str().unwrap();
    assert!(text.contains(instance), "{text}");

    // An open one replays the recent lines, then follows: a line the container
    // writes while the client reads arrives on the same stream.
    let mut follow = ember
        .api_request(
            reqwest::Method::GET,
            &format!("/v1/containers/{custom}/logs"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), StatusCode::OK);
    assert_eq!(follow.headers()["content-type"], "text/event-stream");
    let mut streamed = String::new();
    let mut read_until = async |needle: &str, streamed: &mut String| {
        while !streamed.contains(needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(30), follow.chunk())
                .await
                .unwrap_or_else(|_| panic!("no `{needle}` within 30 s: {streamed}"))
                .unwrap()
                .expect("the stream ended");
            streamed.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until("started-from-the-container", &mut streamed).await;
    assert!(!streamed.contains("logged while-following"));
    assert_eq!(
        get(&ember, "custom", "/cgi-bin/log?while-following").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    read_until("logged while-following", &mut streamed).await;
    let event = streamed
        .lines()
        .find(|l| l.contains("logged while-following"))
        .unwrap();
    let event: serde_json::Value =
        serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["stream"], "stdout");
    assert_eq!(event["instance"], instance);

    // Document 000's view of the same instance: cgroup stats, its processes (pid 1
    // is the exec'd httpd), its log rows; then a restart under the same id.
    let (_, services) = ember.get_json("/api/container_services").await;
    let service = services["container_services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "custom")
        .unwrap()["id"]
        .clone();
    let (_, listed) = ember
        .get_json(&format!("/api/container_services/{service}/containers"))
        .await;
    let number = listed["containers"][0]["id"].as_u64().unwrap();
    let (status, shown) = ember.get_json(&format!("/api/containers/{number}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let shown = &shown["containers"][0];
    assert_eq!(shown["current_state"], "online", "{shown}");
    let local_ip: std::net::Ipv4Addr = shown["local_ip"].as_str().unwrap().parse().unwrap();
    assert!(local_ip.is_private(), "the bridge address: {shown}");
    assert!(shown["stats"]["mem"].as_f64().unwrap() > 0.0, "{shown}");
    let (status, processes) = ember
        .get_json(&format!("/api/containers/{number}/container_processes"))
        .await;
    assert_eq!(status, StatusCode::OK, "{processes}");
    let init = &processes[0];
    assert_eq!(
        (init["PID"].clone(), init["PPID"].clone()),
        (json!(1), json!(0)),
        "{processes}"
    );
    assert!(
        init["CMD"]
            .as_str()
            .unwrap()
            .starts_with("/.ember/init -- /bin/sh -c"),
        "{processes}"
    );
    assert_eq!(init["UID"], "root");
    let workload = &processes[1];
    assert_eq!(workload["PPID"], 1, "{processes}");
    assert!(
        workload["CMD"]
            .as_str()
            .unwrap()
            .starts_with("httpd -f -p 8080"),
        "{processes}"
    );
    for column in ["C", "STIME", "TTY", "TIME"] {
        assert!(!init[column].is_null(), "{column}: {processes}");
    }
    let (status, rows) = ember
        .get_json(&format!(
            "/api/containers/{number}/logs?limit=100&period_start=0"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r[2].as_str()
                .unwrap()
                .contains("started-from-the-container")
        })
        .unwrap_or_else(|| panic!("{rows}"));
    assert!(row[0].is_f64() && row[1] == "custom-1", "{row}");
    // Document 004's volumes (the writable root) and report (cgroup memory).
    let base = format!("/v1/containers/{custom}/instances/{instance}");
    let (_, volumes) = ember.get_json(&format!("{base}/volumes")).await;
    assert_eq!(volumes["data"][0]["path"], "/", "{volumes}");
    let (_, report) = ember
        .get_json(&format!("{base}/telemetry/resources/report"))
        .await;
    assert!(
        report["data"]["memory"]["used_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    let network = &report["data"]["network"];
    assert!(
        network["received_bytes"].as_u64().unwrap() > 0,
        "it was sent requests: {report}"
    );
    assert!(
        network["sent_bytes"].as_u64().unwrap() > 0,
        "it answered: {report}"
    );
    let (status, restarted) = ember
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/containers/{number}/power/restart"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{restarted}");
    let back_within = Duration::from_secs(60);
    ember
        .wait_for(&format!("/api/containers/{number}"), back_within, |b| {
            (b["containers"][0]["current_state"] == "online").then_some(())
        })
        .await;
    assert_eq!(
        get(&ember, "custom", "/").await,
        (StatusCode::OK, "from-the-container\n".into())
    );

    // Tutum's stop and start on the same instance: Stopped holds no process, and
    // Running again serves.
    let tutum = |action: &'static str| {
        let ember = &ember;
        let path = format!("/api/v1/container/{instance}/{action}/");
        async move {
            ember
                .send_json(reqwest::Method::POST, &path, &json!({}))
                .await
        }
    };
    let object_path = format!("/api/v1/container/{instance}/");
    let wait_tutum = |wanted: &'static str| {
        ember.wait_for(&object_path, back_within, move |b| {
            (b["state"] == wanted).then_some(())
        })
    };
    let (status, body) = tutum("stop").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_tutum("Stopped").await;
    let (_, processes) = ember
        .get_json(&format!("/api/containers/{number}/container_processes"))
        .await;
    assert_eq!(processes, json!([]), "a stopped instance runs nothing");
    let (status, body) = tutum("start").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_tutum("Running").await;
    assert_eq!(
        get(&ember, "custom", "/").await,
        (StatusCode::OK, "from-the-container\n".into())
    );

    assert!(ember.metric("ember_cold_starts_total{kind=\"oci\"}").await >= 2.0);
    drop(ember);
    assert_nothing_left(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_to_zero_leaves_nothing_behind_and_the_next_request_starts_again() {
    require_root();
    let Setup {
        ember,
        data,
        image,
        network: _network,
        _registry,
    } = setup(&["--idle-timeout", "1"]).await;
    let id = deploy(&ember, json!({ "name": "web", "image": image.clone() })).await;
    assert_eq!(get(&ember, "web", "/").await.0, StatusCode::OK);
    let sandbox = only_sandbox(&ember, &id).await;
    let traces = Traces::of(data.path(), &sandbox);
    assert!(
        !traces.present().is_empty(),
        "a running instance holds something"
    );

    ember
        .wait_scaled_to_zero(&id, Duration::from_secs(30))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !traces.present().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            traces.present()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&ember, "web", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );
}

/// The sandbox directories under the data dir: one per created container, started
/// or prepared.
fn sandbox_dirs(data: &Path) -> Vec<String> {
    // The runtime makes the directory at start: a missing one means the layout
    // moved, and the checks built on it would pass for nothing.
    let mut dirs: Vec<String> = std::fs::read_dir(common::oci::instances_dir(data))
        .expect("the runtime's instances directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    dirs
}

/// The `cgroup.procs` of a sandbox's cgroup (v1 pids controller, or v2).
fn cgroup_procs_file(sandbox: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/pids/ember").join(sandbox);
    let dir = if Path::new("/sys/fs/cgroup/pids").exists() {
        v1
    } else {
        Path::new("/sys/fs/cgroup/ember").join(sandbox)
    };
    dir.join("cgroup.procs")
}

/// The processes in a sandbox's cgroup.
fn sandbox_processes(sandbox: &str) -> Vec<u32> {
    let file = cgroup_procs_file(sandbox);
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Updates the container's `preparedSandboxes` and waits for the new revision.
async fn set_prepared(ember: &Ember, id: &str, count: u32) {
    let (status, body) = ember
        .send_json(
            reqwest::Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "preparedSandboxes": count }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ember.wait_deployed(id).await;
}

async fn wait_prepared(ember: &Ember, id: &str, count: f64) {
    let series = format!("ember_container_prepared_sandboxes{{container=\"{id}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ember.metric(&series).await != count {
        assert!(
            Instant::now() < deadline,
            "never {count} prepared sandboxes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sandbox_takes_the_cold_start_is_replaced_and_is_released() {
    require_root();
    let Setup {
        ember,
        data,
        image,
        network: _network,
        _registry,
    } = setup(&["--idle-timeout", "1"]).await;
    for (bad, why) in [(json!(9), "between 0 and 8"), (json!(-1), "")] {
        let (status, body) = ember
            .send_json(
                reqwest::Method::POST,
                "/v1/containers",
                &json!({ "name": "bad", "image": image.clone(), "preparedSandboxes": bad }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains("preparedSandboxes"), "{body}");
        assert!(body.to_string().contains(why), "{body}");
    }

    // One sandbox is prepared by default; its init waits, and no workload runs in it.
    let id = deploy(&ember, json!({ "name": "web", "image": image.clone() })).await;
    let (_, container) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(container["preparedSandboxes"], 1, "{container}");
    wait_prepared(&ember, &id, 1.0).await;
    let prepared = sandbox_dirs(data.path());
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    let processes = sandbox_processes(&prepared[0]);
    assert_eq!(processes.len(), 1, "only the waiting init: {processes:?}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", processes[0])).unwrap();
    assert!(
        !exe.ends_with("busybox"),
        "the workload runs already: {exe:?}"
    );

    // The cold start takes it; another is prepared in its place.
    assert_eq!(
        get(&ember, "web", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );
    assert_eq!(only_sandbox(&ember, &id).await, prepared[0]);
    wait_prepared(&ember, &id, 1.0).await;
    assert_eq!(sandbox_dirs(data.path()).len(), 2);

    // Preparation turned off: the old revision's spare goes, and starts still work.
    set_prepared(&ember, &id, 0).await;
    ember
        .wait_scaled_to_zero(&id, Duration::from_secs(30))
        .await;
    assert_nothing_left(data.path()).await;
    assert_eq!(get(&ember, "web", "/").await.0, StatusCode::OK);
    assert_eq!(sandbox_dirs(data.path()).len(), 1);

    // Deleting the container removes everything, prepared or not.
    set_prepared(&ember, &id, 2).await;
    wait_prepared(&ember, &id, 2.0).await;
    let response = ember
        .api_request(reqwest::Method::DELETE, &format!("/v1/containers/{id}"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_nothing_left(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_at_zero_starts_several_instances_in_parallel_and_they_all_go_when_idle() {
    require_root();
    let Setup {
        ember,
        data,
        image,
        network,
        _registry,
    } = setup(&[]).await;
    let id = deploy(
        &ember,
        json!({
            "name": "burst",
            "image": image,
            "concurrency": 20,
            "idleTimeoutSeconds": 2,
            "cpu": 0.1,
            "ram": "32Mi",
        }),
    )
    .await;
    let results = ember.burst("burst", "/", 200).await;
    common::assert_all_answered(&results, "hello from busybox httpd\n");
    // The bridge keeps the MAC it was given however its ports change (a MAC the
    // kernel assigned would follow the lowest port's, and instances' frames to the
    // gateway would go astray).
    let sys = |file: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{}/{file}", network.bridge))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(sys("addr_assign_type"), "3", "the bridge's MAC is not set");
    let gateway: std::net::Ipv4Addr = {
        let base: std::net::Ipv4Addr = network.subnet.split('/').next().unwrap().parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(base) + 1)
    };
    let [a, b, c, d] = gateway.octets();
    assert_eq!(
        sys("address"),
        format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    );
    // 200 requests at zero, 20 at most per instance: the autoscaler asked for every
    // instance at once (one cold-start decision, no start one after another).
    let instances = ember.instances(&id).await;
    assert!(instances.len() >= 10, "only {} instances", instances.len());
    let cold_start_decisions = ember
        .metric(&format!(
            "ember_scaling_decisions_total{{container=\"{id}\",reason=\"cold_start\"}}"
        ))
        .await;
    assert_eq!(cold_start_decisions, 1.0);

    ember
        .wait_scaled_to_zero(&id, Duration::from_secs(30))
        .await;
    drop(ember);
    assert_nothing_left(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_is_restarted_with_backoff_and_reported() {
    require_root();
    let Setup {
        ember,
        data: _data,
        image,
        network: _network,
        _registry,
    } = setup(&[]).await;
    let id = deploy(
        &ember,
        json!({
            "name": "crashy",
            "image": image,
            "command": ["/bin/sh", "-c", "httpd -p 8080 -h /www; sleep 5; exit 3"],
        }),
    )
    .await;
    let (status, answer) = get(&ember, "crashy", "/").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // It exits five seconds after each start: time for the first request even when
    // a burst in the next test holds both cores (two seconds were once too few).
    // Restarts come 1 s, then 2 s after.
    let deadline = Instant::now() + Duration::from_secs(60);
    let container = loop {
        let (_, container) = ember.get_json(&format!("/v1/containers/{id}")).await;
        if container["restarts"].as_u64().unwrap() >= 2 {
            break container;
        }
        assert!(Instant::now() < deadline, "not restarted: {container}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = container["statusReason"].as_str().unwrap();
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(
        reason.contains("next start in 2s"),
        "backoff doubles: {reason}"
    );

    // One that never listens is reported with why.
    let never = deploy(
        &ember,
        json!({ "name": "never", "image": image, "command": ["/bin/sh", "-c", "exit 7"] }),
    )
    .await;
    let (status, body) = get(&ember, "never", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("exited with code 7"), "{body}");
    let (_, container) = ember.get_json(&format!("/v1/containers/{never}")).await;
    assert!(
        container["statusReason"]
            .as_str()
            .unwrap()
            .contains("before it listened on port 8080"),
        "{container}"
    );
}

/// The instance's OOM record, which has an `oom_kill N` line: `memory.oom_control`
/// on cgroup v1 (this machine's hybrid layout), `memory.events` on v2.
fn oom_record(sandbox: &str) -> String {
    let path = if Path::new("/sys/fs/cgroup/memory").exists() {
        Path::new("/sys/fs/cgroup/memory/ember")
            .join(sandbox)
            .join("memory.oom_control")
    } else {
        Path::new("/sys/fs/cgroup/ember")
            .join(sandbox)
            .join("memory.events")
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pids_and_disk_limits_hold_and_the_runtime_keeps_answering() {
    require_root();
    let Setup {
        ember,
        data: _data,
        image,
        network: _network,
        _registry,
    } = setup(&["--pids-limit", "40"]).await;
    let id = deploy(
        &ember,
        json!({
            "name": "limited",
            "image": image.clone(),
            "ram": "32Mi",
            "ephemeralStorage": "8Mi",
        }),
    )
    .await;
    assert_eq!(get(&ember, "limited", "/").await.0, StatusCode::OK);
    let sandbox = only_sandbox(&ember, &id).await;

    // A memory hog (in a CGI child) is OOM-killed; the container and runtime carry on.
    let _ = get(&ember, "limited", "/cgi-bin/hog?200").await;
    let events = oom_record(&sandbox);
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
        "no OOM kill recorded: {events}"
    );
    assert_eq!(get(&ember, "limited", "/").await.0, StatusCode::OK);

    // A fork bomb stops at the pids limit.
    let (_, bomb) = get(&ember, "limited", "/cgi-bin/forkbomb").await;
    let started: u32 = bomb
        .trim()
        .strip_prefix("started ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{bomb}"));
    assert!(started < 40, "{bomb}");
    assert_eq!(get(&ember, "limited", "/").await.0, StatusCode::OK);

    // Writes past ephemeralStorage fail with ENOSPC.
    let (_, write) = get(&ember, "limited", "/cgi-bin/write?64").await;
    assert!(write.contains("No space left on device"), "{write}");
    assert!(!write.contains("rc=0"), "{write}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_layers_and_corrupt_blobs_are_refused() {
    require_root();
    let registry = Registry::start().unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, &[]);
    let outside = temp_dir();
    let target = outside.path().join("pwned");

    let traversal = LayerBuilder::new()
        .raw_file(b"../../../../escaped-by-dotdot", 0o644, b"x")
        .build(Compression::Gzip);
    let symlink = LayerBuilder::new()
        .symlink("evil", &outside.path().display().to_string())
        .raw_file(b"evil/pwned", 0o644, b"x")
        .build(Compression::Gzip);
    for (tag, layer) in [("dotdot", traversal), ("symlink", symlink)] {
        push_image(
            registry.addr,
            "apps/evil",
            tag,
            &busybox_http_config(),
            &[busybox_layer().unwrap(), layer],
            ManifestFormat::Oci,
        )
        .await
        .unwrap();
        let failed = deploy_failing(
            &ember,
            json!({ "name": format!("evil-{tag}"), "image": format!("{}/apps/evil:{tag}", registry.addr) }),
        )
        .await;
        assert!(
            failed["statusReason"].as_str().unwrap().contains("refused"),
            "{failed}"
        );
    }
    assert!(!target.exists(), "a symlink let a layer write outside");
    let escaped: Vec<_> = walk(Path::new("/"), 0)
        .into_iter()
        .filter(|p| p.ends_with("escaped-by-dotdot"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");

    // A blob the registry serves with other content than its digest says.
    let app = http_app_layer();
    push_image(
        registry.addr,
        "apps/corrupt",
        "v1",
        &busybox_http_config(),
        &[busybox_layer().unwrap(), app.clone()],
        ManifestFormat::Oci,
    )
    .await
    .unwrap();
    let blob = registry.blob_file(&app.digest());
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let failed = deploy_failing(
        &ember,
        json!({ "name": "corrupt", "image": format!("{}/apps/corrupt:v1", registry.addr) }),
    )
    .await;
    assert!(
        failed["statusReason"].as_str().unwrap().contains("digest"),
        "{failed}"
    );
}

/// Paths under `dir` to a small depth, skipping virtual filesystems.
fn walk(dir: &Path, depth: u32) -> Vec<PathBuf> {
    if depth > 3
        || ["/proc", "/sys", "/dev"]
            .iter()
            .any(|p| dir == Path::new(p))
    {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        found.push(path.clone());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk(&path, depth + 1));
        }
    }
    found
}

/// Creates a container whose deployment must fail; returns it once it has.
async fn deploy_failing(ember: &Ember, body: Value) -> Value {
    let (status, created) = ember
        .send_json(reqwest::Method::POST, "/v1/containers", &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    wait_failed(ember, created["id"].as_str().unwrap()).await
}

async fn wait_failed(ember: &Ember, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, container) = ember.get_json(&format!("/v1/containers/{id}")).await;
        match container["status"].as_str() {
            Some("failed") => return container,
            Some("deployed") => panic!("deployed: {container}"),
            _ => assert!(Instant::now() < deadline, "{container}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_docker_manifests_and_plain_layers_are_pulled() {
    require_root();
    let registry = Registry::start().unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, &[]);
    let layers = [
        busybox_layer()
            .unwrap()
            .with_compression(Compression::DockerGzip),
        http_app_layer().with_compression(Compression::DockerGzip),
    ];
    push_image(
        registry.addr,
        "apps/docker",
        "v1",
        &busybox_http_config(),
        &layers,
        ManifestFormat::DockerV2,
    )
    .await
    .unwrap();
    push_index(
        registry.addr,
        "apps/multi",
        "v1",
        &busybox_http_config(),
        &[
            busybox_layer().unwrap(),
            http_app_layer().with_compression(Compression::Plain),
        ],
        ManifestFormat::Oci,
    )
    .await;
    for (name, repo) in [("docker", "apps/docker"), ("multi", "apps/multi")] {
        deploy(
            &ember,
            json!({ "name": name, "image": format!("{}/{repo}:v1", registry.addr) }),
        )
        .await;
        assert_eq!(
            get(&ember, name, "/").await,
            (StatusCode::OK, "hello from busybox httpd\n".into()),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runtime_s_instance_is_adopted_and_a_stopped_runtime_leaves_nothing() {
    require_root();
    let Setup {
        ember,
        data,
        image,
        network,
        _registry,
    } = setup(&[]).await;
    let id = deploy(&ember, json!({ "name": "web", "image": image.clone() })).await;
    assert_eq!(get(&ember, "web", "/").await.0, StatusCode::OK);
    let sandbox = only_sandbox(&ember, &id).await;
    let traces = Traces::of(data.path(), &sandbox);
    // The runtime records a started instance off the request path; one killed
    // within that moment stops the instance at its next start instead of adopting
    // it (nothing is lost: requests to it went through the killed runtime).
    tokio::time::sleep(Duration::from_secs(2)).await;
    ember.kill();
    assert!(
        !traces.present().is_empty(),
        "the instance outlives a killed runtime"
    );

    // The next runtime takes the instance over: the same sandbox serves.
    let ember = start(data.path(), &network, &[]);
    ember.wait_deployed(&id).await;
    // Adoption runs beside the restore: the instance is listed once it is taken over.
    ember
        .wait_for(
            &format!("/v1/containers/{id}/instances"),
            std::time::Duration::from_secs(30),
            |list| {
                list["data"]
                    .as_array()
                    .filter(|l| !l.is_empty())
                    .map(|_| ())
            },
        )
        .await;
    assert_eq!(only_sandbox(&ember, &id).await, sandbox);
    assert_eq!(
        get(&ember, "web", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );

    // A runtime that is stopped (SIGTERM) stops its containers with it.
    drop(ember);
    wait_gone(&traces).await;
    assert_nothing_left(data.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_runtime_during_a_start_leaves_nothing() {
    require_root();
    let Setup {
        ember,
        data,
        image,
        network: _network,
        _registry,
    } = setup(&[]).await;
    // Its workload never listens, so its start waits for the startup timeout (60 s).
    deploy(
        &ember,
        json!({
            "name": "deaf", "image": image, "preparedSandboxes": 0,
            "command": ["/bin/sleep", "3600"],
        }),
    )
    .await;
    let ingress = ember.ingress;
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("http://{ingress}/"))
            .header("host", "deaf.ember.localhost")
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let sandbox = loop {
        // The workload runs once the init has turned into `sleep`.
        if let Some(dir) = sandbox_dirs(data.path()).pop()
            && cgroup_procs_file(&dir).exists()
            && sandbox_processes(&dir).iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
            })
        {
            break dir;
        }
        assert!(Instant::now() < deadline, "the start never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let traces = Traces::of(data.path(), &sandbox);
    drop(ember);
    wait_gone(&traces).await;
    assert_nothing_left(data.path()).await;
    request.abort();
}

/// Once the runtime has stopped: no instance directory (and so no mount) is left
/// under its data dir.
async fn assert_nothing_left(data: &Path) {
    let instances = common::oci::instances_dir(data);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: Vec<_> = std::fs::read_dir(&instances)
            .expect("the runtime's instances directory (the runtime keeps it)")
            .flatten()
            .map(|e| e.path())
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted = mounts.contains(&instances.display().to_string());
        if left.is_empty() && !mounted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}, mounted: {mounted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone(traces: &Traces) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !traces.present().is_empty() {
        assert!(Instant::now() < deadline, "leaked: {:?}", traces.present());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_root_oci_deployments_are_refused_and_wasm_still_serves() {
    require_root();
    let registry = Registry::start().unwrap();
    push_busybox_http_image(registry.addr, "apps/httpd", "v1")
        .await
        .unwrap();
    let data = temp_dir();
    // The runtime runs as nobody: its data dir must be its own.
    let nobody = 65534;
    std::os::unix::fs::chown(data.path(), Some(nobody), Some(nobody)).unwrap();
    let ember = Ember::start_as(Some(nobody), data.path(), &[]);
    let failed = deploy_failing(
        &ember,
        json!({ "name": "web", "image": format!("{}/apps/httpd:v1", registry.addr) }),
    )
    .await;
    let reason = failed["statusReason"].as_str().unwrap();
    assert!(
        reason.contains("need the runtime to run as root"),
        "{reason}"
    );
    ember
        .deploy_wasm("hello", &common::fixtures::hello("still here\n"), json!({}))
        .await;
    assert_eq!(
        ember.invoke("hello").await,
        (StatusCode::OK, "still here\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_replaces_the_binary_leaves_cold_starts_working() {
    require_root();
    let registry = Registry::start().unwrap();
    push_busybox_http_image(registry.addr, "apps/httpd", "v1")
        .await
        .unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    // Run from a copy of the binary (start_as makes one), as an installed runtime.
    let flags = network.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ember = Ember::start_as(Some(0), data.path(), &flags);
    // A package upgrade puts another file at the binary's path.
    let installed = data.path().join("ember-bin");
    let replacement = data.path().join("ember-bin.new");
    std::fs::write(&replacement, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::rename(&replacement, &installed).unwrap();
    // Instances still start: helpers run the runtime's own executable.
    deploy(
        &ember,
        json!({
            "name": "web",
            "image": format!("{}/apps/httpd:v1", registry.addr),
            "preparedSandboxes": 0,
        }),
    )
    .await;
    assert_eq!(
        get(&ember, "web", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );
}

/// `skopeo copy` of `image` (in the test registry) to `destination`, a transport
/// and path as skopeo names them.
fn skopeo_copy(image: &str, destination: &str) {
    let output = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(destination)
        .output()
        .expect("skopeo is installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "skopeo copy to {destination}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_saved_to_disk_deploy_from_the_cli_with_no_registry() {
    require_root();
    let registry = Registry::start().unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, &[]);
    // A Docker image (gzip layers: `docker save` archives hold no zstd).
    let layers = [
        busybox_layer()
            .unwrap()
            .with_compression(Compression::DockerGzip),
        http_app_layer().with_compression(Compression::DockerGzip),
    ];
    push_image(
        registry.addr,
        "apps/saved",
        "v1",
        &busybox_http_config(),
        &layers,
        ManifestFormat::DockerV2,
    )
    .await
    .unwrap();
    let image = format!("{}/apps/saved:v1", registry.addr);
    // The three forms people have on disk, each written by a real tool.
    let disk = temp_dir();
    let saved = disk.path().join("saved.tar");
    let layout = disk.path().join("layout");
    let archive = disk.path().join("oci.tar");
    skopeo_copy(&image, &format!("docker-archive:{}", saved.display()));
    skopeo_copy(&image, &format!("oci:{}:v1", layout.display()));
    skopeo_copy(&image, &format!("oci-archive:{}", archive.display()));
    // Nothing comes from the registry from here on.
    drop(registry);

    for (name, path) in [
        ("saved", &saved),
        ("layout", &layout),
        ("ociarchive", &archive),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["deploy", name])
            .arg(path)
            .env("EMBER_API", format!("http://{}", ember.api))
            .env("EMBER_DATA_DIR", &ember.data_dir)
            .env_remove("EMBER_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("uploading the"), "{name}: {stderr}");
        assert_eq!(
            get(&ember, name, "/").await,
            (StatusCode::OK, "hello from busybox httpd\n".into()),
            "{name}"
        );
    }

    // A manifest whose layers were never uploaded is refused, naming the blob.
    let upload_as = |bytes: Vec<u8>, media_type: &'static str| {
        let request = ember
            .api_request(reqwest::Method::POST, "/v1/blobs")
            .header("content-type", media_type)
            .body(bytes);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (_, config) = upload_as(b"{}".to_vec(), "application/vnd.oci.image.config.v1+json").await;
    let config = config["digest"].as_str().unwrap().to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", "0".repeat(64)), "size": 1}],
    });
    let (status, manifest) = upload_as(
        serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{manifest}");
    let manifest = manifest["digest"].as_str().unwrap().to_string();
    // Neither a manifest nor a config that is not one is stored.
    for (bytes, media_type) in [
        (
            &b"{\"layers\": 1}"[..],
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (&b"not json"[..], "application/vnd.oci.image.config.v1+json"),
    ] {
        let (status, refused) = upload_as(bytes.to_vec(), media_type).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(refused["field"], "body", "{refused}");
    }
    let failed = deploy_failing(&ember, json!({ "name": "partial", "image": manifest })).await;
    assert!(
        failed["statusReason"]
            .as_str()
            .unwrap_or_default()
            .contains(&"0".repeat(64)),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_give_slow_starters_time_gate_readiness_and_replace_the_unhealthy() {
    require_root();
    // The node allows a workload 1 s to listen.
    let Setup {
        ember,
        data: _data,
        image,
        network: _network,
        _registry,
    } = setup(&["--startup-timeout", "1"]).await;
    let slow = "sleep 3; exec httpd -f -p 8080 -h /www";
    let slow_starter = |name: &str, extra: Value| {
        let mut body = json!({
            "name": name,
            "image": image,
            "command": ["/bin/sh", "-c"],
            "arguments": [slow],
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    // Without a startup probe, a workload that takes 3 s fails to start.
    deploy(&ember, slow_starter("impatient", json!({}))).await;
    let (status, body) = get(&ember, "impatient", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("did not listen"), "{body}");
    // With one allowing 10 s, it serves, and its readiness probe passes.
    deploy(
        &ember,
        slow_starter(
            "patient",
            json!({
                "startupProbe": { "tcpSocket": {}, "periodSeconds": 1, "failureThreshold": 10 },
                "readinessProbe": { "httpGet": { "path": "/" } },
            }),
        ),
    )
    .await;
    assert_eq!(
        get(&ember, "patient", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );

    // A readiness path the server answers 404: never ready, and the request is
    // told why.
    deploy(
        &ember,
        json!({ "name": "unready", "image": image, "readinessProbe": {
            "httpGet": { "path": "/missing" }, "periodSeconds": 1, "failureThreshold": 2
        } }),
    )
    .await;
    let (status, body) = get(&ember, "unready", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("readiness probe") && body.contains("404"),
        "{body}"
    );

    // A liveness path answered 404: the instance is replaced and counted.
    let id = deploy(
        &ember,
        json!({ "name": "unhealthy", "image": image, "minInstances": 1, "livenessProbe": {
            "httpGet": { "path": "/missing" }, "periodSeconds": 1, "failureThreshold": 2
        } }),
    )
    .await;
    let replaced = ember
        .wait_for(
            &format!("/v1/containers/{id}"),
            Duration::from_secs(60),
            |c| (c["restarts"].as_u64() >= Some(1)).then(|| c.clone()),
        )
        .await;
    assert!(
        replaced["statusReason"]
            .as_str()
            .unwrap_or_default()
            .contains("liveness probe"),
        "{replaced}"
    );
}

/// tests/servers/ws_echo.c, built static with the host's C compiler.
fn ws_echo_server() -> Vec<u8> {
    let dir = temp_dir();
    let out = dir.path().join("ws_echo");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/ws_echo.c");
    let status = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .expect("running cc (Rust's linker needs it installed anyway)");
    assert!(status.success(), "building {source} failed");
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through_a_cold_start_both_ways_and_hold_the_instance() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    require_root();
    let registry = Registry::start().unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, &[]);
    let server = common::oci_image::LayerBuilder::new()
        .file("/ws_echo", 0o755, &ws_echo_server())
        .build(Compression::Gzip);
    push_image(
        registry.addr,
        "apps/ws",
        "v1",
        &common::oci_image::ImageConfig {
            entrypoint: vec!["/ws_echo".into()],
            ..Default::default()
        },
        &[busybox_layer().unwrap(), server],
        ManifestFormat::Oci,
    )
    .await
    .unwrap();
    let id = deploy(
        &ember,
        json!({ "name": "ws", "image": format!("{}/apps/ws:v1", registry.addr) }),
    )
    .await;
    assert!(ember.instances(&id).await.is_empty(), "at zero before");

    // The upgrade itself starts the container (a cold start).
    let mut request = format!("ws://{}/chat", ember.ingress)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "host",
        format!("ws.ember.localhost:{}", ember.ingress.port())
            .parse()
            .unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for message in [
        Message::Text("hello through Ember".into()),
        Message::Binary(big.clone().into()),
        Message::Text("and again".into()),
    ] {
        socket.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    // While it is open the instance counts as busy, so it is not scaled away.
    let busy = ember.instances(&id).await;
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0]["in_flight"], 1, "{busy:?}");
    socket.close(None).await.unwrap();
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ember.instances(&id).await[0]["in_flight"] != 0 {
        assert!(Instant::now() < deadline, "the closed tunnel still counts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A plain request to the same server is still plain HTTP.
    assert_eq!(
        get(&ember, "ws", "/").await,
        (StatusCode::OK, "no websocket\n".into())
    );
}

/// A layer with the host's nginx and the libraries it links, serving h2c (HTTP/2
/// with prior knowledge) on port 8080 with a trailer on each answer.
fn nginx_h2c_layer() -> common::oci_image::ImageLayer {
    let nginx = "/usr/sbin/nginx";
    let ldd = std::process::Command::new("ldd")
        .arg(nginx)
        .output()
        .unwrap();
    assert!(
        ldd.status.success(),
        "ldd {nginx}: is nginx installed? (scripts/test installs it)"
    );
    let mut layer = common::oci_image::LayerBuilder::new()
        .dir("/lib", 0o755)
        .dir("/lib/x86_64-linux-gnu", 0o755)
        .dir("/lib64", 0o755)
        .dir("/usr", 0o755)
        .dir("/usr/sbin", 0o755)
        .dir("/etc/nginx", 0o755)
        .file(nginx, 0o755, &std::fs::read(nginx).unwrap());
    // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`, and the loader alone.
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(str::to_string);
        if let Some(path) = path {
            layer = layer.file(&path, 0o755, &std::fs::read(&path).unwrap());
        }
    }
    let config = "daemon off; master_process off; worker_processes 1; pid /tmp/nginx.pid;
        error_log stderr warn; events { worker_connections 64; }
        http {
          access_log off;
          client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy;
          fastcgi_temp_path /tmp/fastcgi; uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
          server {
            listen 8080 http2;
            location / { add_trailer x-served-by nginx-h2c; return 200 \"over h2c\\n\"; }
          }
        }";
    layer
        .file("/etc/nginx/nginx.conf", 0o644, config.as_bytes())
        .build(Compression::Gzip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_end_to_end_keeps_trailers_and_http1_clients_still_reach_it() {
    use http_body_util::BodyExt;
    require_root();
    let registry = Registry::start().unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, &[]);
    push_image(
        registry.addr,
        "apps/h2c",
        "v1",
        &common::oci_image::ImageConfig {
            entrypoint: vec!["/usr/sbin/nginx".into()],
            ..Default::default()
        },
        &[busybox_layer().unwrap(), nginx_h2c_layer()],
        ManifestFormat::Oci,
    )
    .await
    .unwrap();
    let created = ember
        .deploy(json!({
            "name": "h2",
            "image": format!("{}/apps/h2c:v1", registry.addr),
            "http2": true,
        }))
        .await;
    assert_eq!(created["http2"], true, "{created}");
    ember.wait_deployed(created["id"].as_str().unwrap()).await;

    // An HTTP/2 client with prior knowledge, as gRPC clients are: the answer and
    // its trailer come through.
    let stream = tokio::net::TcpStream::connect(ember.ingress).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!(
        "http://h2.ember.localhost:{}/",
        ember.ingress.port()
    ))
    .header("te", "trailers")
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap();
    let trailers = body.trailers().cloned().expect("the trailer came through");
    assert_eq!(trailers["x-served-by"], "nginx-h2c");
    assert_eq!(body.to_bytes(), "over h2c\n");

    // An HTTP/1.1 client reaches the same instance over h2c.
    assert_eq!(
        get(&ember, "h2", "/").await,
        (StatusCode::OK, "over h2c\n".into())
    );

    // And an HTTP/2 client reaches an instance that speaks HTTP/1.1 only.
    push_busybox_http_image(registry.addr, "apps/httpd", "v1")
        .await
        .unwrap();
    deploy(
        &ember,
        json!({ "name": "web", "image": format!("{}/apps/httpd:v1", registry.addr) }),
    )
    .await;
    let request = http::Request::get(format!(
        "http://web.ember.localhost:{}/",
        ember.ingress.port()
    ))
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello from busybox httpd\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_reach_the_client_as_they_are_written() {
    require_root();
    let Setup {
        ember,
        data: _data,
        image,
        network: _network,
        _registry,
    } = setup(&[]).await;
    // A CGI script that sends an event a second: busybox httpd passes its output
    // on as it comes.
    let script = r#"mkdir -p /www/cgi-bin
printf '#!/bin/sh\necho "Content-Type: text/event-stream"\necho\nfor i in 1 2 3; do echo "data: event $i"; echo; sleep 1; done\n' > /www/cgi-bin/events
chmod +x /www/cgi-bin/events
exec httpd -f -p 8080 -h /www"#;
    deploy(
        &ember,
        json!({ "name": "sse", "image": image, "command": ["/bin/sh", "-c"], "arguments": [script] }),
    )
    .await;
    let mut response = ember
        .ingress_client("sse")
        .get(ember.ingress_url("sse", "/cgi-bin/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let began = Instant::now();
    let mut seen = String::new();
    let mut first_at = None;
    while let Some(chunk) = response.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if first_at.is_none() && seen.contains("data: event 1") {
            first_at = Some(began.elapsed());
        }
    }
    assert!(seen.contains("data: event 3"), "{seen}");
    // The first event came long before the last was written: nothing buffered it.
    let first_at = first_at.expect("the first event");
    assert!(first_at < Duration::from_millis(900), "{first_at:?}");
    assert!(
        began.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_its_readiness_probe_takes_no_requests_and_is_made_up_for() {
    require_root();
    let Setup {
        ember,
        data: _data,
        image,
        network: _network,
        _registry,
    } = setup(&[]).await;
    // Ready while /www/ready exists; GET /cgi-bin/sick removes it.
    let script = r#"mkdir -p /www/cgi-bin
echo ok > /www/ready
printf '#!/bin/sh\nrm -f /www/ready\necho "Content-Type: text/plain"\necho\necho "sick $HOSTNAME"\n' > /www/cgi-bin/sick
chmod +x /www/cgi-bin/sick
exec httpd -f -p 8080 -h /www"#;
    let id = deploy(
        &ember,
        json!({
            "name": "flaky", "image": image, "minInstances": 1,
            "command": ["/bin/sh", "-c"], "arguments": [script],
            "readinessProbe": { "httpGet": { "path": "/ready" }, "periodSeconds": 1, "failureThreshold": 1 },
        }),
    )
    .await;
    assert_eq!(get(&ember, "flaky", "/ready").await.0, StatusCode::OK);
    let (status, sick) = get(&ember, "flaky", "/cgi-bin/sick").await;
    assert_eq!(status, StatusCode::OK, "{sick}");
    // The sick instance stays up but out of rotation; another starts and serves.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ember.instances(&id).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no instance made up for the unready one"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&ember, "flaky", "/ready").await;
        if status == StatusCode::OK {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every request now reaches the ready one: none gets the sick one's 404.
    for _ in 0..20 {
        assert_eq!(get(&ember, "flaky", "/ready").await.0, StatusCode::OK);
    }
}
