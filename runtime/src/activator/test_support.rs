//! Fakes and helpers the activator's tests share.

use super::*;
use ember_sandbox::{BoxFuture, HttpBody, SandboxError};
use ember_scheduler::Resources;
use std::sync::atomic::AtomicUsize;

/// The instances that have not terminated.
pub(crate) fn live(service: &ContainerTraffic) -> Vec<InstanceInfo> {
    let mut instances = service.instances();
    instances.retain(|i| i.state != InstanceState::Terminated);
    instances
}

/// A workload whose starts take a while and are counted, with the most that ran
/// at once.
pub(crate) struct SlowStart {
    pub(crate) starts: Arc<AtomicUsize>,
    pub(crate) running: Arc<AtomicUsize>,
    pub(crate) most_at_once: Arc<AtomicUsize>,
}

pub(crate) struct Nothing;

impl Instance for Nothing {
    fn handle(
        &self,
        _request: http::Request<HttpBody>,
    ) -> BoxFuture<'_, Result<http::Response<HttpBody>, SandboxError>> {
        Box::pin(async { Err(SandboxError::guest("unused")) })
    }
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn exit_signal(&self) -> Option<watch::Receiver<Option<String>>> {
        None
    }
}

impl PreparedWorkload for SlowStart {
    fn start<'a>(
        &'a self,
        _instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(Arc::new(Nothing) as Arc<dyn Instance>)
        })
    }
}

/// A workload whose every start fails.
pub(crate) struct NeverStarts {
    pub(crate) starts: Arc<AtomicUsize>,
}

impl PreparedWorkload for NeverStarts {
    fn start<'a>(
        &'a self,
        _instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(SandboxError::guest("no such image")) })
    }
}

/// A container whose every start fails, and its start count.
pub(crate) fn failing_traffic() -> (Arc<ContainerTraffic>, Arc<AtomicUsize>) {
    let (service, _, _) = service_counting(Settings::default());
    let starts = Arc::new(AtomicUsize::new(0));
    service.serve(Arc::new(ServingRevision {
        number: 2,
        kind: WorkloadKind::Wasm,
        prepared: Arc::new(NeverStarts {
            starts: starts.clone(),
        }),
        request: Request::default(),
        ephemeral_storage_bytes: 0,
        probes: Default::default(),
        traffic_changes: 0,
    }));
    (service, starts)
}

pub(crate) struct Settings {
    pub(crate) idle: Duration,
    pub(crate) max: u32,
    pub(crate) concurrency: u32,
    pub(crate) queue_depth: u32,
    pub(crate) node_millicpus: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            max: 100,
            concurrency: 1000,
            queue_depth: 1000,
            node_millicpus: 1_000_000,
        }
    }
}

pub(crate) fn container_traffic(settings: Settings) -> (Arc<ContainerTraffic>, Arc<AtomicUsize>) {
    let (service, starts, _) = service_counting(settings);
    (service, starts)
}

/// The service, its start count and the most starts that ran at once.
pub(crate) fn service_counting(
    settings: Settings,
) -> (Arc<ContainerTraffic>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let policy = TrafficPolicy {
        kept_instances: 0,
        scaling: ScalingPolicy::new(0, settings.max, settings.idle, settings.concurrency),
        queue_depth: settings.queue_depth,
        response_timeouts: Default::default(),
        request_limit: Duration::from_secs(5),
    };
    let node = NodeCapacity::new(
        ServerId::generate(),
        "test".into(),
        Resources {
            millicpus: settings.node_millicpus,
            memory_bytes: 1 << 40,
            gpus: Default::default(),
        },
        std::sync::Arc::new(crate::tenants::Tenants::unbounded()),
    );
    let service = ContainerTraffic::new(
        ContainerId::generate(),
        Listing {
            owner: crate::model::UserId::generate(),
            created: SystemTime::now(),
            name: "test".parse().unwrap(),
        },
        policy,
        &TrafficShared {
            server_id: ServerId::generate(),
            clock: Clock::start(),
            metrics: Arc::default(),
            node,
            background: Background::current(),
            awake: Arc::default(),
            journal: Arc::new(crate::journal::NoJournal),
        },
    );
    let starts = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    service.serve(Arc::new(ServingRevision {
        number: 1,
        kind: WorkloadKind::Wasm,
        prepared: Arc::new(SlowStart {
            starts: starts.clone(),
            running: Arc::default(),
            most_at_once: most_at_once.clone(),
        }),
        request: Request {
            millicpus: 1000,
            memory_bytes: 1 << 20,
            ..Default::default()
        },
        ephemeral_storage_bytes: 0,
        probes: Default::default(),
        traffic_changes: 0,
    }));
    (service, starts, most_at_once)
}

pub(crate) fn acquire_many(
    service: &Arc<ContainerTraffic>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Lease, ActivationError>>> {
    (0..n)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.acquire(Duration::from_secs(5)).await })
        })
        .collect()
}

pub(crate) async fn leases(
    tasks: Vec<tokio::task::JoinHandle<Result<Lease, ActivationError>>>,
) -> Vec<Lease> {
    let mut leases = Vec::new();
    for task in tasks {
        leases.push(task.await.unwrap().unwrap());
    }
    leases
}

/// A sandbox that does nothing for `identity`, placed on a node of its own.
pub(crate) fn live_instance(identity: Identity, pinned: bool) -> LiveInstance {
    let node = NodeCapacity::new(
        ServerId::generate(),
        "test".into(),
        Resources {
            millicpus: 1000,
            memory_bytes: 1 << 30,
            gpus: Default::default(),
        },
        std::sync::Arc::new(crate::tenants::Tenants::unbounded()),
    );
    let placement = node.place_at_once(&Request::default()).expect("room");
    let revision = ServingRevision {
        number: 1,
        kind: WorkloadKind::Wasm,
        prepared: Arc::new(SlowStart {
            starts: Arc::default(),
            running: Arc::default(),
            most_at_once: Arc::default(),
        }),
        request: Request::default(),
        ephemeral_storage_bytes: 0,
        probes: Default::default(),
        traffic_changes: 0,
    };
    LiveInstance::new(
        identity,
        &revision,
        Arc::new(Nothing),
        pinned,
        placement,
        Duration::ZERO,
    )
}
