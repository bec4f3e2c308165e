//! Criterion microbenchmarks of the pieces under a request and a cold start:
//!
//! - **routing/lookup_among_10000**: the ingress's host lookup, with 10,000
//!   containers routed, for a `Host` header with a port (as browsers send it);
//! - **state/insert_container_and_flush**: what the API does before it answers a
//!   create: one sled transaction on the store's writer writing the container, its
//!   name, its first revision and its index entries, then a flush to disk;
//! - **state/save_status**: a status change, as deploys make them, durable;
//! - **state/first_page_among_{100,10000}** and **state/cursor_page_among_10000**:
//!   a page of 100 containers read from the store's index, with 100 and 10,000
//!   containers stored;
//! - **oci/overlay_mount** (root): an instance's root filesystem, a sized tmpfs for
//!   the writable layer and the overlay over the image's layer, mounted and torn down;
//! - **oci/create_and_start** (root): the OCI sandbox starting an instance of the
//!   busybox httpd image with nothing prepared: libcontainer's create (namespaces,
//!   cgroups, mounts, veth) and start, until the instance listens on its port;
//! - **oci/start_prepared** (root): the same from a prepared sandbox, created ahead
//!   (untimed): libcontainer's start and the wait for the port only.
//!
//! - **scheduler/cluster_decision_100_nodes**: one cluster scheduling decision
//!   for one of 10,000 containers over 100 simulated nodes: its owner by
//!   rendezvous hashing, then its next instance placed with its instances spread
//!   over the nodes (the pure scheduler; no I/O, no clock).
//!
//! Each OCI sample stops its instance after it is timed. Wasm instantiation from the
//! pool is `wasm/sandbox_only` in the `wasm_cold_start` bench.
//!
//! `cargo bench --bench micro`

use criterion::{BatchSize, Criterion, criterion_group};
use ember::workloads::oci_image;
use ember_runtime::model::{
    Container, ContainerPatch, ContainerQuery, PageRequest, Revision, UserId,
};
use ember_runtime::routing::RoutingTable;
use ember_runtime::store::{ContainerStore, Saved, SledStore};
use ember_sandbox::oci::{InstanceDir, OciConfig, OciSandbox};
use ember_sandbox::{BlobStore, DiscardLogs, LogSinkRef, PreparedWorkload, Sandbox, WorkloadSpec};
use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;
use std::time::{Duration, Instant};

const ROUTED_CONTAINERS: usize = 10_000;

fn routing(c: &mut Criterion) {
    let table = RoutingTable::default();
    for n in 0..ROUTED_CONTAINERS {
        table.insert(format!("container-{n}.ember.localhost"), n);
    }
    let mut group = c.benchmark_group("routing");
    let mut n = 0;
    group.bench_function("lookup_among_10000", |b| {
        b.iter_batched(
            || {
                n = (n + 7_919) % ROUTED_CONTAINERS;
                format!("container-{n}.ember.localhost:8000")
            },
            |host| black_box(table.lookup(&host)).expect("routed"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn container(name: &str) -> (Container, Revision) {
    let spec = ContainerPatch {
        name: Some(name.parse().expect("a valid name")),
        image: Some("registry.example/app:1".into()),
        ..Default::default()
    }
    .into_new_spec()
    .expect("a valid spec");
    let now = SystemTime::now();
    let container = Container::new(spec.clone(), UserId::generate(), now);
    let revision = Revision::new(container.id, 1, spec, now);
    (container, revision)
}

fn state(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary dir");
    let store = SledStore::open(dir.path()).expect("the store opens");
    let mut group = c.benchmark_group("state");
    let mut n = 0;
    group.bench_function("insert_container_and_flush", |b| {
        b.iter_batched(
            || {
                n += 1;
                container(&format!("app-{n}"))
            },
            |(container, revision)| {
                rt.block_on(store.insert_container(container, revision))
                    .expect("inserted")
            },
            BatchSize::SmallInput,
        )
    });
    let (mut saved, revision) = container("status");
    rt.block_on(store.insert_container(saved.clone(), revision))
        .expect("inserted");
    group.bench_function("save_status", |b| {
        b.iter(|| {
            let before = saved.clone();
            saved.status_reason = Some(format!("pulling: {n} bytes"));
            n += 1;
            assert_eq!(
                rt.block_on(store.save_status(before, saved.clone()))
                    .expect("saved"),
                Saved::Written
            );
        })
    });
    for count in [100, 10_000] {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let store = SledStore::open(dir.path()).expect("the store opens");
        rt.block_on(async {
            let writes = (0..count).map(|n| {
                let (container, revision) = container(&format!("c{n}"));
                store.insert_container(container, revision)
            });
            for written in futures::future::join_all(writes).await {
                written.expect("inserted");
            }
        });
        let first = ContainerQuery {
            page: PageRequest {
                page: 1,
                rows_per_page: 100,
            },
            ..Default::default()
        };
        group.bench_function(format!("first_page_among_{count}"), |b| {
            b.iter(|| {
                let page = rt
                    .block_on(store.list_containers(first.clone()))
                    .expect("listed");
                assert_eq!(page.items.len(), 100);
            })
        });
        if count == 10_000 {
            let mut cursor = None;
            for _ in 0..50 {
                cursor = rt
                    .block_on(store.list_containers(ContainerQuery {
                        after: cursor,
                        ..first.clone()
                    }))
                    .expect("listed")
                    .next;
            }
            let middle = ContainerQuery {
                after: cursor,
                ..first.clone()
            };
            group.bench_function("cursor_page_among_10000", |b| {
                b.iter(|| {
                    let page = rt
                        .block_on(store.list_containers(middle.clone()))
                        .expect("listed");
                    assert_eq!(page.items.len(), 100);
                })
            });
        }
    }
    group.finish();
}

fn oci(c: &mut Criterion) {
    // `cargo test` runs benches once as tests, where the CI machine is root; a real
    // measurement without root says why it cannot run.
    assert!(
        nix::unistd::geteuid().is_root(),
        "oci/overlay_mount mounts file systems and needs root"
    );
    let dir = tempfile::tempdir().expect("a temporary dir");
    let layer = dir.path().join("layer");
    for sub in ["bin", "etc", "www"] {
        std::fs::create_dir_all(layer.join(sub)).expect("layer dirs");
    }
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("a file");
    std::fs::write(layer.join("www/index.html"), "hello\n").expect("a file");
    let lowers = [layer];
    let mut group = c.benchmark_group("oci");
    let mut n = 0;
    group.bench_function("overlay_mount", |b| {
        b.iter(|| {
            n += 1;
            let instance = InstanceDir::mount(
                dir.path().join(format!("instance-{n}")),
                &lowers,
                64 << 20,
                None,
            )
            .expect("mounted");
            assert!(instance.rootfs().join("www/index.html").exists());
            instance.remove();
        })
    });
    group.finish();
}

/// The bridge and subnet of this bench's instances, apart from a runtime's defaults.
const BRIDGE: &str = "embermicro0";
const SUBNET: &str = "10.252.0.0/24";

fn oci_starts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (sandbox, artifact) = rt.block_on(async {
        let blobs = BlobStore::open(dir.path().join("blobs")).expect("the blob store");
        let layers = [
            oci_image::busybox_layer().expect("the busybox layer"),
            oci_image::http_app_layer(),
        ];
        let artifact = oci_image::store_image(
            &blobs,
            &oci_image::busybox_http_config(),
            &layers,
            oci_image::ManifestFormat::Oci,
        )
        .expect("the image is stored");
        let config = OciConfig {
            root: dir.path().join("oci"),
            bridge: BRIDGE.into(),
            subnet: SUBNET.parse().expect("a valid subnet"),
            stop_grace: Duration::ZERO,
            startup_timeout: Duration::from_secs(30),
            pids_limit: 1024,
        };
        let sandbox = OciSandbox::new(config, blobs, Arc::default())
            .await
            .expect("the OCI sandbox");
        (sandbox, artifact)
    });
    let prepare = |prepared_sandboxes| {
        let spec = WorkloadSpec {
            name: "micro".into(),
            artifact: artifact.clone(),
            memory_limit_bytes: 128 << 20,
            cpus: 1.0,
            ephemeral_storage_bytes: 64 << 20,
            env: vec![],
            command: None,
            arguments: None,
            port: None,
            request_timeout: Duration::from_secs(30),
            logs: LogSinkRef(Arc::new(DiscardLogs)),
            prepared_sandboxes,
            devices: Vec::new(),
            init: true,
            capabilities: Default::default(),
            id_range: None,
            startup_timeout: None,
            outbound: Default::default(),
            http2: false,
        };
        rt.block_on(sandbox.prepare(spec)).expect("prepared")
    };

    let mut group = c.benchmark_group("oci");
    group.sample_size(20);
    let from_nothing = prepare(0);
    group.bench_function("create_and_start", |b| {
        b.iter_custom(|iters| rt.block_on(timed_starts(&*from_nothing, iters, false)))
    });
    let from_spare = prepare(1);
    group.bench_function("start_prepared", |b| {
        b.iter_custom(|iters| rt.block_on(timed_starts(&*from_spare, iters, true)))
    });
    group.finish();
    rt.block_on(async {
        from_spare.retire().await;
        from_nothing.retire().await;
    });
    drop(sandbox);
    // The bridge is the one thing the sandbox leaves for a runtime's next start.
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
}

/// Starts `iters` instances one after another and sums the time the starts took;
/// each instance is stopped, untimed, before the next. With `from_spare`, each start
/// waits (untimed) for the workload's prepared sandbox first.
async fn timed_starts(prepared: &dyn PreparedWorkload, iters: u64, from_spare: bool) -> Duration {
    let mut total = Duration::ZERO;
    for n in 0..iters {
        if from_spare {
            while prepared.ready_sandboxes() == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let began = Instant::now();
        let instance = prepared
            .start(&format!("micro-{n}"))
            .await
            .expect("started");
        total += began.elapsed();
        instance.stop().await;
    }
    total
}

/// Simulated nodes and containers of the cluster scheduling bench.
const SIMULATED_NODES: u32 = 100;
const SIMULATED_CONTAINERS: usize = 10_000;

fn scheduler(c: &mut Criterion) {
    use ember_scheduler::ownership::owner;
    use ember_scheduler::placement::{self, Node, Request, Resources};
    let names: Vec<String> = (0..SIMULATED_NODES).map(|i| format!("node-{i}")).collect();
    let fresh_nodes = || -> Vec<Node<u32>> {
        (0..SIMULATED_NODES)
            .map(|i| {
                Node::new(
                    i,
                    format!("node-{i}"),
                    Resources {
                        millicpus: 64_000,
                        memory_bytes: 256 << 30,
                        gpus: Default::default(),
                    },
                )
            })
            .collect()
    };
    let containers: Vec<String> = (0..SIMULATED_CONTAINERS)
        .map(|n| format!("{n:08x}-0000-4000-8000-000000000000"))
        .collect();
    let request = Request {
        millicpus: 100,
        memory_bytes: 64 << 20,
        gpus: 0,
        gpu_models: Vec::new(),
    };
    let mut nodes = fresh_nodes();
    let mut held: Vec<std::collections::HashMap<u32, u32>> =
        vec![Default::default(); SIMULATED_CONTAINERS];
    let mut group = c.benchmark_group("scheduler");
    let mut n = 0;
    group.bench_function("cluster_decision_100_nodes", |b| {
        b.iter(|| {
            n = (n + 7_919) % SIMULATED_CONTAINERS;
            let owned_by = owner(containers[n].as_bytes(), &names).expect("nodes");
            let placed = match placement::place_spread(&mut nodes, &request, &held[n]) {
                Ok(placed) => placed,
                // Full: start the simulation over.
                Err(_) => {
                    nodes = fresh_nodes();
                    held = vec![Default::default(); SIMULATED_CONTAINERS];
                    placement::place_spread(&mut nodes, &request, &held[n]).expect("room")
                }
            };
            *held[n].entry(placed.node).or_insert(0) += 1;
            black_box((owned_by, placed.node))
        })
    });
    group.finish();
}

criterion_group!(benches, routing, state, scheduler, oci, oci_starts);

fn main() {
    // Started again by the OCI sandbox to create one container.
    ember_sandbox::oci::run_if_creator();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
