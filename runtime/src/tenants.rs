//! What each tenant holds on this node against its quota: instances starting or
//! running, and the CPU and memory they ask for. A start past its tenant's quota
//! waits, as one past the node's capacity does, until the tenant frees some or an
//! admin raises the quota.

use crate::clock::Clock;
use crate::model::{Quota, QuotaUse, RequestBucket, UserId};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;

/// Every tenant's quota and use.
pub(crate) struct Tenants {
    /// Quotas an admin set, by user.
    set: RwLock<HashMap<UserId, Quota>>,
    /// The quota of a user with none set.
    default: Quota,
    /// The bootstrap admin's user, whom the default does not bind.
    admin: UserId,
    /// Instances, CPU and memory held now, by user.
    in_use: Mutex<HashMap<UserId, QuotaUse>>,
    /// API requests, by user, for those with a rate quota.
    requests: Mutex<HashMap<UserId, RequestBucket>>,
    /// Where the buckets' time starts.
    clock: Clock,
}

impl Tenants {
    pub(crate) fn new(default: Quota, admin: UserId, set: Vec<(UserId, Quota)>) -> Self {
        Self {
            set: RwLock::new(set.into_iter().collect()),
            default,
            admin,
            in_use: Mutex::default(),
            requests: Mutex::default(),
            clock: Clock::start(),
        }
    }

    /// Takes one API request for `user`, or says how long until it may send one.
    pub(crate) fn take_request(&self, user: UserId) -> Result<(), (u32, std::time::Duration)> {
        let Some(per_minute) = self.quota_of(user).requests_per_minute else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut requests = self.requests.lock();
        requests
            .entry(user)
            .or_insert_with(|| RequestBucket::full(per_minute, now))
            .take(per_minute, now)
            .map_err(|wait| (per_minute, wait))
    }

    /// No quota for anyone, for tests.
    #[cfg(test)]
    pub(crate) fn unbounded() -> Self {
        Self::new(Quota::default(), UserId::generate(), Vec::new())
    }

    /// User `user`'s quota: the one set on it, else the default (none for the
    /// bootstrap admin).
    pub(crate) fn quota_of(&self, user: UserId) -> Quota {
        if let Some(quota) = self.set.read().get(&user) {
            return quota.clone();
        }
        if user == self.admin {
            Quota::default()
        } else {
            self.default.clone()
        }
    }

    /// Sets `user`'s quota (its use stays; starts waiting for it look again).
    pub(crate) fn set(&self, user: UserId, quota: Quota) {
        self.set.write().insert(user, quota);
    }

    /// What `user` holds now (containers are counted by the store, not here).
    pub(crate) fn in_use(&self, user: UserId) -> QuotaUse {
        self.in_use.lock().get(&user).copied().unwrap_or_default()
    }

    /// The instances each tenant holds, for the fair order of waiting starts.
    pub(crate) fn instances_held(&self) -> HashMap<UserId, u32> {
        self.in_use
            .lock()
            .iter()
            .map(|(user, used)| (*user, used.instances))
            .collect()
    }

    /// Takes `adding` for `user` if its quota allows; otherwise why not.
    pub(crate) fn take(&self, user: UserId, adding: QuotaUse) -> Result<(), String> {
        let quota = self.quota_of(user);
        let mut in_use = self.in_use.lock();
        let used = in_use.entry(user).or_default();
        if let Some((kind, why)) = quota.refuses(*used, adding) {
            return Err(format!("the tenant's {kind} quota: {why}"));
        }
        used.instances += adding.instances;
        used.millicpus += adding.millicpus;
        used.memory_bytes += adding.memory_bytes;
        used.ephemeral_storage_bytes += adding.ephemeral_storage_bytes;
        Ok(())
    }

    /// Gives back what [`Tenants::take`] took.
    pub(crate) fn give_back(&self, user: UserId, taken: QuotaUse) {
        let mut in_use = self.in_use.lock();
        if let Some(used) = in_use.get_mut(&user) {
            used.instances = used.instances.saturating_sub(taken.instances);
            used.millicpus = used.millicpus.saturating_sub(taken.millicpus);
            used.memory_bytes = used.memory_bytes.saturating_sub(taken.memory_bytes);
            used.ephemeral_storage_bytes = used
                .ephemeral_storage_bytes
                .saturating_sub(taken.ephemeral_storage_bytes);
            if *used == QuotaUse::default() {
                in_use.remove(&user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> QuotaUse {
        QuotaUse {
            instances: 1,
            millicpus: 500,
            memory_bytes: 64 << 20,
            ..QuotaUse::default()
        }
    }

    #[test]
    fn each_tenant_is_held_to_its_own_quota_and_gets_back_what_it_frees() {
        let admin = UserId::generate();
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let two = Quota {
            instances: Some(2),
            ..Quota::default()
        };
        let tenants = Tenants::new(two, admin, vec![]);
        tenants.take(alice, instance()).unwrap();
        tenants.take(alice, instance()).unwrap();
        let refused = tenants.take(alice, instance()).unwrap_err();
        assert!(
            refused.contains("instances quota: 2 instances in use"),
            "{refused}"
        );
        // Another tenant, and the admin, are not held by alice's use.
        tenants.take(bob, instance()).unwrap();
        for _ in 0..5 {
            tenants.take(admin, instance()).unwrap();
        }
        tenants.give_back(alice, instance());
        tenants.take(alice, instance()).unwrap();
        // An admin raises alice's quota.
        tenants.set(
            alice,
            Quota {
                instances: Some(3),
                ..Quota::default()
            },
        );
        tenants.take(alice, instance()).unwrap();
        assert_eq!(tenants.in_use(alice).instances, 3);
        assert_eq!(tenants.in_use(alice).millicpus, 1500);
    }
}
