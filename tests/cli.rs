//! The `ember` client verbs against a real runtime.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::StatusCode;
use std::process::{Command, Output};

fn ember_cli(ember: &Ember, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .env("EMBER_API", format!("http://{}", ember.api))
        .env("EMBER_DATA_DIR", &ember.data_dir)
        .env_remove("EMBER_TOKEN")
        .output()
        .expect("running ember");
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
