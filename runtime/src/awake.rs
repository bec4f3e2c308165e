//! The containers the reconciler visits: those not at rest. A container at zero
//! with nothing asked of it leaves the set when the reconciler finds it so, and
//! joins it again the moment anything changes that (a request, a pinned instance,
//! a minimum), so that a node with many idle containers spends nothing on them.

use crate::model::ContainerId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// The awake members, each held weakly: a deleted container leaves with its last
/// reference.
pub(crate) struct AwakeSet<T> {
    members: Mutex<HashMap<ContainerId, Weak<T>>>,
}

impl<T> Default for AwakeSet<T> {
    fn default() -> Self {
        Self {
            members: Mutex::default(),
        }
    }
}

impl<T> AwakeSet<T> {
    /// Every member still alive, for one pass of the reconciler.
    pub(crate) fn members(&self) -> Vec<Arc<T>> {
        let mut members = self.members.lock();
        members.retain(|_, member| member.strong_count() > 0);
        members.values().filter_map(Weak::upgrade).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.lock().len()
    }
}

/// One member's place in an [`AwakeSet`]: whether it is in, and how to get in.
pub(crate) struct Membership<T> {
    set: Arc<AwakeSet<T>>,
    id: ContainerId,
    member: Weak<T>,
    awake: AtomicBool,
}

impl<T> Membership<T> {
    /// A member of `set`, not yet awake.
    pub(crate) fn new(set: Arc<AwakeSet<T>>, id: ContainerId, member: Weak<T>) -> Self {
        Self {
            set,
            id,
            member,
            awake: AtomicBool::new(false),
        }
    }

    /// Joins the set, if not in it. Cheap when already awake: this is called on
    /// every request.
    pub(crate) fn wake(&self) {
        if !self.awake.load(Ordering::Acquire) && !self.awake.swap(true, Ordering::AcqRel) {
            self.set.members.lock().insert(self.id, self.member.clone());
        }
    }

    #[cfg(test)]
    pub(crate) fn is_awake(&self) -> bool {
        self.awake.load(Ordering::Acquire)
    }

    /// Leaves the set. The caller holds whatever lock its wakers hold, so that a
    /// wake cannot slip in between its check and this.
    pub(crate) fn sleep(&self) {
        if self.awake.swap(false, Ordering::AcqRel) {
            self.set.members.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_wake_once_sleep_and_leave_when_dropped() {
        let set = Arc::new(AwakeSet::<u32>::default());
        let member = Arc::new(7);
        let membership = Membership::new(
            set.clone(),
            ContainerId::generate(),
            Arc::downgrade(&member),
        );
        assert!(set.members().is_empty());
        membership.wake();
        membership.wake();
        assert_eq!(set.members().len(), 1);
        membership.sleep();
        assert!(set.members().is_empty());
        membership.wake();
        drop(member);
        assert!(set.members().is_empty(), "a dropped member is not visited");
        assert_eq!(set.len(), 0);
    }
}
