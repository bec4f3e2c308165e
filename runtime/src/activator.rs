//! The activator: finds an instance for each request. A request that finds every
//! instance at its concurrency limit (or none at all) waits in the container's
//! bounded FIFO queue while the autoscaler starts as many instances as the demand
//! needs, in parallel; each freed slot goes to the request that waited longest.

use crate::awake::{AwakeSet, Membership};
use crate::background::Background;
use crate::clock::Clock;
use crate::journal::InstanceJournal;
use crate::metrics::Metrics;
use crate::model::{
    ContainerId, ContainerName, InstanceId, InstanceInfo, InstanceState, RunningInstance, ServerId,
    StoppedInstance, UserId,
};
use crate::node::{NodeCapacity, Placement};
use crate::roster::{Entry, Identity, Roster};
use ember_sandbox::{Instance, PreparedWorkload, ResourceUsage, WorkloadKind};
use ember_scheduler::{Autoscaler, Observation, Request, ScaleReason, ScalingPolicy};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, watch};

/// A revision ready to start instances from.
pub(crate) struct ServingRevision {
    pub(crate) number: u32,
    pub(crate) kind: WorkloadKind,
    pub(crate) prepared: Arc<dyn PreparedWorkload>,
    /// What each instance asks of its node.
    pub(crate) request: Request,
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

/// How a container's traffic is handled: its scaling and its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrafficPolicy {
    pub(crate) scaling: ScalingPolicy,
    /// Most requests waiting for an instance.
    pub(crate) queue_depth: u32,
}

/// Why no instance could be had for a request.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ActivationError {
    #[error("the container is not available: {0}")]
    Unavailable(Arc<str>),
    #[error("no instance had room for the request within {0:?}")]
    Timeout(Duration),
    #[error("starting an instance failed: {0}")]
    StartFailed(Arc<str>),
    #[error("the container's queue is full ({0} requests wait already)")]
    QueueFull(u32),
}

/// One started instance and the requests it is serving.
pub(crate) struct LiveInstance {
    id: InstanceId,
    /// Its place among the container's instances, from 1.
    ordinal: u32,
    /// When it first started (it keeps its id across a stop and start).
    created: SystemTime,
    revision: u32,
    kind: WorkloadKind,
    instance: Arc<dyn Instance>,
    started: SystemTime,
    /// Clock time of the start, for the restart backoff.
    started_at: Duration,
    in_flight: AtomicU32,
    /// Woken each time the last request in flight ends, for a drain.
    idle: tokio::sync::Notify,
    /// Started through the instances API: the autoscaler neither counts nor stops it.
    pinned: bool,
    /// Its room on the node, given back when the last reference goes.
    _placement: Placement,
}

/// The outcome of one instance start, for those who wait on it.
pub(crate) type StartOutcome = watch::Receiver<Option<Result<(), Arc<str>>>>;

/// An instance start in progress.
struct Starting {
    identity: Identity,
    revision: u32,
    since: SystemTime,
    pinned: bool,
    /// Why it has not started yet (no room on the node, say).
    waiting_reason: Option<String>,
    /// Removed through the API while it started: it stops as soon as it is up.
    removed: bool,
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

/// A request waiting for a slot.
type Waiter = oneshot::Sender<Result<Lease, ActivationError>>;

struct Pool {
    policy: TrafficPolicy,
    instances: Vec<Arc<LiveInstance>>,
    starting: Vec<Starting>,
    queue: VecDeque<Waiter>,
    autoscaler: Autoscaler,
    /// The autoscaler's last answer, for metrics.
    desired: u32,
    /// Instances the instances API asked for.
    pinned_wanted: u32,
}

/// The pool behind its lock. Whoever leaves the pool not at rest puts the
/// container among those the reconciler visits, as the lock is released: no
/// change can forget to.
struct PoolCell {
    pool: Mutex<Pool>,
    membership: Membership<Service>,
}

/// The pool, locked.
struct PoolGuard<'a> {
    pool: parking_lot::MutexGuard<'a, Pool>,
    membership: &'a Membership<Service>,
}

impl PoolCell {
    fn lock(&self) -> PoolGuard<'_> {
        PoolGuard {
            pool: self.pool.lock(),
            membership: &self.membership,
        }
    }
}

impl PoolCell {
    #[cfg(test)]
    fn membership_is_awake(&self) -> bool {
        self.membership.is_awake()
    }
}

impl PoolGuard<'_> {
    /// Leaves the reconciler's set; the pool is at rest.
    fn sleep(&self) {
        self.membership.sleep();
    }
}

impl std::ops::Deref for PoolGuard<'_> {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

impl std::ops::DerefMut for PoolGuard<'_> {
    fn deref_mut(&mut self) -> &mut Pool {
        &mut self.pool
    }
}

impl Drop for PoolGuard<'_> {
    fn drop(&mut self) {
        if !self.pool.is_at_rest() {
            self.membership.wake();
        }
    }
}

impl Pool {
    /// Nothing runs, starts or waits, nothing is pinned or kept at a minimum, and
    /// the autoscaler has no demand on record: reconciling would do nothing.
    fn is_at_rest(&self) -> bool {
        self.instances.is_empty()
            && self.starting.is_empty()
            && self.queue.is_empty()
            && self.pinned_wanted == 0
            && self.policy.scaling.min_instances == 0
            && self.autoscaler.is_at_rest()
    }
}

/// A point-in-time view of a container's traffic, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrafficStats {
    pub(crate) in_flight: u32,
    pub(crate) queued: u32,
    pub(crate) desired: u32,
    pub(crate) running: u32,
    pub(crate) starting: u32,
    /// Sandboxes created ahead and waiting for a cold start.
    pub(crate) prepared: u32,
}

/// What the services of every container on this node share.
#[derive(Clone)]
pub(crate) struct ServiceShared {
    pub(crate) server_id: ServerId,
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) node: Arc<NodeCapacity>,
    pub(crate) background: Background,
    /// The containers the reconciler visits.
    pub(crate) awake: Arc<AwakeSet<Service>>,
    /// Longest an instance taken out of service waits for its requests to end
    /// before it stops (the request timeout).
    pub(crate) drain_limit: Duration,
    /// Where OCI instances that start and stop are recorded, for a later runtime
    /// to adopt those still running.
    pub(crate) journal: Arc<dyn InstanceJournal>,
}

/// What lists of instances need of their container, kept in memory so that a list
/// reads from the store only the containers of the rows it returns.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) owner: UserId,
    pub(crate) created: SystemTime,
    pub(crate) name: ContainerName,
}

/// One container's traffic state: its serving revision and its instances.
pub(crate) struct Service {
    pub(crate) id: ContainerId,
    /// Its owner, age and name, as of its last change.
    listing: Mutex<Listing>,
    server_id: ServerId,
    serving: watch::Sender<Serving>,
    pool: PoolCell,
    restarts: Mutex<Restarts>,
    /// Nanoseconds since the clock's origin of the last request start or end.
    last_activity: AtomicU64,
    /// Scaling decisions that changed the instance count, by reason.
    decisions: [AtomicU64; ScaleReason::ALL.len()],
    clock: Clock,
    metrics: Arc<Metrics>,
    node: Arc<NodeCapacity>,
    /// Where starts and stops run, whichever thread the request that set them off
    /// came in on.
    background: Background,
    /// See [`ServiceShared::drain_limit`].
    drain_limit: Duration,
    /// See [`ServiceShared::journal`].
    journal: Arc<dyn InstanceJournal>,
    /// Its instances that do not run: stopped by hand, or recently terminated.
    roster: Arc<Roster>,
    /// The next instance's ordinal.
    next_ordinal: AtomicU32,
}

/// The right to send one request to one instance; released when dropped (after the
/// response body has been sent), and the slot handed to the next waiting request.
pub(crate) struct Lease {
    service: Arc<Service>,
    instance: Arc<LiveInstance>,
    armed: bool,
}

impl Lease {
    pub(crate) fn instance(&self) -> &Arc<dyn Instance> {
        &self.instance.instance
    }

    /// Gives the slot back without handing it on: for a lease that never reached
    /// its request.
    fn disarm(mut self) {
        self.instance.end_request();
        self.armed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.service.release(&self.instance);
        }
    }
}

impl Service {
    pub(crate) fn new(
        id: ContainerId,
        listing: Listing,
        policy: TrafficPolicy,
        shared: &ServiceShared,
    ) -> Arc<Self> {
        let ServiceShared {
            server_id,
            clock,
            metrics,
            node,
            background,
            awake,
            drain_limit,
            journal,
        } = shared.clone();
        let service = Arc::new_cyclic(|me| Self {
            id,
            listing: Mutex::new(listing),
            server_id,
            serving: watch::Sender::new(Serving::Deploying),
            pool: PoolCell {
                pool: Mutex::new(Pool {
                    policy,
                    instances: Vec::new(),
                    starting: Vec::new(),
                    queue: VecDeque::new(),
                    autoscaler: Autoscaler::new(),
                    desired: 0,
                    pinned_wanted: 0,
                }),
                membership: Membership::new(awake, id, me.clone()),
            },
            restarts: Mutex::default(),
            last_activity: AtomicU64::new(0),
            decisions: Default::default(),
            clock,
            metrics,
            node,
            background,
            drain_limit,
            journal,
            roster: Arc::default(),
            next_ordinal: AtomicU32::new(1),
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

    /// What lists need of the container.
    pub(crate) fn listing(&self) -> Listing {
        self.listing.lock().clone()
    }

    pub(crate) fn set_listing(&self, listing: Listing) {
        *self.listing.lock() = listing;
    }

    pub(crate) fn set_policy(&self, policy: TrafficPolicy) {
        self.pool.lock().policy = policy;
    }

    /// Brings back the instances that were stopped by hand before a restart; new
    /// instances count on from the highest ordinal among them.
    pub(crate) fn restore_stopped(&self, stopped: &[StoppedInstance]) {
        self.roster.restore(stopped);
        if let Some(highest) = stopped.iter().map(|s| s.ordinal).max() {
            self.next_ordinal.fetch_max(highest + 1, Ordering::Relaxed);
        }
    }

    /// Sets how many pinned instances the container keeps (after a restart).
    pub(crate) fn set_pinned(&self, pinned: u32) {
        self.pool.lock().pinned_wanted = pinned;
    }

    fn serving_revision(&self) -> Option<Arc<ServingRevision>> {
        match &*self.serving.borrow() {
            Serving::Ready(revision) => Some(revision.clone()),
            _ => None,
        }
    }

    fn serving_number(&self) -> Option<u32> {
        match &*self.serving.borrow() {
            Serving::Ready(revision) => Some(revision.number),
            _ => None,
        }
    }

    /// Sends traffic to `revision` from now on. Idle instances of older revisions stop
    /// now; busy ones finish their requests first (see [`Service::reconcile`]).
    pub(crate) fn serve(self: &Arc<Self>, revision: Arc<ServingRevision>) {
        let number = revision.number;
        // A new revision starts with a clean slate.
        *self.restarts.lock() = Restarts::default();
        self.replace_serving(Serving::Ready(revision));
        let retired = {
            let mut pool = self.pool.lock();
            let mut retired = take_idle(&mut pool.instances, |i| i.revision != number, usize::MAX);
            retired.extend(self.scale(&mut pool, false));
            retired
        };
        self.stop_all(retired);
    }

    /// Marks the container unavailable (its first deployment failed, or it was deleted);
    /// requests waiting get the reason.
    pub(crate) fn make_unavailable(&self, reason: &str) {
        let reason: Arc<str> = reason.into();
        self.replace_serving(Serving::Unavailable(reason.clone()));
        let waiting = std::mem::take(&mut self.pool.lock().queue);
        for waiter in waiting {
            let _ = waiter.send(Err(ActivationError::Unavailable(reason.clone())));
        }
    }

    /// Sends traffic to `serving`. A revision no longer served gives back what it
    /// holds ready for starts (prepared sandboxes), tracked like a stop.
    fn replace_serving(&self, serving: Serving) {
        let old = self.serving.send_replace(serving);
        if let Serving::Ready(old) = old
            && self
                .serving_revision()
                .is_none_or(|new| !Arc::ptr_eq(&new, &old))
        {
            self.background
                .spawn_stop(async move { old.prepared.retire().await });
        }
    }

    fn is_unavailable(&self) -> bool {
        matches!(*self.serving.borrow(), Serving::Unavailable(_))
    }

    /// Stops every instance; used when the container is deleted.
    pub(crate) fn shut_down(&self) {
        self.make_unavailable("the container was deleted");
        let all = std::mem::take(&mut self.pool.lock().instances);
        self.stop_all(all);
    }

    /// Stops every instance, busy or not, and waits until they are gone: the runtime
    /// is shutting down, and no container may outlive it.
    pub(crate) async fn stop_everything(&self) {
        self.make_unavailable("the runtime is shutting down");
        let all = std::mem::take(&mut self.pool.lock().instances);
        let stops = all
            .into_iter()
            .map(|live| self.stop_taken(live, InstanceState::Terminated));
        futures::future::join_all(stops).await;
        // The revision's prepared sandboxes go in a task `make_unavailable` began,
        // which the runtime waits for with the other stops.
    }

    /// Stops every instance that serves no request now, as scaling to zero would;
    /// returns how many stopped.
    pub(crate) async fn stop_idle_instances(&self) -> usize {
        let idle = {
            let mut pool = self.pool.lock();
            // Scaled to zero by hand: whatever burst the autoscaler held for is over.
            pool.autoscaler = Autoscaler::new();
            take_idle(&mut pool.instances, |i| !i.pinned, usize::MAX)
        };
        let count = idle.len();
        let stops = idle
            .into_iter()
            .map(|live| self.stop_taken(live, InstanceState::Terminated));
        futures::future::join_all(stops).await;
        count
    }

    /// Finds an instance with a free slot for one request, waiting in the queue (while
    /// instances start) until `timeout` has passed.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<Lease, ActivationError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.touch();
        let revision = self.wait_for_revision(deadline, timeout).await?;
        let waiting = {
            let mut pool = self.pool.lock();
            if pool.queue.is_empty()
                && let Some(lease) = self.lease_least_loaded(&pool, revision.number)
            {
                return Ok(lease);
            }
            pool.queue.retain(|w| !w.is_closed());
            let depth = pool.policy.queue_depth;
            if pool.queue.len() >= depth as usize {
                return Err(ActivationError::QueueFull(depth));
            }
            let (waiter, waiting) = oneshot::channel();
            pool.queue.push_back(waiter);
            let stopped = self.scale(&mut pool, false);
            // A slot may have come free between the look above and the queueing.
            self.dispatch(&mut pool);
            drop(pool);
            self.stop_all(stopped);
            waiting
        };
        match tokio::time::timeout_at(deadline, waiting).await {
            Err(_) => Err(ActivationError::Timeout(timeout)),
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ActivationError::Unavailable(
                "the container was deleted".into(),
            )),
        }
    }

    /// A lease on the instance of revision `number` with the fewest requests in
    /// flight, if one has a free slot.
    fn lease_least_loaded(self: &Arc<Self>, pool: &Pool, number: u32) -> Option<Lease> {
        let concurrency = pool.policy.scaling.concurrency.max(1);
        let instance = pool
            .instances
            .iter()
            .filter(|i| i.revision == number)
            .map(|i| (i.in_flight.load(Ordering::Acquire), i))
            .filter(|(in_flight, _)| *in_flight < concurrency)
            .min_by_key(|(in_flight, _)| *in_flight)?
            .1;
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            service: self.clone(),
            instance: instance.clone(),
            armed: true,
        })
    }

    /// Hands free slots to waiting requests, oldest first.
    fn dispatch(self: &Arc<Self>, pool: &mut Pool) {
        let Some(number) = self.serving_number() else {
            return;
        };
        while let Some(waiter) = pool.queue.pop_front() {
            if waiter.is_closed() {
                continue;
            }
            let Some(lease) = self.lease_least_loaded(pool, number) else {
                pool.queue.push_front(waiter);
                return;
            };
            if let Err(Ok(lease)) = waiter.send(Ok(lease)) {
                // The request gave up just now: its slot stays free.
                lease.disarm();
            }
        }
    }

    /// A request ended: its slot goes to the next waiting request.
    fn release(self: &Arc<Self>, instance: &LiveInstance) {
        instance.end_request();
        self.touch();
        let mut pool = self.pool.lock();
        if !pool.queue.is_empty() {
            self.dispatch(&mut pool);
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

    /// Asks the autoscaler for the instance count and starts or stops instances to
    /// reach it; keeps the pinned instances the instances API asked for. Returns the
    /// instances to stop (outside the pool's lock). `sample` records the demand in the
    /// autoscaler's windows (done at the reconciler's fixed interval only).
    fn scale(self: &Arc<Self>, pool: &mut Pool, sample: bool) -> Vec<Arc<LiveInstance>> {
        let Some(revision) = self.serving_revision() else {
            return Vec::new();
        };
        let now = self.clock.now();
        let number = revision.number;
        let scaled = |i: &LiveInstance| i.revision == number && !i.pinned;
        let observed = Observation {
            ready: pool.instances.iter().filter(|i| scaled(i)).count() as u32,
            starting: pool
                .starting
                .iter()
                .filter(|s| s.revision == number && !s.pinned)
                .count() as u32,
            in_flight: pool
                .instances
                .iter()
                .filter(|i| scaled(i))
                .map(|i| i.in_flight.load(Ordering::Relaxed))
                .sum(),
            waiting: pool.queue.iter().filter(|w| !w.is_closed()).count() as u32,
            last_activity: Some(self.last_activity()),
        };
        if sample {
            pool.autoscaler.record(now, observed.demand());
        }
        let policy = pool.policy.scaling;
        let decision = pool.autoscaler.decide(&policy, &observed, now);
        pool.desired = decision.desired;

        let current = observed.ready + observed.starting;
        let cold = observed.waiting > 0;
        for _ in current..decision.desired {
            self.start_instance(pool, revision.clone(), false, cold);
        }
        let mut stopped = Vec::new();
        if decision.desired < observed.ready {
            let excess = (observed.ready - decision.desired) as usize;
            stopped = take_idle(&mut pool.instances, |i| scaled(i), excess);
            for _ in &stopped {
                self.metrics.scaled_down();
            }
        }
        let started = decision.desired.saturating_sub(current);
        if started > 0 || !stopped.is_empty() {
            let index = ScaleReason::ALL
                .iter()
                .position(|r| *r == decision.reason)
                .expect("every reason is listed");
            self.decisions[index].fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                container = %self.id,
                reason = decision.reason.as_str(),
                from = current,
                to = current + started - stopped.len() as u32,
                desired = decision.desired,
                in_flight = observed.in_flight,
                waiting = observed.waiting,
                panicking = pool.autoscaler.is_panicking(),
                "scaling"
            );
        }

        let pinned = pool
            .instances
            .iter()
            .filter(|i| i.pinned && i.revision == number)
            .count()
            + pool
                .starting
                .iter()
                .filter(|s| s.pinned && s.revision == number)
                .count();
        for _ in pinned as u32..pool.pinned_wanted {
            self.start_instance(pool, revision.clone(), true, false);
        }
        stopped
    }

    /// Starts one instance of `revision` in its own task (so a client that gives up does
    /// not cancel a start others wait for): first room on the node, then the sandbox.
    fn start_instance(
        self: &Arc<Self>,
        pool: &mut Pool,
        revision: Arc<ServingRevision>,
        pinned: bool,
        cold: bool,
    ) -> StartOutcome {
        let identity = Identity {
            id: InstanceId::generate(),
            ordinal: self.next_ordinal.fetch_add(1, Ordering::Relaxed),
            created: SystemTime::now(),
        };
        self.start_as(pool, identity, revision, pinned, cold)
    }

    /// Starts an instance that is `identity` (a new one, or one that stopped and
    /// starts again).
    fn start_as(
        self: &Arc<Self>,
        pool: &mut Pool,
        identity: Identity,
        revision: Arc<ServingRevision>,
        pinned: bool,
        cold: bool,
    ) -> StartOutcome {
        let (done_tx, done) = watch::channel(None);
        pool.starting.push(Starting {
            identity,
            revision: revision.number,
            since: SystemTime::now(),
            pinned,
            waiting_reason: None,
            removed: false,
        });
        let service = self.clone();
        self.background.spawn(async move {
            let outcome = service.run_start(identity, &revision, pinned, cold).await;
            done_tx.send_replace(Some(outcome));
        });
        done
    }

    async fn run_start(
        self: &Arc<Self>,
        identity: Identity,
        revision: &Arc<ServingRevision>,
        pinned: bool,
        cold: bool,
    ) -> Result<(), Arc<str>> {
        let id = identity.id;
        // After an instance ended on its own, the next start waits out the backoff.
        let not_before = self.restarts.lock().not_before;
        if let Some(wait) = not_before.checked_sub(self.clock.now()) {
            tokio::time::sleep(wait).await;
        }
        let Some(placement) = self.room_for(id, revision).await else {
            self.pool.lock().starting.retain(|s| s.identity.id != id);
            return Err("the instance was no longer wanted".into());
        };
        let began = Instant::now();
        let instance_name = id.to_string();
        let gpus = placement.gpu_devices();
        let result = revision
            .prepared
            .start_with_devices(&instance_name, &gpus)
            .await;
        let took = began.elapsed();
        let mut pool = self.pool.lock();
        let removed = pool
            .starting
            .iter()
            .any(|s| s.identity.id == id && s.removed);
        pool.starting.retain(|s| s.identity.id != id);
        match result {
            Ok(instance) => {
                if cold {
                    self.metrics.cold_start(revision.kind, took);
                }
                tracing::info!(container = %self.id, instance = %id, revision = revision.number, took_us = took.as_micros() as u64, pinned, "instance started");
                let exit = instance.exit_signal();
                let live = Arc::new(LiveInstance::new(
                    identity,
                    revision,
                    instance,
                    pinned,
                    placement,
                    self.clock.now(),
                ));
                if self.is_unavailable() || removed {
                    // Deleted (or shutting down, or its instances removed) while it
                    // started.
                    drop(pool);
                    self.stop_all(vec![live]);
                    return Err("the instance was removed while it started".into());
                }
                if let Some(exit) = exit {
                    watch_exit(self, &live, exit);
                }
                self.journal_started(&live);
                pool.instances.push(live);
                self.dispatch(&mut pool);
                Ok(())
            }
            Err(e) => {
                drop(placement);
                if self.is_retired(revision) {
                    // Abandoned: the container was deleted, the runtime is stopping or
                    // another revision took over. Not a failure to back off from.
                    return Err(Arc::from(e.to_string()));
                }
                tracing::warn!(container = %self.id, error = %e, "instance failed to start");
                self.record_restart(&format!("an instance failed to start: {e}"), false);
                let reason: Arc<str> = Arc::from(e.to_string());
                // Waiting requests learn why, unless another instance may yet serve them.
                let number = revision.number;
                let hope = pool.instances.iter().any(|i| i.revision == number)
                    || pool.starting.iter().any(|s| s.revision == number);
                if !hope {
                    for waiter in pool.queue.drain(..) {
                        let _ = waiter.send(Err(ActivationError::StartFailed(reason.clone())));
                    }
                }
                Err(reason)
            }
        }
    }

    /// Whether `revision` no longer serves: the container was deleted, the runtime
    /// is stopping, or another revision took over.
    fn is_retired(&self, revision: &ServingRevision) -> bool {
        self.is_unavailable() || self.serving_number() != Some(revision.number)
    }

    /// Room on the node for instance `id` of `revision`, once there is some (its
    /// state says why it waits); `None` if the revision retires first.
    async fn room_for(&self, id: InstanceId, revision: &ServingRevision) -> Option<Placement> {
        self.node
            .place(
                self.id,
                &revision.request,
                |note| self.note_waiting(id, note),
                || self.is_retired(revision),
            )
            .await
    }

    fn note_waiting(&self, id: InstanceId, note: Option<String>) {
        if let Some(note) = &note {
            tracing::info!(container = %self.id, instance = %id, note, "instance waits for room");
        }
        let mut pool = self.pool.lock();
        if let Some(start) = pool.starting.iter_mut().find(|s| s.identity.id == id) {
            start.waiting_reason = note;
        }
    }

    /// Why an instance has not started, while one waits for room on the node.
    pub(crate) fn waiting_note(&self) -> Option<String> {
        self.pool
            .lock()
            .starting
            .iter()
            .find_map(|s| s.waiting_reason.clone())
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
    fn instance_exited(self: &Arc<Self>, ended: &Weak<LiveInstance>, reason: &str) {
        let mut pool = self.pool.lock();
        // By identity, not id: a replaced instance's successor has its id.
        let Some(position) = pool
            .instances
            .iter()
            .position(|i| std::ptr::eq(Arc::as_ptr(i), ended.as_ptr()))
        else {
            // Stopped on purpose: it was taken out of the pool first.
            return;
        };
        let id = pool.instances[position].id;
        let live = pool.instances.remove(position);
        let ran_long = self.clock.now().saturating_sub(live.started_at) >= STABLE_UPTIME;
        let backoff = self.record_restart(&format!("instance {id} {reason}"), ran_long);
        tracing::warn!(container = %self.id, instance = %id, reason, backoff_s = backoff.as_secs_f64(), "instance ended on its own");
        let policy = pool.policy.scaling;
        let idle_for = self.clock.now().saturating_sub(self.last_activity());
        let autoscaled = |pinned: bool| pinned == live.pinned;
        let left = pool
            .instances
            .iter()
            .filter(|i| autoscaled(i.pinned))
            .count()
            + pool
                .starting
                .iter()
                .filter(|s| autoscaled(s.pinned))
                .count();
        // A recently used container gets its instance back, as one in use would
        // (pinned instances come back through `scale`).
        let wanted = !live.pinned
            && left < policy.min_instances.max(1) as usize
            && (policy.min_instances > 0 || idle_for < policy.idle_timeout);
        let mut stopped = Vec::new();
        if let Some(revision) = self.serving_revision() {
            if wanted {
                self.start_instance(&mut pool, revision, false, false);
            }
            stopped = self.scale(&mut pool, false);
        }
        drop(pool);
        stopped.push(live);
        self.stop_all(stopped);
    }

    /// Brings the instance count to what the autoscaler decides now; called at a
    /// fixed interval, which is also when the demand is sampled.
    pub(crate) fn reconcile(self: &Arc<Self>) {
        let mut pool = self.pool.lock();
        if pool.is_at_rest() {
            // At zero with nothing asked for: a decision would be zero again, until
            // something wakes the container.
            pool.sleep();
            return;
        }
        let number = self.serving_number();
        // Instances of older revisions leave once their last request is done.
        let mut stopped = take_idle(
            &mut pool.instances,
            |i| Some(i.revision) != number,
            usize::MAX,
        );
        stopped.extend(self.scale(&mut pool, true));
        drop(pool);
        self.stop_all(stopped);
    }

    /// Starts `count` more pinned instances; returns what to watch for each start.
    /// Fails when no revision is serving yet.
    pub(crate) fn add_pinned(self: &Arc<Self>, count: u32) -> Option<Vec<StartOutcome>> {
        let revision = self.serving_revision()?;
        let mut pool = self.pool.lock();
        pool.pinned_wanted += count;
        Some(
            (0..count)
                .map(|_| self.start_instance(&mut pool, revision.clone(), true, false))
                .collect(),
        )
    }

    /// Stops every instance and forgets the pinned ones; the autoscaler starts what
    /// the traffic and `minInstances` need again. Returns when all have stopped.
    pub(crate) async fn remove_all_instances(&self, stopped: impl Fn() + Sync) -> usize {
        let all = {
            let mut pool = self.pool.lock();
            pool.pinned_wanted = 0;
            pool.autoscaler = Autoscaler::new();
            // Those still starting go too, once they are up: a start cannot be cut
            // short, and one that joined after this call would outlive the removal.
            for start in &mut pool.starting {
                start.removed = true;
            }
            std::mem::take(&mut pool.instances)
        };
        self.roster.terminate_stopped();
        futures::future::join_all(all.iter().map(|live| {
            let stop = self.stop_taken(live.clone(), InstanceState::Terminated);
            let stopped = &stopped;
            async move {
                stop.await;
                stopped();
            }
        }))
        .await;
        all.len()
    }

    /// Stops one instance (a pinned one is not replaced); `None` when there is none
    /// with that id. Returns when it has stopped.
    pub(crate) async fn remove_instance(&self, id: InstanceId) -> Option<()> {
        let live = {
            let mut pool = self.pool.lock();
            let position = pool.instances.iter().position(|i| i.id == id)?;
            let live = pool.instances.remove(position);
            if live.pinned {
                pool.pinned_wanted = pool.pinned_wanted.saturating_sub(1);
            }
            live
        };
        self.stop_taken(live, InstanceState::Terminated).await;
        Some(())
    }

    /// Takes a running instance out of service, for a stop, restart or terminate by
    /// hand; a pinned one is no longer counted as wanted (the caller stores the new
    /// count).
    pub(crate) fn take_running(&self, id: InstanceId) -> Result<Arc<LiveInstance>, Refusal> {
        let mut pool = self.pool.lock();
        if let Some(position) = pool.instances.iter().position(|i| i.id == id) {
            let live = pool.instances.remove(position);
            if live.pinned {
                pool.pinned_wanted = pool.pinned_wanted.saturating_sub(1);
            }
            return Ok(live);
        }
        drop(pool);
        Err(self.refusal_for(id))
    }

    /// Why an action that wanted the instance in another state cannot have it: the
    /// state it is in, or that there is no such instance.
    pub(crate) fn refusal_for(&self, id: InstanceId) -> Refusal {
        let pool = self.pool.lock();
        if pool.instances.iter().any(|i| i.id == id) {
            return Refusal::InState(InstanceState::Running);
        }
        if pool.starting.iter().any(|s| s.identity.id == id) {
            return Refusal::InState(InstanceState::Starting);
        }
        drop(pool);
        self.roster
            .entries()
            .iter()
            .find(|e| e.identity.id == id)
            .map_or(Refusal::NotFound, |e| Refusal::InState(e.state))
    }

    /// Takes a stopped instance out of the roster.
    fn take_stopped(&self, id: InstanceId) -> Result<Entry, Refusal> {
        self.roster
            .take_if(id, InstanceState::Stopped)
            .map_err(|state| state.map_or(Refusal::NotFound, Refusal::InState))
    }

    /// Stops an instance already taken out of the pool: it shows as Stopping (or
    /// Terminating) from now, and as `end` (Stopped or Terminated) once the returned
    /// future has stopped it.
    pub(crate) fn stop_taken(
        &self,
        live: Arc<LiveInstance>,
        end: InstanceState,
    ) -> impl Future<Output = ()> + Send + 'static {
        let during = if end == InstanceState::Stopped {
            InstanceState::Stopping
        } else {
            InstanceState::Terminating
        };
        self.roster
            .record(live.identity(), live.revision, live.pinned, during);
        let roster = self.roster.clone();
        let drain_limit = self.drain_limit;
        let journal = self.journal.clone();
        async move {
            // What it serves finishes first (it is out of the pool: nothing new
            // reaches it), up to the request timeout.
            if !live.drained(drain_limit).await {
                tracing::warn!(instance = %live.id, "requests still in flight at the end of the drain; stopping anyway");
            }
            live.instance.stop().await;
            if let Some(sandbox) = live.instance.sandbox_id() {
                journal.stopped(sandbox);
            }
            roster.advance(live.id, end);
            tracing::debug!(instance = %live.id, "instance stopped");
        }
    }

    /// Starts a stopped instance again under its id; returns what to watch for the
    /// start.
    pub(crate) fn start_stopped(
        self: &Arc<Self>,
        id: InstanceId,
        pinned: bool,
    ) -> Result<StartOutcome, Refusal> {
        let revision = self.serving_revision().ok_or(Refusal::NotServing)?;
        let entry = self.take_stopped(id)?;
        let mut pool = self.pool.lock();
        if pinned {
            pool.pinned_wanted += 1;
        }
        Ok(self.start_as(&mut pool, entry.identity, revision, pinned, false))
    }

    /// Forgets a stopped instance for good: it shows as Terminated.
    pub(crate) fn terminate_stopped(&self, id: InstanceId) -> Result<(), Refusal> {
        let entry = self.take_stopped(id)?;
        self.roster.record(
            entry.identity,
            entry.revision,
            entry.pinned,
            InstanceState::Terminated,
        );
        Ok(())
    }

    /// Stops one idle, autoscaled instance beyond `minInstances`, the least recently
    /// started, to make room for another container; returns whether it did.
    pub(crate) fn evict_one_idle(&self) -> bool {
        let mut pool = self.pool.lock();
        let min = pool.policy.scaling.min_instances as usize;
        let autoscaled = pool.instances.iter().filter(|i| !i.pinned).count();
        if autoscaled <= min {
            return false;
        }
        let evicted = take_idle(&mut pool.instances, |i| !i.pinned, 1);
        drop(pool);
        let any = !evicted.is_empty();
        for live in &evicted {
            tracing::info!(container = %self.id, instance = %live.id, "stopping an idle instance to make room");
        }
        self.stop_all(evicted);
        any
    }

    /// Stops `instances` all at once (a stop may wait out a grace period), tracked so
    /// that the runtime waits for them when it shuts down.
    fn stop_all(&self, instances: Vec<Arc<LiveInstance>>) {
        if instances.is_empty() {
            return;
        }
        let stops: Vec<_> = instances
            .into_iter()
            .map(|live| self.stop_taken(live, InstanceState::Terminated))
            .collect();
        self.background.spawn_stop(async move {
            futures::future::join_all(stops).await;
        });
    }

    /// Clock time of the last request, for choosing whom to evict first.
    pub(crate) fn idle_since(&self) -> Duration {
        self.last_activity()
    }

    /// Whether the container has an instance to show: running, starting, stopped
    /// or recently terminated. Cheap, so that walks over every container can skip
    /// those at zero.
    pub(crate) fn has_instances(&self) -> bool {
        {
            let pool = self.pool.lock();
            if !pool.instances.is_empty() || !pool.starting.is_empty() {
                return true;
            }
        }
        !self.roster.is_empty()
    }

    /// The live and starting instances, for the API.
    pub(crate) fn instances(&self) -> Vec<InstanceInfo> {
        let pool = self.pool.lock();
        let running = pool.instances.iter().map(|i| InstanceInfo {
            id: i.id,
            ordinal: i.ordinal,
            created: i.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: i.revision,
            state: InstanceState::Running,
            state_changed: i.started,
            in_flight: i.in_flight.load(Ordering::Relaxed),
            pinned: i.pinned,
            waiting_reason: None,
            sandbox_id: i.instance.sandbox_id().map(str::to_string),
            address: i.instance.address(),
        });
        let starting = pool.starting.iter().map(|s| InstanceInfo {
            id: s.identity.id,
            ordinal: s.identity.ordinal,
            created: s.identity.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: s.revision,
            state: InstanceState::Starting,
            state_changed: s.since,
            in_flight: 0,
            pinned: s.pinned,
            waiting_reason: s.waiting_reason.clone(),
            sandbox_id: None,
            address: None,
        });
        let roster = self.roster.entries();
        let resting = roster.iter().map(|e| InstanceInfo {
            id: e.identity.id,
            ordinal: e.identity.ordinal,
            created: e.identity.created,
            container_id: self.id,
            server_id: self.server_id,
            revision: e.revision,
            state: e.state,
            state_changed: e.since,
            in_flight: 0,
            pinned: e.pinned,
            waiting_reason: None,
            sandbox_id: None,
            address: None,
        });
        running.chain(starting).chain(resting).collect()
    }

    /// What each running instance has used, by id.
    pub(crate) fn usages(&self) -> Vec<(InstanceId, ResourceUsage)> {
        let running: Vec<_> = self.pool.lock().instances.clone();
        running.iter().map(|i| (i.id, i.usage())).collect()
    }

    /// The running instance `id`, if it runs.
    pub(crate) fn running(&self, id: InstanceId) -> Option<Arc<dyn Instance>> {
        let pool = self.pool.lock();
        pool.instances
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.instance.clone())
    }

    /// The kind of workload the running instance `id` is, if it runs.
    pub(crate) fn running_kind(&self, id: InstanceId) -> Option<WorkloadKind> {
        let pool = self.pool.lock();
        pool.instances.iter().find(|i| i.id == id).map(|i| i.kind)
    }

    /// Recreates the running instance `id` under the same identity, as a migration
    /// within this node: a new sandbox starts beside the old one and takes its place
    /// once it serves; the old one stops when its last request is done, so no
    /// request fails. Returns the work, to run as a job.
    pub(crate) fn replace_instance(
        self: &Arc<Self>,
        id: InstanceId,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static, Refusal> {
        let found = self
            .pool
            .lock()
            .instances
            .iter()
            .find(|i| i.id == id)
            .cloned();
        let old = found.ok_or_else(|| self.refusal_for(id))?;
        let revision = self.serving_revision().ok_or(Refusal::NotServing)?;
        let service = self.clone();
        Ok(async move { service.run_replacement(old, revision).await })
    }

    async fn run_replacement(
        self: &Arc<Self>,
        old: Arc<LiveInstance>,
        revision: Arc<ServingRevision>,
    ) -> Result<(), String> {
        let id = old.id;
        let placement = self
            .room_for(id, &revision)
            .await
            .ok_or("the container stopped serving before the new sandbox had room")?;
        let gpus = placement.gpu_devices();
        let instance = revision
            .prepared
            .start_with_devices(&id.to_string(), &gpus)
            .await
            .map_err(|e| format!("the new sandbox did not start: {e}"))?;
        let exit = instance.exit_signal();
        let new = Arc::new(LiveInstance::new(
            old.identity(),
            &revision,
            instance,
            old.pinned,
            placement,
            self.clock.now(),
        ));
        {
            let mut pool = self.pool.lock();
            let Some(position) = pool.instances.iter().position(|i| Arc::ptr_eq(i, &old)) else {
                drop(pool);
                self.discard(new);
                return Err(format!(
                    "instance {id} stopped or ended while its new sandbox started"
                ));
            };
            if let Some(exit) = exit {
                watch_exit(self, &new, exit);
            }
            self.journal_started(&new);
            pool.instances[position] = new;
            self.dispatch(&mut pool);
        }
        tracing::info!(container = %self.id, instance = %id, "instance moved to a new sandbox");
        // Requests under way on the old sandbox finish there; none new reach it.
        old.drained(self.drain_limit).await;
        let (stopped, done) = oneshot::channel();
        let retired = old.instance.clone();
        drop(old);
        let journal = self.journal.clone();
        self.background.spawn_stop(async move {
            retired.stop().await;
            if let Some(sandbox) = retired.sandbox_id() {
                journal.stopped(sandbox);
            }
            let _ = stopped.send(());
        });
        let _ = done.await;
        Ok(())
    }

    /// Records a started OCI instance, for a later runtime to adopt.
    fn journal_started(&self, live: &LiveInstance) {
        if let Some(sandbox) = live.instance.sandbox_id() {
            self.journal.started(
                sandbox,
                RunningInstance {
                    container: self.id,
                    revision: live.revision,
                    instance: live.id,
                    ordinal: live.ordinal,
                    created: live.created,
                    pinned: live.pinned,
                },
            );
        }
    }

    /// Takes an instance an earlier run of the runtime left running into the pool,
    /// once it has room on the node: it serves requests of the revision it runs,
    /// which must be the one serving. `false` when that revision no longer serves.
    pub(crate) async fn adopt(
        self: &Arc<Self>,
        recorded: &RunningInstance,
        instance: Arc<dyn Instance>,
    ) -> bool {
        let Some(revision) = self
            .serving_revision()
            .filter(|r| r.number == recorded.revision)
        else {
            return false;
        };
        let identity = Identity {
            id: recorded.instance,
            ordinal: recorded.ordinal,
            created: recorded.created,
        };
        let Some(placement) = self.room_for(identity.id, &revision).await else {
            return false;
        };
        self.next_ordinal
            .fetch_max(recorded.ordinal + 1, Ordering::Relaxed);
        let exit = instance.exit_signal();
        let live = Arc::new(LiveInstance::new(
            identity,
            &revision,
            instance,
            recorded.pinned,
            placement,
            self.clock.now(),
        ));
        if let Some(exit) = exit {
            watch_exit(self, &live, exit);
        }
        let mut pool = self.pool.lock();
        pool.instances.push(live);
        self.dispatch(&mut pool);
        true
    }

    /// Stops an instance that never joined the pool, leaving the roster as it is.
    fn discard(&self, live: Arc<LiveInstance>) {
        self.background
            .spawn_stop(async move { live.instance.stop().await });
    }

    /// Number of started instances.
    pub(crate) fn instance_count(&self) -> usize {
        self.pool.lock().instances.len()
    }

    /// Requests, queue and instances now, for metrics.
    pub(crate) fn traffic(&self) -> TrafficStats {
        let pool = self.pool.lock();
        TrafficStats {
            in_flight: pool
                .instances
                .iter()
                .map(|i| i.in_flight.load(Ordering::Relaxed))
                .sum(),
            queued: pool.queue.iter().filter(|w| !w.is_closed()).count() as u32,
            desired: pool.desired,
            running: pool.instances.len() as u32,
            starting: pool.starting.len() as u32,
            prepared: self
                .serving_revision()
                .map_or(0, |r| r.prepared.ready_sandboxes() as u32),
        }
    }

    /// Scaling decisions that changed the instance count, by reason.
    pub(crate) fn decisions(&self) -> impl Iterator<Item = (ScaleReason, u64)> + '_ {
        ScaleReason::ALL
            .iter()
            .zip(&self.decisions)
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
    }
}

/// Why a power action cannot be done to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The container has no such instance (not even a terminated one it remembers).
    NotFound,
    /// The instance is in a state the action does not apply to.
    InState(InstanceState),
    /// No revision serves, so nothing can start.
    NotServing,
}

impl LiveInstance {
    /// `identity`, just started from `revision` at clock time `now`.
    fn new(
        identity: Identity,
        revision: &ServingRevision,
        instance: Arc<dyn Instance>,
        pinned: bool,
        placement: Placement,
        now: Duration,
    ) -> Self {
        Self {
            id: identity.id,
            ordinal: identity.ordinal,
            created: identity.created,
            revision: revision.number,
            kind: revision.kind,
            instance,
            started: SystemTime::now(),
            started_at: now,
            in_flight: AtomicU32::new(0),
            idle: tokio::sync::Notify::new(),
            pinned,
            _placement: placement,
        }
    }

    /// One request it served has ended.
    fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until it serves no request, for at most `limit`; whether it got there.
    /// It is out of the pool by then, so no new request reaches it.
    async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so that a request ending in between
            // still wakes this wait.
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight.load(Ordering::Acquire) == 0;
            }
        }
    }

    /// Started through the API rather than by the autoscaler.
    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// What the instance has used.
    pub(crate) fn usage(&self) -> ResourceUsage {
        self.instance.usage()
    }

    /// The instance as stored once stopped by hand.
    pub(crate) fn as_stopped(&self) -> StoppedInstance {
        StoppedInstance {
            id: self.id,
            ordinal: self.ordinal,
            created: self.created,
            revision: self.revision,
        }
    }

    fn identity(&self) -> Identity {
        Identity {
            id: self.id,
            ordinal: self.ordinal,
            created: self.created,
        }
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

/// Tells `service` when `live` ends; stops watching once the service is gone.
fn watch_exit(
    service: &Arc<Service>,
    live: &Arc<LiveInstance>,
    mut exit: watch::Receiver<Option<String>>,
) {
    let background = &service.background;
    let service = Arc::downgrade(service);
    let live = Arc::downgrade(live);
    background.spawn(async move {
        let reason = exit
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        if let (Some(service), Some(reason)) = (service.upgrade(), reason) {
            service.instance_exited(&live, &reason);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_sandbox::{BoxFuture, HttpBody, SandboxError};
    use ember_scheduler::Resources;
    use std::sync::atomic::AtomicUsize;

    /// The instances that have not terminated.
    fn live(service: &Service) -> Vec<InstanceInfo> {
        let mut instances = service.instances();
        instances.retain(|i| i.state != InstanceState::Terminated);
        instances
    }

    /// A workload whose starts take a while and are counted, with the most that ran
    /// at once.
    struct SlowStart {
        starts: Arc<AtomicUsize>,
        running: Arc<AtomicUsize>,
        most_at_once: Arc<AtomicUsize>,
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
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                Ok(Arc::new(Nothing) as Arc<dyn Instance>)
            })
        }
    }

    struct Settings {
        idle: Duration,
        max: u32,
        concurrency: u32,
        queue_depth: u32,
        node_millicpus: u64,
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

    fn service(settings: Settings) -> (Arc<Service>, Arc<AtomicUsize>) {
        let (service, starts, _) = service_counting(settings);
        (service, starts)
    }

    /// The service, its start count and the most starts that ran at once.
    fn service_counting(settings: Settings) -> (Arc<Service>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let policy = TrafficPolicy {
            scaling: ScalingPolicy {
                min_instances: 0,
                max_instances: settings.max,
                idle_timeout: settings.idle,
                concurrency: settings.concurrency,
            },
            queue_depth: settings.queue_depth,
        };
        let node = NodeCapacity::new(
            ServerId::generate(),
            "test".into(),
            Resources {
                millicpus: settings.node_millicpus,
                memory_bytes: 1 << 40,
                gpus: Default::default(),
            },
        );
        let service = Service::new(
            ContainerId::generate(),
            Listing {
                owner: crate::model::UserId::generate(),
                created: SystemTime::now(),
                name: "test".parse().unwrap(),
            },
            policy,
            &ServiceShared {
                server_id: ServerId::generate(),
                clock: Clock::start(),
                metrics: Arc::default(),
                node,
                background: Background::current(),
                awake: Arc::default(),
                drain_limit: Duration::from_secs(5),
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
        }));
        (service, starts, most_at_once)
    }

    fn acquire_many(
        service: &Arc<Service>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<Lease, ActivationError>>> {
        (0..n)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move { service.acquire(Duration::from_secs(5)).await })
            })
            .collect()
    }

    async fn leases(
        tasks: Vec<tokio::task::JoinHandle<Result<Lease, ActivationError>>>,
    ) -> Vec<Lease> {
        let mut leases = Vec::new();
        for task in tasks {
            leases.push(task.await.unwrap().unwrap());
        }
        leases
    }

    #[tokio::test]
    async fn a_container_at_rest_leaves_the_reconcilers_set_and_a_request_brings_it_back() {
        let (service, _) = service(Settings::default());
        let awake = || service.pool.membership_is_awake();
        // Never asked for anything: at rest, and the reconciler makes it sleep.
        service.reconcile();
        assert!(!awake());
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        assert!(awake(), "a request wakes it");
        service.reconcile();
        drop(lease);
        // An instance runs: it stays awake, so that its idle timeout is watched.
        service.reconcile();
        assert!(awake());
        // Scaled to zero by hand, which also forgets the demand on record: at rest.
        service.stop_idle_instances().await;
        service.reconcile();
        assert!(!awake());
    }

    #[tokio::test]
    async fn a_stop_by_hand_waits_for_the_requests_in_flight_and_takes_no_new_ones() {
        let (service, _) = service(Settings::default());
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        let id = live(&service)[0].id;
        let taken = service.take_running(id).unwrap();
        let stop = tokio::spawn(service.stop_taken(taken, InstanceState::Stopped));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!stop.is_finished(), "stopped with a request in flight");
        assert_eq!(live(&service)[0].state, InstanceState::Stopping);
        // A new request goes elsewhere (a new instance), not to the draining one.
        let other = service.acquire(Duration::from_secs(5)).await.unwrap();
        assert!(
            live(&service)
                .iter()
                .any(|i| i.id != id && i.state == InstanceState::Running)
        );
        drop(lease);
        tokio::time::timeout(Duration::from_secs(2), stop)
            .await
            .expect("the stop follows the last request")
            .unwrap();
        let stopped = live(&service).into_iter().find(|i| i.id == id).unwrap();
        assert_eq!(stopped.state, InstanceState::Stopped);
        drop(other);
    }

    #[tokio::test]
    async fn a_drain_ends_at_its_limit_even_with_a_request_in_flight() {
        let (service, _) = service(Settings::default());
        let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
        let id = live(&service)[0].id;
        let taken = service.take_running(id).unwrap();
        // The test services drain for at most 5 s.
        let began = Instant::now();
        service.stop_taken(taken, InstanceState::Terminated).await;
        assert!(began.elapsed() >= Duration::from_secs(5));
        drop(lease);
    }

    #[tokio::test]
    async fn requests_during_a_cold_start_share_it() {
        let (service, starts) = service(Settings::default());
        let leases = leases(acquire_many(&service, 50)).await;
        assert_eq!(leases.len(), 50);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(live(&service).len(), 1);
        assert_eq!(live(&service)[0].in_flight, 50);
        drop(leases);
        assert_eq!(live(&service)[0].in_flight, 0);
    }

    #[tokio::test]
    async fn instances_removed_while_they_start_stop_once_up() {
        let (service, starts) = service(Settings::default());
        let waiting = acquire_many(&service, 1);
        while live(&service).is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(live(&service)[0].state, InstanceState::Starting);
        service.remove_all_instances(|| {}).await;
        // The start (50 ms) ends, and its instance goes instead of joining.
        for _ in 0..400 {
            if live(&service).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(live(&service).is_empty(), "{:?}", live(&service));
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(service.instance_count(), 0);
        for request in waiting {
            request.abort();
        }
    }

    #[tokio::test]
    async fn a_burst_at_zero_starts_its_instances_at_once_and_spreads_over_them() {
        let (service, starts, most_at_once) = service_counting(Settings {
            concurrency: 10,
            ..Settings::default()
        });
        let leases = leases(acquire_many(&service, 100)).await;
        // 100 requests at 7 per instance: 15 instances, all started together.
        assert_eq!(starts.load(Ordering::SeqCst), 15);
        assert_eq!(most_at_once.load(Ordering::SeqCst), 15);
        let instances = live(&service);
        assert_eq!(instances.len(), 15);
        assert!(instances.iter().all(|i| i.in_flight <= 10), "{instances:?}");
        assert_eq!(instances.iter().map(|i| i.in_flight).sum::<u32>(), 100);
        drop(leases);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_the_queued_are_served_in_order() {
        let (service, _) = service(Settings {
            max: 1,
            concurrency: 1,
            queue_depth: 2,
            ..Settings::default()
        });
        let first = service.acquire(Duration::from_secs(5)).await.unwrap();
        let second = acquire_many(&service, 1).pop().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = acquire_many(&service, 1).pop().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = service.acquire(Duration::from_secs(5)).await.err().unwrap();
        assert!(
            matches!(refused, ActivationError::QueueFull(2)),
            "{refused}"
        );
        assert_eq!(service.traffic().queued, 2);

        drop(first);
        let second = second.await.unwrap().unwrap();
        assert!(!third.is_finished(), "served out of order");
        drop(second);
        drop(third.await.unwrap().unwrap());
        assert_eq!(service.traffic().queued, 0);
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_ends_with_a_timeout() {
        let (service, _) = service(Settings {
            max: 1,
            concurrency: 1,
            ..Settings::default()
        });
        let _busy = service.acquire(Duration::from_secs(5)).await.unwrap();
        let err = service
            .acquire(Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ActivationError::Timeout(_)), "{err}");
        // The request that gave up left the queue.
        assert_eq!(service.traffic().queued, 0);
    }

    #[tokio::test]
    async fn starts_wait_for_room_on_the_node() {
        // Room for two one-CPU instances.
        let (service, starts) = service(Settings {
            concurrency: 1,
            node_millicpus: 2000,
            ..Settings::default()
        });
        let tasks = acquire_many(&service, 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        let waiting = service.waiting_note().expect("a start waits for room");
        assert!(waiting.contains("asks for 1 CPU, 0 available"), "{waiting}");
        let mut done = Vec::new();
        for task in tasks {
            if task.is_finished() {
                done.push(task.await.unwrap().unwrap());
            }
        }
        assert_eq!(done.len(), 2);
        // Taking an instance away makes room for the third.
        let id = service
            .instances()
            .iter()
            .find(|i| i.state == InstanceState::Running)
            .unwrap()
            .id;
        drop(done);
        service.remove_instance(id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(service.waiting_note().is_none());
    }

    #[tokio::test]
    async fn a_replaced_instance_keeps_its_id_and_its_old_sandbox_finishes_its_requests() {
        let (service, starts) = service(Settings::default());
        let held = service.acquire(Duration::from_secs(5)).await.unwrap();
        let id = live(&service)[0].id;
        let work = tokio::spawn(service.replace_instance(id).unwrap());
        // The new sandbox takes the requests while the old one finishes its own.
        let next = loop {
            let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
            if !Arc::ptr_eq(lease.instance(), held.instance()) {
                break lease;
            }
            drop(lease);
            if work.is_finished() {
                panic!("{:?}", work.await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !work.is_finished(),
            "the old sandbox still serves a request"
        );
        drop(held);
        work.await.unwrap().unwrap();
        drop(next);
        let instances = live(&service);
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].id, id);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(matches!(
            service.replace_instance(InstanceId::generate()),
            Err(Refusal::NotFound)
        ));
    }

    #[tokio::test]
    async fn idle_instances_go_busy_ones_stay() {
        let (service, starts) = service(Settings {
            idle: Duration::from_millis(100),
            ..Settings::default()
        });
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
    async fn pinned_instances_stay_through_idleness_and_are_counted_apart() {
        let (service, _) = service(Settings {
            idle: Duration::from_millis(50),
            ..Settings::default()
        });
        let mut outcomes = service.add_pinned(2).unwrap();
        for outcome in &mut outcomes {
            outcome.wait_for(Option::is_some).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        service.reconcile();
        let instances = live(&service);
        assert_eq!(instances.len(), 2);
        assert!(instances.iter().all(|i| i.pinned));
        // Stopping one by hand does not bring it back.
        service.remove_instance(instances[0].id).await.unwrap();
        service.reconcile();
        assert_eq!(live(&service).len(), 1);
        assert_eq!(service.remove_all_instances(|| {}).await, 1);
        service.reconcile();
        assert!(live(&service).is_empty());
    }

    #[tokio::test]
    async fn an_unavailable_container_fails_fast() {
        let (service, _) = service(Settings::default());
        service.make_unavailable("the image could not be pulled");
        let err = service.acquire(Duration::from_secs(5)).await.err().unwrap();
        assert!(err.to_string().contains("could not be pulled"), "{err}");
    }
}
