//! A burst from zero: N requests at once against a container with no instance, for
//! wasm and (as root) OCI, beside a single cold start of the same container.
//!
//! Each round scales the container to zero, opens N loopback connections to the
//! ingress, then sends one request on each at the same moment. A request's latency
//! runs from its send to its last body byte; a round's time runs until every request
//! is answered. The single cold start is one request after scaling to zero. The
//! containers take `concurrency` 20, so a burst of 200 needs at least 10 instances.
//! OCI runs twice: with `preparedSandboxes: 0`, and with the default prepared
//! sandbox, each sample and round beginning once it is ready.
//!
//! Target (issue 4): p99 of a 200-request burst at most 10 times a single cold start.
//!
//! `cargo bench --bench burst_from_zero` (`-- --requests N --rounds R` to change them)

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::in_process;
use ember_runtime::model::ContainerPatch;
use ember_runtime::{Runtime, RuntimeConfig};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Single cold starts measured per workload.
const SINGLE_SAMPLES: usize = 50;

struct Settings {
    requests: usize,
    wasm_rounds: usize,
    oci_rounds: usize,
}

fn main() {
    // Started again by the runtime to create one container.
    ember_sandbox::oci::run_if_creator();
    let args: Vec<String> = std::env::args().collect();
    // `cargo test` runs benches once in test mode; only a real `cargo bench` measures.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let settings = Settings {
        requests: value("--requests", 200),
        wasm_rounds: value("--rounds", 20),
        oci_rounds: value("--rounds", 5),
    };
    if let Ok(filter) = std::env::var("EMBER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // No image: `run` uploads the hello component.
        let wasm = ContainerPatch::default();
        run("wasm", wasm, settings.wasm_rounds, &settings).await;
        if nix::unistd::geteuid().is_root() {
            let registry = common::registry::Registry::start().unwrap();
            common::oci_image::push_busybox_http_image(registry.addr, "bench/httpd", "v1")
                .await
                .unwrap();
            // Once with nothing prepared, once with the default prepared sandbox
            // (each sample and round begins once it is ready).
            for (kind, prepared) in [("oci, nothing prepared", 0), ("oci, prepared sandbox", 1)] {
                let patch = ContainerPatch {
                    image: Some(format!("{}/bench/httpd:v1", registry.addr)),
                    prepared_sandboxes: Some(prepared),
                    ..ContainerPatch::default()
                };
                run(kind, patch, settings.oci_rounds, &settings).await;
            }
            drop(registry);
        } else {
            println!("oci: skipped (running containers needs root)");
        }
    });
}

async fn run(kind: &str, mut patch: ContainerPatch, rounds: usize, settings: &Settings) {
    let prepared = patch.prepared_sandboxes.unwrap_or(0);
    let data = common::temp_dir();
    let mut config = RuntimeConfig::new(data.path());
    config.default_idle_timeout = Duration::from_secs(3600);
    config.stop_grace = Duration::ZERO;
    config.bridge = "embburst0".into();
    config.subnet = "10.251.0.0/24".parse().unwrap();
    config.node_cpus = Some(32.0);
    let (runtime, token) = Runtime::start(config).await.unwrap();
    let caller = runtime
        .authenticate(&token.unwrap())
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = listener.local_addr().unwrap();
    tokio::spawn(ember_runtime::serve_ingress(runtime.clone(), listener));

    if patch.image.is_none() {
        let wasm =
            common::component::component_from_wat(include_str!("../examples/hello/hello.wat"));
        patch.image = Some(runtime.put_blob(wasm.into()).await.unwrap().to_string());
    }
    patch.name = Some("burst".parse().unwrap());
    patch.concurrency = Some(20);
    // One CPU each, unthrottled as a single cold start is; the server offers 32
    // (more than the machine has) so that a burst's 15 instances are all placed.
    patch.cpu = Some(1.0);
    patch.ram = Some("32Mi".parse().unwrap());
    let id = in_process::deploy(&runtime, &caller, patch).await;
    let scale_to_zero = || in_process::scale_to_zero(&runtime, &caller, id, prepared);

    // One cold start at a time.
    let mut single = Vec::with_capacity(SINGLE_SAMPLES);
    let mut sender = connect(ingress).await;
    for _ in 0..SINGLE_SAMPLES + 3 {
        scale_to_zero().await;
        let began = Instant::now();
        get(&mut sender).await;
        single.push(began.elapsed());
    }
    single.drain(..3);

    // Bursts.
    let mut latencies = Vec::with_capacity(rounds * settings.requests);
    let mut round_times = Vec::with_capacity(rounds);
    let mut instances = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        scale_to_zero().await;
        let mut senders = Vec::with_capacity(settings.requests);
        for _ in 0..settings.requests {
            senders.push(connect(ingress).await);
        }
        let go = Arc::new(tokio::sync::Barrier::new(settings.requests + 1));
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|mut sender| {
                let go = go.clone();
                tokio::spawn(async move {
                    go.wait().await;
                    let began = Instant::now();
                    get(&mut sender).await;
                    began.elapsed()
                })
            })
            .collect();
        go.wait().await;
        let began = Instant::now();
        for task in tasks {
            latencies.push(task.await.unwrap());
        }
        round_times.push(began.elapsed());
        instances.push(runtime.list_instances(&caller, id).await.unwrap().len());
    }
    runtime.stop_idle_instances(&caller, id).await.unwrap();
    runtime.shut_down().await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "embburst0"])
        .status();

    let single_p50 = percentile(&mut single, 0.5);
    let p99 = percentile(&mut latencies, 0.99);
    println!(
        "{kind}: single cold start n={} p50 {:.3} ms",
        single.len(),
        ms(single_p50)
    );
    println!(
        "{kind}: burst of {} from zero, {} rounds: request p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; \
         all answered in p50 {:.3} ms (max {:.3} ms); instances after a burst {}..{}",
        settings.requests,
        rounds,
        ms(percentile(&mut latencies, 0.5)),
        ms(p99),
        ms(percentile(&mut latencies, 1.0)),
        ms(percentile(&mut round_times, 0.5)),
        ms(percentile(&mut round_times, 1.0)),
        instances.iter().min().unwrap(),
        instances.iter().max().unwrap(),
    );
    let ratio = p99.as_secs_f64() / single_p50.as_secs_f64();
    println!(
        "{kind}: burst p99 / single cold start p50 = {ratio:.1} (target at most 10): {}",
        if ratio <= 10.0 { "met" } else { "NOT met" }
    );
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>) {
    let request = hyper::Request::get("/")
        .header("host", "burst.ember.localhost")
        .body(Empty::new())
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q) as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
