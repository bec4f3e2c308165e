//! The `ember` client verbs against a real runtime.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::StatusCode;
use std::process::{Command, Output};

/// Runs the CLI against `ember` with its admin token, whatever the outcome.
fn run_ember_cli(ember: &Ember, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .env("EMBER_API", format!("http://{}", ember.api))
        .env("EMBER_DATA_DIR", &ember.data_dir)
        .env_remove("EMBER_TOKEN")
        .output()
        .expect("running ember")
}

/// Runs the CLI against `ember`, which must succeed.
fn ember_cli(ember: &Ember, args: &[&str]) -> Output {
    let output = run_ember_cli(ember, args);
    assert!(
        output.status.success(),
        "ember {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn deploy_a_local_file_list_revise_and_remove() {
    let dir = temp_dir();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    let v1 = dir.path().join("v1.wasm");
    let v2 = dir.path().join("v2.wasm");
    std::fs::write(&v1, fixtures::hello("cli v1\n")).unwrap();
    std::fs::write(&v2, fixtures::hello("cli v2\n")).unwrap();

    let deployed = stdout(&ember_cli(
        &ember,
        &["deploy", "clihello", v1.to_str().unwrap(), "--env", "A=1"],
    ));
    assert!(deployed.starts_with("NAME"), "{deployed}");
    assert!(
        deployed.contains("clihello") && deployed.contains("deployed"),
        "{deployed}"
    );
    assert_eq!(
        ember.invoke("clihello").await,
        (StatusCode::OK, "cli v1\n".to_string())
    );

    // Device flags reach the API, which refuses them for a wasm component.
    for flags in [
        &["--gpu", "1", "--gpu-model", "t4"][..],
        &["--cdi-device", "vendor.com/class=dev"][..],
    ] {
        let mut args = vec!["deploy", "clihello", v2.to_str().unwrap()];
        args.extend(flags);
        let refused = run_ember_cli(&ember, &args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        let field = if flags[0] == "--gpu" {
            "gpu"
        } else {
            "cdiDevices"
        };
        assert!(
            stderr.contains(&format!("{field}: wasm components cannot")),
            "{stderr}"
        );
    }

    // Deploying the same name again updates it: a second revision.
    ember_cli(&ember, &["deploy", "clihello", v2.to_str().unwrap()]);
    assert_eq!(ember.invoke("clihello").await.1, "cli v2\n");

    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&ember_cli(&ember, &["ls", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "clihello");
    assert_eq!(listed[0]["env"]["A"], "1");

    let table = stdout(&ember_cli(&ember, &["revisions", "clihello"]));
    let lines: Vec<_> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("REVISION"));
    assert!(
        lines[1].starts_with('2') && lines[2].starts_with('1'),
        "{table}"
    );

    let removed = stdout(&ember_cli(&ember, &["rm", "clihello"]));
    assert!(removed.contains("deleted clihello"), "{removed}");
    assert_eq!(stdout(&ember_cli(&ember, &["ls", "--json"])).trim(), "[]");
    assert_eq!(ember.invoke("clihello").await.0, StatusCode::NOT_FOUND);
}

#[test]
fn client_errors_are_clear() {
    let output = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args([
            "ls",
            "--api",
            "http://127.0.0.1:9",
            "--data-dir",
            "/nonexistent",
        ])
        .env_remove("EMBER_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no EMBER_TOKEN set"), "{stderr}");
}

#[tokio::test]
async fn tokens_are_minted_listed_and_revoked_from_the_cli() {
    let dir = temp_dir();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    let minted = ember_cli(
        &ember,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--capability",
            "containers-view",
        ],
    );
    let secret = stdout(&minted).trim().to_string();
    assert!(secret.starts_with("ember_"), "{secret}");

    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&ember_cli(&ember, &["token", "ls", "--json"]))).unwrap();
    let alice = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "alice")
        .expect("alice's token is listed")
        .clone();
    assert_eq!(alice["role"], "USER");
    assert_eq!(
        alice["capabilities"],
        serde_json::json!(["containers-view"])
    );
    let table = stdout(&ember_cli(&ember, &["token", "ls"]));
    assert!(
        table.starts_with("ID") && table.contains("alice"),
        "{table}"
    );

    // Her token works for the client verbs, then not once revoked.
    let as_alice = || {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["ls", "--json"])
            .env("EMBER_API", format!("http://{}", ember.api))
            .env("EMBER_TOKEN", &secret)
            .output()
            .unwrap()
    };
    assert!(as_alice().status.success());
    let id = alice["id"].as_str().unwrap();
    assert!(stdout(&ember_cli(&ember, &["token", "rm", id])).contains("revoked"));
    let refused = as_alice();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") || stderr.contains("revoked"),
        "{stderr}"
    );
}

#[test]
fn nvidia_spec_generation_on_a_host_without_a_gpu_says_why_and_writes_nothing() {
    let dir = temp_dir();
    let spec = dir.path().join("cdi/ember-nvidia.json");
    let generate = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["gpu", "cdi-generate", "--output"])
        .arg(&spec)
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&generate.stderr);
    assert!(!generate.status.success(), "{stderr}");
    assert!(
        stderr.contains("listing the NVIDIA GPUs failed: nvidia-smi is not on the PATH"),
        "{stderr}"
    );
    assert!(!spec.exists());

    // Asked for at start-up, the same failure stops the runtime before it serves.
    let serve = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--ingress-addr",
            "127.0.0.1:0",
            "--ssh-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--cdi-spec-dir")
        .arg(dir.path().join("cdi"))
        .arg("--generate-nvidia-cdi")
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success(), "{stderr}");
    assert!(
        stderr.contains("generating the NVIDIA CDI spec (--generate-nvidia-cdi)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_instances_describe_and_scale_from_the_cli() {
    let dir = temp_dir();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    let wasm = dir.path().join("logging.wasm");
    std::fs::write(
        &wasm,
        fixtures::hello_logging("served\n", "a-line-from-the-guest"),
    )
    .unwrap();
    ember_cli(&ember, &["deploy", "chatty", wasm.to_str().unwrap()]);
    assert_eq!(ember.invoke("chatty").await.1, "served\n");

    // The lines so far, each with its time and instance.
    let printed = stdout(&ember_cli(&ember, &["logs", "chatty"]));
    assert!(printed.contains("a-line-from-the-guest"), "{printed}");
    let listed = stdout(&ember_cli(&ember, &["instances", "chatty", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let instance = listed[0]["id"].as_str().unwrap().to_string();
    assert!(printed.contains(&instance[..8]), "{printed}");
    let only_other = stdout(&ember_cli(
        &ember,
        &["logs", "chatty", "--instance", "00000000"],
    ));
    assert!(only_other.is_empty(), "{only_other}");
    let table = stdout(&ember_cli(&ember, &["instances", "chatty"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&instance) && table.contains("running"),
        "{table}"
    );

    // Followed: a line written after the command started arrives too.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["logs", "chatty", "-f", "--since", "1s"])
        .env("EMBER_API", format!("http://{}", ember.api))
        .env("EMBER_DATA_DIR", &ember.data_dir)
        .env_remove("EMBER_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    let (found, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("a-line-from-the-guest") {
                let _ = found.send(line);
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(ember.invoke("chatty").await.1, "served\n");
    let line = got
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the followed line");
    assert!(line.contains(&instance[..8]), "{line}");
    follower.kill().unwrap();
    let _ = follower.wait();

    // Scale: the minimum is kept running.
    let scaled = stdout(&ember_cli(
        &ember,
        &["scale", "chatty", "--min", "2", "--max", "5"],
    ));
    assert!(scaled.contains("at least 2, at most 5"), "{scaled}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ember
        .instances(listed[0]["container_id"].as_str().unwrap())
        .await
        .iter()
        .filter(|i| i["state"]["current"] == "running")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "two instances never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = run_ember_cli(&ember, &["scale", "chatty"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--min, --max or both"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Describe: all of it on one screen (a scale is a new revision, whose
    // instances replaced the first one's).
    let described = stdout(&ember_cli(&ember, &["describe", "chatty"]));
    for expected in [
        "Name:",
        "chatty",
        "deployed",
        "2 to 5 instances",
        "100% to revision 2 (the latest",
        "request 300 s",
        "Probes:",
        "Revisions:",
        "Instances:",
        "IN-FLIGHT",
    ] {
        assert!(described.contains(expected), "{expected} in {described}");
    }
    assert_eq!(described.matches(" running ").count(), 2, "{described}");
    let described = stdout(&ember_cli(&ember, &["describe", "chatty", "--json"]));
    let described: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["container"]["minInstances"], 2);
    assert_eq!(described["revisions"].as_array().unwrap().len(), 2);
}

#[test]
fn shell_completion_scripts_name_every_verb_and_parse() {
    let completion = |shell: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(output.status.success(), "{shell}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = completion("bash");
    for verb in [
        "deploy",
        "logs",
        "instances",
        "describe",
        "scale",
        "traffic",
        "rollback",
        "nodes",
    ] {
        assert!(bash.contains(verb), "{verb} in the bash script");
    }
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &bash).unwrap();
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(script.path())
        .status()
        .unwrap();
    assert!(parsed.success(), "bash -n refused the script");
    assert!(completion("zsh").starts_with("#compdef ember"));
    assert!(completion("fish").contains("complete -c ember"));
    let refused = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("possible values"));
}

#[tokio::test]
async fn a_wat_file_is_built_into_a_component_and_deployed() {
    let dir = temp_dir();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    let wat = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello/hello.wat");
    ember_cli(&ember, &["deploy", "fromwat", wat]);
    assert_eq!(
        ember.invoke("fromwat").await,
        (StatusCode::OK, "Hello from Ember!\n".to_string())
    );
    let broken = dir.path().join("broken.wat");
    std::fs::write(&broken, "(module (func (export \"nothing\")))").unwrap();
    let refused = run_ember_cli(&ember, &["deploy", "broken", broken.to_str().unwrap()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("building a component from"), "{said}");
    let (_, containers) = ember.get_json("/v1/containers").await;
    assert_eq!(containers["total"], 1, "{containers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_moves_traffic_to_an_old_revision_without_a_new_one_or_a_failed_request() {
    use reqwest::Method;
    use serde_json::{Value, json};
    let dir = temp_dir();
    let data = dir.path().join("data");
    let ember = Ember::start(&data, &[]);
    let created = ember
        .deploy_wasm("rolled", &fixtures::hello("one\n"), json!({}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let put = |body: Value| {
        let ember = &ember;
        let id = id.clone();
        async move {
            ember
                .send_json(Method::PUT, &format!("/v1/containers/{id}"), &body)
                .await
        }
    };
    let two = ember.upload(&fixtures::hello("two\n")).await;
    let (status, _) = put(json!({ "image": two })).await;
    assert_eq!(status, StatusCode::OK);
    ember.wait_deployed(&id).await;
    assert_eq!(ember.invoke("rolled").await.1, "two\n");

    // Requests keep coming while traffic moves: none fails.
    let client = ember.ingress_client("rolled");
    let url = ember.ingress_url("rolled", "/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client.get(&url).send().await.unwrap();
                answers.push((response.status(), response.text().await.unwrap()));
            }
            answers
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rolled = stdout(&ember_cli(&ember, &["rollback", "rolled"]));
    assert!(rolled.contains("100% to revision 1"), "{rolled}");
    let described = stdout(&ember_cli(&ember, &["describe", "rolled"]));
    assert!(
        described.contains("100% to revision 1 (pinned"),
        "{described}"
    );
    assert_eq!(ember.invoke("rolled").await.1, "one\n");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = load.await.unwrap();
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(_, b)| b == "two\n") && answers.iter().any(|(_, b)| b == "one\n"));

    // No new revision; the traffic says where it goes.
    let (_, revisions) = ember
        .get_json(&format!("/v1/containers/{id}/revisions"))
        .await;
    assert_eq!(
        revisions["items"].as_array().unwrap().len(),
        2,
        "{revisions}"
    );
    let (_, container) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(
        container["traffic"],
        json!([{ "revisionNumber": 1, "latestRevision": false, "percent": 100 }])
    );

    // A new revision deploys but takes no traffic while it is pinned; a restart
    // keeps it pinned.
    let three = ember.upload(&fixtures::hello("three\n")).await;
    let (status, _) = put(json!({ "image": three })).await;
    assert_eq!(status, StatusCode::OK);
    let deployed = ember.wait_deployed(&id).await;
    assert_eq!(deployed["image"], three, "{deployed}");
    let (_, revisions) = ember
        .get_json(&format!("/v1/containers/{id}/revisions"))
        .await;
    assert_eq!(revisions["items"][0]["revisionNumber"], 3, "{revisions}");
    assert_eq!(ember.invoke("rolled").await.1, "one\n");
    ember.terminate();
    let ember = Ember::start(&data, &[]);
    assert_eq!(ember.invoke("rolled").await.1, "one\n");
    // Back to the latest, and it follows from then on.
    let moved = stdout(&ember_cli(&ember, &["traffic", "rolled", "latest=100"]));
    assert!(moved.contains("100% to revision 3"), "{moved}");
    assert_eq!(ember.invoke("rolled").await.1, "three\n");

    // Refused, naming the field, and nothing moves.
    for (body, field, status) in [
        (
            json!({ "traffic": [{ "revisionNumber": 1, "percent": 90 }, { "revisionNumber": 3, "percent": 10 }] }),
            "traffic",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "traffic": [{ "revisionNumber": 1, "percent": 100 }], "minInstances": 1 }),
            "traffic",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "traffic": [{ "revisionNumber": 9, "percent": 100 }] }),
            "traffic[0].revisionNumber",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, answer) = ember
            .send_json(Method::PUT, &format!("/v1/containers/{id}"), &body)
            .await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (got, answer) = ember
        .send_json(
            Method::POST,
            "/v1/containers",
            &json!({ "name": "fresh", "image": three, "traffic": [{ "latestRevision": true, "percent": 100 }] }),
        )
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["field"], "traffic", "{answer}");
    assert_eq!(ember.invoke("rolled").await.1, "three\n");
}

#[tokio::test]
async fn deploy_flags_set_the_serving_fields() {
    let dir = temp_dir();
    let ember = Ember::start(&dir.path().join("data"), &[]);
    let app = dir.path().join("app.wasm");
    std::fs::write(&app, fixtures::hello("flagged\n")).unwrap();
    let printed = stdout(&ember_cli(
        &ember,
        &[
            "deploy",
            "flagged",
            app.to_str().unwrap(),
            "--timeout",
            "20",
            "--initial-scale",
            "1",
            "--target-rps",
            "50",
            "--allow-outbound",
            "http://api.example.com",
            "--ready-path",
            "/healthz",
            "--json",
        ],
    ));
    let deployed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let container = &deployed[0];
    assert_eq!(container["timeoutSeconds"], 20, "{container}");
    assert_eq!(container["initialScale"], 1, "{container}");
    assert_eq!(container["metric"], "rps", "{container}");
    assert_eq!(container["targetRequestsPerSecond"], 50, "{container}");
    assert_eq!(
        container["allowedOutboundHosts"],
        serde_json::json!(["http://api.example.com:80"]),
        "{container}"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        ember.invoke("flagged").await,
        (StatusCode::OK, "flagged\n".to_string())
    );
}
