//! A container's instances, queue and autoscaler, behind one lock.

use super::*;

pub(super) struct Pool {
    pub(super) policy: TrafficPolicy,
    /// Every instance and its state.
    pub(super) lifecycle: Lifecycle,
    pub(super) queue: VecDeque<Waiter>,
    pub(super) autoscaler: Autoscaler,
    /// The autoscaler's last answer, for metrics.
    pub(super) desired: u32,
    /// Instances the instances API asked for.
    pub(super) pinned_wanted: u32,
    /// Why a start of this container waits for its tenant's quota, while one does.
    pub(super) held_by_quota: Option<std::sync::Arc<str>>,
}

/// The pool behind its lock. Whoever leaves the pool not at rest puts the
/// container among those the reconciler visits, as the lock is released: no
/// change can forget to.
pub(super) struct PoolCell {
    pub(super) pool: Mutex<Pool>,
    pub(super) membership: Membership<ContainerTraffic>,
}

/// The pool, locked.
pub(super) struct PoolGuard<'a> {
    pub(super) pool: parking_lot::MutexGuard<'a, Pool>,
    pub(super) membership: &'a Membership<ContainerTraffic>,
}

impl PoolCell {
    pub(super) fn lock(&self) -> PoolGuard<'_> {
        PoolGuard {
            pool: self.pool.lock(),
            membership: &self.membership,
        }
    }
}

impl PoolCell {
    #[cfg(test)]
    pub(super) fn membership_is_awake(&self) -> bool {
        self.membership.is_awake()
    }
}

impl PoolGuard<'_> {
    /// Leaves the reconciler's set; the pool is at rest.
    pub(super) fn sleep(&self) {
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
    pub(super) fn is_at_rest(&self) -> bool {
        self.lifecycle.has_none_present()
            && self.queue.is_empty()
            && self.pinned_wanted == 0
            && self.policy.scaling.min_instances == 0
            && self.autoscaler.is_at_rest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool {
            policy: TrafficPolicy {
                kept_instances: 0,
                scaling: ScalingPolicy::new(0, 10, Duration::from_secs(60), 1),
                response_timeouts: Default::default(),
                request_limit: Duration::from_secs(5),
                queue_depth: 10,
            },
            lifecycle: Lifecycle::default(),
            queue: VecDeque::new(),
            autoscaler: Autoscaler::new(),
            desired: 0,
            pinned_wanted: 0,
            held_by_quota: None,
        }
    }

    #[test]
    fn a_pool_is_at_rest_only_with_nothing_present_wanted_or_remembered_by_the_autoscaler() {
        assert!(pool().is_at_rest());
        let mut pinned = pool();
        pinned.pinned_wanted = 1;
        assert!(!pinned.is_at_rest());
        let mut kept_warm = pool();
        kept_warm.policy.scaling.min_instances = 1;
        assert!(!kept_warm.is_at_rest());
        let mut starting = pool();
        starting.lifecycle.begin_start(
            Identity {
                id: InstanceId::generate(),
                ordinal: 1,
                created: SystemTime::now(),
            },
            1,
            false,
        );
        assert!(!starting.is_at_rest());
    }
}
