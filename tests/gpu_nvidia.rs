//! A real NVIDIA GPU through CDI alone: `ember gpu cdi-generate` writes the host's
//! spec, and a container from an image holding only busybox and glibc runs
//! `nvidia-smi -L` with the program, the driver's libraries and the device nodes all
//! injected. Needs root and a machine with an NVIDIA GPU, so CI (which has none)
//! does not run it: `cargo test --test gpu_nvidia -- --ignored` on a GPU machine.

mod common;

use common::oci::{TestNetwork, require_root, start};
use common::oci_image::{
    Compression, LayerBuilder, ManifestFormat, busybox_http_config, busybox_layer, push_image,
};
use common::registry::Registry;
use common::temp_dir;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The host's dynamic loader and the glibc libraries nvidia-smi links against, as
/// a layer: the image's own C library, so that only the driver comes from CDI.
fn glibc_layer() -> common::oci_image::ImageLayer {
    let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
    let mut layer = LayerBuilder::new()
        .dir("lib64", 0o755)
        .file(
            "lib64/ld-linux-x86-64.so.2",
            0o755,
            &std::fs::read(std::fs::canonicalize(loader).unwrap()).unwrap(),
        )
        .dir("lib", 0o755)
        .dir("lib/x86_64-linux-gnu", 0o755)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/x86_64-linux-gnu", 0o755)
        .dir("usr/bin", 0o755);
    for soname in [
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
    ] {
        let host = Path::new("/lib/x86_64-linux-gnu").join(soname);
        if let Ok(real) = std::fs::canonicalize(&host) {
            layer = layer.file(
                &format!("lib/x86_64-linux-gnu/{soname}"),
                0o755,
                &std::fs::read(real).unwrap(),
            );
        }
    }
    layer.build(Compression::Gzip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a GPU machine"]
async fn a_container_runs_nvidia_smi_with_nothing_but_cdi_injection() {
    require_root();
    let scratch = temp_dir();
    let specs = scratch.path().join("cdi");
    let spec_file: PathBuf = specs.join("ember-nvidia.json");
    let generated = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["gpu", "cdi-generate", "--output"])
        .arg(&spec_file)
        .output()
        .unwrap();
    println!(
        "ember gpu cdi-generate: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(generated.status.success(), "{generated:?}");

    let registry = Registry::start().unwrap();
    push_image(
        registry.addr,
        "apps/gpu",
        "v1",
        &busybox_http_config(),
        &[busybox_layer().unwrap(), glibc_layer()],
        ManifestFormat::Oci,
    )
    .await
    .unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(
        data.path(),
        &network,
        &["--cdi-spec-dir", specs.to_str().unwrap()],
    );
    let (_, models) = ember.get_json("/v1/gpu-models").await;
    let installed: u64 = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["installed"].as_u64().unwrap())
        .sum();
    assert!(installed >= 1, "{models}");

    let container = ember
        .deploy(json!({
            "name": "smi",
            "image": format!("{}/apps/gpu:v1", registry.addr),
            "gpu": 1,
            "minInstances": 1,
            "command": ["/bin/sh", "-c"],
            // The driver mounts nvidia-smi where the host has it.
            "arguments": ["PATH=$PATH:/usr/bin:/usr/local/bin:/usr/sbin; nvidia-smi -L; exec httpd -f -p 8080 -h /www"],
        }))
        .await;
    let id = container["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = ember.logs(id).await;
        if logs.contains("GPU 0:") && logs.contains("UUID: GPU-") {
            println!("the container's logs:\n{logs}");
            break;
        }
        assert!(Instant::now() < deadline, "no GPU in the logs: {logs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
