//! `ember bench --quick` end to end, as root: its own runtime, the wasm and OCI
//! cases, and every peer (crun, runc, wasmtime serve, nginx), which the README's
//! test command installs. Fails, never skips, when root or a peer is missing.

mod common;

use serde_json::Value;
use std::process::Command;

#[test]
fn a_quick_bench_measures_every_case_and_peer_and_leaves_nothing_behind() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "ember bench's OCI cases need root (CI runs them as root); run `scripts/test` as root"
    );
    let dir = common::temp_dir();
    let json = dir.path().join("bench.json");
    let plot = dir.path().join("bench.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_ember"))
        .arg("bench")
        .arg("--quick")
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .env_remove("EMBER_TOKEN")
        .output()
        .expect("running ember bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let measured = |case: &str, subject: &str| {
        report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case"] == case && c["subject"] == subject)
            .unwrap_or_else(|| panic!("no {case} ({subject}) in {report:#}"))
            .clone()
    };
    for (case, subject) in [
        ("wasm cold start", "ember"),
        ("wasm warm latency", "ember"),
        ("wasm warm throughput", "ember"),
        ("wasm burst from zero", "ember"),
        ("wasm warm latency", "wasmtime serve"),
        ("wasm warm throughput", "wasmtime serve"),
        ("OCI cold start, nothing prepared", "ember"),
        ("OCI cold start, prepared sandbox", "ember"),
        ("OCI warm latency", "ember"),
        ("OCI warm throughput", "ember"),
        ("OCI warm latency", "nginx"),
        ("OCI warm throughput", "nginx"),
        ("OCI burst from zero", "ember"),
        ("container start (run /bin/true)", "crun"),
        ("start to first HTTP byte (run httpd)", "crun"),
        ("container start (run /bin/true)", "runc"),
        ("start to first HTTP byte (run httpd)", "runc"),
    ] {
        let found = measured(case, subject);
        let n = found["n"].as_u64().unwrap_or(0);
        assert!(n > 0, "{case} ({subject}) was not measured: {found}");
        let figure = |key: &str| {
            found[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{case} ({subject}) has no {key}: {found}"))
        };
        let (p50, p99, max) = (figure("p50_us"), figure("p99_us"), figure("max_us"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{found}");
        // The table shows the same case.
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(case) && l.contains(subject)),
            "{stdout}"
        );
    }
    let throughput = measured("wasm warm throughput", "ember")["requests_per_sec"].as_f64();
    assert!(throughput.is_some_and(|t| t > 0.0), "{report:#}");
    let goals: Vec<&str> = report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("goal").is_some())
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    assert_eq!(goals.len(), 4, "{goals:?}");
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    // Progress went to stderr as it ran.
    assert!(stderr.contains("wasm cold start: 50 samples"), "{stderr}");

    // The bench's runtime, its bridge and the peers' containers are gone.
    let bridge = Command::new("ip")
        .args(["link", "show", "emberbench0"])
        .output()
        .unwrap();
    assert!(!bridge.status.success(), "the bench's bridge is left");
    for runtime in ["crun", "runc"] {
        let list = Command::new(runtime).arg("list").output().unwrap();
        assert!(list.status.success(), "{runtime} list failed: {list:?}");
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains("ember-bench-"),
            "{runtime} containers are left"
        );
    }
}

/// `ember bench --soak 60s`: a minute of mixed load on wasm and OCI with deploy
/// and delete churn, and not one error; the report follows memory, descriptors
/// and threads over time.
#[test]
fn a_minute_of_mixed_load_and_churn_has_no_error() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the soak's OCI load needs root (CI runs as root); run `scripts/test` as root"
    );
    let dir = common::temp_dir();
    let json = dir.path().join("soak.json");
    let output = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["bench", "--soak", "60s", "--json"])
        .arg(&json)
        .env_remove("EMBER_TOKEN")
        .output()
        .expect("running ember bench --soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["oci"], true);
    let samples = report["samples"].as_array().unwrap();
    assert!(samples.len() >= 30, "{} samples", samples.len());
    for sample in samples {
        assert!(sample["rss_mib"].as_f64().unwrap() > 0.0);
        assert!(sample["open_fds"].as_u64().unwrap() > 0);
        assert!(sample["threads"].as_u64().unwrap() > 0);
    }
    assert!(report["operations"].as_u64().unwrap() > 1000, "{report:#}");
}
