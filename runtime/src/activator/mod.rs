//! The activator: finds an instance for each request. A request that finds every
//! instance at its concurrency limit (or none at all) waits in the container's
//! bounded FIFO queue while the autoscaler starts as many instances as the demand
//! needs, in parallel; each freed slot goes to the request that waited longest.

use crate::awake::{AwakeSet, Membership};
use crate::background::Background;
use crate::clock::Clock;
use crate::journal::InstanceJournal;
use crate::metrics::{Metrics, TrafficStats};
use crate::model::{
    ContainerId, ContainerName, InstanceId, InstanceInfo, InstanceState, RunningInstance, ServerId,
    StoppedInstance, UserId,
};
use crate::node::{NodeCapacity, Placement};
use ember_sandbox::{Instance, PreparedWorkload, ResourceUsage, WorkloadKind};
use ember_scheduler::{Autoscaler, Observation, Request, ScaleReason, ScalingPolicy};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, watch};

mod by_hand;
mod lifecycle;
mod live;
mod pool;
mod probes;
mod queue;
mod replacement;
mod restarts;
mod scaling;
mod starts;
mod stops;
#[cfg(test)]
mod test_support;
mod views;

pub(crate) use lifecycle::{Identity, Leaving};
use lifecycle::{Lifecycle, Member, Phase};
pub(crate) use live::LiveInstance;
use pool::{Pool, PoolCell};
use queue::Waiter;
pub(crate) use queue::{ActivationError, Lease};
use restarts::RestartBackoff;
pub(crate) use starts::StartOutcome;

/// A revision ready to start instances from.
pub(crate) struct ServingRevision {
    pub(crate) number: u32,
    pub(crate) kind: WorkloadKind,
    pub(crate) prepared: Arc<dyn PreparedWorkload>,
    /// What each instance asks of its node.
    pub(crate) request: Request,
    /// The disk each instance may write, counted against its tenant's quota.
    pub(crate) ephemeral_storage_bytes: u64,
    /// Its instances' health probes.
    pub(crate) probes: crate::model::Probes,
    /// The container's `traffic_changes` when it began to serve: a move of
    /// traffic by hand outranks any revision served before it.
    pub(crate) traffic_changes: u64,
}

impl ServingRevision {
    /// `revision`, resolved to `kind`, ready to start instances from `prepared`;
    /// `traffic_changes` is its container's count of traffic moves now.
    pub(crate) fn of(
        revision: &crate::model::Revision,
        kind: WorkloadKind,
        prepared: Arc<dyn PreparedWorkload>,
        traffic_changes: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            number: revision.number,
            kind,
            prepared,
            request: crate::node::instance_request(&revision.spec),
            ephemeral_storage_bytes: crate::node::instance_storage(&revision.spec, kind),
            probes: revision.spec.probes.clone(),
            traffic_changes,
        })
    }
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
    /// `scaling.min_instances` is this node's share of `kept_instances`.
    pub(crate) scaling: ScalingPolicy,
    /// The container's `minInstances`, across the cluster: all of it is this
    /// node's on one machine.
    pub(crate) kept_instances: u32,
    /// Most requests waiting for an instance.
    pub(crate) queue_depth: u32,
    /// How long a response may take to start, and to send nothing once started.
    pub(crate) response_timeouts: ResponseTimeouts,
    /// Longest one request may run (the container's `timeoutSeconds`): also how
    /// long an instance taken out of service waits for its requests to end.
    pub(crate) request_limit: Duration,
}

/// The limits the ingress holds a container's responses to (the whole request's
/// limit is the sandbox's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResponseTimeouts {
    /// Until the status and headers.
    pub(crate) start: Option<Duration>,
    /// Between two pieces of a started response's body.
    pub(crate) stream_idle: Option<Duration>,
}

/// What the services of every container on this node share.
#[derive(Clone)]
pub(crate) struct TrafficShared {
    pub(crate) server_id: ServerId,
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) node: Arc<NodeCapacity>,
    pub(crate) background: Background,
    /// The containers the reconciler visits.
    pub(crate) awake: Arc<AwakeSet<ContainerTraffic>>,
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
pub(crate) struct ContainerTraffic {
    pub(crate) id: ContainerId,
    /// Itself, for the stops it sets off to record their end.
    me: Weak<ContainerTraffic>,
    /// Its owner, age and name, as of its last change.
    listing: Mutex<Listing>,
    server_id: ServerId,
    serving: watch::Sender<Serving>,
    pool: PoolCell,
    restarts: Mutex<RestartBackoff>,
    /// Nanoseconds since the clock's origin of the last request start or end.
    last_activity: AtomicU64,
    /// Requests that asked for an instance, ever (the `rps` metric's count).
    arrivals: AtomicU64,
    /// Scaling decisions that changed the instance count, by reason.
    decisions: [AtomicU64; ScaleReason::ALL.len()],
    clock: Clock,
    metrics: Arc<Metrics>,
    node: Arc<NodeCapacity>,
    /// Where starts and stops run, whichever thread the request that set them off
    /// came in on.
    background: Background,
    /// See [`TrafficShared::journal`].
    journal: Arc<dyn InstanceJournal>,
    /// The next instance's ordinal.
    next_ordinal: AtomicU32,
    /// The container's pinned instances as stored: each server's, and the total
    /// (see [`crate::model::pinned_share`]).
    pinned_plan: Mutex<(std::collections::BTreeMap<ServerId, u32>, u32)>,
}

impl ContainerTraffic {
    pub(crate) fn new(
        id: ContainerId,
        listing: Listing,
        policy: TrafficPolicy,
        shared: &TrafficShared,
    ) -> Arc<Self> {
        let TrafficShared {
            server_id,
            clock,
            metrics,
            node,
            background,
            awake,
            journal,
        } = shared.clone();
        let service = Arc::new_cyclic(|me| Self {
            id,
            me: me.clone(),
            listing: Mutex::new(listing),
            server_id,
            serving: watch::Sender::new(Serving::Deploying),
            pool: PoolCell {
                pool: Mutex::new(Pool {
                    policy,
                    lifecycle: Lifecycle::default(),
                    queue: VecDeque::new(),
                    autoscaler: Autoscaler::new(),
                    desired: 0,
                    pinned_wanted: 0,
                    held_by_quota: None,
                }),
                membership: Membership::new(awake, id, me.clone()),
            },
            restarts: Mutex::default(),
            last_activity: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            decisions: Default::default(),
            clock,
            metrics,
            node,
            background,
            journal,
            next_ordinal: AtomicU32::new(1),
            pinned_plan: Mutex::default(),
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

    /// Sets this node's share of the instances the container keeps running, as
    /// `share` deals them from the container's `minInstances` (when the cluster's
    /// members change).
    pub(crate) fn reshare_kept_instances(&self, share: impl FnOnce(u32) -> u32) {
        let mut pool = self.pool.lock();
        let kept = pool.policy.kept_instances;
        pool.policy.scaling.min_instances = share(kept);
    }

    fn serving_revision(&self) -> Option<Arc<ServingRevision>> {
        match &*self.serving.borrow() {
            Serving::Ready(revision) => Some(revision.clone()),
            _ => None,
        }
    }

    /// The limits the ingress holds this container's responses to.
    pub(crate) fn response_timeouts(&self) -> ResponseTimeouts {
        self.pool.lock().policy.response_timeouts
    }

    /// Longest one of this container's requests may run.
    pub(crate) fn request_limit(&self) -> Duration {
        self.pool.lock().policy.request_limit
    }

    /// What an instance of the serving revision asks of a node.
    pub(crate) fn serving_request(&self) -> Option<ember_scheduler::Request> {
        self.serving_revision()
            .map(|revision| revision.request.clone())
    }

    /// The traffic move and revision that serve: what a newer record must
    /// outrank to be served instead.
    pub(crate) fn serving_rank(&self) -> Option<(u64, u32)> {
        match &*self.serving.borrow() {
            Serving::Ready(revision) => Some((revision.traffic_changes, revision.number)),
            _ => None,
        }
    }

    pub(crate) fn serving_number(&self) -> Option<u32> {
        match &*self.serving.borrow() {
            Serving::Ready(revision) => Some(revision.number),
            _ => None,
        }
    }

    /// Sends traffic to `revision` from now on. Idle instances of older revisions stop
    /// now; busy ones finish their requests first (see [`ContainerTraffic::reconcile`]).
    pub(crate) fn serve(self: &Arc<Self>, revision: Arc<ServingRevision>) {
        let number = revision.number;
        // A new revision starts with a clean slate.
        *self.restarts.lock() = RestartBackoff::default();
        self.replace_serving(Serving::Ready(revision));
        let retired = {
            let mut pool = self.pool.lock();
            let mut retired = pool.lifecycle.take_idle(
                |i| i.revision != number,
                usize::MAX,
                Leaving::ToTerminated,
            );
            retired.extend(self.scale(&mut pool, false));
            retired
        };
        self.stop_all(retired);
    }

    /// Starts `count` instances of the revision just served before any request
    /// (its `initialScale`); they stay until idle as long as the idle timeout.
    pub(crate) fn begin_initial_scale(self: &Arc<Self>, count: u32) {
        if count == 0 {
            return;
        }
        let stopped = {
            let mut pool = self.pool.lock();
            pool.autoscaler.begin_initial_scale(count);
            self.scale(&mut pool, false)
        };
        self.stop_all(stopped);
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

    /// Whether `revision` no longer serves: the container was deleted, the runtime
    /// is stopping, or another revision took over.
    fn is_retired(&self, revision: &ServingRevision) -> bool {
        self.is_unavailable() || self.serving_number() != Some(revision.number)
    }

    /// Clock time of the last request, for choosing whom to evict first.
    pub(crate) fn idle_since(&self) -> Duration {
        self.last_activity()
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
