//! The activator: finds an instance for each request, starting one when none is
//! warm, so that every request waiting during a cold start shares that one start.

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::{ContainerId, InstanceId, InstanceInfo, InstanceState, ServerId};
use ember_sandbox::{Instance, PreparedWorkload, WorkloadKind};
use ember_scheduler::{Observation, ScaleReason, ScalingPolicy, decide};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// A revision ready to start instances from.
pub(crate) struct ServingRevision {
    pub(crate) number: u32,
    pub(crate) kind: WorkloadKind,
    pub(crate) prepared: Arc<dyn PreparedWorkload>,
}

/// What a container's traffic goes to.
#[derive(Clone)]
pub(crate) enum Serving {
    /// No revision has deployed yet; requests wait.
    Deploying,
    /// Requests go to this revision.
    Ready(Arc<ServingRevision>),
    /// Nothing can serve; requests fail with this reason.
    Unavailable(Arc<str>),
}

/// Why no instance could be had for a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActivationError {
    #[error("the container is not available: {0}")]
    Unavailable(Arc<str>),
    #[error("no instance became ready within {0:?}")]
    Timeout(Duration),
    #[error("starting an instance failed: {0}")]
    StartFailed(Arc<str>),
}

/// One started instance and the requests it is serving.
pub(crate) struct LiveInstance {
    id: InstanceId,
    revision: u32,
    instance: Arc<dyn Instance>,
    started: SystemTime,
    /// Clock time of the start, for the restart backoff.
    started_at: Duration,
    in_flight: AtomicU32,
}

/// An instance start in progress; waiters watch `done`.
struct Starting {
    id: InstanceId,
    revision: u32,
    since: SystemTime,
    done: watch::Receiver<Option<Result<(), Arc<str>>>>,
}

/// Instances that ended on their own, and when the next start may happen.
#[derive(Default)]
struct Restarts {
    /// All of them, for the API.
    total: u32,
    /// In a row, each soon after its start: the backoff doubles with each.
    in_a_row: u32,
    /// Clock time before which no instance starts.
    not_before: Duration,
    /// What happened last, for the container's status.
    note: Option<String>,
}

/// First wait before restarting an instance that ended; doubles per restart in a row.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that ran this long before ending starts the backoff afresh.
const STABLE_UPTIME: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pool {
    instances: Vec<Arc<LiveInstance>>,
    starting: Vec<Starting>,
    waiting: u32,
}

/// One container's traffic state: its serving revision and its instances.
pub(crate) struct Service {
    pub(crate) id: ContainerId,
    server_id: ServerId,
    serving: watch::Sender<Serving>,
    pool: Mutex<Pool>,
    restarts: Mutex<Restarts>,
    policy: Mutex<ScalingPolicy>,
    /// Nanoseconds since the clock's origin of the last request start or end.
    last_activity: AtomicU64,
    clock: Clock,
    metrics: Arc<Metrics>,
}

/// The right to send one request to one instance; released when dropped (after the
/// response body has been sent).
pub(crate) struct Lease {
    service: Arc<Service>,
    instance: Arc<LiveInstance>,
}

impl Lease {
    pub(crate) fn instance(&self) -> &Arc<dyn Instance> {
        &self.instance.instance
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.service.touch();
    }
}

/// Counts a request as waiting for as long as it exists.
struct Waiting<'a>(&'a Service);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.pool.lock().waiting -= 1;
    }
}

impl Service {
    pub(crate) fn new(
        id: ContainerId,
        server_id: ServerId,
        policy: ScalingPolicy,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let service = Arc::new(Self {
            id,
            server_id,
            serving: watch::Sender::new(Serving::Deploying),
            pool: Mutex::default(),
            restarts: Mutex::default(),
            policy: Mutex::new(policy),
            last_activity: AtomicU64::new(0),
            clock,
            metrics,
        });
        service.touch();
        service
    }

    /// Clock time of the last request start or end.
    fn last_activity(&self) -> Duration {
        Duration::from_nanos(self.last_activity.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let now = self.clock.now().as_nanos() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }

    pub(crate) fn set_policy(&self, policy: ScalingPolicy) {
        *self.policy.lock() = policy;
    }

    /// Sends traffic to `revision` from now on. Idle instances of older revisions stop
    /// now; busy ones finish their requests first (see [`Service::reconcile`]).
    pub(crate) fn serve(&self, revision: Arc<ServingRevision>) {
        let number = revision.number;
        // A new revision starts with a clean slate.
        *self.restarts.lock() = Restarts::default();
        self.serving.send_replace(Serving::Ready(revision));
        let retired = {
            let mut pool = self.pool.lock();
            take_idle(&mut pool.instances, |i| i.revision != number, usize::MAX)
        };
        stop_all(retired);
    }

    /// Marks the container unavailable (its first deployment failed, or it was deleted).
    pub(crate) fn make_unavailable(&self, reason: &str) {
        self.serving
            .send_replace(Serving::Unavailable(reason.into()));
    }

    /// Stops every instance; used when the container is deleted.
    pub(crate) fn shut_down(&self) {
        self.make_unavailable("the container was deleted");
        let all = std::mem::take(&mut self.pool.lock().instances);
        stop_all(all);
    }

    /// Stops every instance, busy or not, and waits until they are gone: the runtime
    /// is shutting down, and no container may outlive it.
    pub(crate) async fn stop_everything(&self) {
        let all = std::mem::take(&mut self.pool.lock().instances);
        for live in all {
            live.instance.stop().await;
        }
    }

    /// Stops every instance that serves no request now, as scaling to zero would;
    /// returns how many stopped.
    pub(crate) async fn stop_idle_instances(&self) -> usize {
        let idle = {
            let mut pool = self.pool.lock();
            take_idle(&mut pool.instances, |_| true, usize::MAX)
        };
        for live in &idle {
            live.instance.stop().await;
        }
        idle.len()
    }

    /// Finds (or starts) an instance for one request, waiting until `deadline`.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<Lease, ActivationError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.touch();
        loop {
            let revision = self.wait_for_revision(deadline, timeout).await?;
            let mut done = {
                let mut pool = self.pool.lock();
                let warm = pool
                    .instances
                    .iter()
                    .filter(|i| i.revision == revision.number)
                    .min_by_key(|i| i.in_flight.load(Ordering::Relaxed));
                if let Some(instance) = warm {
                    instance.in_flight.fetch_add(1, Ordering::AcqRel);
                    return Ok(Lease {
                        service: self.clone(),
                        instance: instance.clone(),
                    });
                }
                let done = match pool.starting.iter().find(|s| s.revision == revision.number) {
                    Some(start) => start.done.clone(),
                    None => self.start_instance(&mut pool, revision, true),
                };
                pool.waiting += 1;
                done
            };
            let _waiting = Waiting(self);
            match tokio::time::timeout_at(deadline, done.wait_for(Option::is_some)).await {
                Err(_) => return Err(ActivationError::Timeout(timeout)),
                Ok(Ok(outcome)) => {
                    if let Some(Err(reason)) = outcome.as_ref() {
                        return Err(ActivationError::StartFailed(reason.clone()));
                    }
                }
                // The start task ended without a word: look again.
                Ok(Err(_)) => {}
            }
        }
    }

    async fn wait_for_revision(
        &self,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Arc<ServingRevision>, ActivationError> {
        // The common case, on every request: a revision is serving. No subscription
        // and no timer then.
        if let Serving::Ready(revision) = &*self.serving.borrow() {
            return Ok(revision.clone());
        }
        let mut serving = self.serving.subscribe();
        let ready = tokio::time::timeout_at(
            deadline,
            serving.wait_for(|s| !matches!(s, Serving::Deploying)),
        )
        .await
        .map_err(|_| ActivationError::Timeout(timeout))?
        .map_err(|_| ActivationError::Unavailable("the container was deleted".into()))?
        .clone();
        match ready {
            Serving::Ready(revision) => Ok(revision),
            Serving::Unavailable(reason) => Err(ActivationError::Unavailable(reason)),
            Serving::Deploying => unreachable!("waited until not deploying"),
        }
    }

    /// Starts one instance of `revision` in its own task (so a client that gives up does
    /// not cancel a start others wait for) and returns what to watch for its outcome.
    fn start_instance(
        self: &Arc<Self>,
        pool: &mut Pool,
        revision: Arc<ServingRevision>,
        for_request: bool,
    ) -> watch::Receiver<Option<Result<(), Arc<str>>>> {
        let (done_tx, done) = watch::channel(None);
        let id = InstanceId::generate();
        pool.starting.push(Starting {
            id,
            revision: revision.number,
            since: SystemTime::now(),
            done: done.clone(),
        });
        let service = self.clone();
        tokio::spawn(async move {
            // After an instance ended on its own, the next start waits out the backoff.
            let not_before = service.restarts.lock().not_before;
            if let Some(wait) = not_before.checked_sub(service.clock.now()) {
                tokio::time::sleep(wait).await;
            }
            let began = Instant::now();
            let result = revision.prepared.start(&id.to_string()).await;
            let took = began.elapsed();
            let mut pool = service.pool.lock();
            pool.starting.retain(|s| s.id != id);
            let outcome = match result {
                Ok(instance) => {
                    if for_request {
                        service.metrics.cold_start(revision.kind, took);
                    }
                    tracing::info!(container = %service.id, instance = %id, revision = revision.number, took_us = took.as_micros() as u64, "instance started");
                    if let Some(exit) = instance.exit_signal() {
                        watch_exit(&service, id, exit);
                    }
                    pool.instances.push(Arc::new(LiveInstance {
                        id,
                        revision: revision.number,
                        instance,
                        started: SystemTime::now(),
                        started_at: service.clock.now(),
                        in_flight: AtomicU32::new(0),
                    }));
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(container = %service.id, error = %e, "instance failed to start");
                    service.record_restart(&format!("an instance failed to start: {e}"), false);
                    Err(Arc::from(e.to_string()))
                }
            };
            done_tx.send_replace(Some(outcome));
        });
        done
    }

    /// Times instances ended on their own or failed to start.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.lock().total
    }

    /// What happened to the last instance that ended on its own, while the container
    /// has not served since.
    pub(crate) fn restart_note(&self) -> Option<String> {
        self.restarts.lock().note.clone()
    }

    /// Counts an instance end (or failed start) and sets the backoff; returns it.
    fn record_restart(&self, what: &str, ran_long: bool) -> Duration {
        let mut restarts = self.restarts.lock();
        if ran_long {
            restarts.in_a_row = 0;
        }
        restarts.total += 1;
        restarts.in_a_row += 1;
        let backoff = RESTART_BACKOFF
            .saturating_mul(1 << (restarts.in_a_row - 1).min(16))
            .min(MAX_RESTART_BACKOFF);
        restarts.not_before = self.clock.now() + backoff;
        restarts.note = Some(format!(
            "{what}; next start in {}s (restart {})",
            backoff.as_secs_f64(),
            restarts.total
        ));
        backoff
    }

    /// An instance ended without being stopped: it leaves the pool, its remains are
    /// cleaned up, and a replacement starts after the backoff when one is wanted.
    fn instance_exited(self: &Arc<Self>, id: InstanceId, reason: &str) {
        let mut pool = self.pool.lock();
        let Some(position) = pool.instances.iter().position(|i| i.id == id) else {
            // Stopped on purpose: it was taken out of the pool first.
            return;
        };
        let live = pool.instances.remove(position);
        let ran_long = self.clock.now().saturating_sub(live.started_at) >= STABLE_UPTIME;
        let backoff = self.record_restart(&format!("instance {id} {reason}"), ran_long);
        tracing::warn!(container = %self.id, instance = %id, reason, backoff_s = backoff.as_secs_f64(), "instance ended on its own");
        let policy = *self.policy.lock();
        let idle_for = self.clock.now().saturating_sub(self.last_activity());
        let wanted = (pool.instances.len() + pool.starting.len())
            < policy.min_instances.max(1) as usize
            && (policy.min_instances > 0 || idle_for < policy.idle_timeout);
        if wanted && let Serving::Ready(revision) = &*self.serving.borrow() {
            self.start_instance(&mut pool, revision.clone(), false);
        }
        drop(pool);
        stop_all(vec![live]);
    }

    /// Brings the instance count to what the autoscaler decides at `now`.
    pub(crate) fn reconcile(self: &Arc<Self>) {
        let now = self.clock.now();
        let policy = *self.policy.lock();
        let serving = match &*self.serving.borrow() {
            Serving::Ready(revision) => Some(revision.clone()),
            _ => None,
        };
        let mut pool = self.pool.lock();
        let number = serving.as_ref().map(|r| r.number);
        // Instances of older revisions leave once their last request is done.
        let mut stopped = take_idle(
            &mut pool.instances,
            |i| Some(i.revision) != number,
            usize::MAX,
        );

        let current = |i: &&Arc<LiveInstance>| Some(i.revision) == number;
        let observed = Observation {
            ready: pool.instances.iter().filter(current).count() as u32,
            starting: pool
                .starting
                .iter()
                .filter(|s| Some(s.revision) == number)
                .count() as u32,
            in_flight: pool
                .instances
                .iter()
                .map(|i| i.in_flight.load(Ordering::Relaxed))
                .sum(),
            waiting: pool.waiting,
            last_activity: Some(self.last_activity()),
        };
        let decision = decide(&policy, &observed, now);
        if decision.desired < observed.ready {
            let excess = (observed.ready - decision.desired) as usize;
            let idle = take_idle(&mut pool.instances, |i| Some(i.revision) == number, excess);
            for _ in &idle {
                self.metrics.scaled_down();
            }
            tracing::info!(container = %self.id, stopped = idle.len(), reason = decision.reason.as_str(), "scaling down");
            stopped.extend(idle);
        } else if decision.desired > observed.ready + observed.starting
            && decision.reason == ScaleReason::BelowMinimum
            && let Some(revision) = serving
        {
            for _ in 0..decision.desired - observed.ready - observed.starting {
                self.start_instance(&mut pool, revision.clone(), false);
            }
        }
        drop(pool);
        stop_all(stopped);
    }

    /// The live and starting instances, for the API.
    pub(crate) fn instances(&self) -> Vec<InstanceInfo> {
        let pool = self.pool.lock();
        let running = pool.instances.iter().map(|i| InstanceInfo {
            id: i.id,
            container_id: self.id,
            server_id: self.server_id,
            revision: i.revision,
            state: InstanceState::Running,
            state_changed: i.started,
            in_flight: i.in_flight.load(Ordering::Relaxed),
        });
        let starting = pool.starting.iter().map(|s| InstanceInfo {
            id: s.id,
            container_id: self.id,
            server_id: self.server_id,
            revision: s.revision,
            state: InstanceState::Starting,
            state_changed: s.since,
            in_flight: 0,
        });
        running.chain(starting).collect()
    }

    /// Number of started instances.
    pub(crate) fn instance_count(&self) -> usize {
        self.pool.lock().instances.len()
    }
}

/// Removes up to `limit` instances that match `which` and serve no request.
fn take_idle(
    instances: &mut Vec<Arc<LiveInstance>>,
    which: impl Fn(&LiveInstance) -> bool,
    limit: usize,
) -> Vec<Arc<LiveInstance>> {
    let mut taken = Vec::new();
    instances.retain(|i| {
        let idle = which(i) && i.in_flight.load(Ordering::Acquire) == 0;
        if idle && taken.len() < limit {
            taken.push(i.clone());
            false
        } else {
            true
        }
    });
    taken
}

/// Tells `service` when the instance `id` ends; stops watching once the service is gone.
fn watch_exit(service: &Arc<Service>, id: InstanceId, mut exit: watch::Receiver<Option<String>>) {
    let service = Arc::downgrade(service);
    tokio::spawn(async move {
        let reason = exit
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        if let (Some(service), Some(reason)) = (service.upgrade(), reason) {
            service.instance_exited(id, &reason);
        }
    });
}

fn stop_all(instances: Vec<Arc<LiveInstance>>) {
    if instances.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for live in instances {
            live.instance.stop().await;
            tracing::debug!(instance = %live.id, "instance stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_sandbox::{BoxFuture, HttpBody, SandboxError};
    use std::sync::atomic::AtomicUsize;

    /// A workload whose starts take a while and are counted.
    struct SlowStart {
        starts: Arc<AtomicUsize>,
    }

    struct Nothing;

    impl Instance for Nothing {
        fn handle(
            &self,
            _request: http::Request<HttpBody>,
        ) -> BoxFuture<'_, Result<http::Response<HttpBody>, SandboxError>> {
            Box::pin(async { Err(SandboxError::Guest("unused".into())) })
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
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Arc::new(Nothing) as Arc<dyn Instance>)
            })
        }
    }

    fn service(idle: Duration) -> (Arc<Service>, Arc<AtomicUsize>) {
        let policy = ScalingPolicy {
            min_instances: 0,
            max_instances: 10,
            idle_timeout: idle,
        };
        let service = Service::new(
            ContainerId::generate(),
            ServerId::generate(),
            policy,
            Clock::start(),
            Arc::default(),
        );
        let starts = Arc::new(AtomicUsize::new(0));
        service.serve(Arc::new(ServingRevision {
            number: 1,
            kind: WorkloadKind::Wasm,
            prepared: Arc::new(SlowStart {
                starts: starts.clone(),
            }),
        }));
        (service, starts)
    }

    #[tokio::test]
    async fn requests_during_a_cold_start_share_it() {
        let (service, starts) = service(Duration::from_secs(60));
        let leases = futures_join(&service, 50).await;
        assert_eq!(leases.len(), 50);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(service.instances().len(), 1);
        assert_eq!(service.instances()[0].in_flight, 50);
        drop(leases);
        assert_eq!(service.instances()[0].in_flight, 0);
    }

    #[tokio::test]
    async fn idle_instances_go_busy_ones_stay() {
        let (service, starts) = service(Duration::from_millis(100));
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        service.reconcile();
        assert_eq!(service.instance_count(), 1, "a busy instance was stopped");
        drop(lease);
        service.reconcile();
        assert_eq!(
            service.instance_count(),
            1,
            "stopped before the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        service.reconcile();
        assert_eq!(service.instance_count(), 0);
        // The next request starts a new instance.
        drop(service.acquire(Duration::from_secs(5)).await.unwrap());
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unavailable_container_fails_fast() {
        let (service, _) = service(Duration::from_secs(60));
        service.make_unavailable("the image could not be pulled");
        let err = service.acquire(Duration::from_secs(5)).await.err().unwrap();
        assert!(err.to_string().contains("could not be pulled"), "{err}");
    }

    async fn futures_join(service: &Arc<Service>, n: usize) -> Vec<Lease> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move { service.acquire(Duration::from_secs(5)).await })
            })
            .collect();
        let mut leases = Vec::new();
        for task in tasks {
            leases.push(task.await.unwrap().unwrap());
        }
        leases
    }
}
