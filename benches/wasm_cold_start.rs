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
    let caller = runtime.authenticate(&token.unwrap()).unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = listener.local_addr().unwrap();
    tokio::spawn(ember_runtime::serve_ingress(runtime.clone(), listener));

    let wasm = component::component_from_wat(include_str!("../examples/hello/hello.wat"));
    let digest = runtime.put_blob(&wasm).unwrap();
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
    let req = hyper::Request::get("/")
        .header("host", "bench.ember.localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"Hello from Ember!\n");
}

fn wasm(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(fixture());
    let mut sender = rt.block_on(connect(fx.ingress));

    let mut group = c.benchmark_group("wasm");
    group.bench_function("cold_start", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    fx.runtime
                        .stop_idle_instances(&fx.caller, fx.container)
                        .await
                        .unwrap();
                    let began = Instant::now();
                    request(&mut sender).await;
                    total += began.elapsed();
                }
                total
            })
        })
    });
    rt.block_on(request(&mut sender));
    group.bench_function("warm_request", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let began = Instant::now();
                for _ in 0..iters {
                    request(&mut sender).await;
                }
                began.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, wasm);
criterion_main!(benches);
