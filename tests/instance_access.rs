//! Reaching a running instance (document 004): its console and telemetry over
//! WebSockets, a shell over Ember's SSH server (with russh and with OpenSSH's
//! client), and migration tasks, on busybox containers. Needs root.

mod common;

use common::oci::{deploy, get, require_root, setup};
use common::{Ember, fixtures};
// A russh client that takes any host key (the test reaches its own server), as
// the CLI's does.
use ember::shell::ApiIssuedServer as TrustingClient;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A busybox container that runs `script` in `sh -c` beside its web server, with an
/// instance always up.
fn busybox(name: &str, image: &str, script: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "command": ["sh", "-c", format!("httpd -p 8080 -h /www; {script}")],
        "minInstances": 1,
    })
}

/// The container's one running instance's id, once it runs.
async fn running_instance(ember: &Ember, id: &str) -> String {
    ember
        .wait_for(
            &format!("/v1/containers/{id}/instances"),
            Duration::from_secs(60),
            |list| {
                list["data"]
                    .as_array()?
                    .iter()
                    .find(|i| i["state"]["current"] == "running")
                    .map(|i| i["id"].as_str().unwrap().to_string())
            },
        )
        .await
}

/// `GET` of an instance's sub-resource, as the admin.
async fn instance_get(ember: &Ember, id: &str, instance: &str, what: &str) -> (StatusCode, Value) {
    ember
        .get_json(&format!("/v1/containers/{id}/instances/{instance}/{what}"))
        .await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket an authorization names.
async fn open_stream(authorization: &Value) -> Socket {
    let url = format!(
        "{}?token={}",
        authorization["data"]["address"].as_str().unwrap(),
        authorization["data"]["token"].as_str().unwrap()
    );
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
}

/// Reads text messages until `found` holds on everything read so far.
async fn read_until(socket: &mut Socket, found: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !found(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => seen.push_str(&text),
            Ok(Some(Ok(_))) => {}
            other => panic!("the stream ended ({other:?}) having sent: {seen}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_an_instance_s_output_and_feeds_its_input() {
    require_root();
    let setup = Arc::new(setup(&[]).await);
    let (ember, image) = (&setup.ember, setup.image.as_str());
    let script = "echo console-ready; while read line; do echo \"got: $line\"; done";
    let id = deploy(ember, busybox("echoer", image, script)).await;
    let instance = running_instance(ember, &id).await;

    let (status, authorization) = instance_get(ember, &id, &instance, "console").await;
    assert_eq!(status, StatusCode::OK, "{authorization}");
    let address = authorization["data"]["address"].as_str().unwrap();
    assert_eq!(address, format!("ws://{}/v1/streams/console", ember.api));
    let mut socket = open_stream(&authorization).await;
    // What it wrote before anyone attached comes first.
    read_until(&mut socket, |seen| seen.contains("console-ready\n")).await;
    socket
        .send(Message::Text("hello from the test\n".into()))
        .await
        .unwrap();
    read_until(&mut socket, |seen| {
        seen.contains("got: hello from the test\n")
    })
    .await;

    // The token was used up; a made-up one, or none, opens nothing.
    for url in [
        format!(
            "ws://{}/v1/streams/console?token={}",
            ember.api,
            authorization["data"]["token"].as_str().unwrap()
        ),
        format!("ws://{}/v1/streams/console?token=made-up", ember.api),
        format!("ws://{}/v1/streams/console", ember.api),
    ] {
        let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
        assert!(refused.to_string().contains("401"), "{refused}");
    }
    // A telemetry token does not open the console.
    let (_, telemetry) = instance_get(ember, &id, &instance, "telemetry/resources/stream").await;
    let url = format!(
        "ws://{}/v1/streams/console?token={}",
        ember.api,
        telemetry["data"]["token"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());

    // Stopping the instance closes its console.
    let (status, _) = ember
        .send_json(
            Method::DELETE,
            &format!("/v1/containers/{id}/instances/{instance}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => {
                assert!(frame.unwrap().reason.contains("stopped"));
                break;
            }
            None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_stream_follows_memory_as_the_instance_allocates() {
    require_root();
    let setup = Arc::new(setup(&[]).await);
    let (ember, image) = (&setup.ember, setup.image.as_str());
    // Files on the instance's tmpfs are memory charged to its cgroup: 4 MiB more
    // every quarter second for ten seconds.
    let script = "i=0; while [ $i -lt 40 ]; do dd if=/dev/zero of=/fill$i bs=1M count=4 2>/dev/null; i=$((i+1)); sleep 0.25; done; sleep 3600";
    let mut body = busybox("allocator", image, script);
    body["ram"] = json!("512Mi");
    body["ephemeralStorage"] = json!("1Gi");
    let id = deploy(ember, body).await;
    let instance = running_instance(ember, &id).await;

    let (status, authorization) =
        instance_get(ember, &id, &instance, "telemetry/resources/stream").await;
    assert_eq!(status, StatusCode::OK, "{authorization}");
    let mut socket = open_stream(&authorization).await;
    let mut samples: Vec<Value> = Vec::new();
    while samples.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a sample about once a second")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            samples.push(serde_json::from_str(&text).unwrap());
        }
    }
    for sample in &samples {
        assert_eq!(sample["instance_id"], instance.as_str(), "{sample}");
        assert_eq!(sample["state"], "running", "{sample}");
        assert!(sample["cpu"]["usage_percent"].is_number(), "{sample}");
        assert!(sample["network"]["received_bytes"].is_u64(), "{sample}");
        assert_eq!(sample["memory"]["limit_bytes"], 512u64 << 20, "{sample}");
        assert!(sample["storage"]["used_bytes"].is_u64(), "{sample}");
    }
    let memory: Vec<u64> = samples
        .iter()
        .map(|s| s["memory"]["used_bytes"].as_u64().unwrap())
        .collect();
    assert!(
        memory.windows(2).all(|w| w[1] >= w[0]) && memory[3] >= memory[0] + (8 << 20),
        "memory did not grow with the files: {memory:?}"
    );
    let storage_first = samples[0]["storage"]["used_bytes"].as_u64().unwrap();
    let storage_last = samples[3]["storage"]["used_bytes"].as_u64().unwrap();
    assert!(
        storage_last > storage_first,
        "{storage_first} -> {storage_last}"
    );
    socket.close(None).await.unwrap();
}

/// Logs in with `credentials` (`data` of GET .../ssh); `None` when refused.
async fn russh_login(credentials: &Value) -> Option<russh::client::Handle<TrustingClient>> {
    let config = Arc::new(russh::client::Config::default());
    let address = credentials["address"].as_str().unwrap().to_string();
    let mut session = russh::client::connect(config, address, TrustingClient)
        .await
        .unwrap();
    let outcome = session
        .authenticate_password(
            credentials["user"].as_str().unwrap(),
            credentials["secret"].as_str().unwrap(),
        )
        .await
        .unwrap();
    outcome.success().then_some(session)
}

/// Runs `command` over an SSH session: its output and exit status.
async fn russh_exec(
    session: &russh::client::Handle<TrustingClient>,
    command: &str,
) -> (String, Option<u32>) {
    let mut channel = session.channel_open_session().await.unwrap();
    channel.exec(true, command).await.unwrap();
    let (mut output, mut status) = (String::new(), None);
    while let Some(message) = channel.wait().await {
        match message {
            russh::ChannelMsg::Data { data } | russh::ChannelMsg::ExtendedData { data, .. } => {
                output.push_str(&String::from_utf8_lossy(&data));
            }
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    (output, status)
}

async fn ssh_credentials(ember: &Ember, id: &str, instance: &str) -> Value {
    let (status, body) = instance_get(ember, id, instance, "ssh").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// Runs `command` with OpenSSH's `ssh` and `credentials`, the password given by an
/// askpass program.
async fn openssh(credentials: &Value, flags: &[&str], command: &str) -> std::process::Output {
    let (host, port) = credentials["address"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    let dir = common::temp_dir();
    let askpass = dir.path().join("askpass");
    let secret = credentials["secret"].as_str().unwrap();
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{secret}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    tokio::process::Command::new("ssh")
        .args(flags)
        .args(["-p", port, "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "PreferredAuthentications=password"])
        .arg(format!("{}@{host}", credentials["user"].as_str().unwrap()))
        .arg(command)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .env("TERM", "xterm-test")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("Debian's openssh-client (scripts/test installs it)")
}

/// The processes busybox's `ps` lists (`PID USER COMMAND`), by their command lines.
fn commands(ps: &str) -> Vec<String> {
    ps.lines()
        .skip(1)
        .map(|line| {
            line.split_whitespace()
                .skip(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_logs_in_to_the_instance_alone_until_the_credentials_expire() {
    require_root();
    let setup = Arc::new(setup(&["--ssh-credential-lifetime", "4s"]).await);
    let (ember, image) = (&setup.ember, setup.image.as_str());
    let id = deploy(ember, busybox("shelly", image, "sleep 3600")).await;
    let instance = running_instance(ember, &id).await;

    let credentials = ssh_credentials(ember, &id, &instance).await;
    assert_eq!(credentials["user"], instance.as_str());
    assert_eq!(credentials["address"], ember.ssh.to_string());
    let valid_until =
        humantime::parse_rfc3339(credentials["valid_until"].as_str().unwrap()).unwrap();
    assert!(valid_until > std::time::SystemTime::now());
    let session = russh_login(&credentials).await.expect("valid credentials");
    let (ps, status) = russh_exec(&session, "ps").await;
    assert_eq!(status, Some(0), "{ps}");
    // The instance's own processes, from its pid namespace: Ember's init as PID 1,
    // the sleep its shell became, its web server, and this ps; nothing of the
    // host's (the runtime's own executable is nowhere).
    let seen = commands(&ps);
    assert!(seen[0].starts_with("/.ember/init -- sh -c"), "{ps}");
    assert!(seen.iter().any(|c| c.contains("httpd")), "{ps}");
    assert!(seen.iter().any(|c| c.contains("ps")), "{ps}");
    assert!(seen.len() <= 6, "more than the instance's processes: {ps}");
    let host_binary = env!("CARGO_BIN_EXE_ember");
    assert!(!ps.contains("__ember") && !ps.contains(host_binary), "{ps}");
    let (inside, _) = russh_exec(&session, "hostname; id -u; cat /proc/self/cgroup").await;
    assert!(inside.starts_with("shelly\n0\n"), "{inside}");
    // In the instance's cgroups: at the root of its cgroup namespace in every
    // hierarchy (a process outside them would see a path such as /../..).
    let cgroups = inside.lines().skip(2).collect::<Vec<_>>();
    assert!(!cgroups.is_empty(), "{inside}");
    assert!(cgroups.iter().all(|line| line.ends_with(":/")), "{inside}");
    let (exit, status) = russh_exec(&session, "exit 7").await;
    assert_eq!(status, Some(7), "{exit}");

    // OpenSSH's client, with the password from an askpass program.
    let credentials = ssh_credentials(ember, &id, &instance).await;
    let output = openssh(&credentials, &[], "ps").await;
    let ps = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{ps}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(commands(&ps).iter().any(|c| c.contains("httpd")), "{ps}");
    assert!(!ps.contains("__ember") && !ps.contains(host_binary), "{ps}");
    // With -tt the command runs on a terminal, with the client's TERM.
    let credentials = ssh_credentials(ember, &id, &instance).await;
    let command = "[ -t 0 ] && [ -t 1 ] && echo on-a-terminal; echo TERM=$TERM";
    let output = openssh(&credentials, &["-tt"], command).await;
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("on-a-terminal"), "{shown}");
    assert!(shown.contains("TERM=xterm-test"), "{shown}");

    // A wrong password is refused; so are credentials after DELETE expires them.
    let mut wrong = ssh_credentials(ember, &id, &instance).await;
    wrong["secret"] = json!("not-the-secret");
    assert!(russh_login(&wrong).await.is_none());
    let (status, expired) = ember
        .send_json(
            Method::DELETE,
            &format!("/v1/containers/{id}/instances/{instance}/ssh"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{expired}");
    // Those still valid of the four made so far (the first ones may have expired).
    assert!(
        (1..=4).contains(&expired["data"]["removed"].as_u64().unwrap()),
        "{expired}"
    );
    assert!(russh_login(&credentials).await.is_none());

    // Credentials past their valid_until are refused.
    let credentials = ssh_credentials(ember, &id, &instance).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(russh_login(&credentials).await.is_none());

    // A wasm instance has no shell.
    let wasm = ember
        .deploy_wasm(
            "wasm-shell",
            &fixtures::hello("hi"),
            json!({ "minInstances": 1 }),
        )
        .await;
    let wasm_id = wasm["id"].as_str().unwrap().to_string();
    ember.wait_deployed(&wasm_id).await;
    let wasm_instance = running_instance(ember, &wasm_id).await;
    let (status, refused) = instance_get(ember, &wasm_id, &wasm_instance, "ssh").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("no shell"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_moves_the_instance_while_every_request_is_served() {
    require_root();
    let setup = Arc::new(setup(&[]).await);
    let (ember, image) = (&setup.ember, setup.image.as_str());
    let id = deploy(ember, busybox("mover", image, "sleep 3600")).await;
    let instance = running_instance(ember, &id).await;
    let sandbox = |list: Vec<Value>| list[0]["sandbox_id"].as_str().unwrap().to_string();
    let before = sandbox(ember.instances(&id).await);
    assert_eq!(get(ember, "mover", "/").await.0, StatusCode::OK);

    // Steady traffic through the whole move.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (setup, stop) = (setup.clone(), stop.clone());
            let (served, failed) = (served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = get(&setup.ember, "mover", "/").await;
                    let counter = if status == StatusCode::OK {
                        &served
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let task = |action: &str| json!({ "action": action, "contents": {} });
    let path = format!("/v1/containers/{id}/instances/{instance}/tasks");
    let (status, job) = ember
        .send_json(Method::POST, &path, &task("migration.start"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["data"]["type"], "container.instance.migration.start");
    assert_eq!(job["data"]["instance_id"], instance.as_str());
    wait_for_job(ember, &job).await;
    let after = ember.instances(&id).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0]["id"],
        instance.as_str(),
        "the instance keeps its id"
    );
    let moved = sandbox(after);
    assert_ne!(moved, before, "it runs in a new sandbox");

    let (status, job) = ember
        .send_json(Method::POST, &path, &task("migration.revert"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    wait_for_job(ember, &job).await;
    assert_ne!(sandbox(ember.instances(&id).await), moved);

    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the moves"
    );
    assert!(served.load(Ordering::Relaxed) > 10);

    // Nothing to revert now; other actions and contents are refused.
    let (status, body) = ember
        .send_json(Method::POST, &path, &task("migration.revert"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for (bad, field) in [
        (task("instance.reboot"), "action"),
        (json!({ "action": "migration.start" }), "contents"),
        (
            json!({ "action": "migration.start", "contents": { "server_id": "6f0c1c3e-1111-4a4a-9a9a-000000000000" } }),
            "contents.server_id",
        ),
    ] {
        let (status, body) = ember.send_json(Method::POST, &path, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field)
                || body["message"].as_str().unwrap().contains(field),
            "{bad}: {body}"
        );
    }
}

/// Polls a job until it completes; fails on an error.
async fn wait_for_job(ember: &Ember, job: &Value) {
    let path = format!("/v1/jobs/{}", job["data"]["id"].as_str().unwrap());
    let state = ember
        .wait_for(&path, Duration::from_secs(60), |job| {
            let state = job["data"]["state"]["current"].as_str()?;
            (state == "completed" || state == "error").then(|| job.clone())
        })
        .await;
    assert_eq!(state["data"]["state"]["current"], "completed", "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_needs_its_capability_and_hides_other_users_instances() {
    require_root();
    let setup = Arc::new(setup(&[]).await);
    let (ember, image) = (&setup.ember, setup.image.as_str());
    let mint = async |user: &str, capabilities: Value| {
        let body = json!({
            "user": user,
            "scopes": ["projects_read", "projects_write"],
            "capabilities": capabilities,
        });
        let (status, minted) = ember.send_json(Method::POST, "/v1/tokens", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        minted["token"].as_str().unwrap().to_string()
    };
    let all = json!([
        "containers-view",
        "containers-update",
        "containers-ssh",
        "containers-console",
        "containers-instance-migrate"
    ]);
    let alice = mint("alice", all.clone()).await;
    let alice_without = mint("alice", json!([])).await;
    let mallory = mint("mallory", all).await;
    let (status, created) = ember
        .call_as(
            Some(&alice),
            Method::POST,
            "/v1/containers",
            Some(&busybox("guarded", image, "sleep 3600")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"]
        .as_str()
        .or(created["id"].as_str())
        .unwrap()
        .to_string();
    ember.wait_deployed(&id).await;
    let instance = running_instance(ember, &id).await;
    let base = format!("/v1/containers/{id}/instances/{instance}");
    let body = json!({ "action": "migration.start", "contents": {} });
    for (method, path, capability) in [
        (Method::GET, format!("{base}/console"), "containers-console"),
        (
            Method::GET,
            format!("{base}/telemetry/resources/stream"),
            "containers-view",
        ),
        (Method::GET, format!("{base}/ssh"), "containers-ssh"),
        (Method::DELETE, format!("{base}/ssh"), "containers-ssh"),
        (
            Method::POST,
            format!("{base}/tasks"),
            "containers-instance-migrate",
        ),
    ] {
        let (status, answer) = ember
            .call_as(Some(&mallory), method.clone(), &path, Some(&body))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        let (status, answer) = ember
            .call_as(Some(&alice_without), method.clone(), &path, Some(&body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(capability),
            "{answer}"
        );
    }
    // The owner, with the capabilities, gets through (the console as an example).
    let (status, answer) = ember
        .call_as(Some(&alice), Method::GET, &format!("{base}/console"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// Runs the `ember` CLI against `ember` with its admin token, `input` on its
/// stdin.
fn ember_cli(ember: &Ember, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .env("EMBER_API", format!("http://{}", ember.api))
        .env("EMBER_DATA_DIR", &ember.data_dir)
        .env_remove("EMBER_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_commands_and_a_shell_inside_an_instance() {
    require_root();
    let setup = setup(&[]).await;
    let (ember, image) = (&setup.ember, setup.image.as_str());
    let id = deploy(ember, busybox("execy", image, "sleep 3600")).await;
    let instance = running_instance(ember, &id).await;

    // A command: its output here, each stream to its own, its status as ours.
    let ran = ember_cli(
        ember,
        &[
            "exec",
            "execy",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        "",
    );
    assert_eq!(ran.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "err\n");
    // Words stay whole; the instance named by the start of its id.
    let ran = ember_cli(
        ember,
        &[
            "exec",
            "execy",
            "-i",
            &instance[..8],
            "--",
            "echo",
            "two words",
            "$HOME",
        ],
        "",
    );
    assert!(ran.status.success());
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "two words $HOME\n");

    // A shell, fed from stdin when it is no terminal.
    let shell = ember_cli(ember, &["ssh", "execy"], "echo from-the-shell; exit\n");
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    assert!(
        String::from_utf8_lossy(&shell.stdout).contains("from-the-shell"),
        "{}",
        String::from_utf8_lossy(&shell.stdout)
    );

    // A wasm component runs no processes: the API's refusal, said clearly.
    ember
        .deploy_wasm(
            "wasmy",
            &fixtures::hello("hi\n"),
            json!({ "minInstances": 1 }),
        )
        .await;
    let refused = ember_cli(ember, &["exec", "wasmy", "--", "true"], "");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("422"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
