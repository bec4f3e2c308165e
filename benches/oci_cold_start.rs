//! OCI cold start through the ingress, beside crun's and runc's `run /bin/true` of
//! the same root filesystem, measured in one run. Needs root.
//!
//! Ember: the container (busybox httpd, built and pushed to a loopback registry by
//! the test harness) is scaled to zero before each sample; a sample is one GET from
//! sending to the first response byte. Two containers are measured: one with
//! `preparedSandboxes: 0` (the cold start creates the container: namespaces,
//! cgroups, mounts, network) and one with the default of 1, sampled once its
//! prepared sandbox is ready (the cold start only starts it); the latter again
//! with `init: false`, so that the difference is what Ember's init (PID 1, which
//! then starts httpd as its child) adds to a cold start. The first two again with
//! `userNamespace: false` (host ids), so that the difference is what the user
//! namespace (its mapping, idmapped layers) adds. crun, runc: one `run` of a bundle whose rootfs
//! is the busybox layer, running `/bin/true`, from spawn to exit. On a hybrid cgroup
//! machine crun refuses the layout unless /sys/fs/cgroup/unified is unmounted, so its
//! loop runs in a private mount namespace (re-executing this binary there).
//!
//! `cargo bench --bench oci_cold_start`

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::in_process;
use ember_runtime::model::{Caller, ContainerPatch};
use ember_runtime::{Runtime, RuntimeConfig};
use http_body_util::{BodyExt, Empty};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SAMPLES: usize = 200;
const CRUN_LOOP_FLAG: &str = "--crun-loop";

fn main() {
    // Started again by the runtime to create one container.
    ember_sandbox::oci::run_if_creator();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CRUN_LOOP_FLAG) {
        // Inside the private mount namespace: time crun's runs and print them.
        let bundle = PathBuf::from(&args[at + 1]);
        for sample in time_runs("crun", &bundle, SAMPLES) {
            println!("{}", sample.as_nanos());
        }
        return;
    }
    // `cargo test` runs benches once in test mode; only a real `cargo bench` measures.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the OCI benchmark runs containers and needs root"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (measured, layer) = rt.block_on(ember_cold_starts());
    for (case, samples) in measured {
        report(case, samples);
    }

    let bundle = common::temp_dir();
    write_bundle(bundle.path(), &layer);
    report(
        "runc run /bin/true",
        time_runs("runc", bundle.path(), SAMPLES),
    );
    report("crun run /bin/true", crun_in_private_mounts(bundle.path()));
}

/// Cold starts through the ingress, by case; also returns the unpacked busybox layer.
async fn ember_cold_starts() -> (Vec<(&'static str, Vec<Duration>)>, PathBuf) {
    let registry = common::registry::Registry::start().unwrap();
    common::oci_image::push_busybox_http_image(registry.addr, "bench/httpd", "v1")
        .await
        .unwrap();
    let data = common::temp_dir();
    let mut config = RuntimeConfig::new(data.path());
    config.default_idle_timeout = Duration::from_secs(3600);
    config.stop_grace = Duration::ZERO;
    config.bridge = "embbench0".into();
    config.subnet = "10.250.0.0/24".parse().unwrap();
    config.allow_host_ids = true;
    let (runtime, token) = Runtime::start(config).await.unwrap();
    let caller = runtime
        .authenticate(&token.unwrap())
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = listener.local_addr().unwrap();
    tokio::spawn(ember_runtime::serve_ingress(runtime.clone(), listener));
    let image = format!("{}/bench/httpd:v1", registry.addr);
    let bench = ColdStarts {
        runtime: &runtime,
        caller: &caller,
        ingress,
        image: &image,
    };
    let mut measured = Vec::new();
    for (case, name, prepared, init, user_namespace) in [
        ("ember, cold, nothing prepared", "unprepared", 0, true, true),
        ("ember, cold, prepared sandbox", "prepared", 1, true, true),
        (
            "ember, cold, prepared sandbox, no init",
            "noinit",
            1,
            false,
            true,
        ),
        (
            "ember, cold, nothing prepared, host ids",
            "unprepared-hostids",
            0,
            true,
            false,
        ),
        (
            "ember, cold, prepared sandbox, host ids",
            "prepared-hostids",
            1,
            true,
            false,
        ),
    ] {
        let samples = bench.measure(name, prepared, init, user_namespace).await;
        measured.push((case, samples));
    }

    let layer = std::fs::read_dir(data.path().join("oci/layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("bin/busybox").exists())
        .expect("the busybox layer");
    // Keep the layer past the runtime's data dir.
    let copy = std::env::temp_dir().join(format!("ember-bench-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let status = Command::new("cp")
        .arg("-a")
        .arg(&layer)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    runtime.shut_down().await;
    let _ = Command::new("ip")
        .args(["link", "del", "embbench0"])
        .status();
    std::mem::forget(data);
    (measured, copy)
}

struct ColdStarts<'a> {
    runtime: &'a Runtime,
    caller: &'a Caller,
    ingress: std::net::SocketAddr,
    image: &'a str,
}

impl ColdStarts<'_> {
    /// Deploys the image as `name` keeping `prepared` sandboxes, then times requests,
    /// each after scaling to zero and, when sandboxes are prepared, once one is ready
    /// (as for a container that has been idle a while).
    async fn measure(
        &self,
        name: &str,
        prepared: u32,
        init: bool,
        user_namespace: bool,
    ) -> Vec<Duration> {
        let (runtime, caller) = (self.runtime, self.caller);
        let patch = ContainerPatch {
            name: Some(name.parse().unwrap()),
            image: Some(self.image.to_string()),
            prepared_sandboxes: Some(prepared),
            init: Some(init),
            user_namespace: Some(user_namespace),
            ..Default::default()
        };
        let id = in_process::deploy(runtime, caller, patch).await;
        let stream = tokio::net::TcpStream::connect(self.ingress).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES + 5 {
            in_process::scale_to_zero(runtime, caller, id, prepared).await;
            let request = hyper::Request::get("/")
                .header("host", format!("{name}.ember.localhost"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender.ready().await.unwrap();
            let began = Instant::now();
            let response = sender.send_request(request).await.unwrap();
            let took = began.elapsed();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
            samples.push(took);
        }
        samples.drain(..5);
        runtime.stop_idle_instances(caller, id).await.unwrap();
        samples
    }
}

fn write_bundle(bundle: &Path, rootfs: &Path) {
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .status()
        .unwrap();
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["path"] = rootfs.display().to_string().into();
    spec["root"]["readonly"] = true.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

fn time_runs(runtime: &str, bundle: &Path, samples: usize) -> Vec<Duration> {
    (0..samples + 5)
        .map(|n| {
            let id = format!("ember-bench-{runtime}-{}-{n}", std::process::id());
            let began = Instant::now();
            let status = Command::new(runtime)
                .arg("run")
                .arg("--bundle")
                .arg(bundle)
                .arg(&id)
                .status()
                .unwrap();
            let took = began.elapsed();
            assert!(status.success(), "{runtime} run failed");
            took
        })
        .skip(5)
        .collect()
}

fn crun_in_private_mounts(bundle: &Path) -> Vec<Duration> {
    let me = std::env::current_exe().unwrap();
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(me)
        .arg(CRUN_LOOP_FLAG)
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| Duration::from_nanos(l.parse().unwrap()))
        .collect()
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{name:<34} n={} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
}
