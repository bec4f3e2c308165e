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
