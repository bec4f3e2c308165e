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
