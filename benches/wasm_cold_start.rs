//! Wasm cold start and warm latency through the ingress, in-process.
//!
//! Cold start: the container is scaled to zero before each measured request, so the
//! request pays for loading the cached compiled code and pre-instantiating it (the
//! code is compiled once, at deploy, as in production). Warm: an instance is running.
//! Each measurement is one HTTP/1.1 request on a kept-alive loopback connection,
//! from sending the request to the last body byte.
//!
//! `cargo bench --bench wasm_cold_start`

#[path = "../tests/common/component.rs"]
mod component;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ember_runtime::model::{Caller, ContainerId, ContainerPatch, ContainerStatus};
use ember_runtime::{Runtime, RuntimeConfig};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Fixture {
    runtime: Runtime,
    caller: Caller,
    container: ContainerId,
    ingress: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    config.default_idle_timeout = Duration::from_secs(3600);
    let (runtime, token) = Runtime::start(config).await.unwrap();
    let caller = runtime
        .authenticate(&token.unwrap())
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = listener.local_addr().unwrap();
    tokio::spawn(ember_runtime::serve_ingress(runtime.clone(), listener));

    let wasm = component::component_from_wat(include_str!("../examples/hello/hello.wat"));
    let digest = runtime.put_blob(wasm.into()).await.unwrap();
    let patch = ContainerPatch {
        name: Some("bench".parse().unwrap()),
        image: Some(digest.to_string()),
        ..Default::default()
    };
    let container = runtime
        .create_container(&caller, patch)
        .await
        .unwrap()
        .container
        .id;
    while runtime
        .get_container(&caller, container)
        .await
        .unwrap()
        .container
        .status
        != ContainerStatus::Deployed
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Fixture {
        runtime,
        caller,
        container,
        ingress,
        _dir: dir,
    }
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

async fn request(sender: &mut SendRequest<Empty<Bytes>>) {
    get(sender, "/", b"Hello from Ember!\n").await
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str, expected: &[u8]) {
    let req = hyper::Request::get(path)
        .header("host", "bench.ember.localhost")
        .body(Empty::new())
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], expected);
}

fn wasm(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(fixture());
    // The client runs on its own thread and single-threaded runtime, as a separate
    // load generator would, so its work never competes for the server's workers.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sender = client.block_on(connect(fx.ingress));

    let mut group = c.benchmark_group("wasm");
    group.bench_function("cold_start", |b| {
        b.iter_custom(|iters| {
            client.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    scale_to_zero(&rt, &fx).await;
                    let began = Instant::now();
                    request(&mut sender).await;
                    total += began.elapsed();
                }
                total
            })
        })
    });
    client.block_on(request(&mut sender));
    group.bench_function("warm_request", |b| {
        b.iter_custom(|iters| {
            client.block_on(async {
                let began = Instant::now();
                for _ in 0..iters {
                    request(&mut sender).await;
                }
                began.elapsed()
            })
        })
    });
    // The ingress alone (its health answer, no wasm): the floor under warm_request.
    group.bench_function("ingress_only", |b| {
        b.iter_custom(|iters| {
            client.block_on(async {
                let began = Instant::now();
                for _ in 0..iters {
                    get(&mut sender, "/.well-known/ember/health", b"ok\n").await;
                }
                began.elapsed()
            })
        })
    });
    // The sandbox alone: a fresh store, instantiation and the guest's handler, with
    // no HTTP around it.
    let instance = rt.block_on(async {
        let dir = fx._dir.path().join("sandbox-bench");
        let blobs = ember_sandbox::BlobStore::open(dir.join("blobs")).unwrap();
        let wasm = component::component_from_wat(include_str!("../examples/hello/hello.wat"));
        let artifact = blobs.put(&wasm).unwrap();
        let sandbox = ember_sandbox::wasm::WasmSandbox::new(
            &ember_sandbox::wasm::WasmConfig {
                cache_dir: dir.join("compiled"),
                max_concurrent_instances: 100,
                max_memory_bytes: 1 << 30,
            },
            blobs,
        )
        .unwrap();
        let spec = ember_sandbox::WorkloadSpec {
            name: "bench".into(),
            artifact,
            memory_limit_bytes: 128 << 20,
            cpus: 1.0,
            ephemeral_storage_bytes: 0,
            env: vec![],
            command: None,
            arguments: None,
            port: None,
            logs: ember_sandbox::LogSinkRef(std::sync::Arc::new(ember_sandbox::DiscardLogs)),
            request_timeout: Duration::from_secs(30),
            prepared_sandboxes: 0,
            devices: Vec::new(),
            init: true,
            capabilities: Default::default(),
            id_range: None,
            startup_timeout: None,
            outbound: Default::default(),
            http2: false,
        };
        let prepared = ember_sandbox::Sandbox::prepare(&sandbox, spec)
            .await
            .unwrap();
        prepared.start("bench").await.unwrap()
    });
    group.bench_function("sandbox_only", |b| {
        b.to_async(&rt).iter(|| async {
            let req = hyper::Request::get("http://bench/")
                .body(
                    Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .unwrap();
            let response = instance.handle(req).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"Hello from Ember!\n");
        })
    });
    group.finish();

    // Percentiles of individual requests (criterion reports means of batches): the
    // p50s the targets are stated in. Only under `cargo bench`, not its test-mode pass.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let mut cold = Vec::with_capacity(COLD_SAMPLES);
    let mut warm = Vec::with_capacity(WARM_SAMPLES);
    client.block_on(async {
        for _ in 0..COLD_SAMPLES {
            scale_to_zero(&rt, &fx).await;
            let began = Instant::now();
            request(&mut sender).await;
            cold.push(began.elapsed());
        }
        for _ in 0..WARM_SAMPLES {
            let began = Instant::now();
            request(&mut sender).await;
            warm.push(began.elapsed());
        }
    });
    report("wasm/cold_start", &mut cold);
    report("wasm/warm_request", &mut warm);
}

/// Stops the container's instance on the server's runtime, as its idle timeout would.
async fn scale_to_zero(rt: &tokio::runtime::Runtime, fx: &Fixture) {
    let (runtime, caller, id) = (fx.runtime.clone(), fx.caller, fx.container);
    rt.spawn(async move { runtime.stop_idle_instances(&caller, id).await })
        .await
        .unwrap()
        .unwrap();
}

const COLD_SAMPLES: usize = 2_000;
const WARM_SAMPLES: usize = 20_000;

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{name:<20} per request (n={}): p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

criterion_group!(benches, wasm);
criterion_main!(benches);
